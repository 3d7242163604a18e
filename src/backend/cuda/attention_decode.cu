// Decode attention: one new query token per sequence against that sequence's cached keys.
//
// Split-K: the keys 0..pos of a token are cut into n_splits ranges of split_len; block (split,
// kv head x sub-group, token) handles one range for the query heads of one sub-group of those that
// share that K/V head (grouped-query attention reads each K/V row once per sub-group). Whole groups
// save K/V reads at long contexts; at short ones the GPU would hold a handful of blocks, each
// walking every head of its group one after another, so the groups are cut into smaller ones
// (decode_heads_per_block) and their blocks run side by side. Within a block each warp walks
// chunks of 32 keys: lane = key for the scores (all heads of the group), then lane = dimension(s)
// for the weighted sum of V, with an online softmax (running max and sum) per head. The four warps'
// states merge in shared memory; the block writes an unnormalized partial (o, max, sum), and
// attention_combine merges the splits. With one split the block writes the final output.
//
// For head sizes 32 * DL (64, 128, 256) a lane holds DL consecutive dimensions of V and loads a
// row's share with one vector load, 16 rows (8 for 256) before it uses any: H200 tg128, same call,
// against the scalar loads of 8 rows: 0.5B BF16 +0.5% to +2.1%, 0.5B Q4_0 +3.2%, 8B Q4_0 +1.5%,
// 8B BF16 unchanged (docs/PERFORMANCE.md).
//
// The code is kept short: loops that run once or twice per warp stay rolled (`#pragma unroll 1`),
// the head size is a template argument where it is 32 * DL (so the key loop unrolls fully and
// the scalar V path is not compiled in), and the double-precision RoPE angles are out of line.
// The Llama-3.1-8B instance went from 63.6 to 41.8 KB of SASS; H200 tg128 against the previous
// code, same call: 8B BF16 +0.4%, Q4_0 +0.5%, 0.5B BF16 +0.6%, Q4_0 +1.4%. Its time is latency:
// letting it keep fewer loads in flight (key loop unrolled 4, 8 V rows at a time) cost 8B BF16
// 3.9% and Q4_0 10.8% (docs/PERFORMANCE.md).
//
// The grid is fixed by n_ctx (not by the current length), so a captured CUDA graph replays it
// for every position; blocks past a token's length exit at once.
#include <algorithm>
#include <cfloat>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/q8_block.cuh"
#include "backend/cuda/rope_head.cuh"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

// rope_kv's work for the heads of one block (AttentionArgs::rope): its query heads, biased,
// normalized, rotated and pre-scaled into q_s; with store_kv also the key (rotated) and value
// rows of K/V head g at the token's position into the caches. One warp per head; o_s (not yet in
// use) gives each warp D floats of scratch. The caller synchronizes the block afterwards.
template <KvFormat F>
__device__ __forceinline__ void rope_own_heads(const AttentionArgs& a, int t, int g, int head0, int group,
                                               bool store_kv, const float* cos_t, const float* sin_t, float* q_s,
                                               float* o_s) {
  __syncthreads();  // the angles
  const RopeKvArgs& r = a.rope;
  const int D = a.head_dim, warp = threadIdx.x / 32;
  const int pos = a.positions[t], slot = a.slots[t];
  const int64_t q_w = static_cast<int64_t>(a.n_head) * D, kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  const int64_t kv_at = static_cast<int64_t>(pos) * kv_w + static_cast<int64_t>(g) * D;
  const float* row = r.qkv + t * r.ld;
  float* buf = o_s + warp * D;
  const int units = group + (store_kv ? 2 : 0);  // query heads, then the key and the value head
  for (int u = warp; u < units; u += kWarps) {
    if (u < group) {
      const int64_t off = static_cast<int64_t>(head0 + u) * D;
      rope_one_head(row + off, r.bq != nullptr ? r.bq + off : nullptr, r.q_norm, r.eps, D, r.rope_dim, r.neox, cos_t,
                    sin_t, buf, [&](int i, float v) { q_s[u * D + i] = v * a.scale; });
    } else if (u == group) {
      const int64_t off = static_cast<int64_t>(g) * D;
      rope_one_head(row + q_w + off, r.bk != nullptr ? r.bk + off : nullptr, r.k_norm, r.eps, D, r.rope_dim, r.neox,
                    cos_t, sin_t, buf,
                    [&](int i, float v) { kv_store_warp<F>(r.k_cache[slot], scales_at, kv_at + i, v); });
    } else {
      const int64_t off = static_cast<int64_t>(g) * D;
      const float* bias = r.bv != nullptr ? r.bv + off : nullptr;
      kv_store_head<F>(r.v_cache[slot], scales_at, kv_at, row + q_w + kv_w + off, bias, D);
    }
  }
}

// DL = ceil(head_dim / 32) dimensions per lane (at most), G = query heads per K/V head (at most).
// kExactD: head_dim is exactly 32 * DL (64, 128, 256), known at compile time.
template <KvFormat F, int DL, int G, bool kExactD>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(const AttentionArgs a, int group_total, int heads_per_block, int split_len, float* part_o,
                            float* part_ml, bool prefetch) {
  extern __shared__ float smem[];
  const int D = kExactD ? 32 * DL : a.head_dim;
  float* q_s = smem;                                 // [G][D], pre-scaled
  float* o_s = q_s + G * D;                          // [kWarps][G][D]
  float* m_s = o_s + kWarps * G * D;                 // [kWarps][G]
  float* l_s = m_s + kWarps * G;                     // [kWarps][G]
  float* cos_t = l_s + kWarps * G;                   // [kMaxHeadDim / 2]: RoPE folded in (a.rope)
  float* sin_t = cos_t + kMaxHeadDim / 2;

  const int split = blockIdx.x, t = blockIdx.z;
  const int n_sub = gridDim.y / a.n_head_kv;
  const int g = blockIdx.y / n_sub, sub = blockIdx.y % n_sub;  // K/V head, sub-group of its query heads
  const int group = min(heads_per_block, group_total - sub * heads_per_block);  // query heads of this block
  const int n_splits = gridDim.x;
  const int n_keys = a.positions[t] + 1;
  const int begin = split * split_len;
  const int end = min(n_keys, begin + split_len);
  const int head0 = g * group_total + sub * heads_per_block;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  const void* keys = a.k_cache[a.slots[t]];
  const void* values = a.v_cache[a.slots[t]];
  const int64_t head_off = static_cast<int64_t>(g) * D;
  constexpr bool vector_v = kExactD;  // V rows by vector loads (below)

  // Positions, slots and the cache table come from the host; the cached rows were written by
  // earlier steps (this token's own row is being written by the kernel before, or by this one
  // with RoPE folded in; L2 keeps the prefetch coherent with that write). Blocks scheduled while
  // that kernel still runs fetch the first chunk of their keys and values now (at most 32 rows:
  // all of a long context would not fit in L2), and the RoPE angles (a table from the host).
  const bool rope_here = a.rope.qkv != nullptr;
  if (rope_here)
    load_rope_angles(a.rope.cos_sin, a.rope.inv_freq, a.rope.position_scale, n_keys - 1, a.rope.rope_dim / 2, cos_t,
                     sin_t);
  if (prefetch) {
    kv_prefetch_rows<F>(keys, kv_w, head_off, D, begin, min(end, begin + 32));
    kv_prefetch_rows<F>(values, kv_w, head_off, D, begin, min(end, begin + 32));
  }
  wait_for_previous_kernel();

  if (begin >= end) {  // nothing in this range: an empty partial the combine step skips
    if (n_splits > 1)
      for (int j = threadIdx.x; j < group; j += blockDim.x) {
        const int64_t at = ((static_cast<int64_t>(t) * a.n_head + head0 + j) * n_splits + split) * 2;
        part_ml[at] = -FLT_MAX;
        part_ml[at + 1] = 0.0f;
      }
    return;
  }

  if (rope_here) {
    rope_own_heads<F>(a, t, g, head0, group, begin <= n_keys - 1 && n_keys - 1 < end, cos_t, sin_t, q_s, o_s);
  } else {
    for (int i = threadIdx.x; i < group * D; i += blockDim.x)
      q_s[i] = a.q[t * a.ldq + static_cast<int64_t>(head0) * D + i] * a.scale;
  }
  __syncthreads();

  float m[G], l[G], o[G][DL];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    m[j] = -FLT_MAX;
    l[j] = 0.0f;
#pragma unroll
    for (int c = 0; c < DL; ++c) o[j][c] = 0.0f;
  }

#pragma unroll 1
  for (int k0 = begin + warp * 32; k0 < end; k0 += kWarps * 32) {
    const int key = k0 + lane;
    const bool valid = key < end;
    // Scores of this lane's key for every head of the group.
    float s[G];
#pragma unroll
    for (int j = 0; j < G; ++j) s[j] = 0.0f;
    if (valid) {
      const int64_t row = static_cast<int64_t>(key) * kv_w + head_off;
      // head_dim is a multiple of 8 (checked by the engine): 16-byte loads of 8 halves, several
      // in flight.
#pragma unroll(kExactD ? 32 * DL / 8 : 8)
      for (int d = 0; d < D; d += 8) {
        float kd[8];
        kv_load_n<F, 8>(keys, scales_at, row + d, kd);
#pragma unroll
        for (int j = 0; j < G; ++j) {
          if (j >= group) break;
#pragma unroll
          for (int e = 0; e < 8; ++e) s[j] += q_s[j * D + d + e] * kd[e];
        }
      }
    }
    // Online softmax per head; the chunk's first key is always valid, so the max is finite.
    float p[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      if (j >= group) break;
      const float chunk_max = warp_max(valid ? s[j] : -FLT_MAX);
      const float m_new = fmaxf(m[j], chunk_max);
      const float alpha = expf(m[j] - m_new);
      p[j] = valid ? expf(s[j] - m_new) : 0.0f;
      l[j] = l[j] * alpha + warp_sum(p[j]);
      m[j] = m_new;
#pragma unroll
      for (int c = 0; c < DL; ++c) o[j][c] *= alpha;
    }
    // o += p . V. When head_dim is 32 * DL (64, 128, 256), each lane holds DL consecutive
    // dimensions and loads them with one vector load per V row, kVRows rows before any is used;
    // otherwise lane = dimension (d = lane + 32 c), 8 rows at a time. A key past the chunk's end
    // reads row k0 with weight 0. Either way each dimension adds the keys in order (same floats).
    const int n_in_chunk = min(32, end - k0);
    if constexpr (vector_v) {
      constexpr int kVRows = DL <= 4 ? 16 : 8;
#pragma unroll 1
      for (int i0 = 0; i0 < n_in_chunk; i0 += kVRows) {
        float v[kVRows][DL];
#pragma unroll
        for (int u = 0; u < kVRows; ++u) {
          const int key = i0 + u < n_in_chunk ? k0 + i0 + u : k0;
          kv_load_n<F, DL>(values, scales_at, static_cast<int64_t>(key) * kv_w + head_off + lane * DL, v[u]);
        }
#pragma unroll
        for (int j = 0; j < G; ++j) {
          if (j >= group) break;
#pragma unroll
          for (int u = 0; u < kVRows; ++u) {
            const float pu = __shfl_sync(0xffffffffu, p[j], (i0 + u) % 32);  // lanes past the chunk hold p = 0
#pragma unroll
            for (int c = 0; c < DL; ++c) o[j][c] += pu * v[u][c];
          }
        }
      }
    } else {
#pragma unroll 1
      for (int i0 = 0; i0 < n_in_chunk; i0 += 8) {
        float v[8][DL];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int key = i0 + u < n_in_chunk ? k0 + i0 + u : k0;
          const int64_t row = static_cast<int64_t>(key) * kv_w + head_off;
#pragma unroll
          for (int c = 0; c < DL; ++c) {
            const int d = lane + 32 * c;
            v[u][c] = d < D ? kv_load1<F>(values, scales_at, row + d) : 0.0f;
          }
        }
#pragma unroll
        for (int j = 0; j < G; ++j) {
          if (j >= group) break;
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const float pu = __shfl_sync(0xffffffffu, p[j], i0 + u);  // lanes past the chunk hold p = 0
#pragma unroll
            for (int c = 0; c < DL; ++c) o[j][c] += pu * v[u][c];
          }
        }
      }
    }
  }

  // Merge the warps' states.
#pragma unroll
  for (int j = 0; j < G; ++j) {
    if (j >= group) break;
    if (lane == 0) {
      m_s[warp * G + j] = m[j];
      l_s[warp * G + j] = l[j];
    }
#pragma unroll
    for (int c = 0; c < DL; ++c) {
      const int d = vector_v ? lane * DL + c : lane + 32 * c;
      if (d < D) o_s[(warp * G + j) * D + d] = o[j][c];
    }
  }
  __syncthreads();
#pragma unroll 1
  for (int i = threadIdx.x; i < group * D; i += blockDim.x) {
    const int j = i / D, d = i % D;
    float m_max = -FLT_MAX;
    for (int w = 0; w < kWarps; ++w) m_max = fmaxf(m_max, m_s[w * G + j]);
    float sum = 0.0f, acc = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float wl = l_s[w * G + j];
      if (wl == 0.0f) continue;  // a warp that saw no key
      const float f = expf(m_s[w * G + j] - m_max);
      sum += wl * f;
      acc += o_s[(w * G + j) * D + d] * f;
    }
    const int head = head0 + j;
    if (n_splits == 1) {
      const int64_t at = static_cast<int64_t>(head) * D + d;
      const float o = acc / sum;
      a.out[t * a.ldo + at] = o;
      // A warp holds 32 consecutive dimensions of one head (head_dim % 32 == 0): one 8-bit block.
      if (a.out_q8.q8 != nullptr) write_q8_block(a.out_q8, t, at / 32, o);
    } else {
      const int64_t at = (static_cast<int64_t>(t) * a.n_head + head) * n_splits + split;
      part_o[at * D + d] = acc;
      if (d == 0) {
        part_ml[at * 2] = m_max;
        part_ml[at * 2 + 1] = sum;
      }
    }
  }
}

// Merges the splits of one (token, head): out = sum_s e^(m_s - M) o_s / sum_s e^(m_s - M) l_s.
__global__ void attention_combine_kernel(const AttentionArgs a, int n_splits, const float* part_o,
                                         const float* part_ml) {
  wait_for_previous_kernel();
  const int head = blockIdx.x, t = blockIdx.y;
  const int D = a.head_dim;
  const int64_t base = (static_cast<int64_t>(t) * a.n_head + head) * n_splits;
  float m_max = -FLT_MAX;
  for (int s = 0; s < n_splits; ++s)
    if (part_ml[(base + s) * 2 + 1] > 0.0f) m_max = fmaxf(m_max, part_ml[(base + s) * 2]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float sum = 0.0f, acc = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
      const float l = part_ml[(base + s) * 2 + 1];
      if (l == 0.0f) continue;
      const float f = expf(part_ml[(base + s) * 2] - m_max);
      sum += l * f;
      acc += part_o[(base + s) * D + d] * f;
    }
    const int64_t at = static_cast<int64_t>(head) * D + d;
    const float o = acc / sum;
    a.out[t * a.ldo + at] = o;
    if (a.out_q8.q8 != nullptr) write_q8_block(a.out_q8, t, at / 32, o);
  }
}

template <KvFormat F, int DL>
void launch_dl(const AttentionArgs& a, int group_total, int group, int n_splits, int split_len, float* part_o,
               float* part_ml, cudaStream_t stream) {
  const int n_sub = (group_total + group - 1) / group;
  const dim3 grid(n_splits, a.n_head_kv * n_sub, a.n_tokens);
  auto launch = [&](auto kernel, int G) {
    // q_s and o_s, m_s and l_s, the RoPE angles (cos_t, sin_t)
    const size_t smem =
        sizeof(float) * (static_cast<size_t>(G) * a.head_dim * (1 + kWarps) + 2 * kWarps * G + kMaxHeadDim);
    if (smem > 48 * 1024) check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                     static_cast<int>(smem)),
                                "raising the shared memory of attention_decode");
    launch_chained(kernel, grid, kWarps * 32, smem, stream, "attention_decode", a, group_total, group, split_len,
                   part_o, part_ml, prefetch_before_wait_enabled());
  };
  const auto by_group = [&]<bool kExactD>() {
    if (group <= 1) launch(attention_decode_kernel<F, DL, 1, kExactD>, 1);
    else if (group <= 2) launch(attention_decode_kernel<F, DL, 2, kExactD>, 2);
    else if (group <= 4) launch(attention_decode_kernel<F, DL, 4, kExactD>, 4);
    else launch(attention_decode_kernel<F, DL, 8, kExactD>, 8);
  };
  if (a.head_dim == 32 * DL) by_group.template operator()<true>();
  else by_group.template operator()<false>();
}

template <KvFormat F>
void launch_format(const AttentionArgs& a, int group_total, int group, int n_splits, int split_len, float* part_o,
                   float* part_ml, cudaStream_t stream) {
  const int dl = (a.head_dim + 31) / 32;
  if (dl <= 2) launch_dl<F, 2>(a, group_total, group, n_splits, split_len, part_o, part_ml, stream);
  else if (dl <= 4) launch_dl<F, 4>(a, group_total, group, n_splits, split_len, part_o, part_ml, stream);
  else launch_dl<F, 8>(a, group_total, group, n_splits, split_len, part_o, part_ml, stream);
}

}  // namespace

int decode_splits(int n_ctx, int n_tokens, int n_head_kv, int multiprocessors) {
  // Up to 1024 positions one block per K/V head is enough and saves the merge kernel; beyond,
  // enough blocks to fill the GPU twice over at full length, none shorter than 256 keys.
  if (n_ctx <= 1024) return 1;
  const int want = std::max(1, 2 * multiprocessors / std::max(1, n_tokens * n_head_kv));
  const int most = std::max(1, (n_ctx + 255) / 256);
  return std::min(want, most);
}

int decode_heads_per_block(int n_splits, int n_tokens, int n_head_kv, int group, int multiprocessors) {
  // Halve the sub-groups while the grid would not cover the GPU once.
  const int blocks_per_sub_group = std::max(1, n_splits * n_tokens * n_head_kv);
  int per_block = std::max(1, group);
  while (per_block > 1 && blocks_per_sub_group * ((group + per_block - 1) / per_block) < multiprocessors)
    per_block = (per_block + 1) / 2;
  return per_block;
}

size_t split_scratch_floats(int n_tokens, int n_head, int head_dim, int n_splits) {
  return static_cast<size_t>(n_tokens) * n_head * n_splits * (head_dim + 2);
}

void attention_decode(const AttentionArgs& a, int n_splits, int split_len, float* scratch, cudaStream_t stream,
                      int heads_per_block) {
  if (a.n_tokens <= 0) return;
  if (a.head_dim > kMaxHeadDim || a.n_head % a.n_head_kv != 0)
    throw InternalError("attention_decode: head_dim <= 256 and n_head a multiple of n_head_kv are required");
  const int group_total = a.n_head / a.n_head_kv;
  float* part_o = scratch;
  float* part_ml = scratch + static_cast<size_t>(a.n_tokens) * a.n_head * n_splits * a.head_dim;
  require_kv_heads_fit(a.kv_format, a.head_dim, "attention_decode");
  if (a.out_q8.q8 != nullptr && a.head_dim % 32 != 0)
    throw InternalError("attention_decode: rounding the output to 8-bit blocks needs head_dim % 32 == 0");
  if (a.rope.qkv != nullptr &&
      (a.rope.head_dim != a.head_dim || a.rope.n_head != a.n_head || a.rope.n_head_kv != a.n_head_kv ||
       a.rope.n_tokens != a.n_tokens || a.rope.rope_dim > a.head_dim || a.rope.rope_dim % 2 != 0 ||
       a.rope.positions != a.positions || a.rope.slots != a.slots || a.rope.kv_format != a.kv_format ||
       a.rope.n_ctx != a.n_ctx || static_cast<const void*>(a.rope.k_cache) != static_cast<const void*>(a.k_cache) ||
       static_cast<const void*>(a.rope.v_cache) != static_cast<const void*>(a.v_cache)))
    throw InternalError("attention_decode: the folded RoPE arguments must describe this call's heads and caches");
  // A block holds at most 8 query heads (kernel instances for 1, 2, 4, 8): larger groups
  // (multi-query attention) always run as sub-groups.
  const int group = std::min(heads_per_block > 0 ? std::min(heads_per_block, group_total) : group_total, 8);
  dispatch_kv_format(a.kv_format, [&]<KvFormat F>() {
    launch_format<F>(a, group_total, group, n_splits, split_len, part_o, part_ml, stream);
  });
  check_launch("attention_decode");
  if (n_splits > 1) {
    launch_chained(attention_combine_kernel, dim3(a.n_head, a.n_tokens), 128, 0, stream, "attention_combine", a,
                   n_splits, part_o, part_ml);
    check_launch("attention_combine");
  }
}

}  // namespace lathe::cuda
