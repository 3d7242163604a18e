#include "lathe/model_info.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "api/model_info_detail.hpp"
#include "arch/hparams.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace lathe {

uint64_t ModelInfo::n_parameters() const {
  uint64_t n = 0;
  for (const auto& t : tensors) {
    uint64_t e = 1;
    for (auto d : t.shape) e *= d;
    n += e;
  }
  return n;
}

namespace {
bool routed_expert_tensor(const std::string& name) {
  return name.find("_exps") != std::string::npos || name.find(".experts.") != std::string::npos;
}
}  // namespace

uint64_t ModelInfo::n_active_parameters() const {
  double n = 0;
  for (const auto& t : tensors) {
    double e = 1;
    for (auto d : t.shape) e *= static_cast<double>(d);
    n += n_expert > 0 && routed_expert_tensor(t.name) ? e * n_expert_used / n_expert : e;
  }
  return static_cast<uint64_t>(n + 0.5);
}

uint64_t ModelInfo::active_tensor_bytes() const {
  double n = 0;
  for (const auto& t : tensors)
    n += n_expert > 0 && routed_expert_tensor(t.name) ? double(t.bytes) * n_expert_used / n_expert : double(t.bytes);
  return static_cast<uint64_t>(n + 0.5);
}

uint64_t ModelInfo::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.bytes;
  return n;
}

std::string ModelInfo::to_json(int indent) const {
  nlohmann::json j;
  j["path"] = path;
  j["format"] = format;
  j["format_version"] = format_version;
  j["files"] = files;
  j["file_bytes"] = file_bytes;
  j["name"] = name;
  j["architecture"] = architecture;
  j["architecture_supported"] = architecture_supported;
  if (!architecture_problem.empty()) j["architecture_problem"] = architecture_problem;
  if (architecture_supported) {
    j["hparams"] = {{"n_layer", n_layer},     {"n_embd", n_embd},       {"n_ff", n_ff},
                    {"n_head", n_head},       {"n_head_kv", n_head_kv}, {"head_dim", head_dim},
                    {"rope_dim", rope_dim},   {"n_vocab", n_vocab},     {"n_ctx_train", n_ctx_train},
                    {"rms_eps", rms_eps},     {"rope_freq_base", rope_freq_base},
                    {"tied_embeddings", tied_embeddings}, {"rope_scaling", rope_scaling}};
    if (n_expert > 0)
      j["hparams"].update({{"n_expert", n_expert}, {"n_expert_used", n_expert_used}, {"n_ff_exp", n_ff_exp},
                           {"n_ff_shexp", n_ff_shexp}});
  }
  auto& md = j["metadata"] = nlohmann::json::object();
  for (const auto& [k, v] : metadata) md[k] = v;
  const auto& t = tokenizer;
  nlohmann::json tok = {{"present", t.present}};
  if (t.present) {
    tok.update({{"source", t.source}, {"model", t.model}, {"pre", t.pre}, {"n_tokens", t.n_tokens},
                {"n_merges", t.n_merges}, {"n_added", t.n_added}, {"bos_token", t.bos_token},
                {"eos_token", t.eos_token}, {"has_chat_template", t.has_chat_template},
                {"chat_template_chars", t.chat_template_chars}});
    const auto opt = [&](const char* k, const std::optional<int64_t>& v) { tok[k] = v ? nlohmann::json(*v) : nullptr; };
    opt("bos_id", t.bos_id);
    opt("eos_id", t.eos_id);
    opt("unk_id", t.unk_id);
    opt("pad_id", t.pad_id);
    tok["add_bos"] = t.add_bos ? nlohmann::json(*t.add_bos) : nullptr;
    tok["add_eos"] = t.add_eos ? nlohmann::json(*t.add_eos) : nullptr;
  }
  j["tokenizer"] = tok;
  auto& tensors_json = j["tensors"] = nlohmann::json::array();
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // type -> (count, bytes)
  for (const auto& ts : tensors) {
    tensors_json.push_back({{"name", ts.name}, {"type", ts.type}, {"shape", ts.shape}, {"bytes", ts.bytes}, {"file", ts.file}});
    auto& [count, bytes] = by_type[ts.type];
    ++count;
    bytes += ts.bytes;
  }
  nlohmann::json types = nlohmann::json::object();
  for (const auto& [type, cb] : by_type) types[type] = {{"count", cb.first}, {"bytes", cb.second}};
  j["totals"] = {{"tensors", tensors.size()}, {"parameters", n_parameters()}, {"bytes", tensor_bytes()}, {"by_type", types}};
  if (n_expert > 0) {
    j["totals"]["active_parameters"] = n_active_parameters();
    j["totals"]["active_bytes"] = active_tensor_bytes();
  }
  return j.dump(indent);
}

namespace detail {

void fill_hparams(ModelInfo& info, const HParams& hp) {
  info.architecture_supported = true;
  info.n_layer = hp.n_layer;
  info.n_embd = hp.n_embd;
  info.n_ff = hp.n_ff;
  info.n_head = hp.n_head;
  info.n_head_kv = hp.n_head_kv;
  info.head_dim = hp.head_dim;
  info.rope_dim = hp.rope_dim;
  info.n_vocab = hp.n_vocab;
  info.n_ctx_train = hp.n_ctx_train;
  info.rms_eps = hp.rms_eps;
  info.rope_freq_base = hp.rope_freq_base;
  info.tied_embeddings = hp.tied_embeddings;
  if (hp.rope_scaling) info.rope_scaling = fmt::format("{} x{}", hp.rope_scaling->type, hp.rope_scaling->factor);
  info.n_expert = hp.n_expert;
  info.n_expert_used = hp.n_expert_used;
  info.n_ff_exp = hp.is_moe() ? hp.n_ff_exp : 0;
  info.n_ff_shexp = hp.n_ff_shexp;
}

namespace {

std::optional<int64_t> gguf_optional_id(const gguf::File& f, const char* key) {
  const auto* v = f.find(key);
  if (v == nullptr || !v->is_integer()) return std::nullopt;
  return v->as_i64(f.display_name() + ": " + key);
}

std::string token_text(const gguf::File& f, std::optional<int64_t> id) {
  const auto* tokens = f.find("tokenizer.ggml.tokens");
  if (!id || tokens == nullptr || tokens->type != gguf::ValueType::ARRAY) return "";
  const auto& items = std::get<gguf::Array>(tokens->data).items;
  if (*id < 0 || static_cast<uint64_t>(*id) >= items.size() || items[*id].type != gguf::ValueType::STRING) return "";
  return std::get<std::string>(items[*id].data);
}

TokenizerSummary gguf_tokenizer_summary(const gguf::File& f) {
  TokenizerSummary t;
  const auto* model = f.find("tokenizer.ggml.model");
  if (model == nullptr) return t;
  const std::string where = f.display_name() + ": ";
  t.present = true;
  t.source = "gguf metadata";
  t.model = model->as_string(where + "tokenizer.ggml.model");
  if (const auto* pre = f.find("tokenizer.ggml.pre")) t.pre = pre->as_string(where + "tokenizer.ggml.pre");
  if (const auto* tokens = f.find("tokenizer.ggml.tokens"))
    t.n_tokens = tokens->as_array(where + "tokenizer.ggml.tokens").items.size();
  if (const auto* merges = f.find("tokenizer.ggml.merges"))
    t.n_merges = merges->as_array(where + "tokenizer.ggml.merges").items.size();
  t.bos_id = gguf_optional_id(f, "tokenizer.ggml.bos_token_id");
  t.eos_id = gguf_optional_id(f, "tokenizer.ggml.eos_token_id");
  t.unk_id = gguf_optional_id(f, "tokenizer.ggml.unknown_token_id");
  t.pad_id = gguf_optional_id(f, "tokenizer.ggml.padding_token_id");
  t.bos_token = token_text(f, t.bos_id);
  t.eos_token = token_text(f, t.eos_id);
  if (const auto* v = f.find("tokenizer.ggml.add_bos_token")) t.add_bos = v->as_bool(where + "add_bos_token");
  if (const auto* v = f.find("tokenizer.ggml.add_eos_token")) t.add_eos = v->as_bool(where + "add_eos_token");
  if (const auto* tmpl = f.find("tokenizer.chat_template")) {
    t.has_chat_template = true;
    t.chat_template_chars = tmpl->as_string(where + "tokenizer.chat_template").size();
  }
  return t;
}

}  // namespace

ModelInfo inspect_gguf(const std::filesystem::path& path) {
  const auto file = gguf::File::open(path);
  ModelInfo info;
  info.path = path.string();
  info.format = "gguf";
  info.format_version = std::to_string(file.version());
  info.files = {path.filename().string()};
  info.file_bytes = file.file_size();
  for (const auto& [key, value] : file.metadata()) info.metadata.emplace_back(key, value.to_string(8));
  if (const auto* name = file.find("general.name"); name && name->type == gguf::ValueType::STRING)
    info.name = std::get<std::string>(name->data);
  if (const auto* arch = file.find("general.architecture"); arch && arch->type == gguf::ValueType::STRING)
    info.architecture = std::get<std::string>(arch->data);
  try {
    fill_hparams(info, hparams_from_gguf(file));
  } catch (const UnsupportedError& e) {
    info.architecture_problem = e.what();
  }
  info.tokenizer = gguf_tokenizer_summary(file);
  for (const auto& t : file.tensors())
    info.tensors.push_back({t.name, std::string(dtype_name(t.type)), t.shape, t.n_bytes, info.files[0]});
  return info;
}

}  // namespace detail

ModelInfo inspect_model(const std::string& path_or_hub_id) {
  const std::filesystem::path p(path_or_hub_id);
  if (std::filesystem::is_regular_file(p)) {
    if (p.extension() == ".safetensors") return detail::inspect_hf_dir(p.parent_path());
    return detail::inspect_gguf(p);
  }
  return detail::inspect_hf_dir(path_or_hub_id);
}

}  // namespace lathe
