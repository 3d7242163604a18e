// How weight matrices are laid out on a CUDA device, and the host-side repacking into that
// layout. Plain C++ (no CUDA): it is unit-tested on machines without a GPU.
//
// Block-quantized rows are split into a quant array and a scale array so that GPU threads read
// quants with aligned 16-byte loads (ggml's 18-byte Q4_0 / 34-byte Q8_0 blocks are not aligned):
//   Q8_0: qs int8 [rows][cols],        scales f16 [rows][cols/32]
//   Q4_0: qs      [rows][cols/2],      scales f16 [rows][cols/32]     (ggml nibble order kept)
//   Q4_1: qs      [rows][cols/2],      scales f16 pairs (d, m) [rows][cols/32]
//   Q4_K: qs = ggml's 144-byte super-blocks unchanged (16-byte multiple), no scale array
//   Q6_K: qs = 208-byte blocks (ql[128] qh[64] scales[16]), scales f16 d [rows][cols/256]
//   F32 / F16 / BF16: qs = the elements, no scale array
// Every other dequantizable type (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K) is converted to F16 at upload.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace lathe::cuda {

// The type a matrix stored as `stored` has on the device (itself, or F16 for converted types).
// Throws UnsupportedError naming `tensor` for a type lathe cannot decode.
DType device_type(DType stored, const char* tensor = "");

// Whether the type has a kernel that reads it as stored (no conversion at upload).
bool is_native_device_type(DType type) noexcept;

// Bytes per row of the quant array and of the scale array of a device-typed matrix.
size_t qs_row_bytes(DType device, int64_t cols);
size_t scales_row_bytes(DType device, int64_t cols);

// Repacks `rows` rows of `cols` elements stored as `stored` (row r at src + r * src_row_bytes)
// into the device layout of device_type(stored): rows * qs_row_bytes bytes at qs_out and
// rows * scales_row_bytes bytes at scales_out (may be null when that is 0).
void repack_rows(DType stored, const uint8_t* src, size_t src_row_bytes, int64_t rows, int64_t cols, uint8_t* qs_out,
                 uint8_t* scales_out);

// Rows of a block-quantized matrix decoded to half per cuBLAS product in prefill, when the scratch
// holds scratch_elems halves: as many as fit, split evenly over the chunks, and a multiple of 64
// rows whenever 64 fit. cuBLAS takes its fast kernels only for aligned operands: chunks of 8,190
// rows (a 32 Mi-half scratch over 4,096 columns) left the output of every later chunk 8-byte
// aligned, and cuBLAS ran every product of an 8B Q4_0 prefill in a kernel for 2-element alignment,
// 2.4x slower than the BF16 model's products (docs/PERFORMANCE.md). Throws InternalError when not
// one row fits.
int64_t gemm_chunk_rows(int64_t rows, int64_t cols, size_t scratch_elems);

}  // namespace lathe::cuda
