// An abliteration edit as a LoRA adapter (llama.cpp's GGUF, weights/lora.hpp) instead of an edited
// copy of the model: a few megabytes that llama.cpp applies with --lora and lathe with --lora, on
// the original model file, at any scale.
#pragma once

#include "edit/ablation.hpp"
#include "weights/lora.hpp"

namespace lathe::edit {

struct AblationAdapter {
  LoraAdapter adapter;
  // The largest ||dW - B A|| / ||dW|| (Frobenius) over the matrices: 0 for the plain edit, which
  // is exactly rank 1; for the norm-preserving edit, what the rank-`rank` approximation leaves out.
  double max_rel_error = 0;
};

// The edit apply_ablation(weights, directions, params, norm_preserving) would make, as a LoRA on
// `weights` as they are now (call it on the unedited weights): per edited matrix the float32
// difference dW = W' - W before W' is rounded to its stored type, so the adapter carries the edit
// without the re-quantization of an exported model. The plain edit W' = W - lambda v (v^T W) is the
// rank-1 product B A with B = v, A = -lambda v^T W. The norm-preserving edit rescales every row
// afterwards, which makes dW full-rank: it is approximated by its best rank-`rank` product (the
// truncated SVD, by subspace iteration, as Heretic stores it). alpha = rank, so that llama.cpp's
// factor alpha / rank is 1. InvalidArgumentError for rank outside 1..64, or directions that do not
// fit the model; UnsupportedError naming the tensor for a type lathe cannot read.
AblationAdapter ablation_adapter(const ModelWeights& weights, const RefusalDirections& directions,
                                 const AblationParams& params, bool norm_preserving, int rank);

// The best rank-`rank` approximation B A of a row-major [rows x cols] matrix by subspace
// iteration (deterministic start): b [rows x rank], a [rank x cols] with orthonormal rows. Returns
// ||m - B A|| / ||m|| (0 for a zero matrix).
double low_rank_approximation(const std::vector<float>& m, int64_t rows, int64_t cols, int rank, std::vector<float>& b,
                              std::vector<float>& a);

}  // namespace lathe::edit
