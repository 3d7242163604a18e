// A model's weights placed on a CUDA device: every matrix in its device layout
// (backend/cuda/device_layout.hpp), the float32 vectors (norms, biases, RoPE frequencies) as they
// are, all in one allocation. Uploaded once per model and device and shared by every session
// (ModelWeights::device_copies). CUDA builds only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/cuda/matrix.hpp"
#include "backend/cuda/memory.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct CudaLayerWeights {
  cuda::DeviceMatrix wq, wk, wv, wqkv, wo, w_gate, w_up, w_gate_up, w_down;
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* bq = nullptr;  // null when absent
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  // Mixture of experts (LayerWeights::moe()): the router, each expert's gate/up/down, qwen2moe's
  // shared expert and its gate vector (as a 1-row float32 matrix, a mat-vec target beside the
  // router's).
  cuda::DeviceMatrix router, shexp_gate, shexp_up, shexp_down, shexp_gate_inp;
  std::vector<cuda::DeviceMatrix> exp_gate, exp_up, exp_down;
  bool fused_qkv() const noexcept { return wqkv.qs != nullptr; }
  bool fused_gate_up() const noexcept { return w_gate_up.qs != nullptr; }
  bool moe() const noexcept { return router.qs != nullptr; }
  bool shared_expert() const noexcept { return shexp_gate.qs != nullptr; }
};

class CudaWeights {
 public:
  // The copy of `weights` on cuda:`device`, uploading it on first use (OutOfMemoryError naming
  // the model and the bytes needed when it does not fit).
  static std::shared_ptr<CudaWeights> get(const ModelWeights& weights, int device);

  int device = 0;
  cuda::DeviceMatrix token_embd, output;
  const float* output_norm = nullptr;
  const float* inv_freq = nullptr;
  std::vector<CudaLayerWeights> layers;
  uint64_t bytes = 0;            // device memory held
  uint64_t converted_matrices = 0;  // matrices converted to F16 (types without a native kernel)
  bool any_quantized = false;    // some matrix is block-quantized (prefill dequantizes it)
  bool any_bf16 = false;
  int64_t max_cols = 0, max_rows = 0;

  // Copies a matrix of `weights` again from the host (after an edit of its bytes): the device
  // matrix keeps its address, so captured CUDA graphs stay valid.
  void refresh(const MatrixView& host, const cuda::DeviceMatrix& device_matrix) const;

 private:
  cuda::DeviceBuffer arena_;
};

// The CUDA forward pass's weights seam (weights/layer_source.hpp).
using CudaLayerSource = LayerSourceOf<CudaLayerWeights>;

}  // namespace lathe
