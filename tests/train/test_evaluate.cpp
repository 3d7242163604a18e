// Scoring a data set (train/evaluate.hpp) through the inference engine against the training pass
// (train/lora_pass.hpp), two independent computations of the same function on the tiny F32 llama:
// the perplexity of an example equals exp(the pass's mean cross-entropy), without an adapter and
// with one (merged by --lora for the engine, applied unmerged by the pass); the greedy counts
// follow the logits; the set's figures are the means they are documented as.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"
#include "train/evaluate.hpp"
#include "train/finetune.hpp"
#include "weights/lora.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

std::vector<Example> examples() {
  return {{{3, 8, 15, 4, 22, 9, 1}, {-1, 15, 4, 22, 9, 1, -1}}, {{5, 8, 2, 17, 6, 12}, {-1, 2, 17, 6, 12, 7}}};
}

TEST(ScoreExamples, EqualsTheTrainingPassWithAndWithoutAnAdapter) {
  test::TempDir dir("evaluate");
  test::TinyModel tiny;
  tiny.add_tokenizer();
  const auto path = tiny.write(dir, "tiny.gguf");
  const auto w = load_model_weights(path);
  const auto data = examples();

  // An adapter that changes the function: a few steps of fine-tuning.
  FinetuneOptions o;
  o.rank = 2;
  o.alpha = 4;
  o.adamw.lr = 5e-2;
  o.steps = 8;
  const auto lora = finetune(w, data, o);
  write_lora_adapter(to_adapter(lora, w), dir / "a.gguf", "test");

  LoraSet<float> none;
  none.rank = 1;
  for (bool adapted : {false, true}) {
    const auto model = Model::load(path, adapted ? LoadOptions{.loras = {{dir / "a.gguf", 1.0f}}} : LoadOptions{});
    const auto score = score_examples(model, data, {.n_threads = 1, .kv_type = KvType::F32});
    ASSERT_EQ(score.examples.size(), data.size());
    double total_nll = 0;
    size_t total_scored = 0;
    for (size_t i = 0; i < data.size(); ++i) {
      const auto& e = data[i];
      std::vector<float> logits;
      const double nll = lora_forward_backward(w, adapted ? lora : none, e.tokens, e.targets, nullptr, &logits);
      const auto& s = score.examples[i];
      EXPECT_EQ(s.scored, 5u);
      EXPECT_NEAR(s.logprob, -nll * 5, 1e-4) << "example " << i << (adapted ? " with" : " without") << " the adapter";
      EXPECT_NEAR(s.probability(), std::exp(-nll), 1e-5);
      // Greedy picks from the pass's logits.
      size_t correct = 0;
      for (size_t t = 0; t < e.tokens.size(); ++t) {
        if (e.targets[t] < 0) continue;
        const float* row = logits.data() + t * w.output.rows;
        correct += std::max_element(row, row + w.output.rows) - row == e.targets[t];
      }
      EXPECT_EQ(s.correct, correct);
      total_nll += nll * 5;
      total_scored += 5;
    }
    const double perplexity = std::exp(total_nll / static_cast<double>(total_scored));
    EXPECT_NEAR(score.perplexity, perplexity, 1e-5 * perplexity);  // float32 logits, relative
    EXPECT_NEAR(score.mean_probability, (score.examples[0].probability() + score.examples[1].probability()) / 2, 1e-12);
  }
}

// An adapter merged into a model stored under 8 bits per weight: --lora converts its targets to
// Q8_0 first (weights/lora.hpp, LoraPromotion), so the engine's loss stays near the training
// pass's (which applies the adapter unmerged to the Q4_1 weights); merged back into Q4_1 (what
// --requantize Q4_1 does after the merge, and what --lora did before) the update is rounded away.
TEST(ScoreExamples, AdapterMergedIntoQuantizedWeightsKeepsItsFunction) {
  test::TempDir dir("evaluate_q4");
  test::TinyModel tiny("", DType::Q4_1);
  tiny.add_tokenizer();
  const auto path = tiny.write(dir, "tiny-q4_1.gguf");
  const auto w = load_model_weights(path);
  const auto data = examples();
  FinetuneOptions o;
  o.rank = 2;
  o.alpha = 4;
  o.adamw.lr = 1e-2;
  o.steps = 6;
  const auto lora = finetune(w, data, o);
  write_lora_adapter(to_adapter(lora, w), dir / "a.gguf", "test");
  double trained = 0, base = 0;
  LoraSet<float> none;
  none.rank = 1;
  for (const auto& e : data) {
    trained += lora_forward_backward(w, lora, e.tokens, e.targets, nullptr);
    base += lora_forward_backward(w, none, e.tokens, e.targets, nullptr);
  }
  auto engine_nll = [&](const std::shared_ptr<const Model>& model) {
    const auto score = score_examples(model, data, {.n_threads = 1, .kv_type = KvType::F32});
    double nll = 0;
    for (const auto& s : score.examples) nll -= s.logprob / static_cast<double>(s.scored);
    return nll;
  };
  const LoadOptions promoted_options{.loras = {{dir / "a.gguf", 1.0f}}};
  const auto promoted_model = Model::load(path, promoted_options);
  ASSERT_EQ(promoted_model->summary().loras.size(), 1u);
  const auto& applied = promoted_model->summary().loras[0];
  EXPECT_EQ(applied.promoted, applied.matrices);
  EXPECT_EQ(applied.promoted_from, "Q4_1");
  EXPECT_EQ(applied.promoted_to, "Q8_0");
  const double promoted = engine_nll(promoted_model);
  const LoadOptions rounded_options{.requantize = "Q4_1", .loras = {{dir / "a.gguf", 1.0f}}};
  const double rounded = engine_nll(Model::load(path, rounded_options));
  std::cout << "mean NLL: base " << base / 2 << ", trained (pass) " << trained / 2 << ", merged via Q8_0 "
            << promoted / 2 << ", merged into Q4_1 " << rounded / 2 << "\n";
  ASSERT_GT(base - trained, 0.2) << "the adapter must change the loss for the test to tell";
  EXPECT_LT(std::abs(promoted - trained), 0.1 * (base - trained));
  EXPECT_LT(std::abs(promoted - trained), 0.5 * std::abs(rounded - trained));
}

}  // namespace
}  // namespace lathe::train
