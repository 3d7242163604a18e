// Tiny synthetic mixture-of-experts GGUFs (2 layers, 64-wide, 8 experts of width 32, random
// weights, the tiny llama's 31-token vocabulary, every id a token) of every MoE architecture lathe runs, laid out
// as llama.cpp's converter writes them: stacked expert tensors ffn_{gate,up,down}_exps, the router
// ffn_gate_inp, qwen2moe's shared expert (*_shexp) and its gate vector, qwen2moe's Q/K/V biases,
// qwen3moe's per-head and olmoe's whole-projection Q/K norms. "llama" is Mixtral's layout.
#pragma once

#include <string>

#include "common/tiny_model.hpp"

namespace lathe::test {

inline constexpr uint32_t kMoeExperts = 8, kMoeFf = 32, kMoeSharedFf = 64;

inline std::filesystem::path write_tiny_moe(const TempDir& dir, const std::string& arch,
                                            DType matrix_type = DType::F32, const std::string& name = "",
                                            uint32_t layers = kLayers) {
  TinyModel m{TinyModel::Empty{}};
  m.rng.seed(11);
  const bool olmoe = arch == "olmoe", qwen2moe = arch == "qwen2moe", qwen3moe = arch == "qwen3moe";
  const uint32_t heads = kHeads, kv_heads = olmoe ? kHeads : kKvHeads, head_dim = kEmbd / kHeads;
  const uint32_t used = arch == "llama" ? 2 : 3;
  auto& w = m.writer;
  w.set("general.architecture", gguf::Value::str(arch));
  const auto key = [&](const std::string& k) { return arch + "." + k; };
  w.set(key("block_count"), gguf::Value::u32(layers));
  w.set(key("embedding_length"), gguf::Value::u32(kEmbd));
  w.set(key("feed_forward_length"), gguf::Value::u32(kMoeFf));
  w.set(key("attention.head_count"), gguf::Value::u32(heads));
  w.set(key("attention.head_count_kv"), gguf::Value::u32(kv_heads));
  w.set(key("context_length"), gguf::Value::u32(128));
  w.set(key("vocab_size"), gguf::Value::u32(kTinyTokens));
  w.set(key("attention.layer_norm_rms_epsilon"), gguf::Value::f32(1e-6f));
  w.set(key("rope.freq_base"), gguf::Value::f32(10000.0f));
  w.set(key("expert_count"), gguf::Value::u32(kMoeExperts));
  w.set(key("expert_used_count"), gguf::Value::u32(used));
  if (qwen2moe || qwen3moe) w.set(key("expert_feed_forward_length"), gguf::Value::u32(kMoeFf));
  if (qwen2moe) w.set(key("expert_shared_feed_forward_length"), gguf::Value::u32(kMoeSharedFf));
  const uint32_t kv = kv_heads * head_dim;
  m.tensor("token_embd.weight", {kEmbd, kTinyTokens}, matrix_type);
  m.tensor("output_norm.weight", {kEmbd});
  m.tensor("output.weight", {kEmbd, kTinyTokens}, matrix_type);
  for (uint32_t i = 0; i < layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    m.tensor(p + "attn_norm.weight", {kEmbd});
    m.tensor(p + "ffn_norm.weight", {kEmbd});
    m.tensor(p + "attn_q.weight", {kEmbd, heads * head_dim}, matrix_type);
    m.tensor(p + "attn_k.weight", {kEmbd, kv}, matrix_type);
    m.tensor(p + "attn_v.weight", {kEmbd, kv}, matrix_type);
    if (qwen2moe) {
      m.tensor(p + "attn_q.bias", {heads * head_dim});
      m.tensor(p + "attn_k.bias", {kv});
      m.tensor(p + "attn_v.bias", {kv});
    }
    if (qwen3moe) {
      m.tensor(p + "attn_q_norm.weight", {head_dim});
      m.tensor(p + "attn_k_norm.weight", {head_dim});
    }
    if (olmoe) {
      m.tensor(p + "attn_q_norm.weight", {heads * head_dim});
      m.tensor(p + "attn_k_norm.weight", {kv});
    }
    m.tensor(p + "attn_output.weight", {heads * head_dim, kEmbd}, matrix_type);
    // A wider router so that the experts' probabilities differ clearly (no near-ties in the top k).
    m.tensor(p + "ffn_gate_inp.weight", {kEmbd, kMoeExperts}, DType::F32, 0.6f);
    m.tensor(p + "ffn_gate_exps.weight", {kEmbd, kMoeFf, kMoeExperts}, matrix_type);
    m.tensor(p + "ffn_up_exps.weight", {kEmbd, kMoeFf, kMoeExperts}, matrix_type);
    m.tensor(p + "ffn_down_exps.weight", {kMoeFf, kEmbd, kMoeExperts}, matrix_type);
    if (qwen2moe) {
      m.tensor(p + "ffn_gate_inp_shexp.weight", {kEmbd});
      m.tensor(p + "ffn_gate_shexp.weight", {kEmbd, kMoeSharedFf}, matrix_type);
      m.tensor(p + "ffn_up_shexp.weight", {kEmbd, kMoeSharedFf}, matrix_type);
      m.tensor(p + "ffn_down_shexp.weight", {kMoeSharedFf, kEmbd}, matrix_type);
    }
  }
  m.add_tokenizer();
  return m.write(dir, name.empty() ? "tiny-" + arch + ".gguf" : name);
}

}  // namespace lathe::test
