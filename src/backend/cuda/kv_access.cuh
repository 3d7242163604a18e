// Reading and writing KV cache elements on the device, in every KvFormat (core/kv_format.hpp).
// `scales_at` is where a Q8_0 layer buffer keeps its half scales (kv_q8_scales_offset), unused
// by the other formats.
#pragma once

#include <string>

#include "backend/cuda/common.cuh"
#include "core/kv_format.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {

__device__ __forceinline__ float kv_q8_scale(const void* base, int64_t scales_at, int64_t index) {
  const auto* scales = reinterpret_cast<const __half*>(static_cast<const uint8_t*>(base) + scales_at);
  return __half2float(scales[index / kKvQ8Block]);
}

// Element `index` of a layer buffer.
template <KvFormat F>
__device__ __forceinline__ float kv_load1(const void* base, int64_t scales_at, int64_t index) {
  if constexpr (F == KvFormat::F16) return __half2float(static_cast<const __half*>(base)[index]);
  else if constexpr (F == KvFormat::F32) return static_cast<const float*>(base)[index];
  else return kv_q8_scale(base, scales_at, index) * static_cast<float>(static_cast<const int8_t*>(base)[index]);
}

// Element e (0..7) of the 8-bit quants packed four to a word in `words`, times the block scale d.
__device__ __forceinline__ float kv_q8_unpack(const uint32_t* words, int e, float d) {
  return d * static_cast<float>(static_cast<int8_t>((words[e / 4] >> (8 * (e % 4))) & 0xFF));
}

// N (2, 4 or 8) consecutive elements with one vector load (8 halves: 16 bytes; 8 Q8_0 quants: 8
// bytes); `index` must be a multiple of N, so that for Q8_0 the N share one block.
template <KvFormat F, int N>
__device__ __forceinline__ void kv_load_n(const void* base, int64_t scales_at, int64_t index, float (&out)[N]) {
  static_assert(N == 2 || N == 4 || N == 8, "2, 4 or 8 elements");
  if constexpr (F == KvFormat::F16) {
    const __half* p = static_cast<const __half*>(base) + index;
    if constexpr (N == 8) {
      halves8_to_float(*reinterpret_cast<const uint4*>(p), out);
    } else {
      uint32_t words[N / 2];
      if constexpr (N == 4) {
        const uint2 raw = *reinterpret_cast<const uint2*>(p);
        words[0] = raw.x;
        words[1] = raw.y;
      } else {
        words[0] = *reinterpret_cast<const uint32_t*>(p);
      }
#pragma unroll
      for (int e = 0; e < N / 2; ++e) {
        __half2 h2;
        memcpy(&h2, &words[e], 4);
        const float2 f = __half22float2(h2);
        out[2 * e] = f.x;
        out[2 * e + 1] = f.y;
      }
    }
  } else if constexpr (F == KvFormat::F32) {
    const float* p = static_cast<const float*>(base) + index;
    if constexpr (N == 2) {
      const float2 a = *reinterpret_cast<const float2*>(p);
      out[0] = a.x; out[1] = a.y;
    } else {
#pragma unroll
      for (int e = 0; e < N; e += 4) {
        const float4 a = *reinterpret_cast<const float4*>(p + e);
        out[e] = a.x; out[e + 1] = a.y; out[e + 2] = a.z; out[e + 3] = a.w;
      }
    }
  } else {
    const int8_t* p = static_cast<const int8_t*>(base) + index;
    uint32_t words[2] = {0u, 0u};
    if constexpr (N == 8) {
      const uint2 raw = *reinterpret_cast<const uint2*>(p);
      words[0] = raw.x;
      words[1] = raw.y;
    } else if constexpr (N == 4) {
      words[0] = *reinterpret_cast<const uint32_t*>(p);
    } else {
      words[0] = *reinterpret_cast<const uint16_t*>(p);
    }
    const float d = kv_q8_scale(base, scales_at, index);
#pragma unroll
    for (int e = 0; e < N; ++e) out[e] = kv_q8_unpack(words, e, d);
  }
}

// Stores v as element `index`. The 32 lanes of a warp call it together, lane i with element i of
// one 32-element block (index % 32 == lane): Q8_0 rounds the block with one scale, exactly as
// core/quant.hpp's Q8_0 (d = max|x| / 127 kept as a half, q = roundf(x / d)).
template <KvFormat F>
__device__ __forceinline__ void kv_store_warp(void* base, int64_t scales_at, int64_t index, float v) {
  if constexpr (F == KvFormat::F16) {
    static_cast<__half*>(base)[index] = __float2half_rn(v);
  } else if constexpr (F == KvFormat::F32) {
    static_cast<float*>(base)[index] = v;
  } else {
    const float d = warp_max(fabsf(v)) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    static_cast<int8_t*>(base)[index] = static_cast<int8_t>(roundf(v * id));
    if (index % kKvQ8Block == 0) {
      auto* scales = reinterpret_cast<__half*>(static_cast<uint8_t*>(base) + scales_at);
      scales[index / kKvQ8Block] = __float2half_rn(d);
    }
  }
}

// D values at src (+ bias, when given) as elements at, at + 1, ... of a layer buffer, by one warp
// (D a multiple of 32 for Q8_0, as kv_store_warp needs): a value head's row.
template <KvFormat F>
__device__ __forceinline__ void kv_store_head(void* base, int64_t scales_at, int64_t at, const float* src,
                                              const float* bias, int D) {
#pragma unroll 1
  for (int d = threadIdx.x % 32; d < D; d += 32) {
    float v = src[d];
    if (bias != nullptr) v += bias[d];
    kv_store_warp<F>(base, scales_at, at + d, v);
  }
}

// Asks L2 for rows [begin, end) of one head (row r at element r * row_stride + head_off,
// head_dim elements), one 128-byte line per thread of the block and step. Q8_0's scales (1/16 of
// the bytes) are left to the loads.
template <KvFormat F>
__device__ __forceinline__ void kv_prefetch_rows(const void* base, int64_t row_stride, int64_t head_off,
                                                 int head_dim, int begin, int end) {
  constexpr int64_t kElemBytes = F == KvFormat::F32 ? 4 : F == KvFormat::F16 ? 2 : 1;
  const int lines = static_cast<int>((head_dim * kElemBytes + 127) / 128);
  const auto* bytes = static_cast<const uint8_t*>(base);
  for (int i = threadIdx.x; i < (end - begin) * lines; i += blockDim.x) {
    const int64_t element = static_cast<int64_t>(begin + i / lines) * row_stride + head_off;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(bytes + element * kElemBytes + (i % lines) * 128));
  }
}

// The launchers' guard: Q8_0 blocks of 32 must not straddle heads (the engines refuse such models
// before allocating, runtime/kv_cache.hpp; reaching a kernel with one is a bug).
inline void require_kv_heads_fit(KvFormat format, int head_dim, const char* kernel) {
  if (format == KvFormat::Q8_0 && head_dim % kKvQ8Block != 0)
    throw InternalError(std::string(kernel) + ": a Q8_0 KV cache needs head_dim % 32 == 0");
}

// Calls f.template operator()<F>() with the KvFormat known at compile time.
template <typename Fn>
void dispatch_kv_format(KvFormat format, Fn&& f) {
  switch (format) {
    case KvFormat::F16: f.template operator()<KvFormat::F16>(); break;
    case KvFormat::F32: f.template operator()<KvFormat::F32>(); break;
    case KvFormat::Q8_0: f.template operator()<KvFormat::Q8_0>(); break;
  }
}

}  // namespace lathe::cuda
