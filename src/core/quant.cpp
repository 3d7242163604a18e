// Block (de)quantization, written to reproduce gguf-py's numpy code bit for bit. Every operation
// below is the float32 operation numpy performs, in numpy's order; comments point out where the
// obvious C++ would differ (float->int casts, NaN propagation, reciprocal multiplication).
#include "core/quant.hpp"
#include "core/k_quant_scales.hpp"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "core/fp16.hpp"
#include "lathe/error.hpp"

// Fused multiply-add would change rounding versus numpy's separate multiply and add.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static_assert(std::endian::native == std::endian::little, "ggml block layouts are little-endian");

namespace lathe {
namespace {


float load_f16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return f16_to_f32(bits);
}

void store_f16(uint8_t* p, float value) {
  const uint16_t bits = f32_to_f16(value);
  std::memcpy(p, &bits, sizeof bits);
}

// numpy's float32 -> uint8/int8 cast on x86-64: the value is truncated to a 32-bit integer with
// cvttss2si, which yields 0x80000000 for NaN, infinities and out-of-range values, and the low
// byte is kept. Every float32 of magnitude >= 2^31 is a multiple of 256, so "0 when not finite or
// out of int32 range, else the low byte of the truncated value" is exact. (A C++ cast would be
// undefined behaviour for those inputs.)
uint8_t numpy_cast_to_byte(float value) {
  if (!(std::fabs(value) < 2147483648.0f)) return 0;
  return static_cast<uint8_t>(static_cast<uint32_t>(static_cast<int32_t>(value)));
}

// gguf-py's np_roundf (round half away from zero), step by step in float32.
float numpy_roundf(float n) {
  const float a = std::fabs(n);
  const float floored = std::floor(a);
  const float b = floored + std::floor(2.0f * (a - floored));
  // np.sign: -1, 0 or 1, NaN for NaN; 0 * b keeps the NaN b would carry for infinite a.
  const float sign = std::isnan(n) ? n : (n > 0.0f ? 1.0f : (n < 0.0f ? -1.0f : 0.0f));
  return sign * b;
}

// `1 / d` guarded like np.where(d == 0, 0, 1 / d).
float reciprocal_or_zero(float d) { return d == 0.0f ? 0.0f : 1.0f / d; }

// np.max / np.min reductions: a NaN anywhere wins. Between equal values (including +0 and -0)
// the first one is kept; numpy's SIMD reduction order for signed zeros is not reproduced, which
// only matters for blocks mixing +0 and -0 as their extreme (the oracle does not generate those).
float nan_max(const float* x, int count) {
  float best = x[0];
  for (int i = 1; i < count; ++i)
    if (std::isnan(best) || std::isnan(x[i])) {
      if (!std::isnan(best)) best = x[i];
    } else if (x[i] > best) {
      best = x[i];
    }
  return best;
}

float nan_min(const float* x, int count) {
  float best = x[0];
  for (int i = 1; i < count; ++i)
    if (std::isnan(best) || std::isnan(x[i])) {
      if (!std::isnan(best)) best = x[i];
    } else if (x[i] < best) {
      best = x[i];
    }
  return best;
}

// ---- dequantize, one block each -------------------------------------------------------------

// Q4_0: d (f16), qs[16]; element j < 16 is the low nibble of qs[j], j >= 16 the high nibble of
// qs[j - 16]; value = d * (q - 8).
void dequantize_q4_0(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>((qs[j] & 0x0F) - 8);
    out[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

// Q4_1: d, m (f16), qs[16]; value = d * q + m.
void dequantize_q4_1(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const float m = load_f16(block + 2);
  const uint8_t* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(qs[j] & 0x0F) + m;
    out[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

// 5-bit quants: low nibbles as in Q4_x, bit j of the little-endian qh word is bit 4 of element j.
uint32_t load_u32(const uint8_t* p) {
  uint32_t word;
  std::memcpy(&word, p, sizeof word);
  return word;
}

int five_bit_quant(const uint8_t* qs, uint32_t qh, int j) {
  const int low = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
  return low | static_cast<int>(((qh >> j) & 1u) << 4);
}

// Q5_0: d (f16), qh (u32), qs[16]; value = d * (q - 16).
void dequantize_q5_0(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const uint32_t qh = load_u32(block + 2);
  const uint8_t* qs = block + 6;
  for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(five_bit_quant(qs, qh, j) - 16);
}

// Q5_1: d, m (f16), qh (u32), qs[16]; value = d * q + m.
void dequantize_q5_1(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const float m = load_f16(block + 2);
  const uint32_t qh = load_u32(block + 4);
  const uint8_t* qs = block + 8;
  for (int j = 0; j < 32; ++j) out[j] = d * static_cast<float>(five_bit_quant(qs, qh, j)) + m;
}

// Q8_0: d (f16), qs[32] (int8); value = q * d.
void dequantize_q8_0(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  for (int j = 0; j < 32; ++j) out[j] = static_cast<float>(static_cast<int8_t>(block[2 + j])) * d;
}

// Q2_K: scales[16] (low nibble: scale, high nibble: min), qs[64], d, dmin (f16).
// Element e = h*128 + s*32 + l takes bits 2s..2s+1 of qs[h*32 + l]; its group of 16 is e / 16.
void dequantize_q2_k(const uint8_t* block, float* out) {
  const uint8_t* scales = block;
  const uint8_t* qs = block + 16;
  const float d = load_f16(block + 80);
  const float dmin = load_f16(block + 82);
  float dl[16], ml[16];
  for (int group = 0; group < 16; ++group) {
    dl[group] = d * static_cast<float>(scales[group] & 0x0F);
    ml[group] = dmin * static_cast<float>(scales[group] >> 4);
  }
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) {
        const int e = h * 128 + s * 32 + l;
        const int q = (qs[h * 32 + l] >> (2 * s)) & 3;
        out[e] = dl[e / 16] * static_cast<float>(q) - ml[e / 16];
      }
}

// Q3_K: hmask[32], qs[64], scales[12] (16 six-bit scales), d (f16).
void dequantize_q3_k(const uint8_t* block, float* out) {
  const uint8_t* hmask = block;
  const uint8_t* qs = block + 32;
  const uint8_t* packed = block + 96;
  const float d = load_f16(block + 108);
  float dl[16];
  for (int i = 0; i < 16; ++i) {
    // Low 4 bits: nibble (i / 8) of byte i % 8; high 2 bits: pair (i / 4) of byte 8 + i % 4.
    const int low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
    const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
    dl[i] = d * static_cast<float>((low | (high << 4)) - 32);
  }
  for (int h = 0; h < 2; ++h)
    for (int s = 0; s < 4; ++s)
      for (int l = 0; l < 32; ++l) {
        const int e = h * 128 + s * 32 + l;
        const int low = (qs[h * 32 + l] >> (2 * s)) & 3;
        // Bit e / 32 of hmask[l]; the 4 is subtracted when that bit is clear.
        const int high_clear = ((hmask[l] >> (e / 32)) & 1) ^ 1;
        out[e] = dl[e / 16] * static_cast<float>(low - (high_clear << 2));
      }
}


// Q4_K: d, dmin (f16), scales[12], qs[128]. Element e = c*64 + k*32 + l is nibble k of
// qs[c*32 + l]; value = (d * scale) * q - (dmin * min) for its group e / 32.
void dequantize_q4_k(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const float dmin = load_f16(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qs = block + 16;
  for (int group = 0; group < 8; ++group) {
    int scale, min;
    k_scale_min(scales, group, scale, min);
    const float dl = d * static_cast<float>(scale);
    const float ml = dmin * static_cast<float>(min);
    const uint8_t* bytes = qs + (group / 2) * 32;
    const int shift = 4 * (group % 2);
    for (int l = 0; l < 32; ++l)
      out[group * 32 + l] = dl * static_cast<float>((bytes[l] >> shift) & 0x0F) - ml;
  }
}

// Q5_K: d, dmin (f16), scales[12], qh[32], qs[128]; as Q4_K plus bit (e / 32) of qh[l] as bit 4.
void dequantize_q5_k(const uint8_t* block, float* out) {
  const float d = load_f16(block);
  const float dmin = load_f16(block + 2);
  const uint8_t* scales = block + 4;
  const uint8_t* qh = block + 16;
  const uint8_t* qs = block + 48;
  for (int group = 0; group < 8; ++group) {
    int scale, min;
    k_scale_min(scales, group, scale, min);
    const float dl = d * static_cast<float>(scale);
    const float ml = dmin * static_cast<float>(min);
    const uint8_t* bytes = qs + (group / 2) * 32;
    const int shift = 4 * (group % 2);
    for (int l = 0; l < 32; ++l) {
      const int q = ((bytes[l] >> shift) & 0x0F) | (((qh[l] >> group) & 1) << 4);
      out[group * 32 + l] = dl * static_cast<float>(q) - ml;
    }
  }
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d (f16). Element e = h*128 + r (r < 128):
// low nibble (r / 64) of ql[h*64 + r % 64], high bits pair (r / 32) of qh[h*32 + r % 32].
void dequantize_q6_k(const uint8_t* block, float* out) {
  const uint8_t* ql = block;
  const uint8_t* qh = block + 128;
  const uint8_t* scales = block + 192;
  const float d = load_f16(block + 208);
  float dl[16];
  for (int i = 0; i < 16; ++i) dl[i] = d * static_cast<float>(static_cast<int8_t>(scales[i]));
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 128; ++r) {
      const int low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
      const int high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
      out[h * 128 + r] = dl[(h * 128 + r) / 16] * static_cast<float>((low | (high << 4)) - 32);
    }
}

// ---- quantize, one block each ---------------------------------------------------------------

// Packs 32 four-bit quants: byte j holds element j (low nibble) and element j + 16 (high).
void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

// Q4_0: the element of largest magnitude (first one on ties, first NaN if any, as np.argmax)
// keeps its sign: d = max / -8, q = clip(uint8(trunc(x * (1/d) + 8.5)), 0, 15).
void quantize_q4_0(const float* x, uint8_t* block) {
  int imax = 0;
  float amax = std::fabs(x[0]);
  for (int j = 1; j < 32 && !std::isnan(amax); ++j) {
    const float a = std::fabs(x[j]);
    if (std::isnan(a) || a > amax) {
      amax = a;
      imax = j;
    }
  }
  const float d = x[imax] / -8.0f;
  const float id = reciprocal_or_zero(d);
  uint8_t q[32];
  for (int j = 0; j < 32; ++j) {
    const uint8_t v = numpy_cast_to_byte(std::trunc(x[j] * id + 8.5f));
    q[j] = v > 15 ? 15 : v;
  }
  store_f16(block, d);
  pack_nibbles(q, block + 2);
}

// Q4_1: d = (max - min) / 15, m = min, q = clip(uint8(trunc((x - min) * (1/d) + 0.5)), 0, 15).
void quantize_q4_1(const float* x, uint8_t* block) {
  const float max = nan_max(x, 32);
  const float min = nan_min(x, 32);
  const float d = (max - min) / 15.0f;
  const float id = reciprocal_or_zero(d);
  uint8_t q[32];
  for (int j = 0; j < 32; ++j) {
    const uint8_t v = numpy_cast_to_byte(std::trunc((x[j] - min) * id + 0.5f));
    q[j] = v > 15 ? 15 : v;
  }
  store_f16(block, d);
  store_f16(block + 2, min);
  pack_nibbles(q, block + 4);
}

// Q8_0: d = max|x| / 127, q = int8(roundf(x * (1/d))) (ggml's reference, via gguf-py).
void quantize_q8_0(const float* x, uint8_t* block) {
  float amax_values[32];
  for (int j = 0; j < 32; ++j) amax_values[j] = std::fabs(x[j]);
  const float d = nan_max(amax_values, 32) / 127.0f;
  const float id = reciprocal_or_zero(d);
  store_f16(block, d);
  for (int j = 0; j < 32; ++j) block[2 + j] = numpy_cast_to_byte(numpy_roundf(x[j] * id));
}

// ---- dispatch -------------------------------------------------------------------------------

using DequantizeBlock = void (*)(const uint8_t*, float*);
using QuantizeBlock = void (*)(const float*, uint8_t*);

DequantizeBlock dequantizer_for(DType type) noexcept {
  switch (type) {
    case DType::Q4_0: return dequantize_q4_0;
    case DType::Q4_1: return dequantize_q4_1;
    case DType::Q5_0: return dequantize_q5_0;
    case DType::Q5_1: return dequantize_q5_1;
    case DType::Q8_0: return dequantize_q8_0;
    case DType::Q2_K: return dequantize_q2_k;
    case DType::Q3_K: return dequantize_q3_k;
    case DType::Q4_K: return dequantize_q4_k;
    case DType::Q5_K: return dequantize_q5_k;
    case DType::Q6_K: return dequantize_q6_k;
    default: return nullptr;
  }
}

QuantizeBlock quantizer_for(DType type) noexcept {
  switch (type) {
    case DType::Q4_0: return quantize_q4_0;
    case DType::Q4_1: return quantize_q4_1;
    case DType::Q8_0: return quantize_q8_0;
    default: return nullptr;
  }
}

bool is_plain_float(DType type) { return type == DType::F32 || type == DType::F16 || type == DType::BF16; }

std::string supported_list(bool (*predicate)(DType) noexcept) {
  std::string names;
  for (const auto& info : all_dtypes())
    if (predicate(info.type)) names += (names.empty() ? "" : ", ") + std::string(info.name);
  return names;
}

// Throws unless n is a non-negative whole number of blocks of `type`.
void check_whole_blocks(const char* operation, DType type, int64_t n) {
  const auto& info = dtype_info(type);
  if (n < 0 || n % info.block_size != 0)
    throw InvalidArgumentError(fmt::format(
        "{}: {} stores elements in blocks of {}, but n = {} is not a {}multiple of {}; "
        "pass a row length that is a whole number of blocks",
        operation, info.name, info.block_size, n, n < 0 ? "non-negative " : "", info.block_size));
}

void check_dequantizable(DType type) {
  if (!can_dequantize(type))
    throw UnsupportedError(fmt::format("dequantize: tensor type {} is not supported (supported: {}); "
                                       "re-quantize the model to one of those types",
                                       dtype_name(type), supported_list(can_dequantize)));
}

void check_quantizable(DType type) {
  if (!can_quantize(type))
    throw UnsupportedError(fmt::format("quantize: target type {} is not supported (supported: {}); "
                                       "choose one of those types",
                                       dtype_name(type), supported_list(can_quantize)));
}

}  // namespace

bool can_dequantize(DType type) noexcept { return is_plain_float(type) || dequantizer_for(type) != nullptr; }
bool can_quantize(DType type) noexcept { return is_plain_float(type) || quantizer_for(type) != nullptr; }

void dequantize_row(DType type, const void* src, float* dst, int64_t n) {
  check_dequantizable(type);
  check_whole_blocks("dequantize_row", type, n);
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (type) {
    case DType::F32:
      if (n > 0) std::memcpy(dst, bytes, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(bytes + 2 * i);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, sizeof bits);
        dst[i] = bf16_to_f32(bits);
      }
      return;
    default: break;
  }
  const auto& info = dtype_info(type);
  const DequantizeBlock dequantize_block = dequantizer_for(type);
  const int64_t blocks = n / info.block_size;
  for (int64_t b = 0; b < blocks; ++b)
    dequantize_block(bytes + b * info.block_bytes, dst + b * info.block_size);
}

void quantize_row(DType type, const float* src, void* dst, int64_t n) {
  check_quantizable(type);
  check_whole_blocks("quantize_row", type, n);
  auto* bytes = static_cast<uint8_t*>(dst);
  switch (type) {
    case DType::F32:
      if (n > 0) std::memcpy(bytes, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_f16(bytes + 2 * i, src[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t bits = f32_to_bf16(src[i]);
        std::memcpy(bytes + 2 * i, &bits, sizeof bits);
      }
      return;
    default: break;
  }
  const auto& info = dtype_info(type);
  const QuantizeBlock quantize_block = quantizer_for(type);
  const int64_t blocks = n / info.block_size;
  for (int64_t b = 0; b < blocks; ++b)
    quantize_block(src + b * info.block_size, bytes + b * info.block_bytes);
}

std::vector<float> dequantize(DType type, std::span<const uint8_t> bytes, int64_t n) {
  check_dequantizable(type);
  check_whole_blocks("dequantize", type, n);
  const auto needed = dtype_bytes(type, static_cast<uint64_t>(n));
  if (!needed || *needed != bytes.size())
    throw InvalidArgumentError(fmt::format(
        "dequantize: {} elements of {} take {} bytes, but {} bytes were given; "
        "check the tensor's shape and type against its data size",
        n, dtype_name(type), needed ? fmt::to_string(*needed) : std::string("more than 2^64"), bytes.size()));
  std::vector<float> values(static_cast<size_t>(n));
  dequantize_row(type, bytes.data(), values.data(), n);
  return values;
}

std::vector<uint8_t> quantize(DType type, std::span<const float> values) {
  check_quantizable(type);
  const auto n = static_cast<int64_t>(values.size());
  check_whole_blocks("quantize", type, n);
  std::vector<uint8_t> bytes(*dtype_bytes(type, values.size()));
  quantize_row(type, values.data(), bytes.data(), n);
  return bytes;
}

}  // namespace lathe
