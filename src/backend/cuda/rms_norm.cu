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

// Rows of a multiple of 4 floats, 16-byte aligned (every prefill here): read once with float4
// loads and kept in registers (kPer float4 per thread, 256 threads) for the scaling pass, instead
// of read twice one float at a time. 8B prefill of 512 tokens: 6.3 us per call at Nsight
// Compute's locked clocks (the scalar kernel writing float32: 15.3 us, an earlier profile). Only
// for the 16-bit outputs: the float32 rms_norm keeps quantize_q8's order of sums (same bytes).
template <typename Out, int kPer>
__global__ void rms_norm_vec_kernel(const float* x, int64_t ldx, const float* weight, int width, float eps, Out* out,
                                    int64_t ldo) {
  __shared__ float scratch[32];
  wait_for_previous_kernel();
  const float4* row = reinterpret_cast<const float4*>(x + blockIdx.x * ldx);
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  Out* dst = out + blockIdx.x * ldo;
  const int n4 = width / 4;
  float4 v[kPer];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * static_cast<int>(blockDim.x);
    v[k] = i < n4 ? row[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    sum += v[k].x * v[k].x + v[k].y * v[k].y + v[k].z * v[k].z + v[k].w * v[k].w;
  }
  sum = block_sum(sum, scratch);
  const float inv = rsqrtf(sum / static_cast<float>(width) + eps);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int i = static_cast<int>(threadIdx.x) + k * static_cast<int>(blockDim.x);
    if (i >= n4) break;
    const float4 g = w4[i];
    store4(dst + 4 * i, v[k].x * inv * g.x, v[k].y * inv * g.y, v[k].z * inv * g.z, v[k].w * inv * g.w);
  }
}

constexpr int kNormThreads = 256;

// float4 per thread the vector kernel needs for this row, or 0 when it does not apply.
int vector_norm_per_thread(const float* x, int64_t ldx, const float* weight, int width, const void* out, int64_t ldo,
                           int out_bytes) {
  const auto aligned = [](const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  if (width % 4 != 0 || ldx % 4 != 0 || (ldo * out_bytes) % 16 != 0 || !aligned(x, 16) || !aligned(weight, 16) ||
      !aligned(out, 16))
    return 0;
  const int per = (width / 4 + kNormThreads - 1) / kNormThreads;
  return per <= 1 ? 1 : per <= 2 ? 2 : per <= 4 ? 4 : per <= 8 ? 8 : 0;
}

template <typename Out>
void launch_16(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, Out* out,
               cudaStream_t stream) {
  const int64_t ldo = width;
  const auto launch = [&](auto kernel) {
    launch_chained(kernel, n_rows, kNormThreads, 0, stream, "rms_norm", x, ldx, weight, width, eps, out, ldo);
  };
  switch (vector_norm_per_thread(x, ldx, weight, width, out, ldo, sizeof(Out))) {
    case 1: return launch(rms_norm_vec_kernel<Out, 1>);
    case 2: return launch(rms_norm_vec_kernel<Out, 2>);
    case 4: return launch(rms_norm_vec_kernel<Out, 4>);
    case 8: return launch(rms_norm_vec_kernel<Out, 8>);
    default: return launch(rms_norm_kernel<Out>);
  }
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
  if (type == Dtype16::BF16)
    launch_16(x, ldx, weight, n_rows, width, eps, static_cast<__nv_bfloat16*>(out), stream);
  else if (type == Dtype16::F16)
    launch_16(x, ldx, weight, n_rows, width, eps, static_cast<__half*>(out), stream);
  else
    throw InternalError("rms_norm_16: the output must be bfloat16 or half");
  check_launch("rms_norm");
}

}  // namespace lathe::cuda
