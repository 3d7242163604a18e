// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c (see
// src/CMakeLists.txt) and is only entered after matmul.cpp has checked the CPU. Everything here
// sits in an anonymous namespace and uses no inline library templates (std::min...): an inline
// function instantiated in this file could otherwise be the copy the linker keeps for the whole
// program, and crash scalar callers on a CPU without AVX2.
//
// Integer dot products: _mm256_maddubs_epi16 multiplies unsigned weight quants by signed 8-bit
// activations and adds pairs into int16 (|sum| <= 2 * 63 * 127, no saturation for any format
// here), then _mm256_madd_epi16 widens to int32, applying the per-group scales on the way.
#if defined(__x86_64__) || defined(__i386__)  // other targets: matmul.cpp reports no AVX2 level
#include <immintrin.h>

#include <cstring>

#include "backend/cpu/kernels.hpp"
#include "core/k_quant_scales.hpp"

namespace lathe::cpu::kernels {
namespace {

inline float load_f16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return _cvtsh_ss(bits);
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load16(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- activation quantization (same arithmetic as the scalar level, element by element) ------

// Quantizes 8 * n_vectors floats with one scale; q[] receives the int32 quants. Returns d.
inline float quantize_vectors(const float* x, int n_vectors, __m256i* q) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int i = 0; i < n_vectors; ++i) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + 8 * i)));
  const float max_abs = hmax(amax);
  const __m256 inverse_scale = _mm256_set1_ps(max_abs > 0.0f ? 127.0f / max_abs : 0.0f);
  const __m256i lowest = _mm256_set1_epi32(-127);
  for (int i = 0; i < n_vectors; ++i) {
    const __m256 scaled = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * i), inverse_scale);
    const __m256 rounded = _mm256_round_ps(scaled, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q[i] = _mm256_max_epi32(_mm256_cvtps_epi32(rounded), lowest);  // NaN converts to INT_MIN
  }
  return max_abs / 127.0f;
}

// Packs four int32 vectors (32 values in order) into 32 int8.
inline __m256i pack_to_bytes(const __m256i* q) {
  const __m256i words01 = _mm256_packs_epi32(q[0], q[1]);
  const __m256i words23 = _mm256_packs_epi32(q[2], q[3]);
  const __m256i bytes = _mm256_packs_epi16(words01, words23);
  // The packs work per 128-bit lane; restore element order.
  return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

void quantize_q8(const float* x, int64_t cols, BlockQ8* out) {
  for (int64_t b = 0; b < cols / 32; ++b) {
    __m256i q[4];
    const float d = quantize_vectors(x + 32 * b, 4, q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), pack_to_bytes(q));
    const __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    // The scale is rounded to half precision, as llama.cpp's block_q8_0/q8_1 store it.
    out[b].d = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    out[b].s = out[b].d * static_cast<float>(hsum_i32(sum));
  }
}

void quantize_q8k(const float* x, int64_t cols, BlockQ8K* out) {
  for (int64_t b = 0; b < cols / 256; ++b) {
    __m256i q[32];
    out[b].d = quantize_vectors(x + 256 * b, 32, q);
    for (int v = 0; v < 8; ++v) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs + 32 * v), pack_to_bytes(q + 4 * v));
      out[b].bsums[2 * v] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[4 * v], q[4 * v + 1])));
      out[b].bsums[2 * v + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[4 * v + 2], q[4 * v + 3])));
    }
  }
}

// ---- 32-element formats ---------------------------------------------------------------------

// 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high nibbles (16..31).
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m128i packed = load16(qs);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0F));
}

// Bit j of qh -> 0x10 in byte j.
inline __m256i fifth_bits(const uint8_t* qh_bytes) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  const __m256i byte_of_bit = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), byte_of_bit);
  const __m256i all_but_bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);  // byte k: ~(1 << k)
  const __m256i is_set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, all_but_bit), _mm256_set1_epi64x(-1));
  return _mm256_and_si256(is_set, _mm256_set1_epi8(0x10));
}

// Each format: quants(block) as 32 unsigned bytes (signed for Q8_0), scale(block) = a, and
// offset(block, a): the per-block constant added to every element (0 when kHasOffset is false).
struct Q4_0 {
  static constexpr size_t kBytes = 18;
  static constexpr bool kSigned = false, kHasOffset = true;
  static __m256i quants(const uint8_t* blk) { return unpack_nibbles(blk + 2); }
  static float scale(const uint8_t* blk) { return load_f16(blk); }
  static float offset(const uint8_t*, float a) { return -8.0f * a; }
};
struct Q4_1 {
  static constexpr size_t kBytes = 20;
  static constexpr bool kSigned = false, kHasOffset = true;
  static __m256i quants(const uint8_t* blk) { return unpack_nibbles(blk + 4); }
  static float scale(const uint8_t* blk) { return load_f16(blk); }
  static float offset(const uint8_t* blk, float) { return load_f16(blk + 2); }
};
struct Q5_0 {
  static constexpr size_t kBytes = 22;
  static constexpr bool kSigned = false, kHasOffset = true;
  static __m256i quants(const uint8_t* blk) { return _mm256_or_si256(unpack_nibbles(blk + 6), fifth_bits(blk + 2)); }
  static float scale(const uint8_t* blk) { return load_f16(blk); }
  static float offset(const uint8_t*, float a) { return -16.0f * a; }
};
struct Q5_1 {
  static constexpr size_t kBytes = 24;
  static constexpr bool kSigned = false, kHasOffset = true;
  static __m256i quants(const uint8_t* blk) { return _mm256_or_si256(unpack_nibbles(blk + 8), fifth_bits(blk + 4)); }
  static float scale(const uint8_t* blk) { return load_f16(blk); }
  static float offset(const uint8_t* blk, float) { return load_f16(blk + 2); }
};
struct Q8_0 {
  static constexpr size_t kBytes = 34;
  static constexpr bool kSigned = true, kHasOffset = false;
  static __m256i quants(const uint8_t* blk) { return load32(blk + 2); }
  static float scale(const uint8_t* blk) { return load_f16(blk); }
  static float offset(const uint8_t*, float) { return 0.0f; }
};

template <class Format>
struct Kernel32 {
  using Act = BlockQ8;
  template <int NT>
  static void run(const uint8_t* row, const BlockQ8* const* x, int64_t cols, float* out) {
    const int64_t n_blocks = cols / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    float offsets[NT];
    for (int t = 0; t < NT; ++t) {
      acc[t] = _mm256_setzero_ps();
      offsets[t] = 0.0f;
    }
    for (int64_t b = 0; b < n_blocks; ++b) {
      const uint8_t* blk = row + b * Format::kBytes;
      const __m256i q = Format::quants(blk);
      const float a = Format::scale(blk);
      // maddubs wants its first operand unsigned: for signed weights, move the sign onto x.
      const __m256i u = Format::kSigned ? _mm256_sign_epi8(q, q) : q;
      for (int t = 0; t < NT; ++t) {
        const BlockQ8& xb = x[t][b];
        __m256i xq = load32(xb.qs);
        if constexpr (Format::kSigned) xq = _mm256_sign_epi8(xq, q);
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xq), ones);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a * xb.d), acc[t]);
        if constexpr (Format::kHasOffset) offsets[t] += Format::offset(blk, a) * xb.s;
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]) + offsets[t];
  }
};

// ---- K-quants -------------------------------------------------------------------------------

// A decoded 256-element block: value of element e in group g = e / 16 is
// a * sc[g] * q[e] + b * mn[g]; q unsigned, sc[v] holds the scales of groups 2v (low 128-bit
// lane) and 2v + 1 (high lane) as int16 for madd.
struct DecodedK {
  __m256i q[8];
  __m256i sc[8];
  __m256i mn;  // 16 x int16
  float a;
  float b;
};

inline __m256i pair_scales(int low_group, int high_group) {
  return _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(high_group)), _mm_set1_epi16(static_cast<int16_t>(low_group)));
}

// ((bytes >> shift) & mask) << up, per byte (mask << up stays within the byte).
inline __m256i shifted_bits(__m256i bytes, int shift, int mask, int up) {
  const __m256i down = _mm256_srl_epi16(bytes, _mm_cvtsi32_si128(shift));
  const __m256i kept = _mm256_and_si256(down, _mm256_set1_epi8(static_cast<char>(mask)));
  return _mm256_sll_epi16(kept, _mm_cvtsi32_si128(up));
}

inline void k4_scales(const uint8_t* s, DecodedK& out) {
  alignas(32) int16_t mins[16];
  for (int group = 0; group < 8; ++group) {
    int scale, min;
    k_scale_min(s, group, scale, min);
    out.sc[group] = _mm256_set1_epi16(static_cast<int16_t>(scale));
    mins[2 * group] = mins[2 * group + 1] = static_cast<int16_t>(min);
  }
  out.mn = _mm256_load_si256(reinterpret_cast<const __m256i*>(mins));
}

struct Q2_K {
  static constexpr size_t kBytes = 84;
  static void decode(const uint8_t* blk, DecodedK& out) {
    alignas(32) int16_t mins[16];
    for (int v = 0; v < 8; ++v) out.sc[v] = pair_scales(blk[2 * v] & 0x0F, blk[2 * v + 1] & 0x0F);
    for (int g = 0; g < 16; ++g) mins[g] = static_cast<int16_t>(blk[g] >> 4);
    out.mn = _mm256_load_si256(reinterpret_cast<const __m256i*>(mins));
    for (int h = 0; h < 2; ++h) {
      const __m256i bytes = load32(blk + 16 + 32 * h);
      for (int s = 0; s < 4; ++s) out.q[4 * h + s] = shifted_bits(bytes, 2 * s, 3, 0);
    }
    out.a = load_f16(blk + 80);
    out.b = -load_f16(blk + 82);
  }
};

struct Q3_K {
  static constexpr size_t kBytes = 110;
  static void decode(const uint8_t* blk, DecodedK& out) {
    const uint8_t* packed = blk + 96;
    alignas(32) int16_t scales[16];
    for (int i = 0; i < 16; ++i) {
      const int low = (packed[i % 8] >> (4 * (i / 8))) & 0x0F;
      const int high = (packed[8 + i % 4] >> (2 * (i / 4))) & 0x03;
      scales[i] = static_cast<int16_t>((low | (high << 4)) - 32);
    }
    for (int v = 0; v < 8; ++v) out.sc[v] = pair_scales(scales[2 * v], scales[2 * v + 1]);
    out.mn = _mm256_load_si256(reinterpret_cast<const __m256i*>(scales));
    // q = low 2 bits + 4 * (hmask bit): the stored value is q - 4, folded into b.
    const __m256i hmask = load32(blk);
    for (int h = 0; h < 2; ++h) {
      const __m256i bytes = load32(blk + 32 + 32 * h);
      for (int s = 0; s < 4; ++s) {
        const int v = 4 * h + s;
        out.q[v] = _mm256_or_si256(shifted_bits(bytes, 2 * s, 3, 0), shifted_bits(hmask, v, 1, 2));
      }
    }
    out.a = load_f16(blk + 108);
    out.b = -4.0f * out.a;
  }
};

struct Q4_K {
  static constexpr size_t kBytes = 144;
  static void decode(const uint8_t* blk, DecodedK& out) {
    k4_scales(blk + 4, out);
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = load32(blk + 16 + 32 * c);
      out.q[2 * c] = shifted_bits(bytes, 0, 0x0F, 0);
      out.q[2 * c + 1] = shifted_bits(bytes, 4, 0x0F, 0);
    }
    out.a = load_f16(blk);
    out.b = -load_f16(blk + 2);
  }
};

struct Q5_K {
  static constexpr size_t kBytes = 176;
  static void decode(const uint8_t* blk, DecodedK& out) {
    k4_scales(blk + 4, out);
    const __m256i qh = load32(blk + 16);
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = load32(blk + 48 + 32 * c);
      out.q[2 * c] = _mm256_or_si256(shifted_bits(bytes, 0, 0x0F, 0), shifted_bits(qh, 2 * c, 1, 4));
      out.q[2 * c + 1] = _mm256_or_si256(shifted_bits(bytes, 4, 0x0F, 0), shifted_bits(qh, 2 * c + 1, 1, 4));
    }
    out.a = load_f16(blk);
    out.b = -load_f16(blk + 2);
  }
};

struct Q6_K {
  static constexpr size_t kBytes = 210;
  static void decode(const uint8_t* blk, DecodedK& out) {
    const auto* scales = reinterpret_cast<const int8_t*>(blk + 192);
    for (int v = 0; v < 8; ++v) out.sc[v] = pair_scales(scales[2 * v], scales[2 * v + 1]);
    out.mn = _mm256_cvtepi8_epi16(load16(scales));
    for (int h = 0; h < 2; ++h) {
      const __m256i first = load32(blk + 64 * h);        // ql bytes for elements r and r + 64
      const __m256i second = load32(blk + 64 * h + 32);  // ... for r + 32 and r + 96
      const __m256i high = load32(blk + 128 + 32 * h);
      out.q[4 * h + 0] = _mm256_or_si256(shifted_bits(first, 0, 0x0F, 0), shifted_bits(high, 0, 3, 4));
      out.q[4 * h + 1] = _mm256_or_si256(shifted_bits(second, 0, 0x0F, 0), shifted_bits(high, 2, 3, 4));
      out.q[4 * h + 2] = _mm256_or_si256(shifted_bits(first, 4, 0x0F, 0), shifted_bits(high, 4, 3, 4));
      out.q[4 * h + 3] = _mm256_or_si256(shifted_bits(second, 4, 0x0F, 0), shifted_bits(high, 6, 3, 4));
    }
    out.a = load_f16(blk + 208);
    out.b = -32.0f * out.a;
  }
};

template <class Format>
struct KernelK {
  using Act = BlockQ8K;
  template <int NT>
  static void run(const uint8_t* row, const BlockQ8K* const* x, int64_t cols, float* out) {
    const int64_t n_blocks = cols / 256;
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b) {
      DecodedK k;
      Format::decode(row + b * Format::kBytes, k);
      for (int t = 0; t < NT; ++t) {
        const BlockQ8K& xb = x[t][b];
        __m256i isum = _mm256_setzero_si256();
        for (int v = 0; v < 8; ++v)
          isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(k.q[v], load32(xb.qs + 32 * v)), k.sc[v]));
        const __m256i offsets = _mm256_madd_epi16(load32(xb.bsums), k.mn);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(k.a * xb.d), acc[t]);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(offsets), _mm256_set1_ps(k.b * xb.d), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum(acc[t]);
  }
};

// ---- plain floats ---------------------------------------------------------------------------

struct LoadF32 {
  static __m256 load8(const uint8_t* row, int64_t c) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + c); }
  static float load1(const uint8_t* row, int64_t c) {
    float value;
    std::memcpy(&value, row + 4 * c, sizeof value);
    return value;
  }
};
struct LoadF16 {
  static __m256 load8(const uint8_t* row, int64_t c) { return _mm256_cvtph_ps(load16(row + 2 * c)); }
  static float load1(const uint8_t* row, int64_t c) { return load_f16(row + 2 * c); }
};
struct LoadBF16 {
  static __m256 load8(const uint8_t* row, int64_t c) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load16(row + 2 * c)), 16));
  }
  static float load1(const uint8_t* row, int64_t c) {
    uint16_t bits;
    std::memcpy(&bits, row + 2 * c, sizeof bits);
    const uint32_t wide = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &wide, sizeof value);
    return value;
  }
};

template <class Load>
struct KernelFloat {
  using Act = float;
  template <int NT>
  static void run(const uint8_t* row, const float* const* x, int64_t cols, float* out) {
    // Enough independent FMA chains to cover the FMA latency: 4 for one token, 2 per token else.
    constexpr int U = NT == 1 ? 4 : 2;
    __m256 acc[NT][U];
    for (int t = 0; t < NT; ++t)
      for (int u = 0; u < U; ++u) acc[t][u] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 * U <= cols; c += 8 * U) {
      __m256 w[U];
      for (int u = 0; u < U; ++u) w[u] = Load::load8(row, c + 8 * u);
      for (int t = 0; t < NT; ++t)
        for (int u = 0; u < U; ++u) acc[t][u] = _mm256_fmadd_ps(w[u], _mm256_loadu_ps(x[t] + c + 8 * u), acc[t][u]);
    }
    for (; c + 8 <= cols; c += 8) {
      const __m256 w = Load::load8(row, c);
      for (int t = 0; t < NT; ++t) acc[t][0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x[t] + c), acc[t][0]);
    }
    for (int t = 0; t < NT; ++t) {
      __m256 total = acc[t][0];
      for (int u = 1; u < U; ++u) total = _mm256_add_ps(total, acc[t][u]);
      float sum = hsum(total);
      for (int64_t tail = c; tail < cols; ++tail) sum += Load::load1(row, tail) * x[t][tail];
      out[t] = sum;
    }
  }
};

// ---- tiling ---------------------------------------------------------------------------------
// Decode (one token): each row's dot product in turn, with the unrolled one-token kernels.
// Prefill: register-blocked micro-kernels (as llamafile's tinyBLAS): an RM rows x RN tokens
// tile of outputs is accumulated in RM * RN ymm registers, so each weight vector loaded (and
// converted) serves RN tokens and each activation vector RM rows.

constexpr int kTileTokens = 4;

template <class Kernel>
void tile_rows(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
               int64_t n_tokens, int64_t cols, float* y, int64_t y_stride) {
  using Act = typename Kernel::Act;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kTileTokens) {
    const int nt = static_cast<int>(min64(kTileTokens, n_tokens - t0));
    const Act* xt[kTileTokens];
    for (int i = 0; i < nt; ++i) xt[i] = reinterpret_cast<const Act*>(x + (t0 + i) * x_stride);
    for (int64_t r = 0; r < n_rows; ++r) {
      const uint8_t* row = w + r * row_bytes;
      float out[kTileTokens];
      switch (nt) {
        case 1: Kernel::template run<1>(row, xt, cols, out); break;
        case 2: Kernel::template run<2>(row, xt, cols, out); break;
        case 3: Kernel::template run<3>(row, xt, cols, out); break;
        default: Kernel::template run<4>(row, xt, cols, out); break;
      }
      for (int i = 0; i < nt; ++i) y[(t0 + i) * y_stride + r] = out[i];
    }
  }
}

// Micro-kernel for float weights (F32, F16, BF16) against F32 activations. The RM weight
// vectors of a column step stay in registers while the RN activation vectors stream past them:
// RM = 3, RN = 4 uses 12 accumulators + 3 weights + 1 activation = 16 ymm registers.
template <class Load>
struct MicroFloat {
  static constexpr int kRows = 3, kTokens = 4;
  template <int RM, int RN>
  static void block(const uint8_t* w, size_t row_bytes, const uint8_t* x, size_t x_stride, int64_t cols, float* y,
                    int64_t y_stride) {
    const float* xt[RN];
    for (int t = 0; t < RN; ++t) xt[t] = reinterpret_cast<const float*>(x + t * x_stride);
    __m256 acc[RM][RN];
    for (int r = 0; r < RM; ++r)
      for (int t = 0; t < RN; ++t) acc[r][t] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256 wv[RM];
      for (int r = 0; r < RM; ++r) wv[r] = Load::load8(w + r * row_bytes, c);
      for (int t = 0; t < RN; ++t) {
        const __m256 xv = _mm256_loadu_ps(xt[t] + c);
        for (int r = 0; r < RM; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int r = 0; r < RM; ++r)
      for (int t = 0; t < RN; ++t) {
        float sum = hsum(acc[r][t]);
        for (int64_t tail = c; tail < cols; ++tail) sum += Load::load1(w + r * row_bytes, tail) * xt[t][tail];
        y[t * y_stride + r] = sum;
      }
  }
};

// Micro-kernel for the 32-element formats against BlockQ8 activations: per block, each row's
// quants are loaded once (their sign moved onto the activations) and used for RN tokens; the
// int32 block sums are scaled into RM * RN float accumulators. Only for formats without a
// per-block offset (Q8_0): for the 4- and 5-bit ones this tiling measured no clear gain over
// tile_rows, so they keep it.
template <class Format>
struct Micro32 {
  static_assert(Format::kSigned && !Format::kHasOffset, "Micro32 handles Q8_0-like formats only");
  static constexpr int kRows = 4, kTokens = 3;
  template <int RM, int RN>
  static void block(const uint8_t* w, size_t row_bytes, const uint8_t* x, size_t x_stride, int64_t cols, float* y,
                    int64_t y_stride) {
    const int64_t n_blocks = cols / 32;
    const BlockQ8* xt[RN];
    for (int t = 0; t < RN; ++t) xt[t] = reinterpret_cast<const BlockQ8*>(x + t * x_stride);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[RM][RN];
    for (int r = 0; r < RM; ++r)
      for (int t = 0; t < RN; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n_blocks; ++b) {
      float xd[RN];
      for (int t = 0; t < RN; ++t) xd[t] = xt[t][b].d;
      for (int r = 0; r < RM; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * Format::kBytes;
        const __m256i q = Format::quants(blk);
        const float a = Format::scale(blk);
        const __m256i u = _mm256_sign_epi8(q, q);
        for (int t = 0; t < RN; ++t) {
          const __m256i xq = _mm256_sign_epi8(load32(xt[t][b].qs), q);
          const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xq), ones);
          acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(a * xd[t]), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < RM; ++r)
      for (int t = 0; t < RN; ++t) y[t * y_stride + r] = hsum(acc[r][t]);
  }
};

// The same for a full tile of 4 tokens, with fewer float operations: the four tokens' int32
// block sums of a row are folded by horizontal adds into one vector (lanes t and t + 4 hold
// halves of token t's sum), which one FMA scales by [a * d_t] into the row's accumulator.
// Partial tiles fall back to Micro32.
template <class Format>
struct Micro32x4 {
  static constexpr int kRows = 4, kTokens = 4;
  template <int RM, int RN>
  static void block(const uint8_t* w, size_t row_bytes, const uint8_t* x, size_t x_stride, int64_t cols, float* y,
                    int64_t y_stride) {
    if constexpr (RN != 4) {
      Micro32<Format>::template block<RM, RN>(w, row_bytes, x, x_stride, cols, y, y_stride);
    } else {
      const int64_t n_blocks = cols / 32;
      const BlockQ8* xt[4];
      for (int t = 0; t < 4; ++t) xt[t] = reinterpret_cast<const BlockQ8*>(x + t * x_stride);
      const __m256i ones = _mm256_set1_epi16(1);
      __m256 acc[RM];
      for (int r = 0; r < RM; ++r) acc[r] = _mm256_setzero_ps();
      for (int64_t b = 0; b < n_blocks; ++b) {
        const __m128 d4 = _mm_setr_ps(xt[0][b].d, xt[1][b].d, xt[2][b].d, xt[3][b].d);
        const __m256 xd = _mm256_set_m128(d4, d4);
        for (int r = 0; r < RM; ++r) {
          const uint8_t* blk = w + r * row_bytes + b * Format::kBytes;
          const __m256i q = Format::quants(blk);
          const float a = Format::scale(blk);
          const __m256i u = _mm256_sign_epi8(q, q);
          __m256i sums[4];
          for (int t = 0; t < 4; ++t) {
            __m256i xq = load32(xt[t][b].qs);
            xq = _mm256_sign_epi8(xq, q);
            sums[t] = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xq), ones);
          }
          const __m256i folded =
              _mm256_hadd_epi32(_mm256_hadd_epi32(sums[0], sums[1]), _mm256_hadd_epi32(sums[2], sums[3]));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded), _mm256_mul_ps(_mm256_set1_ps(a), xd), acc[r]);
        }
      }
      for (int r = 0; r < RM; ++r) {
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, acc[r]);
        for (int t = 0; t < 4; ++t) y[t * y_stride + r] = lanes[t] + lanes[t + 4];
      }
    }
  }
};

// Calls Micro::block<RM, RN> for run-time rm <= kRows, rn <= kTokens.
template <class Micro, int RM>
void micro_block_rows(int rn, const uint8_t* w, size_t row_bytes, const uint8_t* x, size_t x_stride, int64_t cols,
                      float* y, int64_t y_stride) {
  switch (rn) {
    case 1: Micro::template block<RM, 1>(w, row_bytes, x, x_stride, cols, y, y_stride); break;
    case 2: Micro::template block<RM, 2>(w, row_bytes, x, x_stride, cols, y, y_stride); break;
    case 3: Micro::template block<RM, 3>(w, row_bytes, x, x_stride, cols, y, y_stride); break;
    default:
      if constexpr (Micro::kTokens >= 4) Micro::template block<RM, 4>(w, row_bytes, x, x_stride, cols, y, y_stride);
      break;
  }
}

template <class Micro>
void micro_block(int rm, int rn, const uint8_t* w, size_t row_bytes, const uint8_t* x, size_t x_stride, int64_t cols,
                 float* y, int64_t y_stride) {
  switch (rm) {
    case 1: micro_block_rows<Micro, 1>(rn, w, row_bytes, x, x_stride, cols, y, y_stride); break;
    case 2: micro_block_rows<Micro, 2>(rn, w, row_bytes, x, x_stride, cols, y, y_stride); break;
    case 3: micro_block_rows<Micro, 3>(rn, w, row_bytes, x, x_stride, cols, y, y_stride); break;
    default:
      if constexpr (Micro::kRows >= 4) micro_block_rows<Micro, 4>(rn, w, row_bytes, x, x_stride, cols, y, y_stride);
      break;
  }
}

template <class Kernel, class Micro>
void tile_blocked(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
                  int64_t n_tokens, int64_t cols, float* y, int64_t y_stride) {
  if (n_tokens == 1) {
    tile_rows<Kernel>(w, row_bytes, n_rows, x, x_stride, n_tokens, cols, y, y_stride);
    return;
  }
  for (int64_t t0 = 0; t0 < n_tokens; t0 += Micro::kTokens) {
    const int rn = static_cast<int>(min64(Micro::kTokens, n_tokens - t0));
    for (int64_t r0 = 0; r0 < n_rows; r0 += Micro::kRows) {
      const int rm = static_cast<int>(min64(Micro::kRows, n_rows - r0));
      micro_block<Micro>(rm, rn, w + r0 * row_bytes, row_bytes, x + t0 * x_stride, x_stride, cols,
                         y + t0 * y_stride + r0, y_stride);
    }
  }
}

TileFn tile_for(DType type) {
  switch (type) {
    case DType::F32: return tile_blocked<KernelFloat<LoadF32>, MicroFloat<LoadF32>>;
    case DType::F16: return tile_blocked<KernelFloat<LoadF16>, MicroFloat<LoadF16>>;
    case DType::BF16: return tile_blocked<KernelFloat<LoadBF16>, MicroFloat<LoadBF16>>;
    case DType::Q4_0: return tile_rows<Kernel32<Q4_0>>;
    case DType::Q4_1: return tile_rows<Kernel32<Q4_1>>;
    case DType::Q5_0: return tile_rows<Kernel32<Q5_0>>;
    case DType::Q5_1: return tile_rows<Kernel32<Q5_1>>;
    case DType::Q8_0: return tile_blocked<Kernel32<Q8_0>, Micro32x4<Q8_0>>;
    case DType::Q2_K: return tile_rows<KernelK<Q2_K>>;
    case DType::Q3_K: return tile_rows<KernelK<Q3_K>>;
    case DType::Q4_K: return tile_rows<KernelK<Q4_K>>;
    case DType::Q5_K: return tile_rows<KernelK<Q5_K>>;
    case DType::Q6_K: return tile_rows<KernelK<Q6_K>>;
    default: return nullptr;
  }
}

constexpr KernelSet kAvx2Kernels{"avx2", quantize_q8, quantize_q8k, tile_for};

}  // namespace

const KernelSet* avx2_kernels() noexcept { return &kAvx2Kernels; }

}  // namespace lathe::cpu::kernels

#endif  // x86
