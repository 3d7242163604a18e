// Activations to 8-bit blocks (llama.cpp's q8_1): one warp per 32-element block, lane = element.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

__global__ void quantize_q8_kernel(const float* x, int64_t ldx, int n_rows, int width, int8_t* q8, float* ds) {
  const int blocks_per_row = width / 32;
  const int64_t block = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (block >= static_cast<int64_t>(n_rows) * blocks_per_row) return;
  const int lane = threadIdx.x % 32;
  const int64_t row = block / blocks_per_row, b = block % blocks_per_row;
  const float v = x[row * ldx + b * 32 + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
  q8[row * width + b * 32 + lane] = static_cast<int8_t>(q);
  const float sum = warp_sum(static_cast<float>(q));
  if (lane == 0) {
    ds[(row * blocks_per_row + b) * 2] = d;
    ds[(row * blocks_per_row + b) * 2 + 1] = d * sum;
  }
}

}  // namespace

void quantize_q8(const float* x, int64_t ldx, int n_rows, int width, int8_t* q8, float* ds, cudaStream_t stream) {
  if (n_rows <= 0) return;
  const int64_t threads = static_cast<int64_t>(n_rows) * width;  // one per element
  quantize_q8_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(x, ldx, n_rows, width, q8, ds);
  check_launch("quantize_q8");
}

}  // namespace lathe::cuda
