// Prefill attention on float32 units, for float32 KV caches and head sizes other than 64 and
// 128 (the others run on tensor cores: attention_prefill_mma.cu). Tiled like flash attention:
// block (query tile, head) keeps a tile of 16 queries in shared memory and walks the causally
// visible keys 32 at a time, with an online softmax (running max and sum per query), so the
// score matrix never exists in device memory. Eight threads share a query row: each scores 4
// keys of the tile and accumulates every 8th dimension of the output. K/V tiles arrive with
// 16-byte loads; rows are padded by one float so that the threads of a warp hit distinct
// shared-memory banks.
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kBq = 16, kBk = 32, kThreads = 128, kPerRow = kThreads / kBq;  // 8 threads per query row
constexpr int kKeysPerThread = kBk / kPerRow;                                    // 4

template <KvFormat F, int MAXD>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(const AttentionArgs a, int first_pos) {
  extern __shared__ float smem[];
  const int D = a.head_dim, Dp = D + 1;
  float* q_s = smem;               // [kBq][Dp]
  float* k_s = q_s + kBq * Dp;     // [kBk][Dp]
  float* v_s = k_s + kBk * Dp;     // [kBk][Dp]
  float* p_s = v_s + kBk * Dp;     // [kBq][kBk + 1]

  // The tiles with the most keys (the last queries) start first, so the causal imbalance does
  // not leave a tail of long blocks.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBq, head = blockIdx.y;
  const int n_q = a.n_tokens;
  const int group = a.n_head / a.n_head_kv;
  const int64_t kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  const int64_t kv_off = static_cast<int64_t>(head / group) * D;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  const void* keys = a.k_cache[a.slots[0]];
  const void* values = a.v_cache[a.slots[0]];
  const int tid = threadIdx.x, r = tid / kPerRow, g = tid % kPerRow;

  for (int i = tid; i < kBq * D; i += kThreads) {
    const int row = i / D, d = i % D;
    q_s[row * Dp + d] = q0 + row < n_q ? a.q[(q0 + row) * a.ldq + static_cast<int64_t>(head) * D + d] * a.scale : 0.0f;
  }
  // A padding row (past the last query) acts as the last query so that its numbers stay finite.
  const int q_pos = first_pos + min(q0 + r, n_q - 1);
  const int n_keys = first_pos + min(q0 + kBq, n_q);  // keys any row of this tile sees

  float m = -INFINITY, l = 0.0f;
  float o[MAXD / kPerRow];
#pragma unroll
  for (int i = 0; i < MAXD / kPerRow; ++i) o[i] = 0.0f;

  const int chunks = D / 8;  // 8-element pieces per key row (head_dim is a multiple of 8)
  for (int k0 = 0; k0 < n_keys; k0 += kBk) {
    __syncthreads();  // the previous tile's k_s, v_s and p_s are no longer read
    for (int i = tid; i < kBk * chunks; i += kThreads) {
      const int row = i / chunks, d = (i % chunks) * 8;
      const int key = k0 + row;
      float kv[8], vv[8];
      if (key < n_keys) {
        kv_load_n<F, 8>(keys, scales_at, key * kv_w + kv_off + d, kv);
        kv_load_n<F, 8>(values, scales_at, key * kv_w + kv_off + d, vv);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        k_s[row * Dp + d + e] = kv[e];
        v_s[row * Dp + d + e] = vv[e];
      }
    }
    __syncthreads();

    float s[kKeysPerThread];
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) s[j] = 0.0f;
    for (int d = 0; d < D; ++d) {
      const float qd = q_s[r * Dp + d];
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) s[j] += qd * k_s[(g * kKeysPerThread + j) * Dp + d];
    }
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      if (k0 + g * kKeysPerThread + j > q_pos) s[j] = -INFINITY;  // causal mask
      tile_max = fmaxf(tile_max, s[j]);
    }
#pragma unroll
    for (int offset = 1; offset < kPerRow; offset <<= 1)
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
    const float m_new = fmaxf(m, tile_max);  // finite: key 0 is in every row's first tile
    const float alpha = expf(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      const float p = expf(s[j] - m_new);
      p_s[r * (kBk + 1) + g * kKeysPerThread + j] = p;
      sum += p;
    }
#pragma unroll
    for (int offset = 1; offset < kPerRow; offset <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    l = l * alpha + sum;
    m = m_new;
#pragma unroll
    for (int i = 0; i < MAXD / kPerRow; ++i) o[i] *= alpha;
    __syncthreads();
    for (int k = 0; k < kBk; ++k) {
      const float p = p_s[r * (kBk + 1) + k];
#pragma unroll
      for (int i = 0; i < MAXD / kPerRow; ++i)
        if (g + kPerRow * i < D) o[i] += p * v_s[k * Dp + g + kPerRow * i];
    }
  }
  if (q0 + r >= n_q) return;
  float* out = a.out + (q0 + r) * a.ldo + static_cast<int64_t>(head) * D;
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < MAXD / kPerRow; ++i)
    if (g + kPerRow * i < D) out[g + kPerRow * i] = o[i] * inv;
}

template <KvFormat F, int MAXD>
void launch(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  const int Dp = a.head_dim + 1;
  const size_t smem = sizeof(float) * (static_cast<size_t>(kBq + 2 * kBk) * Dp + kBq * (kBk + 1));
  auto kernel = attention_prefill_kernel<F, MAXD>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "raising the shared memory of attention_prefill");
  const dim3 grid((a.n_tokens + kBq - 1) / kBq, a.n_head);
  kernel<<<grid, kThreads, smem, stream>>>(a, first_pos);
}

template <KvFormat F>
void launch_d(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  if (a.head_dim <= 64) launch<F, 64>(a, first_pos, stream);
  else if (a.head_dim <= 128) launch<F, 128>(a, first_pos, stream);
  else launch<F, 256>(a, first_pos, stream);
}

}  // namespace

void attention_prefill(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  if (a.n_tokens <= 0) return;
  if (a.head_dim > 256 || a.head_dim % 8 != 0 || a.n_head % a.n_head_kv != 0)
    throw InternalError("attention_prefill: head_dim <= 256, a multiple of 8, and n_head a multiple of n_head_kv");
  require_kv_heads_fit(a.kv_format, a.head_dim, "attention_prefill");
  if (attention_prefill_uses_tensor_cores(a)) {
    attention_prefill_mma(a, first_pos, stream);
    check_launch("attention_prefill_mma");
    return;
  }
  if (a.out16_type != Dtype16::None)
    throw InternalError(
        "attention_prefill: a 16-bit output needs the tensor-core kernel (attention_prefill_uses_tensor_cores)");
  dispatch_kv_format(a.kv_format, [&]<KvFormat F>() { launch_d<F>(a, first_pos, stream); });
  check_launch("attention_prefill");
}

}  // namespace lathe::cuda
