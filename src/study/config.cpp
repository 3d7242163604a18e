#include "study/config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "lathe/error.hpp"

#ifdef LATHE_HAVE_TOML
#include <toml++/toml.h>
#endif

namespace lathe::study {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Configuration files are small; anything larger is not one.
constexpr uintmax_t kMaxConfigBytes = uintmax_t{1} << 20;

std::string read_text(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw NotFoundError(fmt::format("study configuration {}: no such file", file.string()));
  if (fs::file_size(file, ec) > kMaxConfigBytes)
    throw InvalidArgumentError(fmt::format("study configuration {}: larger than 1 MiB; is it the right file?", file.string()));
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in.good() && !in.eof()) throw IoError(fmt::format("study configuration {}: cannot be read", file.string()));
  return text.str();
}

#ifdef LATHE_HAVE_TOML
json to_json(const toml::node& node, const std::string& where);

json table_to_json(const toml::table& table, const std::string& where) {
  json out = json::object();
  for (const auto& [key, value] : table) {
    const std::string name(key.str());
    out[name] = to_json(value, where.empty() ? name : where + "." + name);
  }
  return out;
}

json to_json(const toml::node& node, const std::string& where) {
  if (const auto* t = node.as_table()) return table_to_json(*t, where);
  if (const auto* a = node.as_array()) {
    json out = json::array();
    for (size_t i = 0; i < a->size(); ++i) out.push_back(to_json(*a->get(i), fmt::format("{}[{}]", where, i)));
    return out;
  }
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) return f->get();
  if (const auto* b = node.as_boolean()) return b->get();
  throw InvalidArgumentError(fmt::format("{}: dates and times mean nothing in a study configuration", where));
}

json parse_toml(std::string_view text, const fs::path& file) {
  try {
    return table_to_json(toml::parse(text, file.string()), "");
  } catch (const InvalidArgumentError& e) {
    throw InvalidArgumentError(fmt::format("study configuration {}: {}", file.string(), e.what()));
  } catch (const toml::parse_error& e) {
    throw FormatError(fmt::format("study configuration {}: line {}, column {}: {}; fix the TOML there", file.string(),
                                  e.source().begin.line, e.source().begin.column, e.description()));
  }
}
#else
json parse_toml(std::string_view, const fs::path& file) {
  throw UnsupportedError(fmt::format("study configuration {}: this lathe was built without toml++ (apt install "
                                     "libtomlplusplus-dev, then rebuild); a .json file with the same keys works",
                                     file.string()));
}
#endif

json parse_json(std::string_view text, const fs::path& file) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw FormatError(fmt::format("study configuration {}: byte {}: {}; fix the JSON there", file.string(), e.byte,
                                  e.what()));
  } catch (const json::exception& e) {
    // Valid JSON lathe cannot hold, such as a number beyond double's range (1e400).
    throw FormatError(fmt::format("study configuration {}: {}; fix the value there", file.string(), e.what()));
  }
}

// One table of the configuration: typed reads that name the key, and a check that every key is
// one the table accepts (a misspelt key must not be silently ignored).
class Table {
 public:
  Table(const json& value, std::string where, const fs::path& file) : where_(std::move(where)), file_(file) {
    if (!value.is_object()) fail(where_, "must be a table");
    value_ = &value;
  }
  bool has(const std::string& key) const { return value_->contains(key); }
  const json& raw(const std::string& key) const { return value_->at(key); }
  std::string string(const std::string& key, std::optional<std::string> fallback = std::nullopt) {
    if (!has(key)) return required(key, fallback);
    const json& v = raw(key);
    if (!v.is_string()) fail(name(key), "must be a string");
    return v.get<std::string>();
  }
  double number(const std::string& key, double fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_number() || !std::isfinite(v.get<double>())) fail(name(key), "must be a finite number");
    return v.get<double>();
  }
  int64_t integer(const std::string& key, int64_t fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_number_integer()) fail(name(key), "must be an integer");
    return v.get<int64_t>();
  }
  bool boolean(const std::string& key, bool fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_boolean()) fail(name(key), "must be true or false");
    return v.get<bool>();
  }
  std::vector<std::string> strings(const std::string& key, std::vector<std::string> fallback) {
    if (!has(key)) return fallback;
    const json& v = raw(key);
    if (!v.is_array()) fail(name(key), "must be an array of strings");
    std::vector<std::string> out;
    for (const auto& item : v) {
      if (!item.is_string()) fail(name(key), "must be an array of strings");
      out.push_back(item.get<std::string>());
    }
    return out;
  }
  fs::path path(const std::string& key) {
    const std::string text = string(key);
    if (text.empty()) fail(name(key), "is empty; give a path");
    return resolve(text);
  }
  fs::path resolve(const std::string& text) const {
    const fs::path p(text);
    return p.is_absolute() ? p : file_.parent_path() / p;
  }
  // InvalidArgumentError naming the first key that is not one of `accepted` (checked before the
  // table's values, so that a misspelt key is named rather than reported as a missing one).
  void only(const std::vector<std::string>& accepted) const {
    for (const auto& [key, _] : value_->items())
      if (std::find(accepted.begin(), accepted.end(), key) == accepted.end())
        fail(name(key), fmt::format("is not a key of {} (accepted: {}); check its spelling",
                                    where_.empty() ? "the top level" : where_, fmt::join(accepted, ", ")));
  }
  std::string name(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw InvalidArgumentError(fmt::format("study configuration {}: {} {}", file_.string(), key, problem));
  }

 private:
  std::string required(const std::string& key, const std::optional<std::string>& fallback) {
    if (!fallback) fail(name(key), "is missing");
    return *fallback;
  }
  const json* value_ = nullptr;
  std::string where_;
  fs::path file_;
};

ArmMethod parse_method(Table& t, const std::string& text) {
  if (text == "none") return ArmMethod::None;
  if (text == "unlearn") return ArmMethod::Unlearn;
  if (text == "projection") return ArmMethod::Projection;
  if (text == "sae") return ArmMethod::SaeGate;
  t.fail(t.name("method"), fmt::format("\"{}\" is not a method: use none, unlearn, projection or sae", text));
}

// The keys an [[arm]] of this method accepts.
std::vector<std::string> accepted_keys(ArmMethod method) {
  std::vector<std::string> keys = {"name", "method"};
  if (method == ArmMethod::Unlearn)
    keys.insert(keys.end(), {"objective", "retain_loss", "beta", "gamma", "retain_weight", "delta", "rank", "alpha", "lr",
                             "weight_decay", "max_grad_norm", "steps", "warmup", "epochs", "targets"});
  if (method == ArmMethod::Projection) keys.push_back("layer");
  if (method == ArmMethod::SaeGate)
    keys.insert(keys.end(), {"sae", "features", "select", "select_by", "value", "hook", "clamp_everywhere"});
  return keys;
}

ArmConfig parse_arm(const json& value, size_t index, const fs::path& file) {
  Table t(value, fmt::format("arm[{}]", index), file);
  ArmConfig arm;
  arm.source = value;
  arm.name = t.string("name");
  if (arm.name.empty() || arm.name.find_first_of("/\\ \t\n") != std::string::npos)
    t.fail(t.name("name"), fmt::format("\"{}\" must be a non-empty word without spaces or slashes (it names files)", arm.name));
  arm.method = parse_method(t, t.string("method"));
  t.only(accepted_keys(arm.method));
  if (arm.method == ArmMethod::Unlearn) {
    arm.objective = t.string("objective", arm.objective);
    if (arm.objective != "npo" && arm.objective != "graddiff" && arm.objective != "gradascent" && arm.objective != "simnpo")
      t.fail(t.name("objective"), fmt::format("\"{}\": use npo, graddiff, gradascent or simnpo", arm.objective));
    arm.retain_loss = t.string("retain_loss", arm.retain_loss);
    if (arm.retain_loss != "nll" && arm.retain_loss != "kl")
      t.fail(t.name("retain_loss"), fmt::format("\"{}\": use nll or kl", arm.retain_loss));
    arm.beta = t.number("beta", arm.beta);
    arm.gamma = t.number("gamma", arm.gamma);
    arm.alpha_retain = t.number("retain_weight", arm.alpha_retain);
    arm.delta = t.number("delta", arm.delta);
    arm.rank = t.integer("rank", arm.rank);
    arm.lora_alpha = t.number("alpha", arm.lora_alpha);
    arm.lr = t.number("lr", arm.lr);
    arm.weight_decay = t.number("weight_decay", arm.weight_decay);
    arm.max_grad_norm = t.number("max_grad_norm", arm.max_grad_norm);
    arm.steps = t.integer("steps", arm.steps);
    arm.warmup = t.integer("warmup", arm.warmup);
    arm.epochs = t.number("epochs", arm.epochs);
    arm.targets = t.strings("targets", arm.targets);
    if (arm.beta <= 0) t.fail(t.name("beta"), "must be > 0");
    if (arm.rank < 1 || arm.rank > 1024) t.fail(t.name("rank"), fmt::format("{} must be in 1..1024", arm.rank));
    if (arm.lr <= 0 || arm.lr > 1) t.fail(t.name("lr"), fmt::format("{} must be in (0, 1]", arm.lr));
    if (arm.steps < 0 || arm.steps > 10'000'000) t.fail(t.name("steps"), "must be in 0..10000000");
    if (arm.warmup < 0) t.fail(t.name("warmup"), "must be >= 0");
    if (arm.epochs < 0 || arm.epochs > 100000) t.fail(t.name("epochs"), "must be in 0..100000");
    if (arm.steps == 0 && arm.epochs == 0) t.fail(t.name("steps"), "and epochs are both missing; give one");
    if (arm.steps > 0 && arm.epochs > 0) t.fail(t.name("steps"), "and epochs are both given; give one");
    if (arm.targets.empty()) t.fail(t.name("targets"), "is empty; give the matrices to adapt");
  } else if (arm.method == ArmMethod::Projection) {
    arm.layer = t.integer("layer", arm.layer);
    if (arm.layer < -1) t.fail(t.name("layer"), "must be >= 0 (or -1: the middle layer)");
  } else if (arm.method == ArmMethod::SaeGate) {
    arm.sae = t.path("sae");
    arm.sae_features = t.string("features", "");
    arm.sae_select = t.integer("select", 0);
    arm.sae_value = t.number("value", 0.0);
    const std::string select_by = t.string("select_by", "activation");
    if (select_by != "activation" && select_by != "attribution")
      t.fail(t.name("select_by"), fmt::format("is \"{}\"; use \"activation\" or \"attribution\"", select_by));
    arm.sae_select_by = train::parse_feature_criterion(select_by, t.name("select_by"));
    arm.sae_hook = t.string("hook", "");
    arm.sae_clamp_everywhere = t.boolean("clamp_everywhere", false);
    if (arm.sae_features.empty() == (arm.sae_select == 0))
      t.fail(t.name("features"), "and select: give one (features = \"ID,ID:V,...\", or select = N to take the N "
                                  "features most specific to the forget set)");
    if (arm.sae_select < 0 || arm.sae_select > 65536) t.fail(t.name("select"), "must be in 1..65536");
    if (t.has("value") && arm.sae_select == 0) t.fail(t.name("value"), "goes with select (features carry their own values)");
    if (t.has("select_by") && arm.sae_select == 0) t.fail(t.name("select_by"), "goes with select");
  }
  return arm;
}

EvalSet parse_eval(const json& value, size_t index, const fs::path& file) {
  Table t(value, fmt::format("eval[{}]", index), file);
  t.only({"name", "file", "kind", "language"});
  EvalSet set;
  set.name = t.string("name");
  if (set.name.empty()) t.fail(t.name("name"), "is empty");
  set.file = t.path("file");
  const std::string kind = t.string("kind");
  if (kind == "forget") set.kind = EvalKind::Forget;
  else if (kind == "retain") set.kind = EvalKind::Retain;
  else if (kind == "general") set.kind = EvalKind::General;
  else t.fail(t.name("kind"), fmt::format("\"{}\": use forget, retain or general", kind));
  set.language = t.string("language", "");
  return set;
}

template <class T>
void require_unique_names(const std::vector<T>& items, const char* what, const fs::path& file) {
  std::set<std::string> seen;
  for (const auto& item : items)
    if (!seen.insert(item.name).second)
      throw InvalidArgumentError(fmt::format("study configuration {}: two {} are named \"{}\"; names must differ",
                                             file.string(), what, item.name));
}

}  // namespace

const char* arm_method_name(ArmMethod method) {
  switch (method) {
    case ArmMethod::None: return "none";
    case ArmMethod::Unlearn: return "unlearn";
    case ArmMethod::Projection: return "projection";
    case ArmMethod::SaeGate: return "sae";
  }
  return "?";
}

const char* eval_kind_name(EvalKind kind) {
  switch (kind) {
    case EvalKind::Forget: return "forget";
    case EvalKind::Retain: return "retain";
    case EvalKind::General: return "general";
  }
  return "?";
}

StudyConfig study_config_from_json(const json& doc, const fs::path& file) {
  Table top(doc, "", file);
  top.only({"model", "lora", "seeds", "raw", "system", "max_length", "baseline", "resamples", "confidence", "alpha",
            "train", "eval", "arm"});
  StudyConfig c;
  c.file = file;
  c.model = top.path("model");
  for (const auto& l : top.strings("lora", {})) c.loras.push_back(top.resolve(l));
  if (!top.has("seeds")) top.fail("seeds", "is missing; give e.g. seeds = [1, 2, 3]");
  const json& seeds = top.raw("seeds");
  if (!seeds.is_array() || seeds.empty()) top.fail("seeds", "must be a non-empty array of integers >= 0");
  for (const auto& s : seeds) {
    if (!s.is_number_integer() || (!s.is_number_unsigned() && s.get<int64_t>() < 0))
      top.fail("seeds", "must be a non-empty array of integers >= 0");
    c.seeds.push_back(s.get<uint64_t>());
  }
  if (std::set<uint64_t>(c.seeds.begin(), c.seeds.end()).size() != c.seeds.size())
    top.fail("seeds", "has a seed twice; each seed must differ");
  c.raw = top.boolean("raw", c.raw);
  c.system = top.string("system", c.system);
  c.max_length = top.integer("max_length", c.max_length);
  if (c.max_length < 2 || c.max_length > 65536) top.fail("max_length", "must be in 2..65536");
  c.baseline = top.string("baseline", "");
  c.resamples = static_cast<size_t>(top.integer("resamples", static_cast<int64_t>(c.resamples)));
  if (c.resamples < 100 || c.resamples > 1'000'000) top.fail("resamples", "must be in 100..1000000");
  c.confidence = top.number("confidence", c.confidence);
  if (c.confidence <= 0 || c.confidence >= 1) top.fail("confidence", "must be in (0, 1)");
  c.alpha = top.number("alpha", c.alpha);
  if (c.alpha <= 0 || c.alpha >= 1) top.fail("alpha", "must be in (0, 1)");

  bool trains = false;
  if (!top.has("arm")) top.fail("arm", "is missing; give at least one [[arm]] table");
  const json& arms = top.raw("arm");
  if (!arms.is_array() || arms.empty()) top.fail("arm", "must be a non-empty array of tables ([[arm]])");
  for (size_t i = 0; i < arms.size(); ++i) {
    c.arms.push_back(parse_arm(arms[i], i, file));
    trains |= c.arms.back().method != ArmMethod::None;
  }
  require_unique_names(c.arms, "arms", file);
  if (top.has("train")) {
    Table t(top.raw("train"), "train", file);
    t.only({"forget", "retain"});
    c.train_forget = t.path("forget");
    if (t.has("retain")) c.train_retain = t.path("retain");
  } else if (trains) {
    top.fail("train", "is missing: the arms that edit the model need [train] forget = FILE (and retain = FILE)");
  }
  if (!top.has("eval")) top.fail("eval", "is missing; give at least one [[eval]] table");
  const json& evals = top.raw("eval");
  if (!evals.is_array() || evals.empty()) top.fail("eval", "must be a non-empty array of tables ([[eval]])");
  for (size_t i = 0; i < evals.size(); ++i) c.evals.push_back(parse_eval(evals[i], i, file));
  require_unique_names(c.evals, "eval sets", file);

  if (c.baseline.empty()) {
    for (const auto& arm : c.arms)
      if (arm.method == ArmMethod::None) {
        c.baseline = arm.name;
        break;
      }
    if (c.baseline.empty()) c.baseline = c.arms.front().name;
  } else if (std::none_of(c.arms.begin(), c.arms.end(), [&](const ArmConfig& a) { return a.name == c.baseline; })) {
    top.fail("baseline", fmt::format("\"{}\" is not the name of an arm", c.baseline));
  }
  return c;
}

StudyConfig parse_study_config(std::string_view text, bool toml, const fs::path& file) {
  return study_config_from_json(toml ? parse_toml(text, file) : parse_json(text, file), file);
}

StudyConfig read_study_config(const fs::path& file) {
  const std::string ext = file.extension().string();
  if (ext == ".toml" || ext == ".json") return parse_study_config(read_text(file), ext == ".toml", file);
  throw InvalidArgumentError(
      fmt::format("study configuration {}: unknown extension \"{}\"; use .toml or .json", file.string(), ext));
}

}  // namespace lathe::study
