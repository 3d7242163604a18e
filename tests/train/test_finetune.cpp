// LoRA fine-tuning (src/train/finetune.hpp, optimizer.hpp) on the tiny synthetic llama: AdamW's
// first step and weight decay as torch.optim.AdamW defines them, clipping as clip_grad_norm_, the
// schedules as transformers' at known points; a run memorizes its examples (the loss falls and the
// adapted model, loaded with --lora, predicts them), and the same seed gives the same adapters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"
#include "train/finetune.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

TEST(AdamW, FirstStepMovesEachParameterByTheLearningRate) {
  // Bias correction makes Adam's first step lr * g / |g| (eps aside), whatever the gradient's size.
  AdamW adamw({.lr = 0.1, .eps = 1e-12, .weight_decay = 0}, std::vector<size_t>{4});
  std::vector<float> p = {1, 2, 3, 4}, g = {0.5f, -2e-3f, 30, -7};
  float* params[] = {p.data()};
  const float* grads[] = {g.data()};
  adamw.step(0.1, params, grads);
  const std::vector<float> expect = {0.9f, 2.1f, 2.9f, 4.1f};
  for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], expect[i], 1e-6) << i;
  EXPECT_EQ(adamw.steps(), 1);
}

TEST(AdamW, WeightDecayIsDecoupled) {
  // No gradient: only p *= 1 - lr * wd (torch.optim.AdamW), the moments stay zero.
  AdamW adamw({.lr = 0.5, .weight_decay = 0.1}, std::vector<size_t>{2});
  std::vector<float> p = {2, -4}, g = {0, 0};
  float* params[] = {p.data()};
  const float* grads[] = {g.data()};
  adamw.step(0.5, params, grads);
  EXPECT_FLOAT_EQ(p[0], 2 * 0.95f);
  EXPECT_FLOAT_EQ(p[1], -4 * 0.95f);
}

TEST(Optimizer, ClippingAndScheduleFollowPyTorchAndTransformers) {
  std::vector<float> a = {3, 0}, b = {4};
  float* grads[] = {a.data(), b.data()};
  const size_t sizes[] = {2, 1};
  EXPECT_DOUBLE_EQ(clip_grad_norm(grads, sizes, 0), 5.0);  // no clipping: the norm only
  EXPECT_DOUBLE_EQ(clip_grad_norm(grads, sizes, 1.0), 5.0);
  EXPECT_NEAR(a[0], 3 / (5 + 1e-6), 1e-7);
  EXPECT_NEAR(b[0], 4 / (5 + 1e-6), 1e-7);
  // Warm-up 4 of 104 steps, peak 1: step 1 -> 0.25; halfway through the decay -> 0.5 (linear and
  // cosine); the end -> 0.
  EXPECT_DOUBLE_EQ(learning_rate(1, 1, 4, 104, LrDecay::Linear), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(1, 54, 4, 104, LrDecay::Linear), 0.5);
  EXPECT_NEAR(learning_rate(1, 54, 4, 104, LrDecay::Cosine), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(1, 29, 4, 104, LrDecay::Cosine), 0.5 * (1 + std::cos(M_PI / 4)), 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(1, 104, 4, 104, LrDecay::Linear), 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(1, 50, 4, 104, LrDecay::Constant), 1.0);
}

// Each pass through the examples is a permutation, from the first draw on (a cycle that starts
// without shuffling hands out example 0 n times in its first pass); the same seed, the same order.
TEST(ExampleCycle, EveryPassIsAPermutation) {
  ExampleCycle cycle(5, 42), again(5, 42);
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<size_t> seen;
    for (int i = 0; i < 5; ++i) {
      seen.push_back(cycle.next());
      EXPECT_EQ(again.next(), seen.back());
    }
    std::sort(seen.begin(), seen.end());
    EXPECT_EQ(seen, (std::vector<size_t>{0, 1, 2, 3, 4})) << "pass " << pass;
  }
}

struct Tiny {
  test::TempDir dir{"finetune"};
  std::filesystem::path path;
  Tiny() {
    test::TinyModel tiny;
    tiny.add_tokenizer();
    path = tiny.write(dir, "tiny.gguf");
  }
};

std::vector<Example> examples() {
  // Two "facts": each continuation is scored after a two-token prompt.
  return {{{3, 8, 15, 4, 22, 9, 1}, {-1, 15, 4, 22, 9, 1, -1}}, {{5, 8, 2, 17, 6, 12}, {-1, 2, 17, 6, 12, -1}}};
}

TEST(Finetune, MemorizesItsExamplesAndRepeatsExactly) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  FinetuneOptions options;
  options.rank = 4;
  options.alpha = 8;
  options.adamw.lr = 2e-2;
  options.steps = 60;
  options.grad_accumulation = 2;
  options.warmup_steps = 5;
  options.seed = 7;
  std::vector<double> losses;
  const auto lora = finetune(w, examples(), options, [&](const StepReport& r) { losses.push_back(r.loss); });
  ASSERT_EQ(losses.size(), 60u);
  std::cout << "finetune: loss " << losses.front() << " -> " << losses.back() << " in 60 steps\n";
  EXPECT_LT(losses.back(), 0.2 * losses.front()) << losses.front() << " -> " << losses.back();

  // The adapters, merged by --lora, make the engine predict the memorized tokens.
  write_lora_adapter(to_adapter(lora, w), tiny.dir / "facts.gguf", "test");
  LoadOptions load;
  load.loras = {{tiny.dir / "facts.gguf", 1.0f}};
  Session session(Model::load(tiny.path, load), {.n_ctx = 16, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
  size_t right = 0, scored = 0;
  for (const auto& e : examples()) {
    session.reset();
    session.eval(e.tokens, true);
    for (size_t t = 0; t < e.tokens.size(); ++t) {
      if (e.targets[t] < 0) continue;
      const auto row = session.logits_at(t);
      right += static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()) == e.targets[t];
      ++scored;
    }
  }
  EXPECT_EQ(right, scored);

  // Same seed, same adapters; another seed, others.
  const auto again = finetune(w, examples(), options);
  for (size_t p = 0; p < lora.pairs.size(); ++p) {
    EXPECT_EQ(again.pairs[p].a, lora.pairs[p].a);
    EXPECT_EQ(again.pairs[p].b, lora.pairs[p].b);
  }
  options.seed = 8;
  EXPECT_NE(finetune(w, examples(), options).pairs[0].a, lora.pairs[0].a);
}

TEST(Finetune, BadDataIsRefusedBeforeTraining) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  FinetuneOptions options;
  options.steps = 1;
  test::expect_error<InvalidArgumentError>([&] { finetune(w, {}, options); }, {"no training examples"});
  test::expect_error<InvalidArgumentError>([&] { finetune(w, {{{1, 2}, {-1, -1}}}, options); },
                                           {"example 0 scores no position"});
  test::expect_error<InvalidArgumentError>([&] { finetune(w, {{{1, 2}, {2}}}, options); }, {"2 tokens and 1 targets"});
  test::expect_error<InvalidArgumentError>([&] { finetune(w, {{{1, 99}, {99, -1}}}, options); },
                                           {"token 99 outside the vocabulary"});
  options.steps = 0;
  test::expect_error<InvalidArgumentError>([&] { finetune(w, examples(), options); }, {"at least one step"});
}

}  // namespace
}  // namespace lathe::train
