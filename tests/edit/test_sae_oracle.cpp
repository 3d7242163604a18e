// SAEs written by tests/oracle/sae_oracle.py (SAELens's format, random weights, each
// architecture, stored type, normalization and cfg.json layout): lathe's encoding and gate
// against SAELens's formulas computed by numpy in float64.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "core/quant.hpp"
#include "edit/sae.hpp"
#include "io/safetensors.hpp"

namespace lathe::edit {
namespace {

struct Case {
  std::string architecture, dtype, normalize;
  bool apply_b_dec = true;
  std::string cfg_style = "v6";
  bool clamp_everywhere = false;
  int64_t k = 8;
};

std::vector<float> tensor(const safetensors::File& file, const char* name) {
  const auto& info = file.tensor(name);
  return dequantize(info.type, file.tensor_data(info), static_cast<int64_t>(info.n_elements()));
}

// Worst |a - b| relative to the scale of b (its largest magnitude, at least 1).
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0, scale = 1;
  for (float v : b) scale = std::max(scale, double(std::abs(v)));
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  return worst / scale;
}

void check_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE(fmt::format("{} {} {} b_dec={} {} everywhere={}", c.architecture, c.dtype, c.normalize, c.apply_b_dec,
                           c.cfg_style, c.clamp_everywhere));
  test::TempDir dir("sae_oracle");
  const nlohmann::json spec = {{"architecture", c.architecture}, {"dtype", c.dtype}, {"normalize", c.normalize},
                               {"apply_b_dec", c.apply_b_dec},   {"cfg_style", c.cfg_style},
                               {"d_in", 48},                     {"d_sae", 160},
                               {"k", c.k},                       {"rows", 12},
                               {"seed", seed},                   {"clamp_everywhere", c.clamp_everywhere}};
  test::write_file(dir / "case.json", spec.dump());
  const auto r = test::run_oracle("sae_oracle.py", {"case", dir.path().string(), (dir / "case.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto sae = std::make_shared<const Sae>(load_sae(dir / "sae"));
  EXPECT_EQ(sae_architecture_name(sae->architecture), c.architecture);
  EXPECT_EQ(sae_normalization_name(sae->normalization), c.normalize);
  EXPECT_EQ(sae->hook_name, "blocks.2.hook_resid_post");
  const auto expected = safetensors::File::open(dir / "expected.safetensors");
  const auto x = tensor(expected, "x");
  const int64_t n = static_cast<int64_t>(x.size()) / sae->d_in;
  ASSERT_EQ(n, 12);

  const auto f = sae_encode(*sae, x.data(), n);
  const auto f_ref = tensor(expected, "f");
  EXPECT_LT(relative_error(f, f_ref), 1e-5);
  // The same features are active (the oracle keeps pre-activations away from the boundaries).
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(f[i] > 0, f_ref[i] > 0) << "element " << i;

  const std::string features = expected.metadata().at("features");
  SaeGate gate(sae, parse_sae_features(features, "features"), {.clamp_everywhere = c.clamp_everywhere});
  auto y = x;
  gate.apply(y.data(), n, sae->d_in);
  EXPECT_LT(relative_error(y, tensor(expected, "gated")), 1e-5) << features;
  EXPECT_GT(gate.rows_changed(), 0u) << features;
  EXPECT_NE(y, x);
}

TEST(SaeOracle, StandardSaeEqualsSaeLens) {
  check_case({.architecture = "standard", .dtype = "F32", .normalize = "none"}, 1);
  check_case({.architecture = "standard", .dtype = "F16", .normalize = "layer_norm", .cfg_style = "legacy"}, 2);
  check_case({.architecture = "standard", .dtype = "BF16", .normalize = "constant_norm_rescale",
              .clamp_everywhere = true}, 3);
}

TEST(SaeOracle, JumpReluSaeEqualsSaeLens) {
  // Gemma Scope's JumpReLU SAEs do not subtract b_dec from the input.
  check_case({.architecture = "jumprelu", .dtype = "F32", .normalize = "none", .apply_b_dec = false}, 4);
  check_case({.architecture = "jumprelu", .dtype = "BF16", .normalize = "none", .clamp_everywhere = true}, 5);
  check_case({.architecture = "jumprelu", .dtype = "F16", .normalize = "layer_norm", .cfg_style = "legacy"}, 6);
}

TEST(SaeOracle, TopKSaeEqualsSaeLens) {
  check_case({.architecture = "topk", .dtype = "F32", .normalize = "none"}, 7);
  check_case({.architecture = "topk", .dtype = "BF16", .normalize = "constant_norm_rescale", .cfg_style = "legacy",
              .k = 12}, 8);
  check_case({.architecture = "topk", .dtype = "F16", .normalize = "none", .apply_b_dec = false,
              .clamp_everywhere = true, .k = 1}, 9);
}

}  // namespace
}  // namespace lathe::edit
