// Rows of a device matrix to IEEE half for cuBLAS (prefill of quantized weights).
//
// One thread decodes one step (8 or 32 elements, quant_decode.cuh); a block's 128 steps are
// consecutive in the output (the rows are written back to back), so the block stages its halves
// in shared memory and writes them out with 16-byte stores that neighbouring threads place side
// by side. Each thread storing its own step directly (4-byte stores 64 bytes apart across a warp)
// made this kernel most of an 8B Q4_0 prefill: 6,019 t/s against 18,670 for the BF16 weights,
// which skip it (H200, docs/PERFORMANCE.md).
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/quant_decode.cuh"

namespace lathe::cuda {
namespace {

constexpr int kThreads = 128;

template <DType T>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const DeviceMatrix m, int64_t first, int64_t n,
                                                                __half* out) {
  constexpr int E = StepElems<T>::value;
  constexpr int kVecsPerStep = E * 2 / 16;  // 16-byte pieces of one step's halves
  __shared__ uint4 staged[kThreads * kVecsPerStep];
  const int64_t steps_per_row = m.cols / E, total = n * steps_per_row;
  const int64_t block_first = static_cast<int64_t>(blockIdx.x) * kThreads;
  const int64_t i = block_first + threadIdx.x;
  if (i < total) {
    const int64_t r = i / steps_per_row, st = i % steps_per_row, row = first + r;
    float v[E];
    decode_step<T>(m.qs + row * static_cast<int64_t>(m.qs_row),
                   m.scales ? m.scales + row * static_cast<int64_t>(m.sc_row) : nullptr, st, v);
#pragma unroll
    for (int p = 0; p < kVecsPerStep; ++p) {
      __half2 h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(v[8 * p + 2 * k], v[8 * p + 2 * k + 1]);
      staged[threadIdx.x * kVecsPerStep + p] = *reinterpret_cast<const uint4*>(h);
    }
  }
  __syncthreads();
  const int64_t valid_steps = min(static_cast<int64_t>(kThreads), total - block_first);
  const int n_vecs = static_cast<int>(valid_steps) * kVecsPerStep;
  uint4* dst = reinterpret_cast<uint4*>(out + block_first * E);
  for (int k = threadIdx.x; k < n_vecs; k += kThreads) dst[k] = staged[k];
}

}  // namespace

void dequantize_rows_f16(const DeviceMatrix& m, int64_t first, int64_t n, void* out, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_device_type(m.type, [&]<DType T>() {
    const int64_t steps = n * (m.cols / StepElems<T>::value);
    dequantize_kernel<T><<<static_cast<unsigned>((steps + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        m, first, n, static_cast<__half*>(out));
  });
  check_launch("dequantize_rows_f16");
}

}  // namespace lathe::cuda
