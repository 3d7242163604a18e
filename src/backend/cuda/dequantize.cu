// Rows of a device matrix to IEEE half for cuBLAS (prefill of quantized weights): one thread per
// decode step.
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/quant_decode.cuh"

namespace lathe::cuda {
namespace {

template <DType T>
__global__ void dequantize_kernel(const DeviceMatrix m, int64_t first, int64_t n, __half* out) {
  constexpr int E = StepElems<T>::value;
  const int64_t steps_per_row = m.cols / E;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * steps_per_row) return;
  const int64_t r = i / steps_per_row, st = i % steps_per_row;
  const int64_t row = first + r;
  float v[E];
  decode_step<T>(m.qs + row * static_cast<int64_t>(m.qs_row),
                 m.scales ? m.scales + row * static_cast<int64_t>(m.sc_row) : nullptr, st, v);
  __half* dst = out + r * m.cols + st * E;
#pragma unroll
  for (int k = 0; k < E; k += 2) reinterpret_cast<__half2*>(dst)[k / 2] = __floats2half2_rn(v[k], v[k + 1]);
}

}  // namespace

void dequantize_rows_f16(const DeviceMatrix& m, int64_t first, int64_t n, void* out, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_device_type(m.type, [&]<DType T>() {
    const int64_t threads = n * (m.cols / StepElems<T>::value);
    dequantize_kernel<T><<<static_cast<unsigned>((threads + 127) / 128), 128, 0, stream>>>(m, first, n,
                                                                                          static_cast<__half*>(out));
  });
  check_launch("dequantize_rows_f16");
}

}  // namespace lathe::cuda
