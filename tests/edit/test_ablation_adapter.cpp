// `lathe ablate --lora-out` (edit/ablation_adapter.hpp): the plain edit's adapter merged into the
// original weights is the edit itself, the norm-preserving edit's adapter is its best low-rank
// approximation, and the truncated SVD behind it keeps exactly the largest singular values.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "edit/ablation_adapter.hpp"
#include "weights/editable.hpp"
#include "weights/lora.hpp"

namespace lathe::edit {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 0.1f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
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

std::vector<float> dequantized(const MatrixView& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) dequantize_row(m.type, m.data + r * m.row_bytes, out.data() + r * m.cols, m.cols);
  return out;
}

AblationParams both_components() {
  AblationParams params;
  params.direction_index = -1;  // each layer its own direction
  params.components[EditComponent::AttnOutput] = {.max_weight = 1.2, .max_weight_position = 1, .min_weight = 0.4,
                                                  .min_weight_distance = 1};
  params.components[EditComponent::MlpDown] = {.max_weight = 0.8, .max_weight_position = 0, .min_weight = 0,
                                               .min_weight_distance = 0.5};  // layer 0 only
  return params;
}

// max |edited - (original + adapter)| over the edited matrices, with the adapter merged into a
// fresh copy of the original weights; `max_edit` gets max |edited - original|.
double adapter_vs_edit(bool norm_preserving, int rank, double& max_edit, double& reported_error, size_t& pairs) {
  test::TempDir dir("ablation_adapter");
  test::TinyModel tiny;
  const auto path = tiny.write(dir, "tiny.gguf");
  auto edited = load_model_weights(path);
  make_editable(edited, kAllEditComponents);
  auto merged = load_model_weights(path);
  const auto d = random_directions(edited.hp.n_layer, edited.hp.n_embd, 5);
  const auto made = ablation_adapter(edited, d, both_components(), norm_preserving, rank);  // before the edit
  reported_error = made.max_rel_error;
  pairs = made.adapter.pairs.size();
  apply_ablation(edited, d, both_components(), norm_preserving);
  merge_lora(merged, made.adapter, 1.0f, 1);
  const auto original = load_model_weights(path);
  double worst = 0;
  max_edit = 0;
  for (uint32_t l = 0; l < edited.hp.n_layer; ++l)
    for (EditComponent c : kAllEditComponents) {
      const auto e = dequantized(*component_matrices(edited, l, c)[0]);
      const auto m = dequantized(*component_matrices(merged, l, c)[0]);
      const auto o = dequantized(*component_matrices(original, l, c)[0]);
      for (size_t i = 0; i < e.size(); ++i) {
        worst = std::max(worst, double(std::abs(e[i] - m[i])));
        max_edit = std::max(max_edit, double(std::abs(e[i] - o[i])));
      }
    }
  return worst;
}

TEST(AblationAdapter, PlainEditIsExactlyItsRankOneAdapter) {
  double max_edit = 0, reported = -1;
  size_t pairs = 0;
  const double worst = adapter_vs_edit(false, 3, max_edit, reported, pairs);
  EXPECT_EQ(pairs, 3u);  // attn_output in layers 0 and 1, mlp_down in layer 0
  EXPECT_EQ(reported, 0.0);
  EXPECT_GT(max_edit, 0.01);  // the edit is real
  EXPECT_LT(worst, 1e-5);     // float32 rounding of two ways to compute it
}

TEST(AblationAdapter, NormPreservingEditIsApproximatedToTheReportedError) {
  double max_edit = 0, reported = -1;
  size_t pairs = 0;
  const double worst = adapter_vs_edit(true, 3, max_edit, reported, pairs);
  EXPECT_EQ(pairs, 3u);
  EXPECT_GT(reported, 0.0);
  EXPECT_LT(reported, 1.0);
  EXPECT_GT(max_edit, 0.01);
  EXPECT_LT(worst, max_edit);  // closer to the edit than the unedited model is
  // A full-rank adapter (rank >= the matrices' rows) reproduces the edit.
  const double exact = adapter_vs_edit(true, 64, max_edit, reported, pairs);
  EXPECT_LT(reported, 1e-5);
  EXPECT_LT(exact, 1e-4);
}

// The truncated SVD of the norm-preserving adapter export: a matrix of known singular values
// loses exactly the ones beyond the rank.
TEST(AblationAdapter, LowRankApproximationKeepsTheLargestSingularValues) {
  const int64_t rows = 48, cols = 80;
  const std::vector<double> singular = {9, 4, 2, 0.5, 0.25, 0.1};
  auto orthonormal = [](int64_t n, size_t k, uint32_t seed) {
    auto v = random_values(static_cast<size_t>(n) * k, seed, 1.0f);
    std::vector<double> q(v.begin(), v.end());
    for (size_t j = 0; j < k; ++j) {
      for (size_t i = 0; i < j; ++i) {
        double dot = 0;
        for (int64_t t = 0; t < n; ++t) dot += q[i * n + t] * q[j * n + t];
        for (int64_t t = 0; t < n; ++t) q[j * n + t] -= dot * q[i * n + t];
      }
      double norm = 0;
      for (int64_t t = 0; t < n; ++t) norm += q[j * n + t] * q[j * n + t];
      for (int64_t t = 0; t < n; ++t) q[j * n + t] /= std::sqrt(norm);
    }
    return q;
  };
  const auto u = orthonormal(rows, singular.size(), 21), v = orthonormal(cols, singular.size(), 22);
  std::vector<float> m(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      double sum = 0;
      for (size_t j = 0; j < singular.size(); ++j) sum += singular[j] * u[j * rows + r] * v[j * cols + c];
      m[r * cols + c] = static_cast<float>(sum);
    }
  double total = 0;
  for (double s : singular) total += s * s;
  for (int rank : {1, 3}) {
    std::vector<float> b, a;
    const double error = low_rank_approximation(m, rows, cols, rank, b, a);
    double tail = 0;
    for (size_t j = rank; j < singular.size(); ++j) tail += singular[j] * singular[j];
    EXPECT_NEAR(error, std::sqrt(tail / total), 1e-4) << "rank " << rank;
    // The reported error is the real one.
    double residual = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        double approx = 0;
        for (int k = 0; k < rank; ++k) approx += double(b[r * rank + k]) * a[k * cols + c];
        residual += (m[r * cols + c] - approx) * (m[r * cols + c] - approx);
      }
    EXPECT_NEAR(std::sqrt(residual / total), error, 1e-5) << "rank " << rank;
  }
}

}  // namespace
}  // namespace lathe::edit
