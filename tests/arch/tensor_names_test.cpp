#include <gtest/gtest.h>

#include <numeric>

#include "arch/tensor_names.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

TEST(TensorNames, LlamaLayerAndGlobalNamesMapBothWays) {
  EXPECT_EQ(hf_to_canonical_name(Arch::Llama, "model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(hf_to_canonical_name(Arch::Llama, "model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(hf_to_canonical_name(Arch::Llama, "lm_head.weight"), "output.weight");
  EXPECT_EQ(canonical_to_hf_name(Arch::Llama, "blk.0.ffn_down.weight"), "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(canonical_to_hf_name(Arch::Llama, "output_norm.weight"), "model.norm.weight");
  EXPECT_FALSE(hf_to_canonical_name(Arch::Llama, "model.layers.x.self_attn.q_proj.weight").has_value());
  EXPECT_FALSE(hf_to_canonical_name(Arch::Llama, "model.layers.1.unknown.weight").has_value());
  EXPECT_FALSE(canonical_to_hf_name(Arch::Llama, "rope_freqs.weight").has_value());
}

TEST(TensorNames, QwenBiasesQwen3NormsPhi3Fused) {
  EXPECT_EQ(hf_to_canonical_name(Arch::Qwen2, "model.layers.3.self_attn.k_proj.bias"), "blk.3.attn_k.bias");
  EXPECT_EQ(hf_to_canonical_name(Arch::Qwen3, "model.layers.3.self_attn.q_norm.weight"), "blk.3.attn_q_norm.weight");
  EXPECT_EQ(hf_to_canonical_name(Arch::Phi3, "model.layers.1.self_attn.qkv_proj.weight"), "blk.1.attn_qkv.weight");
  EXPECT_EQ(hf_to_canonical_name(Arch::Phi3, "model.layers.1.mlp.gate_up_proj.weight"), "blk.1.ffn_up.weight");
  EXPECT_EQ(canonical_to_hf_name(Arch::Phi3, "blk.1.ffn_up.weight"), "model.layers.1.mlp.gate_up_proj.weight");
  EXPECT_EQ(canonical_to_hf_name(Arch::Llama, "blk.1.ffn_up.weight"), "model.layers.1.mlp.up_proj.weight");
}

TEST(TensorNames, OnlyLlamaQAndKArePermuted) {
  HParams hp;
  hp.n_head = 8;
  hp.n_head_kv = 2;
  EXPECT_EQ(qk_permute_heads(hp, "blk.0.attn_q.weight"), 8u);
  EXPECT_EQ(qk_permute_heads(hp, "blk.0.attn_k.weight"), 2u);
  EXPECT_FALSE(qk_permute_heads(hp, "blk.0.attn_v.weight").has_value());
  hp.arch = Arch::Qwen2;
  EXPECT_FALSE(qk_permute_heads(hp, "blk.0.attn_q.weight").has_value());
}

// One head of 4 rows (2 columns): HF halves [r0 r1 | r2 r3] interleave to r0 r2 r1 r3, as
// llama.cpp's reshape(n_head, 2, R/2, C).swapaxes(1, 2) does.
TEST(TensorNames, PermutationMatchesLlamaCppLayout) {
  std::vector<float> m = {0, 0, 1, 1, 2, 2, 3, 3};
  permute_qk_rows_gguf_from_hf(m, 4, 2, 1);
  EXPECT_EQ(m, (std::vector<float>{0, 0, 2, 2, 1, 1, 3, 3}));
  permute_qk_rows_hf_from_gguf(m, 4, 2, 1);
  EXPECT_EQ(m, (std::vector<float>{0, 0, 1, 1, 2, 2, 3, 3}));
}

TEST(TensorNames, PermutationRoundTripsOverManyHeads) {
  std::vector<float> m(6 * 8 * 5);
  std::iota(m.begin(), m.end(), 0.0f);
  const auto original = m;
  permute_qk_rows_gguf_from_hf(m, 48, 5, 6);
  EXPECT_NE(m, original);
  permute_qk_rows_hf_from_gguf(m, 48, 5, 6);
  EXPECT_EQ(m, original);
}

TEST(TensorNames, PermutationRejectsRowsNotSplittingIntoHeads) {
  std::vector<float> m(10);
  EXPECT_THROW(permute_qk_rows_gguf_from_hf(m, 5, 2, 1), InvalidArgumentError);
  EXPECT_THROW(permute_qk_rows_gguf_from_hf(m, 10, 1, 0), InvalidArgumentError);
}

}  // namespace
}  // namespace lathe
