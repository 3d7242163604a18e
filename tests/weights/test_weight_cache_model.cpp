// The weight cache on the default model (SmolLM2-135M, Q4_1/Q8_0): every attention output and MLP
// down matrix is scribbled over and restored bit-identical to a fresh load; prints the time a full
// and a one-layer restore take (the ablation loop does one per trial).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "common/test_support.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"
#include "weights/weight_cache.hpp"

namespace lathe {
namespace {

std::vector<uint8_t> view_bytes(const MatrixView& v) {
  return {v.data, v.data + static_cast<size_t>(v.rows) * v.row_bytes};
}

TEST(WeightCacheModel, RestoreOfTheDefaultModelIsBitIdenticalAndFast) {
  LATHE_REQUIRE_MODEL();
  auto w = load_model_weights(test::default_model());
  make_editable(w, kAllEditComponents);
  const auto cache = WeightCache::build(w, kAllEditComponents);
  std::printf("%s\n", cache.summary(w).c_str());
  EXPECT_EQ(cache.n_matrices(), 2 * w.layers.size());

  for (uint32_t l = 0; l < w.layers.size(); ++l)
    for (auto c : kAllEditComponents)
      for (auto* v : component_matrices(w, l, c))
        for (auto& b : writable_bytes(w, *v)) b = static_cast<uint8_t>(b ^ 0x5a);
  const auto start = std::chrono::steady_clock::now();
  cache.restore(w);
  const auto full_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const uint32_t one[] = {7};
  const auto start_one = std::chrono::steady_clock::now();
  cache.restore(w, one);
  const auto one_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_one).count();
  std::printf("restore: all %zu layers %.2f ms, one layer %.3f ms\n", w.layers.size(), full_ms, one_ms);

  const auto fresh = load_model_weights(test::default_model());
  for (uint32_t l = 0; l < w.layers.size(); ++l) {
    ASSERT_EQ(view_bytes(w.layers[l].wo), view_bytes(fresh.layers[l].wo)) << "layer " << l;
    ASSERT_EQ(view_bytes(w.layers[l].w_down), view_bytes(fresh.layers[l].w_down)) << "layer " << l;
  }
}

}  // namespace
}  // namespace lathe
