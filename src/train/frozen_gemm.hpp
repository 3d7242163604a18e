// The float32 frozen products of the training pass as blocked matrix products (behind
// frozen_linear_forward / frozen_linear_backward<float>, train/ops.hpp): each weight element is
// dequantized once per call into a small per-thread panel, then a register-blocked micro-kernel
// (train/gemm_kernels.hpp) uses it for every token. Same function as the row-by-row reference:
// the weights are dequantized exactly as dequantize_row does and activations stay in float32;
// only the rounding of the sums differs (fused multiply-adds at the AVX2 level).
//
// Work is split into units of output rows (forward) or input columns (backward) that threads
// claim as they come free; every output value is computed by one unit, its terms added in a
// fixed order, so results do not depend on the threads or on how the units were shared out.
#pragma once

#include <cstdint>
#include <span>

#include "backend/cpu/thread_pool.hpp"
#include "core/matrix.hpp"

namespace lathe::train {

// y [n x w.rows] = x [n x w.cols] W^T (written).
void frozen_gemm_forward(const MatrixView& w, const float* x, int64_t n, float* y, cpu::ThreadPool* pool);
// dx [n x w.cols] += dy [n x w.rows] W.
void frozen_gemm_backward(const MatrixView& w, const float* dy, int64_t n, float* dx, cpu::ThreadPool* pool);

// Several matrices of the same width on one input (Q, K and V; gate and up) in one call: the
// input is transposed once, the threads share out the rows of all of them (forward), and each
// column unit of dx collects every matrix's terms, in the order given, between one read and
// one write of dx (backward). InvalidArgumentError for widths that differ or a count of
// activations that is not the count of matrices.
void frozen_gemm_forward(std::span<const MatrixView* const> ws, const float* x, int64_t n, std::span<float* const> ys,
                         cpu::ThreadPool* pool);
void frozen_gemm_backward(std::span<const MatrixView* const> ws, std::span<const float* const> dys, int64_t n,
                          float* dx, cpu::ThreadPool* pool);

// lora_forward / lora_backward<float> (train/ops.hpp) on the same products, each a float32 matrix
// seen as an F32 MatrixView, on the calling thread (rank-sized products are too small to share
// out). Every gradient is the sum of the same terms in the same order as the loops of ops.cpp.
void lora_gemm_forward(const float* a, const float* b, int64_t rank, int64_t in, int64_t out, float s, const float* x,
                       int64_t n, float* y, float* xa);
void lora_gemm_backward(const float* a, const float* b, int64_t rank, int64_t in, int64_t out, float s,
                        const float* x, const float* xa, const float* dy, int64_t n, float* da, float* db, float* dx);

}  // namespace lathe::train
