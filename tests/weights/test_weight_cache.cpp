// The weight cache on the tiny synthetic llama: restore after edits is bit-identical to a freshly
// loaded model (for several stored types), partial restore touches only the listed layers, and
// every typed error is raised by a deliberately broken cache or model, with a message naming the
// model file, layer, component and tensor. Dtype and device mismatches convert with a warning.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"
#include "weights/weight_cache.hpp"

namespace lathe {
namespace {

using test::kEmbd;
using test::kFf;
using test::kLayers;
using test::TinyModel;

std::vector<uint8_t> view_bytes(const MatrixView& v) {
  return {v.data, v.data + static_cast<size_t>(v.rows) * v.row_bytes};
}

// Overwrites every editable matrix of the model with a pattern that differs from any real weight.
void scribble(ModelWeights& w, std::span<const uint32_t> layers = {}) {
  std::vector<uint32_t> all;
  for (uint32_t l = 0; l < w.layers.size(); ++l) all.push_back(l);
  for (uint32_t l : layers.empty() ? std::span<const uint32_t>(all) : layers)
    for (auto c : kAllEditComponents)
      for (auto* v : component_matrices(w, l, c)) {
        auto bytes = writable_bytes(w, *v);
        for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 17);
      }
}

struct Fixture {
  test::TempDir dir{"weight_cache"};
  std::filesystem::path path;
  explicit Fixture(DType type = DType::F32) {
    TinyModel tiny("", type);
    path = tiny.write(dir, "tiny.gguf");
  }
  ModelWeights editable() const {
    auto w = load_model_weights(path);
    make_editable(w, kAllEditComponents);
    return w;
  }
};

// Runs `action`, expects a WeightCacheError of `kind` whose message holds every one of `parts`.
template <class Action>
void expect_error(WeightCacheErrorKind kind, const std::vector<std::string>& parts, Action action) {
  try {
    action();
    FAIL() << "expected WeightCacheError " << weight_cache_error_kind_name(kind);
  } catch (const WeightCacheError& e) {
    EXPECT_EQ(e.kind(), kind) << weight_cache_error_kind_name(e.kind()) << ": " << e.what();
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << part << "\n" << e.what();
  }
}

class WeightCacheTypes : public ::testing::TestWithParam<DType> {};

TEST_P(WeightCacheTypes, RestoreAfterEditsIsBitIdenticalToAFreshLoad) {
  Fixture f(GetParam());
  auto w = f.editable();
  const auto cache = WeightCache::build(w, kAllEditComponents);
  scribble(w);
  const auto fresh = load_model_weights(f.path);  // memory-mapped originals, never edited
  for (uint32_t l = 0; l < kLayers; ++l)
    for (auto c : kAllEditComponents)
      ASSERT_NE(view_bytes(*component_matrices(w, l, c)[0]), view_bytes(*component_matrices(fresh, l, c)[0]));
  cache.restore(w);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (auto c : kAllEditComponents)
      EXPECT_EQ(view_bytes(*component_matrices(w, l, c)[0]), view_bytes(*component_matrices(fresh, l, c)[0]))
          << "layer " << l << " " << component_name(c);
  // A second trial: edit and restore again.
  scribble(w);
  cache.restore(w);
  EXPECT_EQ(view_bytes(w.layers[1].w_down), view_bytes(fresh.layers[1].w_down));
}

INSTANTIATE_TEST_SUITE_P(Types, WeightCacheTypes, ::testing::Values(DType::F32, DType::F16, DType::Q8_0, DType::Q4_1),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(WeightCache, PartialRestoreTouchesOnlyTheListedLayers) {
  Fixture f;
  auto w = f.editable();
  const auto cache = WeightCache::build(w, kAllEditComponents);
  scribble(w);
  const auto dirty_layer0 = view_bytes(w.layers[0].wo);
  const uint32_t only[] = {1};
  cache.restore(w, only);
  const auto fresh = load_model_weights(f.path);
  EXPECT_EQ(view_bytes(w.layers[1].wo), view_bytes(fresh.layers[1].wo));
  EXPECT_EQ(view_bytes(w.layers[1].w_down), view_bytes(fresh.layers[1].w_down));
  EXPECT_EQ(view_bytes(w.layers[0].wo), dirty_layer0);
  EXPECT_NE(view_bytes(w.layers[0].w_down), view_bytes(fresh.layers[0].w_down));
}

TEST(WeightCache, CachesOnlyTheRequestedComponentsAndSummarizes) {
  Fixture f;
  auto w = f.editable();
  const EditComponent down_only[] = {EditComponent::MlpDown};
  const auto cache = WeightCache::build(w, down_only);
  EXPECT_EQ(cache.n_matrices(), kLayers);
  EXPECT_EQ(cache.n_params(), uint64_t{kLayers} * kEmbd * kFf);
  EXPECT_EQ(cache.bytes(), uint64_t{kLayers} * kEmbd * kFf * 4);
  EXPECT_EQ(cache.layers()[0].components.count(EditComponent::AttnOutput), 0u);
  EXPECT_EQ(cache.layers()[0].components.at(EditComponent::MlpDown)[0].tensor, "blk.0.ffn_down.weight");
  EXPECT_EQ(cache.layers()[0].components.at(EditComponent::MlpDown)[0].device, "cpu");

  const auto both = WeightCache::build(w, kAllEditComponents);
  // The tiny model's parameters, counted from its shapes (tiny_model.hpp).
  const uint64_t kv = test::kKvHeads * (kEmbd / test::kHeads);
  const uint64_t per_layer = 2 * kEmbd + 2 * kEmbd * kEmbd + 2 * kEmbd * kv + 3 * kEmbd * kFf;
  const uint64_t total = uint64_t{kEmbd} * test::kVocab + kEmbd + kLayers * per_layer;
  ASSERT_EQ(w.n_params, total);
  const uint64_t cached = kLayers * (uint64_t{kEmbd} * kEmbd + uint64_t{kEmbd} * kFf);
  EXPECT_EQ(both.summary(w), fmt::format("weight cache: {:.1f} MB, {:.1f} M parameters ({:.1f}% of the model), {} "
                                         "matrices",
                                         cached * 4 / 1e6, cached / 1e6, 100.0 * cached / total, 2 * kLayers));
}

// ---- build errors ----------------------------------------------------------------------------------

TEST(WeightCacheErrors, EmptyCache) {
  Fixture f;
  auto w = f.editable();
  expect_error(WeightCacheErrorKind::EmptyCache, {f.path.string(), "attn_output, mlp_down"},
               [&] { WeightCache::build(w, {}); });
  auto cache = WeightCache::build(w, kAllEditComponents);
  cache.layers().clear();
  expect_error(WeightCacheErrorKind::EmptyCache, {f.path.string(), "empty", "rebuild"}, [&] { cache.restore(w); });
}

TEST(WeightCacheErrors, ComponentMissingInModel) {
  Fixture f;
  auto w = f.editable();
  w.layers[1].w_down.data = nullptr;
  expect_error(WeightCacheErrorKind::ComponentMissingInModel,
               {f.path.string(), "layer 1", "mlp_down", "blk.1.ffn_down.weight", "leave mlp_down out"},
               [&] { WeightCache::build(w, kAllEditComponents); });
}

TEST(WeightCacheErrors, LayerAccessFailureIsWrapped) {
  Fixture f;
  auto w = f.editable();
  w.layers.pop_back();  // hp.n_layer still says 2: component_matrices throws for layer 1
  try {
    WeightCache::build(w, kAllEditComponents);
    FAIL() << "expected LayerAccess";
  } catch (const WeightCacheError& e) {
    EXPECT_EQ(e.kind(), WeightCacheErrorKind::LayerAccess);
    EXPECT_EQ(e.code(), ErrorCode::Internal);
    const std::string m = e.what();
    for (const char* part : {"layer 1", "attn_output", "blk.1.attn_output.weight", "does not exist", "reload"})
      EXPECT_NE(m.find(part), std::string::npos) << part << "\n" << m;
  }
}

TEST(WeightCacheErrors, OverTheByteLimitIsOutOfMemory) {
  Fixture f;
  auto w = f.editable();
  try {
    WeightCache::build(w, kAllEditComponents, {.max_bytes = kEmbd * kEmbd * 4 + 100, .warn = {}});
    FAIL() << "expected OutOfMemory";
  } catch (const WeightCacheError& e) {
    EXPECT_EQ(e.kind(), WeightCacheErrorKind::OutOfMemory);
    EXPECT_EQ(e.code(), ErrorCode::OutOfMemory);
    const std::string m = e.what();
    // layer 0's attn_output fits, its mlp_down does not.
    for (const char* part : {"layer 0", "mlp_down", "blk.0.ffn_down.weight", "--cache-weights false"})
      EXPECT_NE(m.find(part), std::string::npos) << part << "\n" << m;
  }
}

TEST(WeightCacheErrors, FailedAllocationIsOutOfMemory) {
  if (test::kUnderAddressSanitizer)
    GTEST_SKIP() << "AddressSanitizer aborts on a petabyte allocation instead of throwing std::bad_alloc";
  Fixture f;
  auto w = f.editable();
  // A view claiming 2^44 rows: the copy (4 PiB) cannot be allocated; the data is never read.
  w.layers[1].wo.rows = int64_t{1} << 44;
  expect_error(WeightCacheErrorKind::OutOfMemory,
               {f.path.string(), "out of memory", "layer 1", "attn_output", "blk.1.attn_output.weight",
                "--cache-weights false"},
               [&] { WeightCache::build(w, kAllEditComponents); });
}

// ---- validation errors -----------------------------------------------------------------------------

struct Broken {
  Fixture f;
  ModelWeights w = f.editable();
  WeightCache cache = WeightCache::build(w, kAllEditComponents);
};

TEST(WeightCacheErrors, EmptyLayer) {
  Broken b;
  b.cache.layers()[1].components.clear();
  expect_error(WeightCacheErrorKind::EmptyLayer, {b.f.path.string(), "layer 1", "attn_output, mlp_down", "rebuild"},
               [&] { b.cache.restore(b.w); });
}

TEST(WeightCacheErrors, LayerCountMismatch) {
  Broken b;
  b.cache.layers().pop_back();
  expect_error(WeightCacheErrorKind::LayerCountMismatch, {b.f.path.string(), "1 layers", "model has 2", "rebuild"},
               [&] { b.cache.validate(b.w); });
}

TEST(WeightCacheErrors, MissingLayerListsTheCachedOnes) {
  Broken b;
  b.cache.layers()[1].layer = 7;
  expect_error(WeightCacheErrorKind::MissingLayer,
               {b.f.path.string(), "layer 1", "blk.1.attn_output.weight", "cached layers: 0, 7"},
               [&] { b.cache.restore(b.w); });
  Broken good;
  const uint32_t beyond[] = {5};
  expect_error(WeightCacheErrorKind::MissingLayer, {good.f.path.string(), "layer 5", "cached layers: 0, 1", "0..1"},
               [&] { good.cache.restore(good.w, beyond); });
}

TEST(WeightCacheErrors, MissingComponentListsTheCachedOnes) {
  Broken b;
  b.cache.layers()[0].components.erase(EditComponent::MlpDown);
  expect_error(WeightCacheErrorKind::MissingComponent,
               {b.f.path.string(), "layer 0", "mlp_down", "blk.0.ffn_down.weight", "cached in this layer: attn_output"},
               [&] { b.cache.restore(b.w); });
}

TEST(WeightCacheErrors, MatrixCountMismatch) {
  Broken b;
  auto& down = b.cache.layers()[1].components[EditComponent::MlpDown];
  down.push_back(down.front());  // as if cached from a model with two experts
  expect_error(WeightCacheErrorKind::MatrixCountMismatch,
               {b.f.path.string(), "layer 1", "mlp_down", "blk.1.ffn_down.weight", "2 matrices", "model has 1"},
               [&] { b.cache.restore(b.w); });
}

TEST(WeightCacheErrors, ShapeMismatchShowsBothShapes) {
  Broken b;
  b.cache.layers()[0].components[EditComponent::AttnOutput][0].rows = 32;
  expect_error(WeightCacheErrorKind::ShapeMismatch,
               {b.f.path.string(), "layer 0", "attn_output", "blk.0.attn_output.weight", "[32, 64]", "[64, 64]"},
               [&] { b.cache.restore(b.w); });
  Broken truncated;
  truncated.cache.layers()[1].components[EditComponent::MlpDown][0].bytes.resize(10);
  expect_error(WeightCacheErrorKind::ShapeMismatch,
               {truncated.f.path.string(), "layer 1", "mlp_down", "blk.1.ffn_down.weight", "10 bytes"},
               [&] { truncated.cache.restore(truncated.w); });
}

TEST(WeightCacheErrors, CopyFailureWhenTheModelIsNotEditable) {
  Fixture f;
  auto w = load_model_weights(f.path);  // read-only maps: make_editable was not run
  const auto cache = WeightCache::build(w, kAllEditComponents);
  expect_error(WeightCacheErrorKind::CopyFailure,
               {f.path.string(), "layer 0", "attn_output", "matrix 0", "blk.0.attn_output.weight", "make_editable"},
               [&] { cache.restore(w); });
}

TEST(WeightCacheErrors, CopyFailureWhenTheTypeCannotBeConverted) {
  Broken b;
  auto& m = b.cache.layers()[0].components[EditComponent::AttnOutput][0];
  m.type = DType::I32;  // same row size as F32, but not a float format
  expect_error(WeightCacheErrorKind::CopyFailure, {b.f.path.string(), "layer 0", "attn_output", "I32", "F32"},
               [&] { b.cache.restore(b.w); });
}

// ---- conversions (not errors) ----------------------------------------------------------------------

TEST(WeightCacheConversions, DtypeMismatchIsConvertedWithAWarning) {
  // The tiny models of both types draw the same random values (same seed, same order), so the
  // Q8_0 file holds exactly quantize(Q8_0, the F32 file's values): restoring the F32 cache into
  // the Q8_0 model must reproduce the Q8_0 file byte for byte.
  Fixture f32(DType::F32), q8(DType::Q8_0);
  std::vector<std::string> warnings;
  const auto cache = WeightCache::build(f32.editable(), kAllEditComponents,
                                        {.max_bytes = 0, .warn = [&](std::string_view m) { warnings.emplace_back(m); }});
  auto w = q8.editable();
  scribble(w);
  cache.restore(w);
  const auto fresh = load_model_weights(q8.path);
  for (uint32_t l = 0; l < kLayers; ++l)
    for (auto c : kAllEditComponents)
      EXPECT_EQ(view_bytes(*component_matrices(w, l, c)[0]), view_bytes(*component_matrices(fresh, l, c)[0]));
  ASSERT_EQ(warnings.size(), kLayers * 2u);
  EXPECT_NE(warnings[0].find("cached as F32 but the model's matrix is Q8_0; converting"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("blk.0.attn_output.weight"), std::string::npos) << warnings[0];
}

TEST(WeightCacheConversions, DeviceMismatchCopiesThroughHostWithAWarning) {
  Fixture f;
  std::vector<std::string> warnings;
  auto w = f.editable();
  auto cache = WeightCache::build(w, kAllEditComponents,
                                  {.max_bytes = 0, .warn = [&](std::string_view m) { warnings.emplace_back(m); }});
  cache.layers()[1].components[EditComponent::MlpDown][0].device = "cuda:0";
  scribble(w);
  cache.restore(w);
  const auto fresh = load_model_weights(f.path);
  EXPECT_EQ(view_bytes(w.layers[1].w_down), view_bytes(fresh.layers[1].w_down));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("device 'cuda:0' but the model is on 'cpu'"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("blk.1.ffn_down.weight"), std::string::npos) << warnings[0];
}

}  // namespace
}  // namespace lathe
