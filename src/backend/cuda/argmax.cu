// Greedy decoding on the device: the index of each row's maximum (first on ties, NaN and -inf
// never taken, -1 when nothing else is left: argmax_logit in lathe/sampling.hpp, the CPU
// sampler's greedy pick), so only a token id crosses PCIe.
#include <cfloat>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

__global__ void argmax_kernel(const float* x, int n, int64_t ld, int32_t* out) {
  __shared__ float best_v[32];
  __shared__ int best_i[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * ld;
  float v = -INFINITY;
  int idx = n;  // larger than every real index: loses ties, and means "none" at the end
  // Each thread's indices grow, so a strictly greater value keeps its first maximum; -inf and NaN
  // are never greater than v.
  for (int i = threadIdx.x; i < n; i += blockDim.x)
    if (row[i] > v) v = row[i], idx = i;
  // Warp then block reduction of (value, index).
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, offset);
    if (ov > v || (ov == v && oi < idx)) v = ov, idx = oi;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) best_v[warp] = v, best_i[warp] = idx;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = blockDim.x / 32;
    v = lane < n_warps ? best_v[lane] : -INFINITY;
    idx = lane < n_warps ? best_i[lane] : n;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, v, offset);
      const int oi = __shfl_xor_sync(0xffffffffu, idx, offset);
      if (ov > v || (ov == v && oi < idx)) v = ov, idx = oi;
    }
    if (lane == 0) out[blockIdx.x] = idx < n ? idx : -1;
  }
}

}  // namespace

void argmax_rows(const float* x, int n_rows, int n, int64_t ld, int32_t* out, cudaStream_t stream) {
  if (n_rows <= 0) return;
  argmax_kernel<<<n_rows, 1024, 0, stream>>>(x, n, ld, out);
  check_launch("argmax_rows");
}

}  // namespace lathe::cuda
