// Converting a loaded model's matrices to another storage type in memory, as llama-quantize does
// to a file: for trying (or benchmarking) a quantization of a Hugging Face bf16 model without
// writing a GGUF. The converted matrices live in owned buffers (like editable copies).
#pragma once

#include <functional>

#include "core/dtype.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

// Every matrix (embeddings, output, attention and MLP projections) to `type`, using `n_threads`
// threads (0: one per physical core). Throws UnsupportedError for a type lathe cannot quantize
// to (can_quantize) and InvalidArgumentError naming the tensor whose width is not a whole number
// of the type's blocks.
void requantize_matrices(ModelWeights& weights, DType type, int n_threads = 0);
// The same for the matrices `which` selects only (the model's weight_type stays as it was).
void requantize_matrices(ModelWeights& weights, DType type, int n_threads,
                         const std::function<bool(const MatrixView&)>& which);

}  // namespace lathe
