// matmul() against a float64 reference built from dequantize_row (core/quant, bit-exact with
// gguf-py), for every supported type, odd shapes and every kernel level this CPU has.
//
// Error bounds (per output element y[t][r], with W the dequantized row and x the activations):
//  * F32 / F16 / BF16: activations are used as floats, so only float32 summation error remains:
//    |y - ref| <= 2e-6 * sum_c |W_c x_c|.
//  * quantized types: the kernels first quantize x to 8 bits, per block of 32 (Q4_0..Q8_0) or 256
//    (K-quants): d = amax / 127, xq = d * round(x / d), so |x_c - xq_c| <= d_c / 2 exactly.
//    (a) against the float64 product with the same 8-bit activations xq (re-derived here from
//        that documented rule): |y - W.xq| <= 1e-5 * sum_c |W_c xq_c| (float32 block scaling only);
//    (b) against the true product: |y - W.x| <= sum_c |W_c| d_c / 2 + (a)'s term, the worst case of
//        the activation rounding; and, statistically, over all outputs of a case,
//        rms(y - W.x) <= 3 * sqrt(mean(sum_c W_c^2 d_c^2 / 12)) (rounding errors uniform in
//        +-d/2 and independent). (Relative to rms(W.x) this is ~0.5-6% here: high for few-output
//        cases whose W.x happens to be small, so it is not bounded relative to W.x.)
#include "backend/cpu/matmul.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/kernels.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace lathe::cpu {
namespace {

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_float_type(DType type) { return type == DType::F32 || type == DType::F16 || type == DType::BF16; }
int activation_block(DType type) { return is_float_type(type) ? 0 : (dtype_info(type).block_size == 256 ? 256 : 32); }

void store_f16(uint8_t* p, float value) {
  const uint16_t bits = f32_to_f16(value);
  std::memcpy(p, &bits, 2);
}

// Byte offsets of the f16 scale fields of one block (random bytes there could be NaN/inf).
std::vector<size_t> scale_offsets(DType type) {
  switch (type) {
    case DType::Q5_0: return {0};
    case DType::Q5_1: return {0, 2};
    case DType::Q2_K: return {80, 82};
    case DType::Q3_K: return {108};
    case DType::Q4_K:
    case DType::Q5_K: return {0, 2};
    case DType::Q6_K: return {208};
    default: return {};
  }
}

// `rows` rows of `cols` elements in `type`, each row_bytes apart (row_bytes may exceed a row).
std::vector<uint8_t> random_weights(DType type, int64_t rows, int64_t cols, size_t row_bytes, std::mt19937& rng) {
  std::vector<uint8_t> data(static_cast<size_t>(rows) * row_bytes, 0xAB);
  if (can_quantize(type)) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : values) v = normal(rng);
      quantize_row(type, values.data(), data.data() + r * row_bytes, cols);
    }
    return data;
  }
  // No quantizer: random quants and scale bytes, with sane f16 scales of either sign.
  const auto& info = dtype_info(type);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> magnitude(1e-3f, 1e-2f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / info.block_size; ++b) {
      uint8_t* block = data.data() + r * row_bytes + b * info.block_bytes;
      for (uint32_t i = 0; i < info.block_bytes; ++i) block[i] = static_cast<uint8_t>(byte(rng));
      for (size_t offset : scale_offsets(type)) store_f16(block + offset, (byte(rng) & 1 ? 1.0f : -1.0f) * magnitude(rng));
    }
  return data;
}

// N(0, 1) activations with an occasional outlier, so blocks have different scales.
std::vector<float> random_activations(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 63);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = normal(rng) * (pick(rng) == 0 ? 8.0f : 1.0f);
  return x;
}

// The 8-bit activation rule the kernels document (kernels.hpp): returns xq and d per element.
void quantize_activations(const float* x, int64_t n, int block, std::vector<double>& xq, std::vector<double>& d) {
  xq.assign(static_cast<size_t>(n), 0.0);
  d.assign(static_cast<size_t>(n), 0.0);
  if (block == 0) {
    for (int64_t i = 0; i < n; ++i) xq[static_cast<size_t>(i)] = x[i];
    return;
  }
  for (int64_t b0 = 0; b0 < n; b0 += block) {
    float amax = 0.0f;
    for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(x[b0 + i]));
    // 32-element blocks store the scale as a half (kernels.hpp); the quantized values use the
    // unrounded one.
    const float scale = block == 32 ? f16_to_f32(f32_to_f16(amax / 127.0f)) : amax / 127.0f;
    const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < block; ++i) {
      const float q = std::clamp(std::nearbyint(x[b0 + i] * inverse), -127.0f, 127.0f);
      xq[static_cast<size_t>(b0 + i)] = static_cast<double>(scale) * q;
      d[static_cast<size_t>(b0 + i)] = scale;
    }
  }
}

struct Shape {
  int64_t rows;
  int64_t blocks;  // cols = blocks * block size (F32/F16/BF16: blocks * 32)
  int64_t tokens;
};

// rows 1/7/33/257, 1/2/3 blocks up to 4864-like widths, tokens 1/2/5/17/64.
const Shape kShapes[] = {{1, 1, 1},  {7, 3, 2},   {33, 2, 5},  {257, 3, 17}, {1, 19, 64},
                         {33, 1, 64}, {7, 152, 1}, {257, 24, 1}, {33, 19, 17}, {7, 2, 3}};

class MatmulTest : public ::testing::TestWithParam<std::tuple<DType, const char*>> {
 protected:
  void SetUp() override {
    if (!kernels::force_kernel_level(std::get<1>(GetParam())))
      GTEST_SKIP() << "kernel level " << std::get<1>(GetParam()) << " not available on this CPU";
  }
  void TearDown() override { kernels::force_kernel_level(""); }
};

void check_against_reference(DType type, const Shape& shape, ThreadPool& pool, std::mt19937& rng, size_t padding) {
  const auto& info = dtype_info(type);
  const int64_t cols = shape.blocks * (info.block_size == 1 ? 32 : info.block_size);
  const size_t row_bytes = *dtype_bytes(type, static_cast<uint64_t>(cols)) + padding;
  const auto weights = random_weights(type, shape.rows, cols, row_bytes, rng);
  const auto x = random_activations(cols * shape.tokens, rng);
  std::vector<float> y(static_cast<size_t>(shape.rows * shape.tokens), -12345.0f);

  const MatrixView view{type, weights.data(), shape.rows, cols, row_bytes, "blk.0.test.weight"};
  matmul(view, x.data(), shape.tokens, y.data(), pool);

  std::vector<float> row(static_cast<size_t>(cols));
  double err_sq = 0, ref_sq = 0, noise_sq = 0;
  for (int64_t t = 0; t < shape.tokens; ++t) {
    std::vector<double> xq, d;
    quantize_activations(x.data() + t * cols, cols, activation_block(type), xq, d);
    for (int64_t r = 0; r < shape.rows; ++r) {
      dequantize_row(type, weights.data() + r * row_bytes, row.data(), cols);
      double exact = 0, with_xq = 0, abs_xq = 0, rounding_bound = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double wv = row[static_cast<size_t>(c)];
        exact += wv * x[static_cast<size_t>(t * cols + c)];
        with_xq += wv * xq[static_cast<size_t>(c)];
        abs_xq += std::fabs(wv * xq[static_cast<size_t>(c)]);
        rounding_bound += std::fabs(wv) * d[static_cast<size_t>(c)] / 2;
        noise_sq += wv * wv * d[static_cast<size_t>(c)] * d[static_cast<size_t>(c)] / 12;
      }
      const double got = y[static_cast<size_t>(t * shape.rows + r)];
      ASSERT_FALSE(std::isnan(got)) << "t " << t << " r " << r;
      const double float_tol = (is_float_type(type) ? 2e-6 : 1e-5) * abs_xq + 1e-30;
      ASSERT_LE(std::fabs(got - with_xq), float_tol)
          << dtype_name(type) << " t " << t << " r " << r << " got " << got << " want " << with_xq;
      ASSERT_LE(std::fabs(got - exact), rounding_bound + float_tol) << "t " << t << " r " << r;
      err_sq += (got - exact) * (got - exact);
      ref_sq += exact * exact;
    }
  }
  if (is_float_type(type)) {
    EXPECT_LE(std::sqrt(err_sq / ref_sq), 1e-6) << dtype_name(type) << " rows " << shape.rows << " cols " << cols;
  } else {
    // Rounding noise model: each activation error uniform in +-d/2, independent: variance d^2/12.
    EXPECT_LE(std::sqrt(err_sq), 3 * std::sqrt(noise_sq)) << dtype_name(type) << " rows " << shape.rows << " cols " << cols;
  }
}

TEST_P(MatmulTest, MatchesFloat64Reference) {
  const DType type = std::get<0>(GetParam());
  ASSERT_EQ(kernel_level(), std::get<1>(GetParam()));
  std::mt19937 rng(1234 + static_cast<int>(type));
  ThreadPool pool(2);
  ThreadPool pool3(3);
  size_t case_index = 0;
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(testing::Message() << "rows " << shape.rows << " blocks " << shape.blocks << " tokens "
                                    << shape.tokens);
    // Alternate pools (even / uneven splits) and padded row strides.
    check_against_reference(type, shape, case_index % 2 ? pool3 : pool, rng, case_index % 3 == 0 ? 16 : 0);
    ++case_index;
  }
}

TEST_P(MatmulTest, ZeroTokensIsANoOp) {
  const DType type = std::get<0>(GetParam());
  const int64_t cols = dtype_info(type).block_size == 256 ? 256 : 32;
  std::vector<uint8_t> weights(*dtype_bytes(type, static_cast<uint64_t>(cols)) * 3, 0);
  const MatrixView view{type, weights.data(), 3, cols, weights.size() / 3, "w"};
  float y = 7.0f;
  ThreadPool pool(2);
  matmul(view, nullptr, 0, &y, pool);
  EXPECT_EQ(y, 7.0f);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatmulTest,
                         ::testing::Combine(::testing::ValuesIn(kTypes), ::testing::Values("scalar", "avx2")),
                         [](const auto& info) {
                           return std::string(dtype_name(std::get<0>(info.param))) + "_" + std::get<1>(info.param);
                         });

// The SIMD level agrees with the scalar one (same 8-bit activations; float summation order only).
TEST(MatmulLevels, Avx2AgreesWithScalar) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  ThreadPool pool(2);
  for (DType type : kTypes) {
    SCOPED_TRACE(std::string(dtype_name(type)));
    std::mt19937 rng(99 + static_cast<int>(type));
    const int64_t cols = dtype_info(type).block_size == 256 ? 768 : 96 + (is_float_type(type) ? 5 : 0);
    const int64_t rows = 37, tokens = 6;
    const size_t row_bytes = *dtype_bytes(type, static_cast<uint64_t>(cols));
    const auto weights = random_weights(type, rows, cols, row_bytes, rng);
    const auto x = random_activations(cols * tokens, rng);
    const MatrixView view{type, weights.data(), rows, cols, row_bytes, "w"};
    std::vector<float> y_scalar(rows * tokens), y_avx2(rows * tokens);
    ASSERT_TRUE(kernels::force_kernel_level("scalar"));
    matmul(view, x.data(), tokens, y_scalar.data(), pool);
    ASSERT_TRUE(kernels::force_kernel_level("avx2"));
    matmul(view, x.data(), tokens, y_avx2.data(), pool);
    kernels::force_kernel_level("");
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(type, weights.data() + r * row_bytes, row.data(), cols);
        double magnitude = 0;
        for (int64_t c = 0; c < cols; ++c) magnitude += std::fabs(row[c] * x[t * cols + c]);
        const size_t i = static_cast<size_t>(t * rows + r);
        EXPECT_NEAR(y_scalar[i], y_avx2[i], 1e-5 * magnitude) << "t " << t << " r " << r;
      }
  }
}

// Both levels quantize activations identically (the agreement above relies on it).
TEST(MatmulLevels, ActivationQuantizationIsIdenticalAcrossLevels) {
  if (!kernels::cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::mt19937 rng(5);
  auto x = random_activations(1024, rng);
  x[3] = 0.0f;
  std::fill(x.begin() + 256, x.begin() + 288, 0.0f);  // an all-zero block
  const auto& scalar = kernels::scalar_kernels();
  const auto& avx2 = *kernels::avx2_kernels();
  std::vector<kernels::BlockQ8> a(32), b(32);
  scalar.quantize_q8(x.data(), 1024, a.data());
  avx2.quantize_q8(x.data(), 1024, b.data());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])), 0);
  std::vector<kernels::BlockQ8K> ak(4), bk(4);
  scalar.quantize_q8k(x.data(), 1024, ak.data());
  avx2.quantize_q8k(x.data(), 1024, bk.data());
  EXPECT_EQ(std::memcmp(ak.data(), bk.data(), ak.size() * sizeof(ak[0])), 0);
  EXPECT_EQ(b[8].d, 0.0f);
  EXPECT_EQ(b[8].s, 0.0f);
}

TEST(MatmulErrors, UnsupportedTypeNamesTheTensor) {
  ThreadPool pool(1);
  std::vector<uint8_t> data(1024);
  float x[32] = {}, y[1] = {};
  for (DType type : {DType::Q8_1, DType::Q8_K, DType::IQ2_XXS, DType::I32}) {
    EXPECT_FALSE(matmul_supports(type));
    const MatrixView view{type, data.data(), 1, 32, 1024, "blk.3.ffn_down.weight"};
    try {
      matmul(view, x, 1, y, pool);
      FAIL() << "no error for " << dtype_name(type);
    } catch (const UnsupportedError& e) {
      EXPECT_NE(std::string(e.what()).find("blk.3.ffn_down.weight"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string(dtype_name(type))), std::string::npos) << e.what();
    }
  }
  for (DType type : kTypes) EXPECT_TRUE(matmul_supports(type));
}

TEST(MatmulErrors, ColsNotAWholeNumberOfBlocks) {
  ThreadPool pool(1);
  std::vector<uint8_t> data(4096);
  std::vector<float> x(300), y(4);
  for (auto [type, cols] : {std::pair{DType::Q4_1, int64_t{48}}, {DType::Q8_0, 33}, {DType::Q4_K, 128}, {DType::Q6_K, 288}}) {
    const MatrixView view{type, data.data(), 1, cols, 1024, "output.weight"};
    try {
      matmul(view, x.data(), 1, y.data(), pool);
      FAIL() << "no error for " << dtype_name(type) << " cols " << cols;
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("output.weight"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::to_string(cols)), std::string::npos) << e.what();
    }
  }
}

TEST(MatmulErrors, RowStrideShorterThanARow) {
  ThreadPool pool(1);
  std::vector<uint8_t> data(4096);
  std::vector<float> x(64), y(2);
  const MatrixView view{DType::Q4_1, data.data(), 2, 64, 39, "w"};  // a row takes 40 bytes
  EXPECT_THROW(matmul(view, x.data(), 1, y.data(), pool), InvalidArgumentError);
  const MatrixView negative{DType::F32, data.data(), 2, 4, 16, "w"};
  EXPECT_THROW(matmul(negative, x.data(), -1, y.data(), pool), InvalidArgumentError);
}

TEST(MatmulLevels, KernelLevelIsKnown) {
  const std::string_view level = kernel_level();
  EXPECT_TRUE(level == "scalar" || level == "avx2") << level;
  if (kernels::cpu_has_avx2() && std::getenv("LATHE_CPU_KERNELS") == nullptr) {
    EXPECT_EQ(level, "avx2");
  }
  ASSERT_TRUE(kernels::force_kernel_level("scalar"));
  EXPECT_EQ(kernel_level(), "scalar");
  EXPECT_FALSE(kernels::force_kernel_level("avx9000"));
  EXPECT_EQ(kernel_level(), "scalar");
  kernels::force_kernel_level("");
}

}  // namespace
}  // namespace lathe::cpu
