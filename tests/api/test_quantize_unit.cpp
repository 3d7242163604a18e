// quantize_gguf() on small GGUF files built here: tensor types chosen per shape (1-D F32, F16
// fallback), llama.cpp's file types, and every error path. The gguf-py comparison of whole models
// is in test_quantize.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "lathe/quantize.hpp"

namespace lathe {
namespace {

std::vector<uint8_t> float_bytes(const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * static_cast<float>(i) + scale);
  return v;
}

// A tiny model-like GGUF: a 64x2 matrix, a 48x3 matrix (48 is not a multiple of 32), an F16 1-D norm.
struct SmallModel {
  std::vector<float> matrix = ramp(64 * 2, 1.5f), odd = ramp(48 * 3, 0.25f);
  std::vector<uint8_t> matrix_bytes = float_bytes(matrix), odd_bytes = float_bytes(odd);
  std::vector<uint8_t> norm_bytes = quantize(DType::F16, ramp(64, 2.0f));

  void write(const std::filesystem::path& path, bool with_file_type = true) const {
    gguf::Writer w;
    w.set("general.architecture", gguf::Value::str("llama"));
    if (with_file_type) w.set("general.file_type", gguf::Value::u32(0));
    w.set("llama.block_count", gguf::Value::u32(1));
    w.set("tokenizer.ggml.tokens", gguf::Value::string_array({"a", "b"}));
    w.add_tensor("blk.0.attn_q.weight", DType::F32, {64, 2}, matrix_bytes);
    w.add_tensor("blk.0.ffn_odd.weight", DType::F32, {48, 3}, odd_bytes);
    w.add_tensor("blk.0.attn_norm.weight", DType::F16, {64}, norm_bytes);
    w.write(path);
  }
};

class QuantizeSmall : public ::testing::Test {
 protected:
  void SetUp() override { model_.write(in_); }
  test::TempDir dir_{"quantize-unit"};
  std::filesystem::path in_ = dir_ / "in.gguf", out_ = dir_ / "out.gguf";
  SmallModel model_;
};

TEST(QuantizeTargets, LlamaFileTypes) {
  EXPECT_EQ(llama_file_type(DType::F32), 0u);
  EXPECT_EQ(llama_file_type(DType::F16), 1u);
  EXPECT_EQ(llama_file_type(DType::Q4_0), 2u);
  EXPECT_EQ(llama_file_type(DType::Q4_1), 3u);
  EXPECT_EQ(llama_file_type(DType::Q8_0), 7u);
  EXPECT_EQ(llama_file_type(DType::BF16), 32u);
  EXPECT_FALSE(llama_file_type(DType::Q4_K).has_value());
  EXPECT_FALSE(is_quantize_target(DType::Q5_0));
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    EXPECT_TRUE(is_quantize_target(t)) << dtype_name(t);
    EXPECT_TRUE(can_quantize(t)) << dtype_name(t);
  }
}

TEST_F(QuantizeSmall, TypesPerShapeAndF16FallbackForOddRows) {
  std::vector<QuantizedTensor> seen;
  QuantizeOptions options;
  options.progress = [&](const QuantizedTensor& t) { seen.push_back(t); };
  quantize_gguf(in_, out_, DType::Q8_0, options);

  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].name, "blk.0.attn_q.weight");
  EXPECT_EQ(seen[0].to, DType::Q8_0);
  EXPECT_FALSE(seen[0].fallback);
  EXPECT_EQ(seen[1].to, DType::F16);
  EXPECT_TRUE(seen[1].fallback);
  EXPECT_EQ(seen[2].from, DType::F16);
  EXPECT_EQ(seen[2].to, DType::F32);
  EXPECT_EQ(seen[2].index, 3u);
  EXPECT_EQ(seen[2].total, 3u);

  const auto out = gguf::File::open(out_);
  EXPECT_EQ(out.get("general.file_type").as_u64("file_type"), 7u);
  const auto* q = out.find_tensor("blk.0.attn_q.weight");
  const auto* odd = out.find_tensor("blk.0.ffn_odd.weight");
  const auto* norm = out.find_tensor("blk.0.attn_norm.weight");
  ASSERT_TRUE(q && odd && norm);
  EXPECT_EQ(q->type, DType::Q8_0);
  EXPECT_EQ(q->shape, (std::vector<uint64_t>{64, 2}));
  EXPECT_EQ(odd->type, DType::F16);
  EXPECT_EQ(norm->type, DType::F32);
  EXPECT_EQ(norm->shape, (std::vector<uint64_t>{64}));
  // The F16 fallback and the F32 norm are exact conversions of the input values.
  const auto odd_values = dequantize(DType::F16, out.tensor_data(*odd), 48 * 3);
  for (size_t i = 0; i < odd_values.size(); ++i)
    EXPECT_EQ(odd_values[i], dequantize(DType::F16, quantize(DType::F16, {&model_.odd[i], 1}), 1)[0]) << i;
  const auto norm_in = dequantize(DType::F16, model_.norm_bytes, 64);
  const auto norm_out = dequantize(DType::F32, out.tensor_data(*norm), 64);
  EXPECT_EQ(norm_in, norm_out);
}

TEST_F(QuantizeSmall, AddsFileTypeWhenTheInputHasNone) {
  model_.write(in_, /*with_file_type=*/false);
  quantize_gguf(in_, out_, DType::Q4_1);
  EXPECT_EQ(gguf::File::open(out_).get("general.file_type").as_u64("file_type"), 3u);
}

TEST_F(QuantizeSmall, MissingInputIsNotFound) {
  EXPECT_THROW(quantize_gguf(dir_ / "absent.gguf", out_, DType::Q8_0), NotFoundError);
  EXPECT_FALSE(std::filesystem::exists(out_));
}

TEST_F(QuantizeSmall, UnsupportedTargetNamesTheAlternatives) {
  try {
    quantize_gguf(in_, out_, DType::Q4_K);
    FAIL() << "Q4_K accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Q8_0"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(out_));
}

TEST_F(QuantizeSmall, ExistingOutputNeedsForce) {
  test::write_file(out_, "keep me");
  try {
    quantize_gguf(in_, out_, DType::Q8_0);
    FAIL() << "existing output overwritten without force";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("--force"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_file(out_), "keep me");

  QuantizeOptions force;
  force.force = true;
  quantize_gguf(in_, out_, DType::Q8_0, force);
  EXPECT_EQ(gguf::File::open(out_).tensors().size(), 3u);
}

TEST_F(QuantizeSmall, RefusesToWriteOverItsInputEvenWithForce) {
  const std::string before = test::read_file(in_);
  QuantizeOptions force;
  force.force = true;
  EXPECT_THROW(quantize_gguf(in_, in_, DType::Q8_0, force), InvalidArgumentError);
  EXPECT_EQ(test::read_file(in_), before);
}

TEST_F(QuantizeSmall, SourceTypeThatCannotBeDequantizedIsUnsupported) {
  // IQ4_NL: 32 elements in 18 bytes; lathe reads the type but cannot decode it.
  std::vector<uint8_t> iq(18 * 2, 0);
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.add_tensor("blk.0.attn_k.weight", DType::IQ4_NL, {32, 2}, iq);
  w.write(in_);
  try {
    quantize_gguf(in_, out_, DType::Q8_0);
    FAIL() << "IQ4_NL tensor accepted";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_k.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("IQ4_NL"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(out_));
}

TEST_F(QuantizeSmall, CliReportsErrorsAndFallbacks) {
  const auto cli = test::cli_path().string();
  auto r = test::run_command({cli, "quantize", in_.string(), out_.string(), "Q4_K"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("error: quantize: target type Q4_K is not supported"), std::string::npos) << r.err;
  r = test::run_command({cli, "quantize", in_.string(), out_.string(), "Q9_9"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("'Q9_9' is not a tensor type"), std::string::npos) << r.err;
  r = test::run_command({cli, "quantize", (dir_ / "absent.gguf").string(), out_.string(), "Q8_0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("absent.gguf"), std::string::npos) << r.err;

  r = test::run_command({cli, "quantize", in_.string(), out_.string(), "q8_0", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_NE(r.out.find("1 F16, 1 F32, 1 Q8_0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 tensors kept in F16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blk.0.ffn_odd.weight"), std::string::npos) << r.out;

  r = test::run_command({cli, "quantize", in_.string(), out_.string(), "Q8_0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  r = test::run_command({cli, "quantize", in_.string(), out_.string(), "F16", "--force"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[   3/3]"), std::string::npos) << r.err;  // progress on stderr
  EXPECT_EQ(gguf::File::open(out_).get("general.file_type").as_u64("file_type"), 1u);
}

}  // namespace
}  // namespace lathe
