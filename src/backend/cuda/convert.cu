// float32 activations to the 16-bit type of the weights they meet in cuBLAS.
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

template <typename Out>
__global__ void convert_kernel(const float* x, int64_t ldx, int n_rows, int width, Out* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(n_rows) * width) return;
  const int64_t r = i / width, c = i % width;
  if constexpr (std::is_same_v<Out, __half>) out[i] = __float2half_rn(x[r * ldx + c]);
  else out[i] = __float2bfloat16_rn(x[r * ldx + c]);
}

template <typename Out>
void launch(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(n_rows) * width;
  if (n <= 0) return;
  convert_kernel<Out><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(x, ldx, n_rows, width,
                                                                                 static_cast<Out*>(out));
}

}  // namespace

void f32_to_f16(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream) {
  launch<__half>(x, ldx, n_rows, width, out, stream);
  check_launch("f32_to_f16");
}

void f32_to_bf16(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream) {
  launch<__nv_bfloat16>(x, ldx, n_rows, width, out, stream);
  check_launch("f32_to_bf16");
}

}  // namespace lathe::cuda
