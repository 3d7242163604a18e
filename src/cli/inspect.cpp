// lathe inspect MODEL [--json] [--metadata]: what a model file holds, without reading tensor data.
#include <fmt/format.h>

#include <map>
#include <memory>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "lathe/model_info.hpp"

namespace lathe::cli {
namespace {

struct InspectArgs {
  std::string model;
  bool json = false;
  bool metadata = false;
};

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_tokenizer(const TokenizerSummary& t) {
  if (!t.present) {
    fmt::print("tokenizer:       none\n");
    return;
  }
  const auto id = [](const std::optional<int64_t>& v) { return v ? std::to_string(*v) : std::string("-"); };
  fmt::print("tokenizer:       {} (pre: {}), {} tokens, {} merges, {} added  [{}]\n", t.model, t.pre.empty() ? "-" : t.pre,
             t.n_tokens, t.n_merges, t.n_added, t.source);
  fmt::print("special tokens:  bos {} '{}', eos {} '{}', unk {}, pad {}; add_bos {}, add_eos {}\n", id(t.bos_id),
             t.bos_token, id(t.eos_id), t.eos_token, id(t.unk_id), id(t.pad_id),
             t.add_bos ? (*t.add_bos ? "yes" : "no") : "-", t.add_eos ? (*t.add_eos ? "yes" : "no") : "-");
  fmt::print("chat template:   {}\n", t.has_chat_template ? fmt::format("yes ({} chars)", t.chat_template_chars) : "no");
}

void print_text(const ModelInfo& m, bool show_metadata) {
  fmt::print("file:            {} ({}{}, {})\n", m.path, m.format, m.format_version.empty() ? "" : " v" + m.format_version,
             human_bytes(m.file_bytes));
  if (m.files.size() > 1) fmt::print("shards:          {}\n", m.files.size());
  if (!m.name.empty()) fmt::print("name:            {}\n", m.name);
  fmt::print("architecture:    {}\n", m.architecture.empty() ? "(not stated)" : m.architecture);
  if (m.architecture_supported) {
    fmt::print("layers:          {}\n", m.n_layer);
    fmt::print("embedding:       {}\n", m.n_embd);
    fmt::print("feed-forward:    {}\n", m.n_ff);
    if (m.n_expert > 0)
      fmt::print("experts:         {} per layer, {} per token (width {}{})\n", m.n_expert, m.n_expert_used, m.n_ff_exp,
                 m.n_ff_shexp > 0 ? fmt::format("; shared expert width {}", m.n_ff_shexp) : "");
    fmt::print("heads:           {} (kv {}, head dim {}, rope dim {})\n", m.n_head, m.n_head_kv, m.head_dim, m.rope_dim);
    fmt::print("vocab:           {}\n", m.n_vocab);
    fmt::print("context (train): {}\n", m.n_ctx_train);
    fmt::print("rms eps:         {:g}\n", m.rms_eps);
    fmt::print("rope base:       {:g}{}\n", m.rope_freq_base, m.rope_scaling.empty() ? "" : ", scaling " + m.rope_scaling);
    fmt::print("tied embeddings: {}\n", m.tied_embeddings ? "yes" : "no");
  } else {
    fmt::print("hyper-params:    unavailable: {}\n", m.architecture_problem);
  }
  print_tokenizer(m.tokenizer);
  if (show_metadata) {
    fmt::print("\nmetadata ({} keys):\n", m.metadata.size());
    for (const auto& [k, v] : m.metadata) fmt::print("  {:<44} {}\n", k, v);
  }

  size_t name_width = 4;
  for (const auto& t : m.tensors) name_width = std::max(name_width, t.name.size());
  fmt::print("\ntensors ({}, shapes in {} order):\n", m.tensors.size(),
             m.format == "gguf" ? "GGUF (innermost first)" : "safetensors (outermost first)");
  fmt::print("  {:<{}}  {:<6} {:<18} {:>12}\n", "name", name_width, "type", "shape", "bytes");
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;
  for (const auto& t : m.tensors) {
    fmt::print("  {:<{}}  {:<6} {:<18} {:>12}\n", t.name, name_width, t.type, shape_text(t.shape), t.bytes);
    auto& [count, bytes] = by_type[t.type];
    ++count;
    bytes += t.bytes;
  }
  fmt::print("\ntotals:          {} tensors, {} parameters, {}\n", m.tensors.size(), human_count(m.n_parameters()),
             human_bytes(m.tensor_bytes()));
  if (m.n_expert > 0)
    fmt::print("active per token: {} parameters, {} of weights read\n", human_count(m.n_active_parameters()),
               human_bytes(m.active_tensor_bytes()));
  for (const auto& [type, cb] : by_type)
    fmt::print("  {:<6} {:>5} tensors  {:>10}\n", type, cb.first, human_bytes(cb.second));
}

}  // namespace

Runner add_inspect(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  auto* cmd = app.add_subcommand("inspect", "Show a model's architecture, hyper-parameters, tokenizer and tensors");
  cmd->add_option("model", args->model, "GGUF file, model directory, or Hugging Face cache id (org/name)")->required();
  cmd->add_flag("--json", args->json, "Print machine-readable JSON");
  cmd->add_flag("--metadata", args->metadata, "Also list every metadata key (GGUF) or config.json field");
  return [args] {
    const ModelInfo info = inspect_model(args->model);
    if (args->json) {
      fmt::print("{}\n", info.to_json());
    } else {
      print_text(info, args->metadata);
    }
    return 0;
  };
}

}  // namespace lathe::cli
