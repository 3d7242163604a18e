// float32 activations to the 16-bit type of the weights they meet in cuBLAS. A 2D grid (columns
// x rows) spares each element a 64-bit division.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

template <typename Out>
__global__ void convert_kernel(const float* x, int64_t ldx, int n_rows, int width, Out* out) {
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  for (int r = blockIdx.y; r < n_rows; r += gridDim.y)
    out[static_cast<int64_t>(r) * width + c] = float_to<Out>(x[r * ldx + c]);
}

template <typename Out>
void launch(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream) {
  if (n_rows <= 0 || width <= 0) return;
  const dim3 grid(static_cast<unsigned>((width + 255) / 256), static_cast<unsigned>(std::min(n_rows, kMaxGridY)));
  convert_kernel<Out><<<grid, 256, 0, stream>>>(x, ldx, n_rows, width, static_cast<Out*>(out));
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
