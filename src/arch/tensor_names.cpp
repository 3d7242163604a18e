#include "arch/tensor_names.hpp"

#include <array>
#include <charconv>
#include <fmt/format.h>
#include <vector>

#include "lathe/error.hpp"

namespace lathe {
namespace {

struct NamePair {
  std::string_view gguf;  // suffix after "blk.{i}." for per-layer tensors, whole name otherwise
  std::string_view hf;    // suffix after "model.layers.{i}." / whole name
};

// Global tensors (same for every architecture we support).
constexpr std::array<NamePair, 3> kGlobal{{
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
}};

// Per-layer tensors of the Llama family; Qwen2 adds q/k/v biases, Qwen3 q/k norms, Phi-3 fuses.
constexpr std::array<NamePair, 17> kLayer{{
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"attn_qkv.weight", "self_attn.qkv_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"ffn_up_gate.weight", "mlp.gate_up_proj.weight"},
}};

// Phi-3 stores the fused gate+up projection as ffn_up in GGUF.
std::string_view layer_gguf_suffix(Arch arch, std::string_view gguf) {
  if (arch == Arch::Phi3 && gguf == "ffn_up_gate.weight") return "ffn_up.weight";
  return gguf;
}

// Splits "<prefix><digits>.<rest>" into layer index and rest.
std::optional<std::pair<uint32_t, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  const auto dot = name.find('.');
  if (dot == std::string_view::npos || dot == 0) return std::nullopt;
  uint32_t layer = 0;
  const auto [ptr, ec] = std::from_chars(name.data(), name.data() + dot, layer);
  if (ec != std::errc{} || ptr != name.data() + dot) return std::nullopt;
  return std::pair{layer, name.substr(dot + 1)};
}

// Mixtures of experts. GGUF stacks each layer's experts in one tensor per matrix
// (blk.{i}.ffn_gate_exps.weight: [n_expert, n_ff_exp, n_embd]); Hugging Face checkpoints keep one
// tensor per expert, which lathe names blk.{i}.ffn_gate_exps.{e}.weight, or (transformers' fused
// layout) one gate_up and one down tensor per layer. Mixtral's files say block_sparse_moe and
// w1 (gate), w3 (up), w2 (down).
struct ExpertName {
  std::string_view gguf;        // after "blk.{i}."
  std::string_view hf;          // after "model.layers.{i}.mlp."
  std::string_view hf_mixtral;  // after "model.layers.{i}.block_sparse_moe."; empty: none
};
constexpr std::array<ExpertName, 7> kMoeLayer{{
    {"ffn_gate_inp.weight", "gate.weight", "gate.weight"},
    {"ffn_gate_shexp.weight", "shared_expert.gate_proj.weight", ""},
    {"ffn_up_shexp.weight", "shared_expert.up_proj.weight", ""},
    {"ffn_down_shexp.weight", "shared_expert.down_proj.weight", ""},
    {"ffn_gate_inp_shexp.weight", "shared_expert_gate.weight", ""},
    {"ffn_gate_up_exps.weight", "experts.gate_up_proj", "experts.gate_up_proj"},
    {"ffn_down_exps.weight", "experts.down_proj", "experts.down_proj"},
}};
constexpr std::array<ExpertName, 3> kExpert{{
    {"ffn_gate_exps", "gate_proj.weight", "w1.weight"},
    {"ffn_up_exps", "up_proj.weight", "w3.weight"},
    {"ffn_down_exps", "down_proj.weight", "w2.weight"},
}};

bool is_moe_arch(Arch arch) { return arch == Arch::Qwen2Moe || arch == Arch::Qwen3Moe || arch == Arch::Olmoe; }

// "blk.{i}.<rest>" of an expert tensor -> its Hugging Face name (Llama: Mixtral's names).
std::optional<std::string> expert_hf_name(Arch arch, uint32_t layer, std::string_view rest) {
  if (arch != Arch::Llama && !is_moe_arch(arch)) return std::nullopt;
  const bool mixtral = arch == Arch::Llama;
  const std::string block = fmt::format("model.layers.{}.{}.", layer, mixtral ? "block_sparse_moe" : "mlp");
  for (const auto& p : kMoeLayer) {
    if (p.gguf != rest) continue;
    const auto hf = mixtral ? p.hf_mixtral : p.hf;
    if (hf.empty()) return std::nullopt;
    return block + std::string(hf);
  }
  // blk.{i}.ffn_gate_exps.{e}.weight
  for (const auto& p : kExpert) {
    if (!rest.starts_with(p.gguf) || rest.size() <= p.gguf.size() + 1 || rest[p.gguf.size()] != '.') continue;
    std::string_view tail = rest.substr(p.gguf.size() + 1);
    const auto dot = tail.find('.');
    if (dot == std::string_view::npos || tail.substr(dot) != ".weight") continue;
    uint32_t expert = 0;
    const auto [ptr, ec] = std::from_chars(tail.data(), tail.data() + dot, expert);
    if (ec != std::errc{} || ptr != tail.data() + dot) continue;
    return fmt::format("{}experts.{}.{}", block, expert, mixtral ? p.hf_mixtral : p.hf);
  }
  return std::nullopt;
}

}  // namespace

std::string expert_tensor_name(uint32_t layer, std::string_view stacked, uint32_t expert) {
  return fmt::format("blk.{}.{}.{}.weight", layer, stacked, expert);
}

std::optional<std::string> hf_to_canonical_name(Arch arch, std::string_view hf_name) {
  for (const auto& p : kGlobal)
    if (p.hf == hf_name) return std::string(p.gguf);
  if (auto layer = split_layer(hf_name, "model.layers.")) {
    for (const auto& p : kLayer) {
      if (p.hf != layer->second) continue;
      if (arch == Arch::Phi3 && p.gguf == "ffn_up.weight") continue;  // Phi-3 has no separate up
      return fmt::format("blk.{}.{}", layer->first, layer_gguf_suffix(arch, p.gguf));
    }
  }
  return std::nullopt;
}

std::optional<std::string> canonical_to_hf_name(Arch arch, std::string_view canonical_name) {
  for (const auto& p : kGlobal)
    if (p.gguf == canonical_name) return std::string(p.hf);
  if (auto layer = split_layer(canonical_name, "blk.")) {
    if (auto expert = expert_hf_name(arch, layer->first, layer->second)) return expert;
    for (const auto& p : kLayer) {
      if (layer_gguf_suffix(arch, p.gguf) != layer->second) continue;
      if (arch == Arch::Phi3 && p.gguf == "ffn_up.weight") continue;
      return fmt::format("model.layers.{}.{}", layer->first, p.hf);
    }
  }
  return std::nullopt;
}

std::optional<uint32_t> qk_permute_heads(const HParams& hp, std::string_view canonical_name) {
  if (hp.arch != Arch::Llama) return std::nullopt;  // qwen*/phi3/olmoe GGUFs keep HF's NeoX layout
  const auto layer = split_layer(canonical_name, "blk.");
  if (!layer) return std::nullopt;
  if (layer->second == "attn_q.weight" || layer->second == "attn_q.bias") return hp.n_head;
  if (layer->second == "attn_k.weight" || layer->second == "attn_k.bias") return hp.n_head_kv;
  return std::nullopt;
}

namespace {

// Within each head of R rows: HF keeps the two rotated halves [0, R/2) and [R/2, R); GGUF
// interleaves them (row 2j from the first half, row 2j+1 from the second).
void permute_rows(std::span<float> matrix, uint64_t rows, uint64_t cols, uint32_t n_heads, bool to_gguf) {
  if (n_heads == 0 || rows % (2ull * n_heads) != 0 || matrix.size() != rows * cols)
    throw InvalidArgumentError(fmt::format("cannot reorder Q/K rows: {} rows x {} cols do not split into {} heads of "
                                           "an even number of rows (matrix holds {} values)",
                                           rows, cols, n_heads, matrix.size()));
  const uint64_t head_rows = rows / n_heads, half = head_rows / 2;
  std::vector<float> head(head_rows * cols);
  for (uint32_t h = 0; h < n_heads; ++h) {
    float* base = matrix.data() + h * head_rows * cols;
    std::copy(base, base + head_rows * cols, head.begin());
    for (uint64_t j = 0; j < half; ++j) {
      for (uint64_t part = 0; part < 2; ++part) {
        const uint64_t hf_row = part * half + j, gguf_row = 2 * j + part;
        const uint64_t from = to_gguf ? hf_row : gguf_row, to = to_gguf ? gguf_row : hf_row;
        std::copy(head.begin() + from * cols, head.begin() + (from + 1) * cols, base + to * cols);
      }
    }
  }
}

}  // namespace

void permute_qk_rows_gguf_from_hf(std::span<float> matrix, uint64_t rows, uint64_t cols, uint32_t n_heads) {
  permute_rows(matrix, rows, cols, n_heads, true);
}
void permute_qk_rows_hf_from_gguf(std::span<float> matrix, uint64_t rows, uint64_t cols, uint32_t n_heads) {
  permute_rows(matrix, rows, cols, n_heads, false);
}

}  // namespace lathe
