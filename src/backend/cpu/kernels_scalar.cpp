// Portable kernels: the reference for the SIMD levels and the fallback on any CPU. Each weight
// block is decoded to small signed integers plus float factors, and dotted against the 8-bit
// activations in exact integer arithmetic; only the per-block scaling is floating point.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/kernels.hpp"
#include "core/k_quant_scales.hpp"
#include "core/fp16.hpp"

namespace lathe::cpu::kernels {
namespace {

float load_f16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return f16_to_f32(bits);
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

// ---- activation quantization ----------------------------------------------------------------

int8_t quantize_one(float value, float inverse_scale) {
  // lrint (round half to even, like the AVX2 path) is defined for every input, unlike a cast.
  const long q = std::lrint(value * inverse_scale);
  return static_cast<int8_t>(std::clamp(q, -127L, 127L));
}

// Returns d and fills qs[0..n) with round(x / d), d = amax / 127.
float quantize_block(const float* x, int n, int8_t* qs) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float inverse_scale = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < n; ++i) qs[i] = quantize_one(x[i], inverse_scale);
  return amax / 127.0f;
}

void quantize_q8(const float* x, int64_t cols, BlockQ8* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    BlockQ8& block = out[b];
    const float d = quantize_block(x + b * 32, 32, block.qs);
    int sum = 0;
    for (int8_t q : block.qs) sum += q;
    // The scale is rounded to half precision, as llama.cpp's block_q8_0/q8_1 store it.
    block.d = f16_to_f32(f32_to_f16(d));
    block.s = block.d * static_cast<float>(sum);
  }
}

void quantize_q8k(const float* x, int64_t cols, BlockQ8K* out) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    BlockQ8K& block = out[b];
    block.d = quantize_block(x + b * 256, 256, block.qs);
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int i = 0; i < 16; ++i) sum += block.qs[16 * g + i];
      block.bsums[g] = static_cast<int16_t>(sum);
    }
  }
}

// ---- 32-element formats: value = a * q + b, q a small integer ------------------------------

struct Decoded32 {
  int8_t q[32];
  float a;
  float b;  // per-block offset (Q4_1, Q5_1); 0 where the offset is folded into q
};

// Low nibbles are elements 0..15, high nibbles 16..31.
void unpack_nibbles(const uint8_t* qs, int offset, int8_t* q) {
  for (int j = 0; j < 16; ++j) {
    q[j] = static_cast<int8_t>((qs[j] & 0x0F) - offset);
    q[j + 16] = static_cast<int8_t>((qs[j] >> 4) - offset);
  }
}

void add_fifth_bits(uint32_t qh, int8_t* q) {
  for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(q[j] + static_cast<int>(((qh >> j) & 1u) << 4));
}

struct Q4_0 {
  static constexpr size_t kBytes = 18;
  static void decode(const uint8_t* blk, Decoded32& out) {
    out.a = load_f16(blk);
    out.b = 0.0f;
    unpack_nibbles(blk + 2, 8, out.q);
  }
};
struct Q4_1 {
  static constexpr size_t kBytes = 20;
  static void decode(const uint8_t* blk, Decoded32& out) {
    out.a = load_f16(blk);
    out.b = load_f16(blk + 2);
    unpack_nibbles(blk + 4, 0, out.q);
  }
};
struct Q5_0 {
  static constexpr size_t kBytes = 22;
  static void decode(const uint8_t* blk, Decoded32& out) {
    out.a = load_f16(blk);
    out.b = 0.0f;
    unpack_nibbles(blk + 6, 0, out.q);
    add_fifth_bits(load_u32(blk + 2), out.q);
    for (int8_t& q : out.q) q = static_cast<int8_t>(q - 16);
  }
};
struct Q5_1 {
  static constexpr size_t kBytes = 24;
  static void decode(const uint8_t* blk, Decoded32& out) {
    out.a = load_f16(blk);
    out.b = load_f16(blk + 2);
    unpack_nibbles(blk + 8, 0, out.q);
    add_fifth_bits(load_u32(blk + 4), out.q);
  }
};
struct Q8_0 {
  static constexpr size_t kBytes = 34;
  static void decode(const uint8_t* blk, Decoded32& out) {
    out.a = load_f16(blk);
    out.b = 0.0f;
    std::memcpy(out.q, blk + 2, 32);
  }
};

template <class Format>
void tile_32(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
             int64_t n_tokens, int64_t cols, float* y, int64_t y_stride) {
  const int64_t n_blocks = cols / 32;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const auto* xb = reinterpret_cast<const BlockQ8*>(x + t * x_stride);
      float sum = 0.0f;
      for (int64_t b = 0; b < n_blocks; ++b) {
        Decoded32 blk;
        Format::decode(row + b * Format::kBytes, blk);
        int isum = 0;
        for (int j = 0; j < 32; ++j) isum += blk.q[j] * xb[b].qs[j];
        sum += blk.a * xb[b].d * static_cast<float>(isum) + blk.b * xb[b].s;
      }
      y[t * y_stride + r] = sum;
    }
  }
}

// ---- K-quants: value = a * sc[g] * q + b * mn[g] for the 16-element group g ------------------

struct DecodedK {
  int8_t q[256];
  int sc[16];
  int mn[16];  // multiplies the group's activation sum (bsums)
  float a;
  float b;
};


void k4_scales(const uint8_t* scales, DecodedK& out) {
  for (int group = 0; group < 8; ++group) {
    int scale, min;
    k_scale_min(scales, group, scale, min);
    out.sc[2 * group] = out.sc[2 * group + 1] = scale;
    out.mn[2 * group] = out.mn[2 * group + 1] = min;
  }
}

struct Q2_K {
  static constexpr size_t kBytes = 84;
  static void decode(const uint8_t* blk, DecodedK& out) {
    const uint8_t* qs = blk + 16;
    out.a = load_f16(blk + 80);
    out.b = -load_f16(blk + 82);
    for (int g = 0; g < 16; ++g) {
      out.sc[g] = blk[g] & 0x0F;
      out.mn[g] = blk[g] >> 4;
    }
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;
      out.q[e] = static_cast<int8_t>((qs[h * 32 + l] >> (2 * s)) & 3);
    }
  }
};

struct Q3_K {
  static constexpr size_t kBytes = 110;
  static void decode(const uint8_t* blk, DecodedK& out) {
    const uint8_t* hmask = blk;
    const uint8_t* qs = blk + 32;
    const uint8_t* packed = blk + 96;
    out.a = load_f16(blk + 108);
    out.b = 0.0f;
    for (int i = 0; i < 16; ++i) {
      const int low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
      const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
      out.sc[i] = (low | (high << 4)) - 32;
      out.mn[i] = 0;
    }
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;
      const int low = (qs[h * 32 + l] >> (2 * s)) & 3;
      const int high_clear = ((hmask[l] >> (e / 32)) & 1) ^ 1;
      out.q[e] = static_cast<int8_t>(low - 4 * high_clear);
    }
  }
};

struct Q4_K {
  static constexpr size_t kBytes = 144;
  static void decode(const uint8_t* blk, DecodedK& out) {
    out.a = load_f16(blk);
    out.b = -load_f16(blk + 2);
    k4_scales(blk + 4, out);
    const uint8_t* qs = blk + 16;
    for (int e = 0; e < 256; ++e) {
      const int c = e / 64, k = (e % 64) / 32, l = e % 32;
      out.q[e] = static_cast<int8_t>((qs[c * 32 + l] >> (4 * k)) & 0x0F);
    }
  }
};

struct Q5_K {
  static constexpr size_t kBytes = 176;
  static void decode(const uint8_t* blk, DecodedK& out) {
    out.a = load_f16(blk);
    out.b = -load_f16(blk + 2);
    k4_scales(blk + 4, out);
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + 48;
    for (int e = 0; e < 256; ++e) {
      const int group = e / 32, l = e % 32;
      const int low = (qs[(group / 2) * 32 + l] >> (4 * (group % 2))) & 0x0F;
      out.q[e] = static_cast<int8_t>(low | (((qh[l] >> group) & 1) << 4));
    }
  }
};

struct Q6_K {
  static constexpr size_t kBytes = 210;
  static void decode(const uint8_t* blk, DecodedK& out) {
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
    out.a = load_f16(blk + 208);
    out.b = 0.0f;
    for (int g = 0; g < 16; ++g) {
      out.sc[g] = scales[g];
      out.mn[g] = 0;
    }
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128;
      const int low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
      out.q[e] = static_cast<int8_t>((low | (high << 4)) - 32);
    }
  }
};

template <class Format>
void tile_k(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
            int64_t n_tokens, int64_t cols, float* y, int64_t y_stride) {
  const int64_t n_blocks = cols / 256;
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const auto* xb = reinterpret_cast<const BlockQ8K*>(x + t * x_stride);
      float sum = 0.0f;
      for (int64_t b = 0; b < n_blocks; ++b) {
        DecodedK blk;
        Format::decode(row + b * Format::kBytes, blk);
        int scaled = 0, offsets = 0;
        for (int g = 0; g < 16; ++g) {
          int isum = 0;
          for (int i = 0; i < 16; ++i) isum += blk.q[16 * g + i] * xb[b].qs[16 * g + i];
          scaled += blk.sc[g] * isum;
          offsets += blk.mn[g] * xb[b].bsums[g];
        }
        sum += xb[b].d * (blk.a * static_cast<float>(scaled) + blk.b * static_cast<float>(offsets));
      }
      y[t * y_stride + r] = sum;
    }
  }
}

// ---- plain floats ---------------------------------------------------------------------------

float load_element(DType type, const uint8_t* row, int64_t c) {
  uint16_t bits;
  switch (type) {
    case DType::F16:
      std::memcpy(&bits, row + 2 * c, 2);
      return f16_to_f32(bits);
    case DType::BF16:
      std::memcpy(&bits, row + 2 * c, 2);
      return bf16_to_f32(bits);
    default: {
      float value;
      std::memcpy(&value, row + 4 * c, 4);
      return value;
    }
  }
}

template <DType kType>
void tile_float(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
                int64_t n_tokens, int64_t cols, float* y, int64_t y_stride) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t t = 0; t < n_tokens; ++t) {
      const auto* xt = reinterpret_cast<const float*>(x + t * x_stride);
      // Four partial sums: fewer rounding steps on long rows than one running sum.
      float partial[4] = {0, 0, 0, 0};
      for (int64_t c = 0; c < cols; ++c) partial[c % 4] += load_element(kType, row, c) * xt[c];
      y[t * y_stride + r] = (partial[0] + partial[1]) + (partial[2] + partial[3]);
    }
  }
}

TileFn tile_for(DType type) {
  switch (type) {
    case DType::F32: return tile_float<DType::F32>;
    case DType::F16: return tile_float<DType::F16>;
    case DType::BF16: return tile_float<DType::BF16>;
    case DType::Q4_0: return tile_32<Q4_0>;
    case DType::Q4_1: return tile_32<Q4_1>;
    case DType::Q5_0: return tile_32<Q5_0>;
    case DType::Q5_1: return tile_32<Q5_1>;
    case DType::Q8_0: return tile_32<Q8_0>;
    case DType::Q2_K: return tile_k<Q2_K>;
    case DType::Q3_K: return tile_k<Q3_K>;
    case DType::Q4_K: return tile_k<Q4_K>;
    case DType::Q5_K: return tile_k<Q5_K>;
    case DType::Q6_K: return tile_k<Q6_K>;
    default: return nullptr;
  }
}

}  // namespace

const KernelSet& scalar_kernels() noexcept {
  static const KernelSet set{"scalar", quantize_q8, quantize_q8k, tile_for};
  return set;
}

}  // namespace lathe::cpu::kernels
