// SwiGLU for the prefill path, where gate and up come out of cuBLAS side by side. The output is
// float32, or (swiglu_16) the 16-bit type of the down projection's cuBLAS product, written once
// instead of in float32 and then converted. A 2D grid (columns x tokens) spares each element a
// 64-bit division.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

template <typename Out>
__global__ void swiglu_kernel(const float* gu, int n_tokens, int n_ff, Out* h) {
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_ff) return;
  for (int t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    const float* row = gu + static_cast<int64_t>(t) * 2 * n_ff;
    h[static_cast<int64_t>(t) * n_ff + c] = float_to<Out>(silu(row[c]) * row[n_ff + c]);
  }
}

// Four columns per thread with float4 loads and one 8- or 16-byte store, for n_ff a multiple of 4
// and aligned rows (every model here); the scalar kernel covers the rest.
template <typename Out>
__global__ void swiglu_vec_kernel(const float* gu, int n_tokens, int n_ff, Out* h) {
  const int c = 4 * (static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x);
  if (c >= n_ff) return;
  for (int t = blockIdx.y; t < n_tokens; t += gridDim.y) {
    const float* row = gu + static_cast<int64_t>(t) * 2 * n_ff;
    const float4 g = *reinterpret_cast<const float4*>(row + c), u = *reinterpret_cast<const float4*>(row + n_ff + c);
    store4(h + static_cast<int64_t>(t) * n_ff + c, silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w);
  }
}

template <typename Out>
void launch(const float* gu, int n_tokens, int n_ff, Out* h, cudaStream_t stream) {
  if (n_tokens <= 0 || n_ff <= 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(gu) % 16 == 0 && reinterpret_cast<uintptr_t>(h) % 16 == 0;
  if (n_ff % 4 == 0 && aligned) {
    const dim3 grid(static_cast<unsigned>((n_ff / 4 + 255) / 256),
                    static_cast<unsigned>(std::min(n_tokens, kMaxGridY)));
    swiglu_vec_kernel<Out><<<grid, 256, 0, stream>>>(gu, n_tokens, n_ff, h);
    return;
  }
  const dim3 grid(static_cast<unsigned>((n_ff + 255) / 256), static_cast<unsigned>(std::min(n_tokens, kMaxGridY)));
  swiglu_kernel<Out><<<grid, 256, 0, stream>>>(gu, n_tokens, n_ff, h);
}

}  // namespace

void swiglu(const float* gate_up, int n_tokens, int n_ff, float* h, cudaStream_t stream) {
  launch(gate_up, n_tokens, n_ff, h, stream);
  check_launch("swiglu");
}

void swiglu_16(const float* gate_up, int n_tokens, int n_ff, void* h, Dtype16 type, cudaStream_t stream) {
  if (type == Dtype16::BF16) launch(gate_up, n_tokens, n_ff, static_cast<__nv_bfloat16*>(h), stream);
  else if (type == Dtype16::F16) launch(gate_up, n_tokens, n_ff, static_cast<__half*>(h), stream);
  else throw InternalError("swiglu_16: the output must be bfloat16 or half");
  check_launch("swiglu");
}

}  // namespace lathe::cuda
