// Embedding gather: one block per token decodes its row of the (possibly quantized) table.
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/quant_decode.cuh"

namespace lathe::cuda {
namespace {

template <DType T>
__global__ void embed_kernel(const DeviceMatrix table, const int32_t* tokens, float* out) {
  constexpr int E = StepElems<T>::value;
  wait_for_previous_kernel();
  const int t = blockIdx.x;
  const int64_t row = tokens[t];
  const uint8_t* qs = table.qs + row * static_cast<int64_t>(table.qs_row);
  const uint8_t* sc = table.scales ? table.scales + row * static_cast<int64_t>(table.sc_row) : nullptr;
  float* dst = out + static_cast<int64_t>(t) * table.cols;
  for (int64_t st = threadIdx.x; st < table.cols / E; st += blockDim.x) {
    float v[E];
    decode_step<T>(qs, sc, st, v);
#pragma unroll
    for (int i = 0; i < E; ++i) dst[st * E + i] = v[i];
  }
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* tokens, int n_tokens, float* out, cudaStream_t stream) {
  if (n_tokens <= 0) return;
  dispatch_device_type(table.type, [&]<DType T>() {
    launch_chained(embed_kernel<T>, n_tokens, 128, 0, stream, "embed_rows", table, tokens, out);
  });
  check_launch("embed_rows");
}

}  // namespace lathe::cuda
