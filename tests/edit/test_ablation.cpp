// The abliteration edit on its own: the formula against a float64 reference, the projection
// property (an edited matrix's output has no component along the direction), norm preservation,
// the layer-weight kernel, direction interpolation, and apply_ablation on the tiny synthetic
// model (edited layers change as the formula says, untouched layers stay bit-identical, the
// re-quantization error of a quantized model is reported).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "edit/ablation.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"

namespace lathe::edit {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> unit(std::vector<float> v) {
  double n = 0;
  for (float x : v) n += double(x) * x;
  for (auto& x : v) x = static_cast<float>(x / std::sqrt(n));
  return v;
}

TEST(AblateMatrix, MatchesFloat64Reference) {
  const int64_t rows = 37, cols = 53;
  auto w = random_values(rows * cols, 1);
  const auto v = unit(random_values(rows, 2));
  const double lambda = 0.7;
  std::vector<double> ref(w.begin(), w.end()), u(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) u[c] += double(v[r]) * w[r * cols + c];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) ref[r * cols + c] -= lambda * v[r] * u[c];
  ablate_matrix(w.data(), rows, cols, v.data(), static_cast<float>(lambda), false);
  double max_err = 0;
  for (size_t i = 0; i < w.size(); ++i) max_err = std::max(max_err, std::abs(w[i] - ref[i]));
  EXPECT_LT(max_err, 1e-5);
  EXPECT_GT(std::abs(u[0]), 1e-3);  // the reference did change something
}

TEST(AblateMatrix, FullProjectionMakesOutputsOrthogonalToTheDirection) {
  const int64_t rows = 64, cols = 96;
  auto w = random_values(rows * cols, 3);
  const auto v = unit(random_values(rows, 4));
  const auto x = random_values(cols, 5);
  auto along = [&](const std::vector<float>& m) {
    double dot = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double y = 0;
      for (int64_t c = 0; c < cols; ++c) y += double(m[r * cols + c]) * x[c];
      dot += y * v[r];
    }
    return dot;
  };
  EXPECT_GT(std::abs(along(w)), 0.5);
  ablate_matrix(w.data(), rows, cols, v.data(), 1.0f, false);
  EXPECT_LT(std::abs(along(w)), 1e-4);
}

TEST(AblateMatrix, NormPreservingKeepsEveryRowNorm) {
  const int64_t rows = 20, cols = 33;
  auto w = random_values(rows * cols, 6);
  const auto before = w;
  const auto v = unit(random_values(rows, 7));
  ablate_matrix(w.data(), rows, cols, v.data(), 1.2f, true);
  bool changed = false;
  for (int64_t r = 0; r < rows; ++r) {
    double a = 0, b = 0;
    for (int64_t c = 0; c < cols; ++c) {
      a += double(before[r * cols + c]) * before[r * cols + c];
      b += double(w[r * cols + c]) * w[r * cols + c];
      changed |= before[r * cols + c] != w[r * cols + c];
    }
    EXPECT_NEAR(std::sqrt(a), std::sqrt(b), 1e-4 * std::sqrt(a)) << r;
  }
  EXPECT_TRUE(changed);
}

TEST(LayerWeight, PeaksAtThePositionAndFallsLinearlyToZeroBeyondTheDistance) {
  const ComponentParams p{.max_weight = 1.2, .max_weight_position = 10, .min_weight = 0.2, .min_weight_distance = 4};
  EXPECT_DOUBLE_EQ(layer_weight(p, 10), 1.2);
  EXPECT_DOUBLE_EQ(layer_weight(p, 12), 0.7);
  EXPECT_DOUBLE_EQ(layer_weight(p, 8), 0.7);
  EXPECT_DOUBLE_EQ(layer_weight(p, 14), 0.2);
  EXPECT_DOUBLE_EQ(layer_weight(p, 15), 0.0);
  EXPECT_DOUBLE_EQ(layer_weight(p, 5), 0.0);
  const ComponentParams fractional{.max_weight = 1, .max_weight_position = 2.5, .min_weight = 0, .min_weight_distance = 1};
  EXPECT_DOUBLE_EQ(layer_weight(fractional, 2), 0.5);
  EXPECT_DOUBLE_EQ(layer_weight(fractional, 3), 0.5);
}

RefusalDirections random_directions(uint32_t n_layer, uint32_t n_embd, uint32_t seed) {
  RefusalDirections d;
  d.n_layer = n_layer;
  d.n_embd = n_embd;
  for (uint32_t l = 0; l < n_layer; ++l) {
    const auto f = random_values(n_embd, seed + l);
    std::vector<double> v(f.begin(), f.end());
    double n = 0;
    for (double x : v) n += x * x;
    for (double& x : v) x /= std::sqrt(n);
    d.per_layer.push_back(std::move(v));
  }
  return d;
}

TEST(DirectionAt, InterpolatesBetweenLayersAndNormalizes) {
  const auto d = random_directions(3, 8, 11);
  for (uint32_t l = 0; l < 3; ++l) {
    const auto v = direction_at(d, l);
    for (uint32_t i = 0; i < 8; ++i) EXPECT_NEAR(v[i], d.per_layer[l][i], 1e-12);
  }
  const auto mid = direction_at(d, 0.5);
  double n = 0;
  for (double x : mid) n += x * x;
  EXPECT_NEAR(n, 1.0, 1e-12);
  double dot0 = 0, dot1 = 0;
  for (uint32_t i = 0; i < 8; ++i) {
    dot0 += mid[i] * d.per_layer[0][i];
    dot1 += mid[i] * d.per_layer[1][i];
  }
  EXPECT_NEAR(dot0, dot1, 1e-12);  // halfway: equally close to both neighbours: equally close to both neighbours
  EXPECT_THROW(direction_at(d, -0.1), InvalidArgumentError);
  EXPECT_THROW(direction_at(d, 2.01), InvalidArgumentError);
}

std::vector<float> dequantized(const MatrixView& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) dequantize_row(m.type, m.data + r * m.row_bytes, out.data() + r * m.cols, m.cols);
  return out;
}

TEST(ApplyAblation, EditsOnlyWeightedLayersAsTheFormulaSays) {
  test::TempDir dir("ablate_f32");
  test::TinyModel tiny;
  auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  make_editable(w, kAllEditComponents);
  const auto d = random_directions(w.hp.n_layer, w.hp.n_embd, 21);
  const auto wo0 = dequantized(w.layers[0].wo), wo1 = dequantized(w.layers[1].wo), down1 = dequantized(w.layers[1].w_down);
  AblationParams params;
  params.direction_index = 1;
  // attn_output: only layer 1 (weight 0.9); mlp_down: nowhere (distance 0.5 around 5).
  params.components[EditComponent::AttnOutput] = {.max_weight = 0.9, .max_weight_position = 1, .min_weight = 0,
                                                  .min_weight_distance = 0.5};
  params.components[EditComponent::MlpDown] = {.max_weight = 1, .max_weight_position = 5, .min_weight = 0,
                                               .min_weight_distance = 0.5};
  const auto stats = apply_ablation(w, d, params, false);
  EXPECT_EQ(stats.n_matrices, 1u);
  EXPECT_EQ(stats.layers, std::vector<uint32_t>{1});
  EXPECT_EQ(stats.requantization_rel_rms, 0.0);
  EXPECT_EQ(dequantized(w.layers[0].wo), wo0);
  EXPECT_EQ(dequantized(w.layers[1].w_down), down1);
  auto expected = wo1;
  const std::vector<float> v(d.per_layer[1].begin(), d.per_layer[1].end());
  ablate_matrix(expected.data(), w.layers[1].wo.rows, w.layers[1].wo.cols, v.data(), 0.9f, false);
  EXPECT_EQ(dequantized(w.layers[1].wo), expected);
}

TEST(ApplyAblation, QuantizedMatricesAreRequantizedWithSmallReportedError) {
  test::TempDir dir("ablate_q8");
  test::TinyModel tiny("", DType::Q8_0);
  auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  make_editable(w, kAllEditComponents);
  const auto d = random_directions(w.hp.n_layer, w.hp.n_embd, 31);
  AblationParams params;  // per-layer directions, both components, everywhere
  for (auto c : kAllEditComponents)
    params.components[c] = {.max_weight = 1, .max_weight_position = 0, .min_weight = 1, .min_weight_distance = 10};
  const auto stats = apply_ablation(w, d, params, false);
  EXPECT_EQ(stats.n_matrices, 4u);
  EXPECT_GT(stats.requantization_rel_rms, 0.0);
  EXPECT_LT(stats.requantization_rel_rms, 0.01);  // Q8_0: about 0.3% relative RMS
}

TEST(ApplyAblation, RefusesReadOnlyMatrices) {
  test::TempDir dir("ablate_ro");
  test::TinyModel tiny;
  auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  const auto d = random_directions(w.hp.n_layer, w.hp.n_embd, 41);
  AblationParams params;
  params.components[EditComponent::MlpDown] = {.max_weight = 1, .max_weight_position = 0, .min_weight = 1,
                                               .min_weight_distance = 10};
  EXPECT_THROW(apply_ablation(w, d, params, false), InvalidArgumentError);
}

TEST(Refusal, MarkersMatchCaseInsensitivelyAndEmptyCounts) {
  const auto markers = default_refusal_markers();
  EXPECT_TRUE(is_refusal("I'm sorry, but I can't help with that.", markers));
  EXPECT_TRUE(is_refusal("I CANNOT do this", markers));
  EXPECT_TRUE(is_refusal("I won\xE2\x80\x99t help", markers));  // typographic apostrophe
  EXPECT_TRUE(is_refusal("", markers));
  EXPECT_TRUE(is_refusal(" \n\t", markers));
  EXPECT_FALSE(is_refusal("Sure, here is a recipe for pancakes.", markers));
  EXPECT_FALSE(contains_refusal_marker("", markers));
  EXPECT_TRUE(is_refusal("Step 1: avoid it", {"step 1"}));
}

}  // namespace
}  // namespace lathe::edit
