// Making a control vector from paired prompts (`lathe cvector`), as llama.cpp's cvector-generator
// does: run each positive and negative prompt, read the residual stream at the output of every
// block, and turn the per-pair differences (positive - negative) into one direction per layer.
//
// What lathe reads: the last prompt token's row at blocks.{N}.resid_post (the point where
// direction.N is added back, see control_vector.hpp), one prefill per prompt, each prompt in its
// chat form (chat_prompt_tokens). llama.cpp's generator instead uses every token position of
// raw, padded prompts and names the difference measured after block il "direction.{il+1}".
//
// Methods; both give unit-length directions, as the generator writes them:
//  * mean: the mean of the differences, normalized to length 1 (tools/cvector-generator/mean.hpp).
//    Only a running float64 sum per layer is kept.
//  * pca: the first principal component of the differences as the generator computes it: the top
//    eigenvector of D^T D (D = the n_pairs x n_embd differences, not centered), by power
//    iteration in float64, unit length. The generator's sign is arbitrary (random start); lathe
//    flips it to point along the mean difference, so that a positive scale steers toward the
//    positive prompts.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "edit/control_vector.hpp"
#include "edit/prompt_file.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {

enum class DirectionMethod { Mean, Pca };

// "mean" / "pca"; InvalidArgumentError otherwise.
DirectionMethod parse_direction_method(std::string_view name);

struct ControlVectorTraining {
  DirectionMethod method = DirectionMethod::Mean;
  ChatPromptOptions chat;
  ComputeOptions compute;
  std::optional<std::pair<uint32_t, uint32_t>> layers;   // default [1, n_layer - 1]
  // Called after each pair: (pairs done, pairs total).
  std::function<void(size_t done, size_t total)> progress;
};

// InvalidArgumentError when the lists are empty or differ in length, the range selects no layer
// the format can hold, a pair gives identical activations at a layer (no direction), or a prompt
// is longer than the model's training context.
ControlVector train_control_vector(const std::shared_ptr<const Model>& model, const std::vector<std::string>& positive,
                                   const std::vector<std::string>& negative, const ControlVectorTraining& options);

// The unit-length first principal component of `differences` ([n_rows x n_embd], row-major,
// uncentered), sign aligned with `reference` (a zero reference leaves the sign as found).
// Deterministic (fixed start). InvalidArgumentError when every difference is zero.
std::vector<double> principal_direction(std::span<const double> differences, size_t n_rows, size_t n_embd,
                                        std::span<const double> reference);

}  // namespace lathe::edit
