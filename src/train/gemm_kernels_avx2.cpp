// The AVX2/FMA micro-kernel (see gemm_kernels.hpp). This file alone in src/train is compiled
// with -mavx2 -mfma -mf16c (src/CMakeLists.txt) and only called after the CPU check, as
// backend/cpu/kernels_avx2.cpp is.
#include "train/gemm_kernels.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstring>

namespace lathe::train::gemm {
namespace {

// mr x nv accumulators stay in registers over the whole depth: per step, nv loads of b, mr
// broadcasts of a and mr * nv fused multiply-adds (6 x 2: 12 of the 16 registers).
template <int MR, int NV>
void tile(int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t ldb, float* c,
          int64_t ldc) {
  // Fully unrolled loops over the small arrays, so that the compiler turns them into registers
  // (left as loops, GCC 12 also stores every accumulator to the stack at each step).
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_loadu_ps(c + i * ldc + kVector * j);
  for (int64_t p = 0; p < depth; ++p) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) bv[j] = _mm256_loadu_ps(b + kVector * j);
    b += ldb;
    const float* ap = a + p * a_step;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(ap + i * a_row);
#pragma GCC unroll 2
      for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_fmadd_ps(ai, bv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(c + i * ldc + kVector * j, acc[i][j]);
}

template <int NV>
void tile_rows(int mr, int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t ldb,
               float* c, int64_t ldc) {
  switch (mr) {
    case 1: return tile<1, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
    case 2: return tile<2, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
    case 3: return tile<3, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
    case 4: return tile<4, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
    case 5: return tile<5, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
    default: return tile<6, NV>(depth, a, a_row, a_step, b, ldb, c, ldc);
  }
}

void tile_avx2(int mr, int nv, int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b,
               int64_t ldb, float* c, int64_t ldc) {
  if (nv == 1)
    tile_rows<1>(mr, depth, a, a_row, a_step, b, ldb, c, ldc);
  else
    tile_rows<2>(mr, depth, a, a_row, a_step, b, ldb, c, ldc);
}

// ---- dequantization, bit for bit as core/quant.cpp ------------------------------------------
// Halves (scales included) convert exactly with F16C, as f16_to_f32 does (NaNs aside: F16C
// quiets a signaling one); each element takes the same float operations in the same order (a
// multiply, then for Q4_1 an add: no fused multiply-add, which would round once instead of
// twice; tests/train/test_ops.cpp compares every bit).

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return _cvtsh_ss(h);
}

// Eight bytes as floats, unsigned or signed.
__m256 u8x8_to_float(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)); }
__m256 i8x8_to_float(__m128i bytes) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)); }

// The 32 4-bit quants of a Q4_0/Q4_1 block: element j < 16 is the low nibble of qs[j], j >= 16
// the high nibble of qs[j - 16]. Returns them as bytes 0..15 (low) and 16..31 (high).
void nibbles(const uint8_t* qs, __m128i& low, __m128i& high) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  low = _mm_and_si128(packed, mask);
  high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
}

void q8_0_block(const uint8_t* block, float* out) {
  const __m256 d = _mm256_set1_ps(half_at(block));
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 32; j += 8) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + j));
    _mm256_storeu_ps(out + j, _mm256_mul_ps(i8x8_to_float(q), d));
  }
}

void q4_0_block(const uint8_t* block, float* out) {
  const __m256 d = _mm256_set1_ps(half_at(block));
  __m128i low, high;
  nibbles(block + 2, low, high);
  const __m128i eight = _mm_set1_epi8(8);
  low = _mm_sub_epi8(low, eight);
  high = _mm_sub_epi8(high, eight);
  _mm256_storeu_ps(out, _mm256_mul_ps(d, i8x8_to_float(low)));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(d, i8x8_to_float(_mm_srli_si128(low, 8))));
  _mm256_storeu_ps(out + 16, _mm256_mul_ps(d, i8x8_to_float(high)));
  _mm256_storeu_ps(out + 24, _mm256_mul_ps(d, i8x8_to_float(_mm_srli_si128(high, 8))));
}

void q4_1_block(const uint8_t* block, float* out) {
  const __m256 d = _mm256_set1_ps(half_at(block)), m = _mm256_set1_ps(half_at(block + 2));
  __m128i low, high;
  nibbles(block + 4, low, high);
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_float(low)), m));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_float(_mm_srli_si128(low, 8))), m));
  _mm256_storeu_ps(out + 16, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_float(high)), m));
  _mm256_storeu_ps(out + 24, _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_float(_mm_srli_si128(high, 8))), m));
}

template <void (*Block)(const uint8_t*, float*), int BlockBytes>
void blocks(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) Block(src + b * BlockBytes, dst + b * 32);
}

void halves(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
  for (; i < n; ++i) dst[i] = half_at(src + 2 * i);
}

// bfloat16 widens by shifting its bits up 16.
void bfloat16s(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i)));
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
  }
  for (; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, src + 2 * i, sizeof bits);
    const uint32_t wide = uint32_t{bits} << 16;
    std::memcpy(dst + i, &wide, sizeof wide);
  }
}

bool dequantize_avx2(DType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return true;
    case DType::F16: halves(src, dst, n); return true;
    case DType::BF16: bfloat16s(src, dst, n); return true;
    case DType::Q8_0: blocks<q8_0_block, 34>(src, dst, n); return true;
    case DType::Q4_0: blocks<q4_0_block, 18>(src, dst, n); return true;
    case DType::Q4_1: blocks<q4_1_block, 20>(src, dst, n); return true;
    default: return false;
  }
}

// ---- transposes ---------------------------------------------------------------------------

// One 8 x 8 tile in registers: 8 row loads, the usual unpack / shuffle / lane-permute network,
// 8 column stores.
void transpose_tile(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * in_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[i] (i < 4): column i of rows 0-3 in its low lane, column i + 4 of rows 0-3 in its high
  // lane; r[i + 4] the same for rows 4-7. Lane permutes join them into whole columns.
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

void transpose_avx2(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float* out,
                    int64_t out_stride) {
  const int64_t full_rows = rows / 8 * 8, full_cols = cols / 8 * 8;
  for (int64_t r0 = 0; r0 < full_rows; r0 += 8)
    for (int64_t c0 = 0; c0 < full_cols; c0 += 8)
      transpose_tile(in + r0 * in_stride + c0, in_stride, out + c0 * out_stride + r0, out_stride);
  // The edges: the last rows across every column, the last columns of the whole rows.
  if (full_rows < rows)
    transpose_scalar(in + full_rows * in_stride, in_stride, rows - full_rows, cols, out + full_rows, out_stride);
  if (full_cols < cols)
    transpose_scalar(in + full_cols, in_stride, full_rows, cols - full_cols, out + full_cols * out_stride,
                     out_stride);
}

constexpr Kernels kAvx2{"avx2", tile_avx2, dequantize_avx2, transpose_avx2};

}  // namespace

const Kernels* avx2_kernels() noexcept { return &kAvx2; }

}  // namespace lathe::train::gemm

#else

namespace lathe::train::gemm {
const Kernels* avx2_kernels() noexcept { return nullptr; }
}  // namespace lathe::train::gemm

#endif
