// Rotary position embeddings as a description both engines read: which dimensions rotate
// together and the angle per position of each pair. The CPU applies it in backend/cpu/ops; the
// CUDA forward pass turns it into a device table (forward/cuda_scratch.hpp).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lathe {

// How rotary embeddings pair the dimensions of a head: Normal rotates (2i, 2i+1) (GGUF Llama,
// whose converter permuted Q/K rows), NeoX rotates (i, i + rope_dim/2) (Hugging Face layout,
// Qwen, Phi-3).
enum class RopeOrder { Normal, NeoX };

// Per pair i in [0, rope_dim/2): the angle per position, base^(-2i/rope_dim) / factor_i, with
// llama3-style scaling or a GGUF rope_freqs tensor folded into factor_i.
struct RopeTable {
  RopeOrder order = RopeOrder::Normal;
  int32_t rope_dim = 0;             // rotated dimensions per head (<= head_dim)
  float position_scale = 1.0f;      // linear scaling: positions are multiplied by this
  std::vector<float> inv_freq;      // rope_dim / 2 entries
};

// inv_freq_i = base^(-2i/rope_dim); `freq_factors` (empty or rope_dim/2 values) divide them.
RopeTable make_rope_table(RopeOrder order, int32_t rope_dim, float base, std::span<const float> freq_factors = {},
                          float position_scale = 1.0f);
// The llama3 frequency factors (Hugging Face's _compute_llama3_parameters), as divisors of inv_freq.
std::vector<float> llama3_freq_factors(int32_t rope_dim, float base, float factor, float low_freq_factor,
                                       float high_freq_factor, uint32_t original_context);

}  // namespace lathe
