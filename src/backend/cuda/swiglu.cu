// SwiGLU for the prefill path, where gate and up come out of cuBLAS side by side.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

__global__ void swiglu_kernel(const float* gu, int n_tokens, int n_ff, float* h) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(n_tokens) * n_ff) return;
  const int64_t t = i / n_ff, c = i % n_ff;
  const float* row = gu + t * 2 * n_ff;
  h[i] = silu(row[c]) * row[n_ff + c];
}

}  // namespace

void swiglu(const float* gate_up, int n_tokens, int n_ff, float* h, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(n_tokens) * n_ff;
  if (n <= 0) return;
  swiglu_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(gate_up, n_tokens, n_ff, h);
  check_launch("swiglu");
}

}  // namespace lathe::cuda
