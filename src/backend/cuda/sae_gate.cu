// The SAE feature gate on the device (edit/sae.hpp has the math and the CPU path it follows):
//   sae_in = norm_in(x) - b_dec * apply_b_dec_to_input,  pre_j = sae_in . W_enc[:, j] + b_enc_j
//   x' = x + out_scale(x) * sum_e (f'_e - f_e) W_dec[j_e]
// for the edited features e only. Standard and JumpReLU features are independent, so one block
// per row encodes just those (one warp per edit). TopK must know whether a feature is among the
// k largest pre-activations of its row, so it encodes every feature first (one warp per
// feature, over all rows) and then counts, per edit, the pre-activations ranked above it.
// Norms and sae_in are computed in double as on the CPU; dot products in float, in another order
// than the CPU's, so the two paths agree to float rounding, not bit for bit. A row whose edits
// all leave their features unchanged is not written (bit for bit as before, as on the CPU).
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr double kLayerNormEps = 1e-5;  // SAELens's layer_norm epsilon (edit/sae.cpp)

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block in double; every thread gets it. scratch: kWarps doubles of shared memory.
__device__ double block_sum_d(double v, double* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

struct RowNorm {
  double shift = 0, in_scale = 1, out_scale = 1;
};

// The normalization of row x (every thread of the block gets it), as row_norm in edit/sae.cpp.
__device__ RowNorm row_norm(const SaeGateArgs& a, const float* x, double* scratch) {
  RowNorm n;
  const int d = a.d_in;
  if (a.normalization == SaeGateArgs::kConstantNormRescale) {
    double ss = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += double(x[i]) * x[i];
    ss = block_sum_d(ss, scratch);
    n.in_scale = sqrt(double(d)) / sqrt(ss);  // inf / NaN for a zero row, as on the CPU
    n.out_scale = 1.0 / n.in_scale;
  } else if (a.normalization == SaeGateArgs::kLayerNorm) {
    double sum = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) sum += x[i];
    n.shift = block_sum_d(sum, scratch) / double(d);
    double ss = 0;
    for (int i = threadIdx.x; i < d; i += blockDim.x) ss += (x[i] - n.shift) * (x[i] - n.shift);
    ss = block_sum_d(ss, scratch);
    const double std = d > 1 ? sqrt(ss / double(d - 1)) : 0.0;
    n.in_scale = 1.0 / (std + kLayerNormEps);
    n.out_scale = std;
  }
  return n;
}

// sae_in of row x into out (shared or global), as sae_input in edit/sae.cpp.
__device__ void sae_input(const SaeGateArgs& a, const float* x, const RowNorm& n, float* out) {
  for (int i = threadIdx.x; i < a.d_in; i += blockDim.x) {
    double v = (x[i] - n.shift) * n.in_scale;
    if (a.apply_b_dec_to_input) v -= a.b_dec[i];
    out[i] = static_cast<float>(v);
  }
}

// pre_j for one row, by one warp (every lane gets it).
__device__ __forceinline__ float warp_pre_activation(const SaeGateArgs& a, const float* sae_in, uint32_t j) {
  const float* w = a.w_enc_t + int64_t{j} * a.d_in;
  float s = 0;
  for (int i = threadIdx.x % kWarpSize; i < a.d_in; i += kWarpSize) s += sae_in[i] * w[i];
  return warp_sum(s) + a.b_enc[j];
}

__device__ __forceinline__ float edited(const SaeGateArgs& a, int e, float f) {
  if (a.scales[e]) return f * a.values[e];
  return f > 0 || a.clamp_everywhere ? a.values[e] : f;
}

// x += out_scale * sum_e delta[e] * W_dec[feature of edit e] when some delta is non-zero; counts the row.
__device__ void add_decoded_deltas(const SaeGateArgs& a, float* x, const float* delta, double out_scale) {
  bool changed = false;
  for (int e = 0; e < a.n_edits; ++e) changed = changed || delta[e] != 0;
  if (!changed) return;
  for (int i = threadIdx.x; i < a.d_in; i += blockDim.x) {
    float v = x[i];
    for (int e = 0; e < a.n_edits; ++e) {
      if (delta[e] == 0) continue;
      v += static_cast<float>(delta[e] * out_scale) * a.w_dec[int64_t{e} * a.d_in + i];
    }
    x[i] = v;
  }
  if (threadIdx.x == 0 && a.rows_changed != nullptr) atomicAdd(a.rows_changed, 1ull);
}

// Standard / JumpReLU: one block per row. Shared memory: sae_in [d_in] floats, delta [n_edits].
__global__ void gate_independent_kernel(SaeGateArgs a, float* rows) {
  extern __shared__ float shared[];
  __shared__ double scratch[kWarps];
  float* sae_in = shared;
  float* delta = shared + a.d_in;
  float* x = rows + int64_t{blockIdx.x} * a.d_in;
  const RowNorm n = row_norm(a, x, scratch);
  sae_input(a, x, n, sae_in);
  __syncthreads();
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int e = warp; e < a.n_edits; e += kWarps) {
    const uint32_t j = a.ids[e];
    const float pre = warp_pre_activation(a, sae_in, j);
    const float relu = pre > 0 ? pre : 0.0f;
    const float f = a.architecture == SaeGateArgs::kJumpRelu && !(pre > a.threshold[j]) ? 0.0f : relu;
    if (lane == 0) delta[e] = edited(a, e, f) - f;
  }
  __syncthreads();
  add_decoded_deltas(a, x, delta, n.out_scale);
}

// TopK, step 1: sae_in of every row into a.sae_in. One block per row.
__global__ void topk_input_kernel(SaeGateArgs a, const float* rows) {
  __shared__ double scratch[kWarps];
  const float* x = rows + int64_t{blockIdx.x} * a.d_in;
  const RowNorm n = row_norm(a, x, scratch);
  sae_input(a, x, n, a.sae_in + int64_t{blockIdx.x} * a.d_in);
}

// TopK, step 2: pre[r][j] for every feature j (one warp each) and row r.
__global__ void topk_encode_kernel(SaeGateArgs a, int n_rows) {
  const int64_t j = int64_t{blockIdx.x} * kWarps + threadIdx.x / kWarpSize;
  if (j >= a.d_sae) return;
  for (int r = 0; r < n_rows; ++r) {
    const float pre = warp_pre_activation(a, a.sae_in + int64_t{r} * a.d_in, static_cast<uint32_t>(j));
    if (threadIdx.x % kWarpSize == 0) a.pre[int64_t{r} * a.d_sae + j] = pre;
  }
}

// TopK, step 3: per row (one block), whether each edited feature is in the top k (fewer than k
// pre-activations rank above it: greater, or equal at a lower index), then the edit.
__global__ void topk_gate_kernel(SaeGateArgs a, float* rows) {
  extern __shared__ float delta[];
  __shared__ double scratch[kWarps];
  float* x = rows + int64_t{blockIdx.x} * a.d_in;
  const float* pre = a.pre + int64_t{blockIdx.x} * a.d_sae;
  const RowNorm n = row_norm(a, x, scratch);
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int e = warp; e < a.n_edits; e += kWarps) {
    const uint32_t j = a.ids[e];
    const float v = pre[j];
    int above = 0;
    for (int i = lane; i < a.d_sae; i += kWarpSize) above += pre[i] > v || (pre[i] == v && i < static_cast<int>(j));
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) above += __shfl_xor_sync(0xffffffffu, above, offset);
    const float f = above < a.k && v > 0 ? v : 0.0f;
    if (lane == 0) delta[e] = edited(a, e, f) - f;
  }
  __syncthreads();
  add_decoded_deltas(a, x, delta, n.out_scale);
}

}  // namespace

size_t sae_gate_shared_bytes(const SaeGateArgs& a) {
  const size_t delta = size_t(a.n_edits) * sizeof(float);
  return a.architecture == SaeGateArgs::kTopK ? delta : size_t(a.d_in) * sizeof(float) + delta;
}

void sae_gate_prepare(const SaeGateArgs& a) {
  const int bytes = static_cast<int>(sae_gate_shared_bytes(a));
  check(cudaFuncSetAttribute(gate_independent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
        "sizing the SAE gate kernel's shared memory");
  check(cudaFuncSetAttribute(topk_gate_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
        "sizing the SAE gate kernel's shared memory");
}

void sae_gate(const SaeGateArgs& a, float* rows, int n_rows, cudaStream_t stream) {
  if (n_rows <= 0 || a.n_edits == 0) return;
  const size_t shared = sae_gate_shared_bytes(a);
  if (a.architecture != SaeGateArgs::kTopK) {
    gate_independent_kernel<<<n_rows, kThreads, shared, stream>>>(a, rows);
    check_launch("sae_gate");
    return;
  }
  // TopK's scratch holds chunk_rows rows of pre-activations: longer passes go chunk by chunk.
  const auto blocks = static_cast<unsigned>((a.d_sae + kWarps - 1) / kWarps);
  for (int first = 0; first < n_rows; first += a.chunk_rows) {
    const int n = std::min(a.chunk_rows, n_rows - first);
    float* chunk = rows + int64_t{first} * a.d_in;
    topk_input_kernel<<<n, kThreads, 0, stream>>>(a, chunk);
    check_launch("sae_gate (topk input)");
    topk_encode_kernel<<<blocks, kThreads, 0, stream>>>(a, n);
    check_launch("sae_gate (topk encode)");
    topk_gate_kernel<<<n, kThreads, shared, stream>>>(a, chunk);
    check_launch("sae_gate (topk gate)");
  }
}

}  // namespace lathe::cuda
