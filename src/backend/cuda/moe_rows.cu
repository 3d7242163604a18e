// The row moves of a mixture-of-experts block: the tokens routed to one expert are gathered into
// dense rows (the input of its products, mat-vec or cuBLAS), and its output rows are added back
// to their tokens' residual rows, each scaled by the token's routing weight. A 2D grid (columns x
// rows): one thread per value, nothing to reduce.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void gather_rows_kernel(const float* x, int64_t ldx, const int32_t* ids, int n, int width, float* out) {
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  for (int i = blockIdx.y; i < n; i += gridDim.y)
    out[static_cast<int64_t>(i) * width + c] = x[static_cast<int64_t>(ids[i]) * ldx + c];
}

__global__ void scatter_add_rows_kernel(const float* rows, const int32_t* ids, const float* weights, int n, int width,
                                        float* y, int64_t ldy) {
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  for (int i = blockIdx.y; i < n; i += gridDim.y)
    y[static_cast<int64_t>(ids[i]) * ldy + c] += weights[i] * rows[static_cast<int64_t>(i) * width + c];
}

dim3 grid_for(int n, int width) {
  return dim3(static_cast<unsigned>((width + kThreads - 1) / kThreads), static_cast<unsigned>(std::min(n, kMaxGridY)));
}

}  // namespace

void gather_rows(const float* x, int64_t ldx, const int32_t* ids, int n, int width, float* out, cudaStream_t stream) {
  if (n <= 0 || width <= 0) return;
  gather_rows_kernel<<<grid_for(n, width), kThreads, 0, stream>>>(x, ldx, ids, n, width, out);
  check_launch("gather_rows");
}

void scatter_add_rows(const float* rows, const int32_t* ids, const float* weights, int n, int width, float* y,
                      int64_t ldy, cudaStream_t stream) {
  if (n <= 0 || width <= 0) return;
  scatter_add_rows_kernel<<<grid_for(n, width), kThreads, 0, stream>>>(rows, ids, weights, n, width, y, ldy);
  check_launch("scatter_add_rows");
}

}  // namespace lathe::cuda
