// Decoding one "step" of a device-layout row (device_layout.hpp) into floats: 8 elements for the
// float types, 32 for the block-quantized ones. Used by the embedding gather, the dequantizing
// copy before cuBLAS, and the float-activation mat-vec (F32, F16, BF16, Q4_K, Q6_K).
// The formulas are ggml's, as the CPU reference in core/quant.cpp implements them.
#pragma once

#include "backend/cuda/common.cuh"
#include "core/dtype.hpp"

namespace lathe::cuda {

template <DType T>
struct StepElems {
  static constexpr int value = (T == DType::F32 || T == DType::F16 || T == DType::BF16) ? 8 : 32;
};

// Q4_K's six-bit scale and min of 32-element group g (ggml's get_scale_min_k4).
__device__ __forceinline__ void k4_scale_min(const uint8_t* scales, int g, int& scale, int& min) {
  if (g < 4) {
    scale = scales[g] & 0x3F;
    min = scales[4 + g] & 0x3F;
  } else {
    scale = (scales[g + 4] & 0x0F) | ((scales[g - 4] >> 2) & 0x30);
    min = (scales[g + 4] >> 4) | ((scales[g] >> 2) & 0x30);
  }
}

// Eight bfloat16 values, as loaded, to floats (bf16 is the top half of a float32).
__device__ __forceinline__ void bf16x8_to_float(const uint4& v, float* out) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    out[2 * i] = __uint_as_float(words[i] << 16);
    out[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
  }
}

// Decodes step `st` of a row whose quants start at `qs` and scales at `sc`.
template <DType T>
__device__ __forceinline__ void decode_step(const uint8_t* qs, const uint8_t* sc, int64_t st, float* out) {
  if constexpr (T == DType::F32) {
    const float4* p = reinterpret_cast<const float4*>(qs) + st * 2;
    const float4 a = p[0], b = p[1];
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  } else if constexpr (T == DType::F16) {
    halves8_to_float(reinterpret_cast<const uint4*>(qs)[st], out);
  } else if constexpr (T == DType::BF16) {
    bf16x8_to_float(reinterpret_cast<const uint4*>(qs)[st], out);
  } else if constexpr (T == DType::Q8_0) {
    const float d = load_half(sc + st * 2);
    const int4* p = reinterpret_cast<const int4*>(qs + st * 32);
    const int4 a = p[0], b = p[1];
    const int words[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
    for (int i = 0; i < 32; ++i) out[i] = d * static_cast<float>(static_cast<int8_t>(words[i / 4] >> (8 * (i % 4))));
  } else if constexpr (T == DType::Q4_0 || T == DType::Q4_1) {
    float d, m;
    if constexpr (T == DType::Q4_0) {
      d = load_half(sc + st * 2);
      m = -8.0f * d;
    } else {
      d = load_half(sc + st * 4);
      m = load_half(sc + st * 4 + 2);
    }
    const int4 v = *reinterpret_cast<const int4*>(qs + st * 16);
    const int words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int byte = (words[j / 4] >> (8 * (j % 4))) & 0xFF;
      out[j] = d * static_cast<float>(byte & 0x0F) + m;
      out[j + 16] = d * static_cast<float>(byte >> 4) + m;
    }
  } else if constexpr (T == DType::Q4_K) {
    // 8 steps per 144-byte super-block: d, dmin (f16), scales[12], qs[128]; group g = st % 8
    // is nibble (g % 2) of qs[(g / 2) * 32 + l].
    const uint8_t* block = qs + (st / 8) * 144;
    const int g = static_cast<int>(st % 8);
    int scale, min;
    k4_scale_min(block + 4, g, scale, min);
    const float dl = load_half(block) * static_cast<float>(scale);
    const float ml = load_half(block + 2) * static_cast<float>(min);
    const int4* p = reinterpret_cast<const int4*>(block + 16 + (g / 2) * 32);
    const int4 a = p[0], b = p[1];
    const int words[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    const int shift = 4 * (g % 2);
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int byte = (words[l / 4] >> (8 * (l % 4))) & 0xFF;
      out[l] = dl * static_cast<float>((byte >> shift) & 0x0F) - ml;
    }
  } else if constexpr (T == DType::Q6_K) {
    // 8 steps per 208-byte block (ql[128] qh[64] scales[16]) + d in the scale array. Step s
    // covers elements h*128 + r0 + l (h = s / 4, r0 = (s % 4) * 32, l < 32): low nibble
    // (r0 / 64) of ql[h*64 + r0 % 64 + l], bits pair (s % 4) of qh[h*32 + l].
    const uint8_t* block = qs + (st / 8) * 208;
    const int s = static_cast<int>(st % 8);
    const int h = s / 4, r0 = (s % 4) * 32;
    const float d = load_half(sc + (st / 8) * 2);
    const int4* pl = reinterpret_cast<const int4*>(block + h * 64 + r0 % 64);
    const int4* ph = reinterpret_cast<const int4*>(block + 128 + h * 32);
    const int4 la = pl[0], lb = pl[1], ha = ph[0], hb = ph[1];
    const int lw[8] = {la.x, la.y, la.z, la.w, lb.x, lb.y, lb.z, lb.w};
    const int hw[8] = {ha.x, ha.y, ha.z, ha.w, hb.x, hb.y, hb.z, hb.w};
    const int lshift = 4 * (r0 / 64), hshift = 2 * (s % 4);
    const int group = (h * 128 + r0) / 16;
    const float d0 = d * static_cast<float>(static_cast<int8_t>(block[192 + group]));
    const float d1 = d * static_cast<float>(static_cast<int8_t>(block[192 + group + 1]));
#pragma unroll
    for (int l = 0; l < 32; ++l) {
      const int low = ((lw[l / 4] >> (8 * (l % 4))) >> lshift) & 0x0F;
      const int high = ((hw[l / 4] >> (8 * (l % 4))) >> hshift) & 0x03;
      out[l] = (l < 16 ? d0 : d1) * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

// Calls f.template operator()<T>() for the device type `type` (one instantiation per type).
template <typename F>
__host__ void dispatch_device_type(DType type, F&& f) {
  switch (type) {
    case DType::F32: f.template operator()<DType::F32>(); break;
    case DType::F16: f.template operator()<DType::F16>(); break;
    case DType::BF16: f.template operator()<DType::BF16>(); break;
    case DType::Q8_0: f.template operator()<DType::Q8_0>(); break;
    case DType::Q4_0: f.template operator()<DType::Q4_0>(); break;
    case DType::Q4_1: f.template operator()<DType::Q4_1>(); break;
    case DType::Q4_K: f.template operator()<DType::Q4_K>(); break;
    case DType::Q6_K: f.template operator()<DType::Q6_K>(); break;
    default: break;
  }
}

}  // namespace lathe::cuda
