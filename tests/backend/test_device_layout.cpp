// The host side of the CUDA weight layout (backend/cuda/device_layout.hpp): repacking keeps every
// byte of the native types (quants and scales reassemble into the original blocks), and types
// without a kernel become F16 equal to the reference dequantization rounded to half.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "backend/cuda/device_layout.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(byte(rng));
  return v;
}

TEST(DeviceLayout, NativeTypesKeepEveryByte) {
  std::mt19937 rng(3);
  const int64_t rows = 3, cols = 512;
  // (type, scale bytes at the start of each block (or, for Q6_K, at the end), block bytes)
  struct Case {
    DType type;
    size_t scale_bytes, block_bytes;
    bool scale_first;
  };
  for (Case c : {Case{DType::Q8_0, 2, 34, true}, Case{DType::Q4_0, 2, 18, true}, Case{DType::Q4_1, 4, 20, true},
                 Case{DType::Q6_K, 2, 210, false}}) {
    EXPECT_EQ(device_type(c.type), c.type);
    const size_t row_bytes = *dtype_bytes(c.type, cols);
    const auto src = random_bytes(row_bytes * rows, rng);
    std::vector<uint8_t> qs(qs_row_bytes(c.type, cols) * rows), sc(scales_row_bytes(c.type, cols) * rows);
    repack_rows(c.type, src.data(), row_bytes, rows, cols, qs.data(), sc.data());
    const size_t quant_bytes = c.block_bytes - c.scale_bytes;
    const size_t blocks = row_bytes / c.block_bytes;
    for (int64_t r = 0; r < rows; ++r)
      for (size_t b = 0; b < blocks; ++b) {
        const uint8_t* block = src.data() + r * row_bytes + b * c.block_bytes;
        const uint8_t* q = qs.data() + r * qs_row_bytes(c.type, cols) + b * quant_bytes;
        const uint8_t* s = sc.data() + r * scales_row_bytes(c.type, cols) + b * c.scale_bytes;
        const uint8_t* block_q = c.scale_first ? block + c.scale_bytes : block;
        const uint8_t* block_s = c.scale_first ? block : block + quant_bytes;
        ASSERT_EQ(std::memcmp(q, block_q, quant_bytes), 0) << dtype_name(c.type) << " row " << r << " block " << b;
        ASSERT_EQ(std::memcmp(s, block_s, c.scale_bytes), 0) << dtype_name(c.type) << " row " << r << " block " << b;
      }
  }
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q4_K}) {
    const size_t row_bytes = *dtype_bytes(type, cols);
    const auto src = random_bytes(row_bytes * rows, rng);
    std::vector<uint8_t> qs(qs_row_bytes(type, cols) * rows);
    EXPECT_EQ(scales_row_bytes(type, cols), 0u);
    repack_rows(type, src.data(), row_bytes, rows, cols, qs.data(), nullptr);
    EXPECT_EQ(qs, src) << dtype_name(type);
  }
}

TEST(DeviceLayout, OtherTypesBecomeHalfOfTheReferenceValues) {
  std::mt19937 rng(4);
  const int64_t rows = 2, cols = 256;
  for (DType type : {DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q5_K}) {
    EXPECT_EQ(device_type(type), DType::F16);
    EXPECT_FALSE(is_native_device_type(type));
    const size_t row_bytes = *dtype_bytes(type, cols);
    auto src = random_bytes(row_bytes * rows, rng);
    // Keep the 16-bit scales finite: overwrite every half with 0.01.
    const uint16_t small = f32_to_f16(0.01f);
    const auto& info = dtype_info(type);
    const size_t d_at = type == DType::Q2_K ? 80 : type == DType::Q3_K ? 108 : 0;
    for (size_t b = 0; b < src.size() / info.block_bytes; ++b) {
      std::memcpy(src.data() + b * info.block_bytes + d_at, &small, 2);
      if (type == DType::Q5_1 || type == DType::Q2_K || type == DType::Q5_K)
        std::memcpy(src.data() + b * info.block_bytes + d_at + 2, &small, 2);
    }
    std::vector<uint8_t> qs(qs_row_bytes(DType::F16, cols) * rows);
    repack_rows(type, src.data(), row_bytes, rows, cols, qs.data(), nullptr);
    std::vector<float> ref(cols);
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(type, src.data() + r * row_bytes, ref.data(), cols);
      for (int64_t c = 0; c < cols; ++c) {
        uint16_t h;
        std::memcpy(&h, qs.data() + (r * cols + c) * 2, 2);
        ASSERT_EQ(h, f32_to_f16(ref[c])) << dtype_name(type) << " element " << c;
      }
    }
  }
}

TEST(DeviceLayout, TypesWithoutADecoderAreRefused) {
  EXPECT_THROW(device_type(DType::IQ2_XXS, "blk.0.attn_q.weight"), UnsupportedError);
  try {
    device_type(DType::IQ2_XXS, "blk.0.attn_q.weight");
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight"), std::string::npos);
  }
}

// The chunks a quantized matrix is decoded in for cuBLAS: they cover the matrix, fit the scratch,
// are a multiple of 64 rows whenever 64 rows fit (cuBLAS's fast kernels need aligned operands),
// and are about even.
TEST(DeviceLayout, GemmChunksFitAlignAndCoverTheMatrix) {
  struct Case {
    int64_t rows, cols;
    size_t scratch;
  };
  const Case cases[] = {
      {4096, 4096, 2340 * 14336},   // Llama-3.1-8B output projection in the 8B scratch: one chunk
      {14336, 4096, 2340 * 14336},  // gate / up: 8,190 rows fit (the misaligned chunk before)
      {4096, 14336, 2340 * 14336},  // down
      {896, 4864, 6898 * 4864},     // Qwen2.5-0.5B down: all in one chunk
      {300, 768, 128 * 768},        // the GPU test's shape: several chunks
      {1000, 512, 40 * 512},        // fewer than 64 rows fit: as many as fit
      {7, 64, 1000 * 64},           // a matrix smaller than the scratch
  };
  for (const Case& c : cases) {
    const int64_t chunk = gemm_chunk_rows(c.rows, c.cols, c.scratch);
    const auto fit = static_cast<int64_t>(c.scratch / static_cast<size_t>(c.cols));
    EXPECT_GE(chunk, 1);
    EXPECT_LE(chunk, fit) << c.rows << "x" << c.cols;
    EXPECT_LE(chunk, c.rows) << c.rows << "x" << c.cols;
    if (fit >= 64 && chunk < c.rows) {
      EXPECT_EQ(chunk % 64, 0) << c.rows << "x" << c.cols;
      const int64_t n_chunks = (c.rows + chunk - 1) / chunk;
      EXPECT_EQ(n_chunks, (c.rows + fit / 64 * 64 - 1) / (fit / 64 * 64)) << "no more chunks than needed";
    }
    if (fit < 64) {
      EXPECT_EQ(chunk, std::min(fit, c.rows));
    }
  }
  EXPECT_EQ(gemm_chunk_rows(4096, 4096, 2340 * 14336), 4096);
  EXPECT_EQ(gemm_chunk_rows(14336, 4096, 2340 * 14336), 7168) << "8,190 rows fit: two even, aligned chunks";
  EXPECT_EQ(gemm_chunk_rows(4096, 14336, 2340 * 14336), 2048);
  EXPECT_THROW(gemm_chunk_rows(10, 4096, 4095), InternalError);
}

}  // namespace
}  // namespace lathe::cuda
