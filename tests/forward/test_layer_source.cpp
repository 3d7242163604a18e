// The weights seam: the CPU forward pass takes each layer's weights from its LayerSource, once per
// layer and pass, in order, and hands each back before the next; a source that serves copies of
// the layers (as a streaming source would serve layers copied in from the model's files) gives the
// same logits as the resident weights.
#include <gtest/gtest.h>

#include "backend/cpu/thread_pool.hpp"
#include "common/tiny_model.hpp"
#include "forward/forward.hpp"
#include "runtime/kv_cache.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

// Serves copies of the layers and records the calls.
class RecordingSource final : public LayerSource {
 public:
  explicit RecordingSource(const std::vector<LayerWeights>& layers) : copies_(layers) {}
  const LayerWeights& acquire(uint32_t layer) override {
    EXPECT_EQ(held_, -1) << "layer " << layer << " acquired while layer " << held_ << " is held";
    held_ = static_cast<int>(layer);
    calls.push_back("acquire " + std::to_string(layer));
    return copies_.at(layer);
  }
  void release(uint32_t layer) override {
    EXPECT_EQ(held_, static_cast<int>(layer));
    held_ = -1;
    calls.push_back("release " + std::to_string(layer));
  }
  bool resident() const noexcept override { return false; }
  std::vector<std::string> calls;

 private:
  std::vector<LayerWeights> copies_;
  int held_ = -1;
};

std::vector<float> last_logits(const ModelWeights& w, LayerSource* source) {
  cpu::ThreadPool pool(2);
  KvCache kv(w.hp, 16, KvFormat::F32);
  Forward f(w, 8, 16, source);
  const std::vector<int32_t> tokens = {1, 5, 9, 3};
  Batch batch;
  batch.add_chunk(0, tokens, 0, false, true, true);
  KvCacheView* caches[] = {&kv.view()};
  std::vector<float> logits(test::kVocab);
  f.forward(batch, caches, {}, logits.data(), pool);
  return logits;
}

TEST(LayerSource, TheForwardPassAsksForEachLayerInTurn) {
  test::TempDir dir("layer_source");
  const auto w = load_model_weights(test::TinyModel().write(dir, "tiny.gguf"));
  ASSERT_GE(w.layers.size(), 2u);
  RecordingSource source(w.layers);
  const auto through_source = last_logits(w, &source);
  std::vector<std::string> expected;
  for (uint32_t l = 0; l < w.layers.size(); ++l) {
    expected.push_back("acquire " + std::to_string(l));
    expected.push_back("release " + std::to_string(l));
  }
  EXPECT_EQ(source.calls, expected);
  EXPECT_EQ(through_source, last_logits(w, nullptr));  // the resident layers: bit for bit
}

}  // namespace
}  // namespace lathe
