// Prefill attention on tensor cores (flash-attention 2 style), for half and Q8_0 KV caches and
// head sizes 64 and 128. The float32 kernel (attention_prefill.cu) ran at ~9 TFLOP/s and took
// 43% of a Llama-3.1-8B 512-token prefill (H200, docs/PERFORMANCE.md). The first version of this
// one loaded each tile through registers after the previous tile's products (73 us per 8B layer
// at Nsight Compute's locked clocks); staging the next tile while the warps multiply, with
// ldmatrix for the operands, takes 29 us.
//
// A block of 4 warps takes 64 queries of one head, each warp 16 of them, and walks the causally
// visible keys 64 at a time. K and V tiles are staged row-major as half in shared memory, two
// tiles deep: while the warps multiply one tile, the next is on its way (cp.async, half caches;
// a Q8_0 cache is loaded and converted by the threads, all of a tile's loads issued first). Per
// tile, each warp computes its 16 x 64 scores S = Q K^T with mma.m16n8k16 (half inputs, float32
// sums), masks the future, updates the running max and sum of each row (online softmax, in base
// 2: the scale carries log2(e)), and adds P V to its 16 x D output, P taken straight from the
// score registers (the accumulator layout of two 8-key tiles is the operand layout of one 16-key
// step). The B operands come from shared memory by ldmatrix: K as stored, V transposed by
// ldmatrix.trans. Q stays in registers as half for the whole walk; the scale is applied before
// rounding. The output is float32, or (out16) the 16-bit input of the output projection.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), with g = lane / 4 and t = lane % 4:
//   A (16 x 16, row-major), 4 registers of 2 halves: (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
//   B (16 x 8, column-major), 2 registers: rows 2t..2t+1 of column g, rows 2t+8..2t+9 of column g
//   C (16 x 8, float), 4 values: (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// ldmatrix (8 x 8 halves, rows at the addresses of 8 lanes): lane i gets row i/4, columns 2(i%4)
// and 2(i%4)+1; with .trans, rows 2(i%4) and 2(i%4)+1 of column i/4. With keys as the rows, the
// first is B of Q K^T (column g = key, rows 2t = dimensions), the second B of P V (rows 2t = keys).
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 4, kBq = 16 * kWarps, kBk = 64, kThreads = 32 * kWarps, kStages = 2;

// Halves per K or V row in shared memory: D + 8, so that the 8 rows an ldmatrix reads (16 bytes
// each, 2 * D + 16 bytes apart) fall in distinct banks.
template <int D>
constexpr int row_stride() { return D + 8; }
template <int D>
constexpr size_t shared_bytes() { return sizeof(__half) * 2 * kStages * kBk * row_stride<D>(); }

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The PTX below needs sm_80; the kernel is never launched below it (attention_prefill_uses_tensor_cores).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define LATHE_MMA_UNAVAILABLE 1
#endif

// d (16 x 8, float) += a (16 x 16, half) * b (16 x 8, half).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#ifndef LATHE_MMA_UNAVAILABLE
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// Four 8 x 8 half matrices from shared memory, lanes 8m..8m+7 giving the row addresses of matrix m.
template <bool kTranspose>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
#ifndef LATHE_MMA_UNAVAILABLE
  if constexpr (kTranspose)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
#else
  __trap();
#endif
}

// 16 bytes from global to shared memory without passing through registers; src_bytes 0 fills
// zeros instead (keys past the last one: a masked score times stale memory could be NaN).
__device__ __forceinline__ void copy16_async(uint32_t dst, const void* src, int src_bytes) {
#ifndef LATHE_MMA_UNAVAILABLE
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
#else
  __trap();
#endif
}

__device__ __forceinline__ void async_commit() {
#ifndef LATHE_MMA_UNAVAILABLE
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `kPending` committed groups of this thread are still in flight.
template <int kPending>
__device__ __forceinline__ void async_wait() {
#ifndef LATHE_MMA_UNAVAILABLE
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

__device__ __forceinline__ float fast_exp2(float x) {  // 2^x; 2^-inf = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Where one head's K and V rows live, and how to read them.
struct KvHead {
  const void* keys;
  const void* values;
  int64_t kv_w;       // elements per cache row (all K/V heads)
  int64_t kv_off;     // this head's first element in a row
  int64_t scales_at;  // Q8_0 scales
  int n_keys;         // keys any query of the block sees: rows past it are zeros
};

// Keys k0..k0 + kBk - 1 into k_s / v_s (kBk rows of row_stride<D>() halves). Neighbouring
// threads take neighbouring 16-byte pieces of a row. Half caches: asynchronous copies (the caller
// commits and waits); Q8_0: every load of the tile first, then the conversions and stores.
template <KvFormat F, int D>
__device__ __forceinline__ void stage_tile(const KvHead& h, int k0, __half* k_s, __half* v_s) {
  constexpr int kChunks = D / 8, kPerThread = kBk * kChunks / kThreads;
  static_assert(kBk * kChunks % kThreads == 0, "every thread stages the same number of pieces");
  if constexpr (F == KvFormat::F16) {
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int piece = threadIdx.x + i * kThreads, row = piece / kChunks, d = (piece % kChunks) * 8;
      const int key = k0 + row;
      const bool inside = key < h.n_keys;
      const int64_t at = static_cast<int64_t>(inside ? key : 0) * h.kv_w + h.kv_off + d;
      copy16_async(shared_address(&k_s[row * row_stride<D>() + d]), static_cast<const __half*>(h.keys) + at,
                   inside ? 16 : 0);
      copy16_async(shared_address(&v_s[row * row_stride<D>() + d]), static_cast<const __half*>(h.values) + at,
                   inside ? 16 : 0);
    }
  } else {
    // Raw quants and scales first (a float copy of a whole tile would not fit in registers).
    uint2 k_raw[kPerThread], v_raw[kPerThread];
    float k_d[kPerThread], v_d[kPerThread];
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int piece = threadIdx.x + i * kThreads, row = piece / kChunks, d = (piece % kChunks) * 8;
      const int key = k0 + row;
      k_raw[i] = v_raw[i] = uint2{0u, 0u};
      k_d[i] = v_d[i] = 0.0f;
      if (key < h.n_keys) {
        const int64_t at = key * h.kv_w + h.kv_off + d;
        k_raw[i] = *reinterpret_cast<const uint2*>(static_cast<const int8_t*>(h.keys) + at);
        v_raw[i] = *reinterpret_cast<const uint2*>(static_cast<const int8_t*>(h.values) + at);
        k_d[i] = kv_q8_scale(h.keys, h.scales_at, at);
        v_d[i] = kv_q8_scale(h.values, h.scales_at, at);
      }
    }
    const auto to_halves = [](uint2 raw, float d) {
      const uint32_t words[2] = {raw.x, raw.y};
      const auto q = [&](int e) { return kv_q8_unpack(words, e, d); };
      return uint4{pack_half2(q(0), q(1)), pack_half2(q(2), q(3)), pack_half2(q(4), q(5)), pack_half2(q(6), q(7))};
    };
#pragma unroll
    for (int i = 0; i < kPerThread; ++i) {
      const int piece = threadIdx.x + i * kThreads, row = piece / kChunks, d = (piece % kChunks) * 8;
      *reinterpret_cast<uint4*>(&k_s[row * row_stride<D>() + d]) = to_halves(k_raw[i], k_d[i]);
      *reinterpret_cast<uint4*>(&v_s[row * row_stride<D>() + d]) = to_halves(v_raw[i], v_d[i]);
    }
  }
}

// Two output values of a row, as float32 or as the 16-bit type Out.
template <typename Out>
__device__ __forceinline__ void store_pair(Out* p, float a, float b) {
  if constexpr (std::is_same_v<Out, float>) {
    *reinterpret_cast<float2*>(p) = float2{a, b};
  } else if constexpr (std::is_same_v<Out, __half>) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
  } else {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
  }
}

template <KvFormat F, int D, typename Out>
__global__ void __launch_bounds__(kThreads) attention_prefill_mma_kernel(const AttentionArgs a, int first_pos,
                                                                        Out* out, int64_t ldo) {
  constexpr int kRs = row_stride<D>();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  __half* const k_tiles = reinterpret_cast<__half*>(shared_raw);  // [kStages][kBk][kRs]
  __half* const v_tiles = k_tiles + kStages * kBk * kRs;           // [kStages][kBk][kRs]

  // The tiles with the most keys (the last queries) start first.
  const int q0 = (gridDim.x - 1 - blockIdx.x) * kBq, head = blockIdx.y;
  const int n_q = a.n_tokens, group = a.n_head / a.n_head_kv;
  KvHead h;
  h.keys = a.k_cache[a.slots[0]];
  h.values = a.v_cache[a.slots[0]];
  h.kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  h.kv_off = static_cast<int64_t>(head / group) * D;
  h.scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, h.kv_w));
  h.n_keys = first_pos + min(q0 + kBq, n_q);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16;  // this warp's first query
  // This thread's rows are row0 + g and row0 + g + 8; a padding row (past the last query) acts as
  // the last query so that its numbers stay finite.
  const int pos_lo = first_pos + min(row0 + g, n_q - 1), pos_hi = first_pos + min(row0 + g + 8, n_q - 1);
  const int warp_last_pos = first_pos + min(row0 + 15, n_q - 1);

  // The first tile is on its way while Q is read.
  stage_tile<F, D>(h, 0, k_tiles, v_tiles);
  async_commit();

  uint32_t qf[D / 16][4];
  {
    const float q_scale = a.scale * 1.4426950408889634f;  // log2(e): the softmax runs in base 2
    const auto q_pair = [&](int row, int d) {
      if (row >= n_q) return 0u;
      const float* p = a.q + static_cast<int64_t>(row) * a.ldq + static_cast<int64_t>(head) * D + d;
      const float2 v = *reinterpret_cast<const float2*>(p);
      return pack_half2(v.x * q_scale, v.y * q_scale);
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

  // ldmatrix row addresses of this lane: matrix lane / 8, row lane % 8 of it.
  const int mat = lane / 8, mrow = lane % 8;
  for (int tile = 0, k0 = 0; k0 < h.n_keys; ++tile, k0 += kBk) {
    const int stage = tile % kStages;
    if (k0 + kBk < h.n_keys) {  // the next tile into the other stage (read by no warp since the last sync)
      stage_tile<F, D>(h, k0 + kBk, k_tiles + (1 - stage) * kBk * kRs, v_tiles + (1 - stage) * kBk * kRs);
      async_commit();
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();  // this tile is in shared memory for every warp
    const __half* k_s = k_tiles + stage * kBk * kRs;
    const __half* v_s = v_tiles + stage * kBk * kRs;
    if (k0 <= warp_last_pos) {  // else the whole tile is in the future of this warp's queries
      float s[kBk / 8][4];
#pragma unroll
      for (int j = 0; j < kBk / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int j = 0; j < kBk / 8; j += 2) {
          // Matrices: keys j*8.. and (j+1)*8.., dimensions kk*16.. and kk*16+8.. of each.
          uint32_t b[4];
          ldmatrix_x4<false>(b, shared_address(&k_s[((j + mat / 2) * 8 + mrow) * kRs + kk * 16 + (mat % 2) * 8]));
          mma_16816(s[j], qf[kk], b[0], b[1]);
          mma_16816(s[j + 1], qf[kk], b[2], b[3]);
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
      const float alpha_lo = fast_exp2(m_lo - new_lo), alpha_hi = fast_exp2(m_hi - new_hi);
      m_lo = new_lo;
      m_hi = new_hi;

      uint32_t pf[kBk / 16][4];  // P as the A operand of the 16-key steps of P V
      float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
      for (int j = 0; j < kBk / 8; ++j) {
        const float p0 = fast_exp2(s[j][0] - m_lo), p1 = fast_exp2(s[j][1] - m_lo);
        const float p2 = fast_exp2(s[j][2] - m_hi), p3 = fast_exp2(s[j][3] - m_hi);
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
        for (int n = 0; n < D / 8; n += 2) {
          // Matrices: keys kk*16.. and kk*16+8.., dimensions n*8.. and (n+1)*8.., transposed.
          uint32_t b[4];
          ldmatrix_x4<true>(b, shared_address(&v_s[(kk * 16 + (mat % 2) * 8 + mrow) * kRs + (n + mat / 2) * 8]));
          mma_16816(o[n], pf[kk], b[0], b[1]);
          mma_16816(o[n + 1], pf[kk], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }

  const float inv_lo = 1.0f / quad_sum(l_lo), inv_hi = 1.0f / quad_sum(l_hi);
  Out* dst = out + static_cast<int64_t>(head) * D + 2 * t;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    if (row0 + g < n_q)
      store_pair(dst + static_cast<int64_t>(row0 + g) * ldo + n * 8, o[n][0] * inv_lo, o[n][1] * inv_lo);
    if (row0 + g + 8 < n_q)
      store_pair(dst + static_cast<int64_t>(row0 + g + 8) * ldo + n * 8, o[n][2] * inv_hi, o[n][3] * inv_hi);
  }
}

template <KvFormat F, int D, typename Out>
void launch(const AttentionArgs& a, int first_pos, Out* out, int64_t ldo, cudaStream_t stream) {
  auto kernel = attention_prefill_mma_kernel<F, D, Out>;
  constexpr size_t smem = shared_bytes<D>();  // 34 KiB (D = 64) or 68 KiB (D = 128)
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "raising the shared memory of attention_prefill_mma");
  const dim3 grid((a.n_tokens + kBq - 1) / kBq, a.n_head);
  kernel<<<grid, kThreads, smem, stream>>>(a, first_pos, out, ldo);
}

template <KvFormat F, int D>
void launch_output(const AttentionArgs& a, int first_pos, cudaStream_t stream) {
  const int64_t dense = static_cast<int64_t>(a.n_head) * D;  // out16: dense rows, the product's input
  switch (a.out16_type) {
    case Dtype16::None: launch<F, D>(a, first_pos, a.out, a.ldo, stream); break;
    case Dtype16::F16: launch<F, D>(a, first_pos, static_cast<__half*>(a.out16), dense, stream); break;
    case Dtype16::BF16: launch<F, D>(a, first_pos, static_cast<__nv_bfloat16*>(a.out16), dense, stream); break;
  }
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
  if ((a.out16_type == Dtype16::None) != (a.out16 == nullptr))
    throw InternalError("attention_prefill_mma: out16 and out16_type go together");
  const auto with_format = [&]<KvFormat F>() {
    if (a.head_dim == 64) launch_output<F, 64>(a, first_pos, stream);
    else launch_output<F, 128>(a, first_pos, stream);
  };
  if (a.kv_format == KvFormat::F16) with_format.template operator()<KvFormat::F16>();
  else with_format.template operator()<KvFormat::Q8_0>();
}

}  // namespace lathe::cuda
