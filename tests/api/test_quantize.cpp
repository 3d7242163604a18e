// `lathe quantize` of the default model to Q8_0 (through the CLI) and F16 (through the API),
// checked tensor by tensor and key by key against gguf-py (tests/oracle/quantize_check.py):
// every output tensor must hold exactly gguf.quants.quantize(gguf.quants.dequantize(original)).
// Small synthetic files cover every target type, including the F16 fallback, against the same oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "io/gguf.hpp"
#include "lathe/quantize.hpp"

namespace lathe {
namespace {

constexpr int kModelTensors = 272;  // SmolLM2-135M: 211 matrices (token_embd included), 61 norms

nlohmann::json check_with_gguf_py(const std::filesystem::path& original, const std::filesystem::path& quantized,
                                  DType target) {
  const auto r = test::run_oracle("quantize_check.py",
                                  {original.string(), quantized.string(), std::string(dtype_name(target))});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nlohmann::json::object();
  return nlohmann::json::parse(r.out);
}

void expect_clean(const nlohmann::json& report) {
  EXPECT_EQ(report.value("order_matches", false), true);
  for (const char* list : {"mismatches", "missing", "extra", "metadata_mismatches"}) {
    ASSERT_TRUE(report.contains(list)) << report.dump();
    EXPECT_TRUE(report[list].empty()) << list << ": " << report[list].dump(1);
  }
}

class QuantizeModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(test::default_model())) return;
    dir_ = new test::TempDir("quantize-model");
    cli_ = new test::CommandResult(test::run_command(
        {test::cli_path().string(), "quantize", test::default_model().string(), (*dir_ / "q8.gguf").string(), "Q8_0"}));
  }
  static void TearDownTestSuite() {
    delete cli_;
    delete dir_;
  }
  static test::TempDir* dir_;
  static test::CommandResult* cli_;
};
test::TempDir* QuantizeModel::dir_ = nullptr;
test::CommandResult* QuantizeModel::cli_ = nullptr;

TEST_F(QuantizeModel, Q8_0EqualsGgufPyRequantization) {
  LATHE_REQUIRE_MODEL();
  ASSERT_EQ(cli_->exit_code, 0) << cli_->err;
  EXPECT_NE(cli_->out.find("211 Q8_0"), std::string::npos) << cli_->out;
  EXPECT_NE(cli_->err.find("[ 272/272]"), std::string::npos) << cli_->err;
  const auto report = check_with_gguf_py(test::default_model(), *dir_ / "q8.gguf", DType::Q8_0);
  expect_clean(report);
  EXPECT_EQ(report["checked"], kModelTensors);
  EXPECT_EQ(report["file_type"], 7);
  EXPECT_EQ(report["type_counts"], (nlohmann::json{{"Q8_0", 211}, {"F32", 61}}));
  EXPECT_TRUE(report["fallbacks"].empty());
}

TEST_F(QuantizeModel, F16EqualsGgufPyConversionAndKeepsMetadata) {
  LATHE_REQUIRE_MODEL();
  const auto out = *dir_ / "f16.gguf";
  size_t calls = 0;
  QuantizeOptions options;
  options.progress = [&](const QuantizedTensor& t) {
    ++calls;
    EXPECT_EQ(t.index, calls);
    EXPECT_FALSE(t.fallback) << t.name;
  };
  quantize_gguf(test::default_model(), out, DType::F16, options);
  EXPECT_EQ(calls, static_cast<size_t>(kModelTensors));

  const auto report = check_with_gguf_py(test::default_model(), out, DType::F16);
  expect_clean(report);
  EXPECT_EQ(report["checked"], kModelTensors);
  EXPECT_EQ(report["file_type"], 1);
  EXPECT_EQ(report["type_counts"], (nlohmann::json{{"F16", 211}, {"F32", 61}}));

  // The same keys in the same order, with the same values except general.file_type.
  const auto a = gguf::File::open(test::default_model()), b = gguf::File::open(out);
  ASSERT_EQ(a.metadata().size(), b.metadata().size());
  for (size_t i = 0; i < a.metadata().size(); ++i) {
    const auto& [key, value] = a.metadata()[i];
    EXPECT_EQ(b.metadata()[i].first, key);
    if (key == "general.file_type") continue;
    EXPECT_EQ(b.metadata()[i].second.type, value.type) << key;
    EXPECT_EQ(b.metadata()[i].second.to_string(1u << 20), value.to_string(1u << 20)) << key;
  }
  EXPECT_EQ(b.get("general.file_type").as_u64("file_type"), 1u);
}

// Every target on a small file with an odd-sized matrix, through the same oracle.
class QuantizeEveryTarget : public ::testing::TestWithParam<DType> {};

TEST_P(QuantizeEveryTarget, EqualsGgufPy) {
  const DType target = GetParam();
  test::TempDir dir("quantize-target");
  std::vector<float> big(256 * 4), odd(48 * 2), norm(256);
  for (size_t i = 0; i < big.size(); ++i) big[i] = std::sin(0.11f * static_cast<float>(i)) * 3.0f + 0.5f;
  for (size_t i = 0; i < odd.size(); ++i) odd[i] = std::cos(0.7f * static_cast<float>(i)) * 1e-3f;
  for (size_t i = 0; i < norm.size(); ++i) norm[i] = 1.0f + 1e-2f * static_cast<float>(i);
  auto bytes = [](const std::vector<float>& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float));
  };
  gguf::Writer w;
  w.set("general.architecture", gguf::Value::str("llama"));
  w.set("general.file_type", gguf::Value::u32(0));
  w.add_tensor("token_embd.weight", DType::F32, {256, 4}, bytes(big));
  w.add_tensor("blk.0.ffn_odd.weight", DType::F32, {48, 2}, bytes(odd));
  w.add_tensor("output_norm.weight", DType::F32, {256}, bytes(norm));
  w.write(dir / "in.gguf");

  quantize_gguf(dir / "in.gguf", dir / "out.gguf", target);
  const auto report = check_with_gguf_py(dir / "in.gguf", dir / "out.gguf", target);
  expect_clean(report);
  EXPECT_EQ(report["checked"], 3);
  EXPECT_EQ(report["file_type"], *llama_file_type(target));
  const bool blocked = dtype_info(target).block_size > 1;
  EXPECT_EQ(report["fallbacks"], blocked ? nlohmann::json::array({"blk.0.ffn_odd.weight"}) : nlohmann::json::array());
}

INSTANTIATE_TEST_SUITE_P(Targets, QuantizeEveryTarget,
                         ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0,
                                           DType::Q4_1),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace lathe
