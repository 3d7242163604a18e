#include "study/runner.hpp"

#include <fmt/format.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <set>

#include "api/model_impl.hpp"
#include "edit/sae.hpp"
#include "io/fingerprint.hpp"
#include "lathe/error.hpp"
#include "lathe/hooks.hpp"
#include "lathe/lathe.hpp"
#include "train/dataset.hpp"
#include "train/evaluate.hpp"
#include "train/sae_select.hpp"
#include "train/unlearn.hpp"
#include "weights/lora.hpp"

namespace lathe::study {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Ctrl-C between runs or training steps: the finished runs are in the journal.
InvalidArgumentError interrupted() {
  return InvalidArgumentError("interrupted: every finished run is in the journal; run the same command again to resume");
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The study's loaded inputs, shared by every run.
struct Inputs {
  std::shared_ptr<Model> model;  // the study's model, adapters of `lora` merged
  train::DataSet forget, retain;  // [train]
  std::vector<train::DataSet> evals;
  ComputeOptions compute;
};

train::DataOptions data_options(const StudyConfig& c) {
  return {.pair_format = c.raw ? train::PairFormat::Raw : train::PairFormat::Auto,
          .system = c.system,
          .max_tokens = static_cast<uint32_t>(c.max_length),
          .limit = 0};
}

std::vector<LoraSpec> base_loras(const StudyConfig& c) {
  std::vector<LoraSpec> out;
  for (const auto& path : c.loras) {
    if (!fs::is_regular_file(path))
      throw NotFoundError(fmt::format("study configuration {}: lora {}: no such adapter file", c.file.string(), path.string()));
    out.push_back({path, 1.0f});
  }
  return out;
}

Inputs load_inputs(const StudyConfig& c, const RunOptions& o) {
  Inputs in;
  in.compute.n_threads = o.n_threads;
  in.model = Model::load_mutable(c.model, {.loras = base_loras(c)});
  const auto options = data_options(c);
  // The data readers speak of `lathe finetune`'s flags; here the same settings are keys.
  const auto read = [&](const fs::path& file, const std::string& what) {
    try {
      return train::read_training_data(*in.model, file, options);
    } catch (const InvalidArgumentError& e) {
      throw InvalidArgumentError(fmt::format("study configuration {}: {}: {} (in a study, --max-length is the "
                                             "max_length key and --raw the raw key)",
                                             c.file.string(), what, e.what()));
    }
  };
  if (!c.train_forget.empty()) in.forget = read(c.train_forget, "[train] forget");
  if (!c.train_retain.empty()) in.retain = read(c.train_retain, "[train] retain");
  for (const auto& set : c.evals) in.evals.push_back(read(set.file, fmt::format("eval set {}", set.name)));
  return in;
}

// What identifies the study: the model and adapters, every data file, the data settings. A
// journal whose header differs belongs to another study.
json study_header(const StudyConfig& c) {
  json h;
  h["lathe_study"] = 1;
  h["model"] = model_fingerprint(c.model);
  json loras = json::array();
  for (const auto& l : c.loras) loras.push_back(file_fingerprint(l));
  h["lora"] = loras;
  h["train_forget"] = c.train_forget.empty() ? "" : file_fingerprint(c.train_forget);
  h["train_retain"] = c.train_retain.empty() ? "" : file_fingerprint(c.train_retain);
  json evals = json::object();
  for (const auto& e : c.evals) evals[e.name] = file_fingerprint(e.file);
  h["eval"] = evals;
  h["data"] = {{"raw", c.raw}, {"system", c.system}, {"max_length", c.max_length}};
  return h;
}

std::vector<std::string> header_differences(const json& a, const json& b) {
  std::vector<std::string> out;
  std::set<std::string> keys;
  for (const auto& [k, _] : a.items()) keys.insert(k);
  for (const auto& [k, _] : b.items()) keys.insert(k);
  for (const auto& k : keys)
    if (!a.contains(k) || !b.contains(k) || a[k] != b[k]) out.push_back(k);
  return out;
}

// The journal: a header line, then one line per finished run (ok or failed), each flushed and
// synced before the next run starts, so a crash loses at most the run in progress.
class Journal {
 public:
  Journal(const fs::path& path, const json& header, bool restart) : path_(path) {
    if (!restart && fs::exists(path)) read_existing(header);
    if (restart || !fs::exists(path)) {
      std::ofstream out(path, std::ios::trunc);
      if (!out) throw IoError(fmt::format("{}: cannot create the study journal; check the directory", path.string()));
      out << header.dump() << "\n";
      if (!out.flush()) throw IoError(fmt::format("{}: cannot write the study journal", path.string()));
      results_.clear();
    }
  }
  // The finished result of `arm` (as configured now) and `seed`, if the journal has one.
  const RunResult* find(const ArmConfig& arm, uint64_t seed) const {
    for (const auto& [line, result] : results_)
      if (result.arm == arm.name && result.seed == seed && result.ok && line.value("arm_config", json()) == arm.source)
        return &result;
    return nullptr;
  }
  void append(const RunResult& result, const ArmConfig& arm) {
    json line = to_json(result);
    line["arm_config"] = arm.source;
    std::ofstream out(path_, std::ios::app);
    out << line.dump() << "\n";
    if (!out.flush()) throw IoError(fmt::format("{}: cannot append to the study journal (disk full?)", path_.string()));
    out.close();
    sync();
  }

 private:
  void read_existing(const json& header) {
    std::ifstream in(path_);
    std::string text;
    size_t line_no = 0;
    while (std::getline(in, text)) {
      ++line_no;
      if (text.empty()) continue;
      json line;
      try {
        line = json::parse(text);
      } catch (const json::exception&) {  // cut mid-write, or a number out of range
        if (line_no == 1)
          throw InvalidArgumentError(fmt::format("{} does not start with a study journal's header; give another "
                                                 "output directory, or --restart to discard it",
                                                 path_.string()));
        continue;  // a line cut by a crash mid-write: the run it held is redone
      }
      if (line_no == 1) {
        const auto diff = header_differences(line, header);
        if (!diff.empty())
          throw InvalidArgumentError(fmt::format(
              "{} is the journal of another study (it differs in: {}); give another output directory, or --restart "
              "to discard it",
              path_.string(), fmt::join(diff, ", ")));
        continue;
      }
      results_.emplace_back(line, run_result_from_json(line, fmt::format("{} line {}", path_.string(), line_no)));
    }
  }
  void sync() const {
    const int fd = ::open(path_.c_str(), O_RDONLY);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }
  fs::path path_;
  std::vector<std::pair<json, RunResult>> results_;
};

SetResult to_set_result(const train::SetScore& score) {
  SetResult r;
  for (const auto& e : score.examples) {
    r.probability.push_back(e.probability());
    r.logprob.push_back(e.logprob);
    r.correct.push_back(static_cast<uint32_t>(e.correct));
    r.scored.push_back(static_cast<uint32_t>(e.scored));
  }
  return r;
}

train::UnlearnOptions unlearn_options(const ArmConfig& arm, uint64_t seed, size_t n_forget, int n_threads) {
  train::UnlearnOptions u;
  u.train.targets = arm.targets;
  u.train.rank = arm.rank;
  u.train.alpha = arm.lora_alpha;
  u.train.adamw = {.lr = arm.lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = arm.weight_decay};
  u.train.steps = arm.steps > 0 ? arm.steps
                                : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(arm.epochs * static_cast<double>(n_forget))));
  u.train.warmup_steps = arm.warmup;
  u.train.max_grad_norm = arm.max_grad_norm;
  u.train.seed = seed;
  u.train.n_threads = n_threads;
  u.objective = arm.objective == "graddiff"     ? train::Objective::GradDiff
                : arm.objective == "gradascent" ? train::Objective::GradAscent
                : arm.objective == "simnpo"     ? train::Objective::SimNpo
                                                : train::Objective::Npo;
  u.retain_loss = arm.retain_loss == "kl" ? train::RetainLoss::Kl : train::RetainLoss::Nll;
  u.beta = arm.beta;
  u.gamma = arm.gamma;
  u.alpha = arm.alpha_retain;
  u.delta = arm.delta;
  return u;
}

// Scores every eval set with `model` (and `hooks`), into `result`.
void evaluate(const std::shared_ptr<const Model>& model, const Inputs& in, const StudyConfig& c,
              const std::shared_ptr<ResidualHooks>& hooks, RunResult& result) {
  for (size_t i = 0; i < c.evals.size(); ++i)
    result.sets[c.evals[i].name] = to_set_result(train::score_examples(model, in.evals[i].examples, in.compute, {}, hooks));
}

// Unlearning: the adapter trained on the study's model, written to OUT/adapters/ARM-seedS.gguf,
// then the model loaded again with the study's adapters and this one merged, and scored.
void run_unlearn(const ArmConfig& arm, uint64_t seed, const Inputs& in, const StudyConfig& c, const RunOptions& o,
                 RunResult& result) {
  if (in.forget.examples.empty()) throw InvalidArgumentError("[train] forget has no examples");
  const auto options = unlearn_options(arm, seed, in.forget.examples.size(), o.n_threads);
  const auto& weights = internals(*in.model).weights;
  train::UnlearnRun run(weights, in.forget.examples, in.retain.examples, options);
  train::UnlearnStep last;
  const auto start = Clock::now();
  while (!run.done()) {
    if (o.stop && o.stop->load()) throw interrupted();
    last = run.step();
    if (o.log && (last.step % 10 == 0 || run.done()))
      o.log(fmt::format("  {} seed {}: step {}/{} forget {:.4f} retain {:.4f} [{:.0f} s]", arm.name, seed, last.step,
                        options.train.steps, last.forget_loss, last.retain_loss, seconds_since(start)));
  }
  result.train = {{"steps", options.train.steps},      {"forget_loss", last.forget_loss},
                  {"retain_loss", last.retain_loss},   {"grad_norm", last.grad_norm},
                  {"seconds", seconds_since(start)}};
  const fs::path adapter = o.out / "adapters" / fmt::format("{}-seed{}.gguf", arm.name, seed);
  write_lora_adapter(train::to_adapter(run.lora(), weights), adapter,
                     fmt::format("lathe study arm {} seed {}", arm.name, seed), {{"lathe.train.kind", "unlearn"}});
  auto loras = base_loras(c);
  loras.push_back({adapter, 1.0f});
  const auto edited = Model::load(c.model, {.loras = loras});
  evaluate(edited, in, c, nullptr, result);
}

// Runs `examples` with `hooks` attached only over the positions that predict an answer token.
// The mean residual at `site` over the positions that predict an answer token (targets >= 0).
std::vector<double> mean_answer_residual(const std::shared_ptr<const Model>& model,
                                         const std::vector<train::Example>& examples, HookSite site,
                                         const ComputeOptions& compute) {
  auto capture = std::make_shared<ResidualHooks>();
  const size_t id = capture->capture(site, CaptureRows::All);
  train::run_answer_positions(model, examples, capture, compute);
  return capture->captured(id).mean();
}

// Abliteration-style projection: d = the mean residual at blocks.{layer}.resid_post over the
// forget set's answer positions minus the retain set's, projected out of the residual stream
// entering every block and leaving it (as abliteration's weight edit removes it from everything
// written to the stream).
void run_projection(const ArmConfig& arm, const Inputs& in, const StudyConfig& c, RunResult& result) {
  if (in.forget.examples.empty() || in.retain.examples.empty())
    throw InvalidArgumentError("a projection arm needs [train] forget and retain sets");
  const uint32_t n_layer = in.model->summary().n_layer;
  const uint32_t layer = arm.layer < 0 ? n_layer / 2 : static_cast<uint32_t>(arm.layer);
  if (layer >= n_layer)
    throw InvalidArgumentError(fmt::format("layer {} is past the model's last layer ({})", layer, n_layer - 1));
  const HookSite site{HookPoint::ResidPost, layer};
  const auto forget = mean_answer_residual(in.model, in.forget.examples, site, in.compute);
  const auto retain = mean_answer_residual(in.model, in.retain.examples, site, in.compute);
  std::vector<float> direction(forget.size());
  double norm = 0;
  for (size_t i = 0; i < direction.size(); ++i) {
    direction[i] = static_cast<float>(forget[i] - retain[i]);
    norm += double(direction[i]) * direction[i];
  }
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->project_out({HookPoint::ResidPre, 0}, direction);
  for (uint32_t l = 0; l < n_layer; ++l) hooks->project_out({HookPoint::ResidPost, l}, direction);
  result.train = {{"layer", layer}, {"direction_norm", std::sqrt(norm)}};
  evaluate(in.model, in, c, hooks, result);
}

// An SAE feature gate at the SAE's hook point (or the arm's), as `lathe run --sae` applies it,
// on the features given or on those selected from the [train] sets (computed once per run).
void run_sae_gate(const ArmConfig& arm, const Inputs& in, const StudyConfig& c, RunResult& result) {
  const std::string where = fmt::format("arm {}", arm.name);
  auto sae = std::make_shared<const edit::Sae>(edit::load_sae(arm.sae));
  const std::string hook = arm.sae_hook.empty() ? sae->hook_name : arm.sae_hook;
  if (hook.empty())
    throw InvalidArgumentError(fmt::format("{}: {} names no hook point; give hook = \"blocks.N.hook_resid_post\"",
                                           where, sae->describe()));
  const HookSite site = edit::sae_hook_site(hook, where + " hook");
  const auto& s = in.model->summary();
  edit::check_sae_fits(*sae, site, s.n_layer, s.n_embd);
  std::vector<edit::SaeFeatureEdit> edits;
  result.train = {{"sae", sae->describe()}, {"hook", site.name()}};
  if (arm.sae_select > 0) {
    if (in.forget.examples.empty() || in.retain.examples.empty())
      throw InvalidArgumentError("select needs [train] forget and retain sets to compare");
    const edit::SaeFeatureEdit edit{.id = 0, .kind = edit::SaeFeatureEdit::Kind::Set,
                                    .value = static_cast<float>(arm.sae_value)};
    const train::FeatureSelectOptions options{.by = arm.sae_select_by,
                                              .count = arm.sae_select,
                                              .edit = edit,
                                              .gate = {.clamp_everywhere = arm.sae_clamp_everywhere},
                                              .rows = train::FeatureSelectOptions::Rows::Answers,
                                              .compute = in.compute,
                                              .on_progress = {}};
    json selected = json::array();
    for (const auto& f : train::select_sae_features(in.model, sae, site, in.forget.examples, in.retain.examples, options)) {
      edits.push_back({.id = f.id, .kind = edit.kind, .value = edit.value});
      selected.push_back({{"feature", f.id}, {"forget_minus_retain", f.score}, {"forget", f.forget}, {"retain", f.retain}});
    }
    result.train["selected"] = selected;
    result.train["selected_by"] = train::feature_criterion_name(arm.sae_select_by);
  } else {
    edits = edit::parse_sae_features(arm.sae_features, where + " features");
    edit::check_sae_features(edits, sae->d_sae, where + " features");
  }
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->transform(site, std::make_shared<edit::SaeGate>(sae, std::move(edits),
                                                         edit::SaeGateOptions{.clamp_everywhere = arm.sae_clamp_everywhere}));
  evaluate(in.model, in, c, hooks, result);
}

RunResult run_one(const ArmConfig& arm, uint64_t seed, const Inputs& in, const StudyConfig& c, const RunOptions& o) {
  RunResult result;
  result.arm = arm.name;
  result.seed = seed;
  const auto start = Clock::now();
  try {
    switch (arm.method) {
      case ArmMethod::None: evaluate(in.model, in, c, nullptr, result); break;
      case ArmMethod::Unlearn: run_unlearn(arm, seed, in, c, o, result); break;
      case ArmMethod::Projection: run_projection(arm, in, c, result); break;
      case ArmMethod::SaeGate: run_sae_gate(arm, in, c, result); break;
    }
    result.ok = true;
  } catch (const OutOfMemoryError&) {
    throw;  // the next run would fail the same way
  } catch (const std::exception& e) {
    result.ok = false;
    result.error = e.what();
    result.sets.clear();
  }
  result.seconds = seconds_since(start);
  return result;
}

// Arms of methods that do not depend on the seed (none, projection, sae) run once: the result of an
// earlier seed of the same arm, if one succeeded.
const RunResult* seedless_result(const ArmConfig& arm, const std::vector<RunResult>& results) {
  if (arm.method == ArmMethod::Unlearn) return nullptr;
  for (const auto& r : results)
    if (r.arm == arm.name && r.ok) return &r;
  return nullptr;
}

json set_to_json(const SetResult& s) {
  return {{"probability", s.probability}, {"logprob", s.logprob}, {"correct", s.correct}, {"scored", s.scored}};
}

SetResult set_from_json(const json& j, const std::string& where) {
  SetResult s;
  try {
    s.probability = j.at("probability").get<std::vector<double>>();
    s.logprob = j.at("logprob").get<std::vector<double>>();
    s.correct = j.at("correct").get<std::vector<uint32_t>>();
    s.scored = j.at("scored").get<std::vector<uint32_t>>();
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: a set's scores are malformed ({}); rerun with --restart", where, e.what()));
  }
  const size_t n = s.probability.size();
  if (s.logprob.size() != n || s.correct.size() != n || s.scored.size() != n)
    throw FormatError(fmt::format("{}: a set's score arrays differ in length; rerun with --restart", where));
  return s;
}

}  // namespace

double SetResult::mean_probability() const {
  double sum = 0;
  for (double p : probability) sum += p;
  return probability.empty() ? 0.0 : sum / static_cast<double>(probability.size());
}

double SetResult::token_accuracy() const {
  uint64_t c = 0, n = 0;
  for (size_t i = 0; i < scored.size(); ++i) c += correct[i], n += scored[i];
  return n ? static_cast<double>(c) / static_cast<double>(n) : 0.0;
}

double SetResult::exact_match() const {
  size_t exact = 0;
  for (size_t i = 0; i < scored.size(); ++i) exact += scored[i] > 0 && correct[i] == scored[i];
  return scored.empty() ? 0.0 : static_cast<double>(exact) / static_cast<double>(scored.size());
}

double SetResult::perplexity() const {
  double lp = 0;
  uint64_t n = 0;
  for (size_t i = 0; i < scored.size(); ++i) lp += logprob[i], n += scored[i];
  return n ? std::exp(-lp / static_cast<double>(n)) : 0.0;
}

json to_json(const RunResult& r) {
  json j = {{"arm", r.arm}, {"seed", r.seed}, {"status", r.ok ? "ok" : "failed"}, {"seconds", r.seconds}};
  if (!r.ok) j["error"] = r.error;
  json sets = json::object();
  for (const auto& [name, s] : r.sets) sets[name] = set_to_json(s);
  j["sets"] = sets;
  if (!r.train.is_null()) j["train"] = r.train;
  return j;
}

RunResult run_result_from_json(const json& line, const std::string& where) {
  RunResult r;
  try {
    r.arm = line.at("arm").get<std::string>();
    r.seed = line.at("seed").get<uint64_t>();
    r.ok = line.at("status").get<std::string>() == "ok";
    r.error = line.value("error", "");
    r.seconds = line.value("seconds", 0.0);
    for (const auto& [name, s] : line.at("sets").items()) r.sets[name] = set_from_json(s, where);
    if (line.contains("train")) r.train = line["train"];
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not a study result ({}); rerun with --restart", where, e.what()));
  }
  return r;
}

std::vector<RunResult> run_study(const StudyConfig& config, const RunOptions& options) {
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  std::error_code ec;
  fs::create_directories(options.out / "adapters", ec);
  if (ec) throw IoError(fmt::format("{}: cannot create the study directory: {}", options.out.string(), ec.message()));
  Journal journal(options.out / "journal.jsonl", study_header(config), options.restart);
  const auto t = Clock::now();
  const Inputs inputs = load_inputs(config, options);
  log(fmt::format("model {} and {} data set(s) loaded [{:.1f} s]", config.model.string(), 2 + config.evals.size(),
                  seconds_since(t)));
  std::vector<RunResult> results;
  const size_t total = config.arms.size() * config.seeds.size();
  for (const auto& arm : config.arms)
    for (const uint64_t seed : config.seeds) {
      if (const RunResult* done = journal.find(arm, seed)) {
        results.push_back(*done);
        log(fmt::format("[{}/{}] {} seed {}: from the journal", results.size(), total, arm.name, seed));
        continue;
      }
      if (options.stop && options.stop->load()) throw interrupted();
      if (const RunResult* same = seedless_result(arm, results)) {
        RunResult copy = *same;
        copy.seed = seed;
        copy.seconds = 0;
        copy.train["same_as_seed"] = same->seed;
        journal.append(copy, arm);
        log(fmt::format("[{}/{}] {} seed {}: the same as seed {} ({} does not depend on the seed)", results.size() + 1,
                        total, arm.name, seed, same->seed, arm_method_name(arm.method)));
        results.push_back(std::move(copy));
        continue;
      }
      log(fmt::format("[{}/{}] {} seed {} ({})", results.size() + 1, total, arm.name, seed, arm_method_name(arm.method)));
      RunResult result = run_one(arm, seed, inputs, config, options);
      if (options.stop && options.stop->load() && !result.ok) throw interrupted();
      journal.append(result, arm);
      log(result.ok ? fmt::format("  done in {:.1f} s", result.seconds)
                    : fmt::format("  FAILED after {:.1f} s: {}", result.seconds, result.error));
      results.push_back(std::move(result));
    }
  return results;
}

}  // namespace lathe::study
