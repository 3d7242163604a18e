// Matrix products for many tokens (prefill, large batches) through cuBLAS: 16-bit weights meet
// activations converted to their type (tensor cores, float32 accumulation), float32 weights use
// SGEMM, block-quantized weights are first decoded to IEEE half a chunk of rows at a time.
// CUDA builds only.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "backend/cuda/matrix.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {

class Blas {
 public:
  explicit Blas(cudaStream_t stream);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t handle() const noexcept { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

// Scratch the products need: activations in 16 bits (act16_elems halves) and decoded weight rows
// (w16_elems halves; a quantized matrix is decoded w16_elems / cols rows at a time).
struct GemmScratch {
  void* act16 = nullptr;
  size_t act16_elems = 0;
  void* w16 = nullptr;
  size_t w16_elems = 0;
  // BF16 weights: decode them to half chunk by chunk and multiply half activations (3 more
  // mantissa bits than bfloat16 activations, for more weight traffic), instead of meeting
  // bfloat16 activations directly. Needs w16.
  bool bf16_as_f16 = false;
};

// The activations of a product, in the form the weights meet: float32 (F32 weights), or converted
// once to bfloat16 / half in scratch.act16, so that the matrices reading the same input (Q, K and
// V; gate and up) share one conversion.
struct GemmInput {
  const float* x = nullptr;  // the float32 activations: x[t * ldx + c] (null: act16 was written directly)
  int64_t ldx = 0;
  int n_tokens = 0;
  int64_t cols = 0;
  Dtype16 type16 = Dtype16::None;  // what act16 holds
};

// The 16-bit type activations take to meet `w` in a product (None: float32 weights).
Dtype16 gemm_activation_type(const DeviceMatrix& w, const GemmScratch& scratch);

// The input of products whose 16-bit activations a kernel wrote into scratch.act16 itself
// (rms_norm_16, swiglu_16): no float32 copy of them exists.
inline GemmInput gemm_input_written(int n_tokens, int64_t cols, Dtype16 type16) {
  return GemmInput{nullptr, cols, n_tokens, cols, type16};
}

// Prepares `x` for products with weights like `w` (type and width): converts it into
// scratch.act16 unless `reuse` says it already holds that. `reuse` must be the last GemmInput
// made with this scratch (a conversion in between, gemm()'s own included, overwrites act16).
GemmInput gemm_input(const DeviceMatrix& w, const float* x, int64_t ldx, int n_tokens, const GemmScratch& scratch,
                     cudaStream_t stream, const GemmInput* reuse = nullptr);

// y[t * ldy + r] = beta * y[...] + sum_c W[r][c] * x[t * ldx + c] for t < in.n_tokens.
void gemm(const Blas& blas, const DeviceMatrix& w, const GemmInput& in, float* y, int64_t ldy, float beta,
          const GemmScratch& scratch, cudaStream_t stream);

// The same for one product: gemm_input, then gemm.
void gemm(const Blas& blas, const DeviceMatrix& w, const float* x, int64_t ldx, int n_tokens, float* y, int64_t ldy,
          float beta, const GemmScratch& scratch, cudaStream_t stream);

}  // namespace lathe::cuda
