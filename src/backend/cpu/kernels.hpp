// Internal to the CPU backend: the per-instruction-set kernel tables behind matmul(), and the
// activation formats they consume. Each level (scalar, avx2) lives in its own .cpp file so the
// AVX2 one can be compiled with -mavx2 -mfma -mf16c and only called after a CPU check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/dtype.hpp"

namespace lathe::cpu::kernels {

// Activations for the 32-element weight formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): x ~= d * qs
// with d rounded to half precision (as llama.cpp's block_q8_0 stores it; the K-quants' d stays float),
// and s = d * sum(qs) so that a weight format with a per-block offset m adds m * s directly.
struct BlockQ8 {
  float d;
  float s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8) == 40);

// Activations for the K-quants (256 elements): x ~= d * qs; bsums[g] = sum of qs[16g .. 16g+15],
// which the K-quants' per-group minimums and offsets multiply.
struct BlockQ8K {
  float d;
  int16_t bsums[16];
  int8_t qs[256];
};
static_assert(sizeof(BlockQ8K) == 292);

enum class Activation { F32, Q8, Q8K };

// Which activation format a weight type's kernel reads.
Activation activation_for(DType type) noexcept;

// Computes y[t * y_stride + r] = dot(weight row r, activations of token t) for r < n_rows and
// t < n_tokens. `w` is row 0 (rows are row_bytes apart), `x` token 0's activations in the
// type's Activation format (tokens are x_stride bytes apart), cols the row length (a whole
// number of the type's blocks). Kernels loop tokens in tiles of a few so that each weight block
// decoded is used for several tokens; callers pass a block of rows that fits in L1.
using TileFn = void (*)(const uint8_t* w, size_t row_bytes, int64_t n_rows, const uint8_t* x, size_t x_stride,
                        int64_t n_tokens, int64_t cols, float* y, int64_t y_stride);

struct KernelSet {
  std::string_view level;  // "scalar", "avx2"
  // cols must be a multiple of 32 (resp. 256). Both levels produce identical blocks (same
  // rounding: d = amax / 127, q = round-half-even(x * (127 / amax)), clamped to +-127).
  void (*quantize_q8)(const float* x, int64_t cols, BlockQ8* out);
  void (*quantize_q8k)(const float* x, int64_t cols, BlockQ8K* out);
  // nullptr for a type the level has no kernel for.
  TileFn (*tile_for)(DType type);
};

const KernelSet& scalar_kernels() noexcept;
// nullptr when this build has no AVX2 kernels (non-x86 target). Call only when the CPU has
// AVX2, FMA and F16C (cpu_has_avx2()).
const KernelSet* avx2_kernels() noexcept;
bool cpu_has_avx2() noexcept;

// The set matmul() uses: the best the CPU supports, lowered by LATHE_CPU_KERNELS (read once)
// or by force_kernel_level().
const KernelSet& active_kernels() noexcept;

// Test hook: "scalar" or "avx2" forces that level (when the CPU supports it; returns false and
// changes nothing otherwise); "" returns to the default choice. Not thread-safe against
// concurrent matmul() calls.
bool force_kernel_level(std::string_view level) noexcept;

}  // namespace lathe::cpu::kernels
