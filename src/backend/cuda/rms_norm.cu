// RMSNorm: one block per row; the sum of squares is reduced in float (rows of a few thousand
// values; the CPU reference sums in double, the difference stays far below the tests' bound).
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

__global__ void rms_norm_kernel(const float* x, int64_t ldx, const float* weight, int width, float eps, float* out,
                                int64_t ldo) {
  __shared__ float scratch[32];
  wait_for_previous_kernel();
  const float* row = x + blockIdx.x * ldx;
  float* dst = out + blockIdx.x * ldo;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) sum += row[i] * row[i];
  sum = block_sum(sum, scratch);
  const float inv = rsqrtf(sum / static_cast<float>(width) + eps);
  for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = row[i] * inv * weight[i];
}

}  // namespace

void rms_norm(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, float* out,
              int64_t ldo, cudaStream_t stream) {
  if (n_rows <= 0) return;
  launch_chained(rms_norm_kernel, n_rows, 256, 0, stream, "rms_norm", x, ldx, weight, width, eps, out, ldo);
  check_launch("rms_norm");
}

}  // namespace lathe::cuda
