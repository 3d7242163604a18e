// Matrix products with weights in their stored format (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K): no dequantize-everything-at-load. One token (decode) is
// a mat-vec; several tokens (prefill) a blocked mat-mat. SIMD code (AVX2/FMA, AVX-512 where it
// pays) is chosen at run time from the CPU's features, with a portable scalar fallback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "backend/cpu/thread_pool.hpp"
#include "core/dtype.hpp"
#include "core/matrix.hpp"

namespace lathe::cpu {

// Whether matmul() handles matrices of this type.
bool matmul_supports(DType type) noexcept;

// y[t * w.rows + r] = sum_c W[r][c] * x[t * w.cols + c] for t in [0, n_tokens), r in [0, w.rows).
// Activations may be converted internally to the format the type's dot product consumes (as
// llama.cpp does, e.g. 8-bit blocks for quantized weights); the tests bound the resulting error
// against a float64 reference. Throws UnsupportedError naming w.name for an unsupported type and
// InvalidArgumentError when cols is not a whole number of the type's blocks.
void matmul(const MatrixView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool);

// The instruction set the kernels use on this machine: "avx512", "avx2" or "scalar". The
// LATHE_CPU_KERNELS environment variable ("scalar", "avx2") can force a lower level (tests use
// it to check every level against the reference).
std::string_view kernel_level() noexcept;

}  // namespace lathe::cpu
