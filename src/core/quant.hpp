// Conversion between float32 and ggml's tensor formats (plain 16-bit floats and block-quantized
// formats), bit-exact with gguf-py's `gguf.quants.quantize` / `gguf.quants.dequantize`
// (gguf 0.19.0 on numpy 2.x, x86-64): the tests compare every output bit with it.
//
// A "row" here is any run of n elements laid out contiguously in the given format; n must be a
// whole number of blocks (dtype_info(type).block_size) and the source/destination must hold
// dtype_bytes(type, n) bytes. Block layouts are ggml's (little-endian).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/dtype.hpp"

namespace lathe {

// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool can_dequantize(DType type) noexcept;
// F32, F16, BF16, Q4_0, Q4_1, Q8_0.
bool can_quantize(DType type) noexcept;

// Decodes n elements of `type` from src (dtype_bytes(type, n) bytes, any alignment) into dst.
// Throws UnsupportedError for a type can_dequantize() rejects and InvalidArgumentError when n is
// negative or not a multiple of the block size.
void dequantize_row(DType type, const void* src, float* dst, int64_t n);

// Encodes n floats into `type` at dst (dtype_bytes(type, n) bytes, any alignment). Same errors as
// dequantize_row, with can_quantize().
void quantize_row(DType type, const float* src, void* dst, int64_t n);

// Checked conveniences: `bytes` must be exactly dtype_bytes(type, n) long, else
// InvalidArgumentError saying how many bytes n elements need. Nothing is allocated before the
// length check passes.
std::vector<float> dequantize(DType type, std::span<const uint8_t> bytes, int64_t n);
// values.size() must be a multiple of the block size.
std::vector<uint8_t> quantize(DType type, std::span<const float> values);

}  // namespace lathe
