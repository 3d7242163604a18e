// Prefill attention on tensor cores (flash-attention 2 style), for half and Q8_0 KV caches and
// head sizes 64 and 128. The float32 kernel (attention_prefill.cu) ran at ~9 TFLOP/s and took
// 43% of a Llama-3.1-8B 512-token prefill (H200, docs/PERFORMANCE.md).
//
// A block of 4 warps takes 64 queries of one head, each warp 16 of them, and walks the causally
// visible keys 64 at a time. Per key tile: the block stages K (row-major) and V (transposed) as
// half in shared memory; each warp computes its 16 x 64 scores S = Q K^T with mma.m16n8k16 (half
// inputs, float32 sums), masks the future, updates the running max and sum of each row (online
// softmax), and adds P V to its 16 x D output, P taken straight from the score registers (the
// accumulator layout of two 8-key tiles is the operand layout of one 16-key step). Q stays in
// registers as half for the whole walk; the scale 1/sqrt(D) is applied before rounding.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), with g = lane / 4 and t = lane % 4:
//   A (16 x 16, row-major), 4 registers of 2 halves: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
//   B (16 x 8, column-major), 2 registers: rows 2t..2t+1 of column g, rows 2t+8..2t+9 of column g
//   C (16 x 8, float), 4 values: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 4, kBq = 16 * kWarps, kBk = 64, kThreads = 32 * kWarps;

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// d (16 x 8, float) += a (16 x 16, half) * b (16 x 8, half).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();  // never launched below sm_80 (attention_prefill_uses_tensor_cores)
#endif
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <KvFormat F, int D>
__global__ void __launch_bounds__(kThreads) attention_prefill_mma_kernel(const AttentionArgs a, int first_pos) {
  constexpr int kKs = D + 8;    // K row stride in halves: the B loads of a warp hit 32 distinct banks
  constexpr int kVs = kBk + 8;  // transposed V row stride, likewise
  constexpr int kChunks = D / 8;
  __shared__ __align__(16) __half k_s[kBk * kKs];
  __shared__ __align__(16) __half vt_s[D * kVs];

  // The tiles with the most keys (the last queries) start first.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBq, head = blockIdx.y;
  const int n_q = a.n_tokens, group = a.n_head / a.n_head_kv;
  const int64_t kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  const int64_t kv_off = static_cast<int64_t>(head / group) * D;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  const void* keys = a.k_cache[a.slots[0]];
  const void* values = a.v_cache[a.slots[0]];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16;  // this warp's first query
  // This thread's rows are row0 + g and row0 + g + 8; a padding row (past the last query) acts as
  // the last query so that its numbers stay finite.
  const int pos_lo = first_pos + min(row0 + g, n_q - 1), pos_hi = first_pos + min(row0 + g + 8, n_q - 1);
  const int warp_last_pos = first_pos + min(row0 + 15, n_q - 1);
  const int n_keys = first_pos + min(q0 + kBq, n_q);  // keys any row of this block sees

  uint32_t qf[D / 16][4];
  {
    const auto q_pair = [&](int row, int d) {
      if (row >= n_q) return 0u;
      const float* p = a.q + static_cast<int64_t>(row) * a.ldq + static_cast<int64_t>(head) * D + d;
      return pack_half2(p[0] * a.scale, p[1] * a.scale);
    };
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      qf[kk][0] = q_pair(row0 + g, kk * 16 + 2 * t);
      qf[kk][1] = q_pair(row0 + g + 8, kk * 16 + 2 * t);
      qf[kk][2] = q_pair(row0 + g, kk * 16 + 2 * t + 8);
      qf[kk][3] = q_pair(row0 + g + 8, kk * 16 + 2 * t + 8);
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;  // l: this thread's columns only

  for (int k0 = 0; k0 < n_keys; k0 += kBk) {
    __syncthreads();  // the previous tile is no longer read
    // Neighbouring threads take neighbouring keys of one 8-element piece: the transposed V stores
    // of a warp then fill consecutive halves.
    for (int i = threadIdx.x; i < kBk * kChunks; i += kThreads) {
      const int row = i % kBk, d = (i / kBk) * 8, key = k0 + row;
      float kv[8], vv[8];
      if (key < n_keys) {
        kv_load8<F>(keys, scales_at, key * kv_w + kv_off + d, kv);
        kv_load8<F>(values, scales_at, key * kv_w + kv_off + d, vv);
      } else {  // zeros, not stale memory: a masked score times a NaN would still be NaN
#pragma unroll
        for (int e = 0; e < 8; ++e) kv[e] = vv[e] = 0.0f;
      }
      const uint4 packed{pack_half2(kv[0], kv[1]), pack_half2(kv[2], kv[3]), pack_half2(kv[4], kv[5]),
                         pack_half2(kv[6], kv[7])};
      *reinterpret_cast<uint4*>(&k_s[row * kKs + d]) = packed;
#pragma unroll
      for (int e = 0; e < 8; ++e) vt_s[(d + e) * kVs + row] = __float2half_rn(vv[e]);
    }
    __syncthreads();
    if (k0 > warp_last_pos) continue;  // the whole tile is in the future of this warp's queries

    float s[kBk / 8][4];
#pragma unroll
    for (int j = 0; j < kBk / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < kBk / 8; ++j) {
        const __half* kr = &k_s[(j * 8 + g) * kKs + kk * 16 + 2 * t];
        mma_16816(s[j], qf[kk], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8));
      }
    }

    float tile_lo = -INFINITY, tile_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < kBk / 8; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int key = k0 + j * 8 + 2 * t + c;
        if (key > pos_lo) s[j][c] = -INFINITY;  // causal mask (keys past n_keys are past every row)
        if (key > pos_hi) s[j][2 + c] = -INFINITY;
        tile_lo = fmaxf(tile_lo, s[j][c]);
        tile_hi = fmaxf(tile_hi, s[j][2 + c]);
      }
    }
    // Finite: key 0 is in every row's first tile, and no warp skips the first tile.
    const float new_lo = fmaxf(m_lo, quad_max(tile_lo)), new_hi = fmaxf(m_hi, quad_max(tile_hi));
    const float alpha_lo = expf(m_lo - new_lo), alpha_hi = expf(m_hi - new_hi);
    m_lo = new_lo;
    m_hi = new_hi;

    uint32_t pf[kBk / 16][4];  // P as the A operand of the 16-key steps of P V
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int j = 0; j < kBk / 8; ++j) {
      const float p0 = expf(s[j][0] - m_lo), p1 = expf(s[j][1] - m_lo);
      const float p2 = expf(s[j][2] - m_hi), p3 = expf(s[j][3] - m_hi);
      sum_lo += p0 + p1;
      sum_hi += p2 + p3;
      pf[j / 2][(j % 2) * 2] = pack_half2(p0, p1);
      pf[j / 2][(j % 2) * 2 + 1] = pack_half2(p2, p3);
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha_lo;
      o[n][1] *= alpha_lo;
      o[n][2] *= alpha_hi;
      o[n][3] *= alpha_hi;
    }
#pragma unroll
    for (int kk = 0; kk < kBk / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const __half* vr = &vt_s[(n * 8 + g) * kVs + kk * 16 + 2 * t];
        mma_16816(o[n], pf[kk], *reinterpret_cast<const uint32_t*>(vr), *reinterpret_cast<const uint32_t*>(vr + 8));
      }
    }
  }

  const float inv_lo = 1.0f / quad_sum(l_lo), inv_hi = 1.0f / quad_sum(l_hi);
  float* out = a.out + static_cast<int64_t>(head) * D + 2 * t;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    if (row0 + g < n_q) {
      float* p = out + static_cast<int64_t>(row0 + g) * a.ldo + n * 8;
      p[0] = o[n][0] * inv_lo;
      p[1] = o[n][1] * inv_lo;
    }
    if (row0 + g + 8 < n_q) {
      float* p = out + static_cast<int64_t>(row0 + g + 8) * a.ldo + n * 8;
      p[0] = o[n][2] * inv_hi;
      p[1] = o[n][3] * inv_hi;
    }
  }
}

template <KvFormat F, int D>
void launch(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  const dim3 grid((a.n_tokens + kBq - 1) / kBq, a.n_head);
  attention_prefill_mma_kernel<F, D><<<grid, kThreads, 0, stream>>>(a, first_pos);
}

bool mma_attention_turned_off() {
  static const bool off = turned_off_by_env("LATHE_CUDA_MMA_ATTENTION");
  return off;
}

}  // namespace

bool attention_prefill_uses_tensor_cores(const AttentionArgs& a) {
  // A float32 cache keeps the float32 kernel: it is the exact path the logit checks against
  // transformers in float32 rely on (tests/forward/test_cuda_vs_hf_big.cpp).
  return (a.kv_format == KvFormat::F16 || a.kv_format == KvFormat::Q8_0) && (a.head_dim == 64 || a.head_dim == 128) &&
         !mma_attention_turned_off() && current_device_facts().major >= 8;
}

void attention_prefill_mma(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  if (!attention_prefill_uses_tensor_cores(a))
    throw InternalError("attention_prefill_mma: needs a half or Q8_0 KV cache, head_dim 64 or 128, sm_80 or later");
  const auto with_format = [&]<KvFormat F>() {
    if (a.head_dim == 64) launch<F, 64>(a, first_pos, stream);
    else launch<F, 128>(a, first_pos, stream);
  };
  if (a.kv_format == KvFormat::F16) with_format.template operator()<KvFormat::F16>();
  else with_format.template operator()<KvFormat::Q8_0>();
}

}  // namespace lathe::cuda
