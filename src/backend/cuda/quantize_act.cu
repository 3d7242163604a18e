// Activations to 8-bit blocks (llama.cpp's q8_1): one warp per 32-element block, lane = element.
// With an RMSNorm in front: blocks of 256 threads, 8 per-32 blocks each; every block sums the
// squares of its whole row first (a row of a few thousand floats is an L2 read of a few KB), in
// the order rms_norm sums them, so the normalized values and their roundings are exactly those
// of rms_norm followed by quantize_q8, in one launch and spread over the GPU.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/q8_block.cuh"

namespace lathe::cuda {
namespace {

// Block b of row `row`, lane = element: all 32 lanes of the warp call it together.
__device__ __forceinline__ void quantize_block(float v, int64_t row, int64_t b, int width, int8_t* q8, float* ds) {
  const int64_t blocks_per_row = width / 32;
  quantize_block32(v, q8 + row * width + b * 32, ds + (row * blocks_per_row + b) * 2);
}

__global__ void quantize_q8_kernel(const float* x, int64_t ldx, int n_rows, int width, int8_t* q8, float* ds) {
  wait_for_previous_kernel();
  const int blocks_per_row = width / 32;
  const int64_t block = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (block >= static_cast<int64_t>(n_rows) * blocks_per_row) return;
  const int64_t row = block / blocks_per_row, b = block % blocks_per_row;
  quantize_block(x[row * ldx + b * 32 + threadIdx.x % 32], row, b, width, q8, ds);
}

constexpr int kNormThreads = 256;  // = rms_norm's block size (same sum order)

__global__ void __launch_bounds__(kNormThreads) rms_quantize_q8_kernel(const float* x, int64_t ldx, int width,
                                                                       const float* norm, float eps, int8_t* q8,
                                                                       float* ds) {
  __shared__ float scratch[32];
  wait_for_previous_kernel();
  const int64_t row = blockIdx.y;
  const float* xr = x + row * ldx;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < width; i += kNormThreads) sum += xr[i] * xr[i];
  const float inv = rsqrtf(block_sum(sum, scratch) / static_cast<float>(width) + eps);
  const int b = blockIdx.x * (kNormThreads / 32) + threadIdx.x / 32;  // this warp's block of 32
  if (b >= width / 32) return;
  const int i = b * 32 + threadIdx.x % 32;
  quantize_block(xr[i] * inv * norm[i], row, b, width, q8, ds);
}

}  // namespace

void quantize_q8(const float* x, int64_t ldx, int n_rows, int width, int8_t* q8, float* ds, cudaStream_t stream,
                 const float* norm, float eps) {
  if (n_rows <= 0) return;
  if (norm != nullptr) {
    const dim3 grid((width / 32 + kNormThreads / 32 - 1) / (kNormThreads / 32), n_rows);
    launch_chained(rms_quantize_q8_kernel, grid, kNormThreads, 0, stream, "quantize_q8 with RMSNorm", x, ldx, width,
                   norm, eps, q8, ds);
    check_launch("quantize_q8 with RMSNorm");
    return;
  }
  const int64_t threads = static_cast<int64_t>(n_rows) * width;  // one per element
  launch_chained(quantize_q8_kernel, static_cast<unsigned>((threads + 255) / 256), 256, 0, stream, "quantize_q8", x,
                 ldx, n_rows, width, q8, ds);
  check_launch("quantize_q8");
}

}  // namespace lathe::cuda
