// Internal to the training pass: the register-blocked float32 micro-kernel behind the frozen
// products (train/frozen_gemm.hpp), per instruction set. As in the CPU backend
// (backend/cpu/kernels.hpp), the AVX2 level lives in its own file (gemm_kernels_avx2.cpp,
// compiled with -mavx2 -mfma -mf16c) and is only called after the backend's CPU check, so
// LATHE_CPU_KERNELS=scalar (or the test hook force_kernel_level) lowers it together with the
// engine's kernels.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/dtype.hpp"

namespace lathe::train::gemm {

// Rows of a tile (mr) and its width in 8-float vectors (nv): at most 6 x 2, the most
// accumulators AVX2's 16 registers hold beside the operands.
inline constexpr int kMaxRows = 6;
inline constexpr int kMaxVectors = 2;
inline constexpr int kVector = 8;

// For i < mr and j < 8 * nv:
//   c[i * ldc + j] += sum over p < depth of a[i * a_row + p * a_step] * b[p * ldb + j],
// the terms added one after the other in order of p to the value c held (so a product split
// into consecutive depth ranges gives the same bits as one call). a's strides let one kernel read
// a panel of weight rows along them (forward) or across them (backward).
using TileFn = void (*)(int mr, int nv, int64_t depth, const float* a, int64_t a_row, int64_t a_step, const float* b,
                        int64_t ldb, float* c, int64_t ldc);

// Decodes n elements of `type` (a whole number of blocks) from src into dst with the same bits
// as dequantize_row (core/quant.hpp; NaNs aside: AVX2's half conversion quiets them), or returns
// false for a type it has no fast path for, leaving the work to dequantize_row.
using DequantizeFn = bool (*)(DType type, const uint8_t* src, float* dst, int64_t n);

// out[c * out_stride + r] = in[r * in_stride + c] for r < rows, c < cols (moves only: the same
// at every level).
using TransposeFn = void (*)(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float* out,
                             int64_t out_stride);

struct Kernels {
  std::string_view level;   // "scalar", "avx2"
  TileFn tile;              // the AVX2 one uses fused multiply-adds, the scalar one does not
  DequantizeFn dequantize;  // nullptr: dequantize_row for every type
  TransposeFn transpose;
};

// The portable transpose, in 8 x 8 tiles (the AVX2 one's edges too).
void transpose_scalar(const float* in, int64_t in_stride, int64_t rows, int64_t cols, float* out,
                      int64_t out_stride) noexcept;

const Kernels& scalar_kernels() noexcept;
// nullptr when this build has no AVX2 kernels (non-x86 target).
const Kernels* avx2_kernels() noexcept;
// The level matching the CPU backend's active one (cpu::kernels::active_kernels().level).
const Kernels& active_kernels() noexcept;

}  // namespace lathe::train::gemm
