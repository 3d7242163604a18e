// The portable micro-kernel and the level choice (see gemm_kernels.hpp).
#include "train/gemm_kernels.hpp"

#include <algorithm>
#include <cstring>

#include "backend/cpu/kernels.hpp"

namespace lathe::train::gemm {
namespace {

// Four-float vectors in GCC / Clang's generic vector extension: SSE registers on x86-64 (NEON on
// ARM, plain floats elsewhere). 8 columns of the tile at a time: 6 x 2 accumulators stay in 12
// of the 16 registers (written as arrays of floats, the compilers spill or shuffle them). Each
// accumulator adds its terms in order of p, a multiply then an add (no fused multiply-add).
using Float4 = float __attribute__((vector_size(16)));

Float4 load4(const float* p) {
  Float4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void store4(float* p, Float4 v) { std::memcpy(p, &v, sizeof v); }

template <int MR, int NV>
void tile(int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t ldb, float* c,
          int64_t ldc) {
  for (int half = 0; half < NV; ++half) {
    const int64_t j0 = int64_t{kVector} * half;
    Float4 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      acc[i][0] = load4(c + i * ldc + j0);
      acc[i][1] = load4(c + i * ldc + j0 + 4);
    }
    for (int64_t p = 0; p < depth; ++p) {
      const Float4 b0 = load4(b + p * ldb + j0), b1 = load4(b + p * ldb + j0 + 4);
      const float* ap = a + p * a_step;
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const float ai = ap[i * a_row];
        const Float4 av = {ai, ai, ai, ai};
        acc[i][0] += av * b0;
        acc[i][1] += av * b1;
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      store4(c + i * ldc + j0, acc[i][0]);
      store4(c + i * ldc + j0 + 4, acc[i][1]);
    }
  }
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

void tile_scalar(int mr, int nv, int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  if (nv == 1)
    tile_rows<1>(mr, depth, a, a_row, a_step, b, ldb, c, ldc);
  else
    tile_rows<2>(mr, depth, a, a_row, a_step, b, ldb, c, ldc);
}

constexpr Kernels kScalar{"scalar", tile_scalar, nullptr, transpose_scalar};

}  // namespace

// 8 x 8 tiles: a walk down a whole column reads lines a row apart, and rows of 1536 or 49152
// floats map those lines onto one or two L1 sets, so it misses on nearly every element. Whole
// tiles have fixed bounds, which the compiler unrolls (loops over 1..8 with two strides it
// compiles to a few instructions per element plus spills).
void transpose_scalar(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float* out,
                      int64_t out_stride) noexcept {
  constexpr int64_t kTile = 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const float* from = in + r0 * in_stride + c0;
      float* to = out + c0 * out_stride + r0;
      if (r0 + kTile <= rows && c0 + kTile <= cols) {
        float tile[kTile][kTile];
        for (int64_t r = 0; r < kTile; ++r)
          for (int64_t c = 0; c < kTile; ++c) tile[c][r] = from[r * in_stride + c];
        for (int64_t c = 0; c < kTile; ++c)
          for (int64_t r = 0; r < kTile; ++r) to[c * out_stride + r] = tile[c][r];
        continue;
      }
      const int64_t tile_rows = std::min(kTile, rows - r0), tile_cols = std::min(kTile, cols - c0);
      for (int64_t c = 0; c < tile_cols; ++c)
        for (int64_t r = 0; r < tile_rows; ++r) to[c * out_stride + r] = from[r * in_stride + c];
    }
  }
}

const Kernels& scalar_kernels() noexcept { return kScalar; }

const Kernels& active_kernels() noexcept {
  if (cpu::kernels::active_kernels().level == "avx2")
    if (const Kernels* avx2 = avx2_kernels()) return *avx2;
  return kScalar;
}

}  // namespace lathe::train::gemm
