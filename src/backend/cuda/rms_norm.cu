// RMSNorm: one block per row; the sum of squares is reduced in float (rows of a few thousand
// values; the CPU reference sums in double, the difference stays far below the tests' bound).
// The output is float32, or (rms_norm_16, prefill) the 16-bit type of the cuBLAS product that
// reads it, so that no float32 copy is written and converted in a second pass.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

template <typename Out>
__global__ void rms_norm_kernel(const float* x, int64_t ldx, const float* weight, int width, float eps, Out* out,
                                int64_t ldo) {
  __shared__ float scratch[32];
  wait_for_previous_kernel();
  const float* row = x + blockIdx.x * ldx;
  Out* dst = out + blockIdx.x * ldo;
  float sum = 0.0f;
  for (int i = threadIdx.x; i < width; i += blockDim.x) sum += row[i] * row[i];
  sum = block_sum(sum, scratch);
  const float inv = rsqrtf(sum / static_cast<float>(width) + eps);
  for (int i = threadIdx.x; i < width; i += blockDim.x) dst[i] = float_to<Out>(row[i] * inv * weight[i]);
}

}  // namespace

void rms_norm(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, float* out,
              int64_t ldo, cudaStream_t stream) {
  if (n_rows <= 0) return;
  launch_chained(rms_norm_kernel<float>, n_rows, 256, 0, stream, "rms_norm", x, ldx, weight, width, eps, out, ldo);
  check_launch("rms_norm");
}

void rms_norm_16(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, void* out,
                 Dtype16 type, cudaStream_t stream) {
  if (n_rows <= 0) return;
  const int64_t ldo = width;
  if (type == Dtype16::BF16)
    launch_chained(rms_norm_kernel<__nv_bfloat16>, n_rows, 256, 0, stream, "rms_norm", x, ldx, weight, width, eps,
                   static_cast<__nv_bfloat16*>(out), ldo);
  else if (type == Dtype16::F16)
    launch_chained(rms_norm_kernel<__half>, n_rows, 256, 0, stream, "rms_norm", x, ldx, weight, width, eps,
                   static_cast<__half*>(out), ldo);
  else
    throw InternalError("rms_norm_16: the output must be bfloat16 or half");
  check_launch("rms_norm");
}

}  // namespace lathe::cuda
