// core/fp16 and core/quant without the Python oracle: IEEE special values, argument checking and
// round-trip error bounds derived from each format's definition.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }
uint32_t to_bits(float value) { return std::bit_cast<uint32_t>(value); }

TEST(Fp16, FloatToHalfSpecialValues) {
  EXPECT_EQ(f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);                       // largest half
  EXPECT_EQ(f32_to_f16(from_bits(0x477fefff)), 0x7bff);          // just below the tie with 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                       // tie rounds to even = infinity
  EXPECT_EQ(f32_to_f16(1e30f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e30f), 0xfc00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);                // tie, even stays
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);            // tie, odd rounds up
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);     // above the tie
  EXPECT_EQ(f32_to_f16(0x1p-14f), 0x0400);                       // smallest normal half
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);                       // smallest subnormal half
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);                       // tie with zero: even
  EXPECT_EQ(f32_to_f16(from_bits(0x33000001)), 0x0001);          // just above it
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);                   // subnormal tie, odd rounds up
  EXPECT_EQ(f32_to_f16(0x1p-14f - 0x1p-25f), 0x0400);            // rounds up into the normals
  EXPECT_EQ(f32_to_f16(1e-40f), 0x0000);                         // float32 subnormal
  EXPECT_EQ(f32_to_f16(-1e-40f), 0x8000);
  // NaN keeps its sign and top payload bits (numpy); a payload lost to truncation becomes 1.
  EXPECT_EQ(f32_to_f16(from_bits(0x7fc00000)), 0x7e00);
  EXPECT_EQ(f32_to_f16(from_bits(0xffc00000)), 0xfe00);
  EXPECT_EQ(f32_to_f16(from_bits(0x7f800001)), 0x7c01);
  EXPECT_EQ(f32_to_f16(from_bits(0x7fa00000)), 0x7d00);
}

TEST(Fp16, HalfToFloatSpecialValues) {
  EXPECT_EQ(to_bits(f16_to_f32(0x0000)), 0x00000000u);
  EXPECT_EQ(to_bits(f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x8001), -0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(to_bits(f16_to_f32(0x7e00)), 0x7fc00000u);
  EXPECT_EQ(to_bits(f16_to_f32(0x7c01)), 0x7f802000u);  // signalling payload kept
}

TEST(Fp16, EveryHalfSurvivesARoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) << h;
      EXPECT_EQ(f32_to_f16(f), h) << "NaN payload of " << h;
    } else {
      EXPECT_EQ(f32_to_f16(f), h) << h;
    }
  }
}

TEST(Bf16, SpecialValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);           // tie, even stays
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);       // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(f32_to_bf16(1e-40f), 0x0001);                   // 1e-40 = 0x000116c2: rounds up to 0x0001
  // NaNs become quiet, keeping sign and top payload bits, never rounding into the exponent.
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f800001)), 0x7fc0);
  EXPECT_EQ(f32_to_bf16(from_bits(0xffffffff)), 0xffff);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7fa1ffff)), 0x7fe1);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(to_bits(bf16_to_f32(0xff81)), 0xff810000u);
  EXPECT_EQ(bf16_to_f32(0x0001), from_bits(0x00010000));
}

TEST(Quant, RowLengthMustBeWholeBlocks) {
  std::vector<float> values(64, 1.0f);
  std::vector<uint8_t> bytes(1024);
  try {
    dequantize_row(DType::Q4_K, bytes.data(), values.data(), 100);
    FAIL() << "no error for 100 elements of Q4_K";
  } catch (const InvalidArgumentError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("Q4_K"), std::string::npos) << message;
    EXPECT_NE(message.find("100"), std::string::npos) << message;
    EXPECT_NE(message.find("256"), std::string::npos) << message;
  }
  EXPECT_THROW(quantize_row(DType::Q4_1, values.data(), bytes.data(), 33), InvalidArgumentError);
  EXPECT_THROW(quantize_row(DType::Q8_0, values.data(), bytes.data(), -32), InvalidArgumentError);
  EXPECT_THROW(dequantize_row(DType::F16, bytes.data(), values.data(), -1), InvalidArgumentError);
  EXPECT_THROW(quantize(DType::Q4_0, std::span<const float>(values.data(), 40)), InvalidArgumentError);
  EXPECT_NO_THROW(quantize_row(DType::Q4_0, values.data(), bytes.data(), 0));
}

TEST(Quant, ByteLengthIsChecked) {
  std::vector<uint8_t> bytes(41);
  try {
    (void)dequantize(DType::Q4_1, bytes, 64);
    FAIL() << "no error for 41 bytes of 64 Q4_1 elements";
  } catch (const InvalidArgumentError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("40 bytes"), std::string::npos) << message;
    EXPECT_NE(message.find("41"), std::string::npos) << message;
  }
  EXPECT_THROW((void)dequantize(DType::Q4_1, std::span<const uint8_t>(bytes.data(), 39), 64), InvalidArgumentError);
  EXPECT_EQ(dequantize(DType::Q4_1, std::span<const uint8_t>(bytes.data(), 40), 64).size(), 64u);
  // A huge n with a short buffer must fail before allocating anything.
  EXPECT_THROW((void)dequantize(DType::F32, bytes, int64_t{1} << 60), InvalidArgumentError);
}

TEST(Quant, UnsupportedTypesAreRefused) {
  std::vector<uint8_t> bytes(256);
  std::vector<float> values(256);
  EXPECT_FALSE(can_dequantize(DType::IQ2_XXS));
  EXPECT_FALSE(can_quantize(DType::Q4_K));
  EXPECT_THROW(dequantize_row(DType::IQ2_XXS, bytes.data(), values.data(), 256), UnsupportedError);
  EXPECT_THROW(dequantize_row(DType::I32, bytes.data(), values.data(), 4), UnsupportedError);
  try {
    quantize_row(DType::Q6_K, values.data(), bytes.data(), 256);
    FAIL() << "Q6_K quantize accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("Q6_K"), std::string::npos) << e.what();
  }
}

// Error bounds per format, from its definition: the quant step, plus the float16 rounding
// (relative 2^-11) of the stored scale and offset.
struct RoundTripCase {
  DType type;
  int block;
};

double allowed_error(DType type, const float* x, int count, int j) {
  double amax = 0, max = -INFINITY, min = INFINITY;
  for (int i = 0; i < count; ++i) {
    amax = std::max(amax, std::fabs(double(x[i])));
    max = std::max(max, double(x[i]));
    min = std::min(min, double(x[i]));
  }
  const double half_ulp = 0x1p-11, slack = 1e-6 * amax;
  switch (type) {
    case DType::F16: return std::fabs(x[j]) * half_ulp;
    case DType::BF16: return std::fabs(x[j]) * 0x1p-8;
    case DType::Q8_0: return amax / 127 * 0.5 + amax * half_ulp + slack;
    // The extreme of the other sign can land on 16, clipped to 15: one whole step.
    case DType::Q4_0: return amax / 8 + amax * half_ulp + slack;
    case DType::Q4_1: {
      const double d = (max - min) / 15;
      return d * 0.5 + 15 * d * half_ulp + std::fabs(min) * half_ulp + slack;
    }
    default: return 0;
  }
}

TEST(Quant, RoundTripStaysWithinTheFormatsErrorBound) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType type : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const int block = static_cast<int>(dtype_info(type).block_size == 1 ? 32 : dtype_info(type).block_size);
    std::vector<float> values(block * 200);
    for (size_t i = 0; i < values.size(); ++i) values[i] = normal(rng) * (1.0f + float(i / block % 7) * 10.0f);
    const auto bytes = quantize(type, values);
    const auto back = dequantize(type, bytes, static_cast<int64_t>(values.size()));
    ASSERT_EQ(back.size(), values.size());
    double worst_ratio = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      const float* block_start = values.data() + i / block * block;
      const double bound = allowed_error(type, block_start, block, int(i % block));
      const double error = std::fabs(double(back[i]) - double(values[i]));
      ASSERT_LE(error, bound) << dtype_name(type) << " element " << i << ": " << values[i] << " -> " << back[i];
      if (bound > 0) worst_ratio = std::max(worst_ratio, error / bound);
    }
    // The bound is not vacuous: some element gets near it (quant error is spread uniformly).
    EXPECT_GT(worst_ratio, 0.3) << dtype_name(type);
  }
}

TEST(Quant, ZeroBlocksStayZero) {
  const std::vector<float> zeros(64, 0.0f);
  for (DType type : {DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    const auto back = dequantize(type, quantize(type, zeros), 64);
    for (float v : back) EXPECT_EQ(v, 0.0f) << dtype_name(type);
  }
}

}  // namespace
}  // namespace lathe
