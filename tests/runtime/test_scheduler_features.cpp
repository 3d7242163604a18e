// What the scheduler does per sequence for the server: prefix reuse (a slot's cached rows serve
// the next prompt that starts the same way, with the same tokens as a fresh evaluation), token
// log-probabilities (the log-softmax of the model's logits, checked against a Session's logits),
// logit bias, token constraints (structured output), and a failing sequence that does not stop
// the others. The tiny synthetic model keeps them fast.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/scheduler_test_helpers.hpp"

namespace lathe {
namespace {

using namespace test::scheduler;

const ComputeOptions kCompute{.n_threads = 2};

struct Fixture {
  test::TempDir dir{"scheduler_features"};
  std::shared_ptr<const Model> model = tiny_model(dir);
  Engine engine{model, {.n_slots = 2, .n_ctx = 96, .compute = kCompute}};
  runtime::Scheduler scheduler{*internals(engine).engine, internals(*model).vocabulary()};
};

TEST(SchedulerFeatures, PrefixReuseEvaluatesOnlyTheNewTokensAndGivesTheSameTokens) {
  Fixture f;
  const std::vector<TokenId> first = varied_prompts(1, test::kTinyTokens, 12)[0];
  std::vector<GenerateResult> results(3);
  auto request = [&](const std::vector<TokenId>& prompt, size_t i) {
    SequenceRequest r = greedy_request(prompt, 8, results, i);
    r.reuse_prefix = true;
    return r;
  };
  f.scheduler.submit(request(first, 0));
  f.scheduler.run_until_idle();
  ASSERT_EQ(results[0].tokens.size(), 8u);
  EXPECT_EQ(results[0].n_cached, 0u);
  // The next turn: the first prompt, its answer and three new tokens.
  std::vector<TokenId> next = first;
  next.insert(next.end(), results[0].tokens.begin(), results[0].tokens.end());
  next.insert(next.end(), {3, 5, 7});
  f.scheduler.submit(request(next, 1));
  f.scheduler.run_until_idle();
  // The slot held the prompt and all but the last answer token (sampled, never evaluated).
  EXPECT_EQ(results[1].n_cached, first.size() + 7);
  EXPECT_EQ(results[1].n_prompt, next.size() - results[1].n_cached);
  const auto fresh = tokens_alone(f.model, {first, next}, 8, 96, kCompute);
  EXPECT_EQ(results[0].tokens, fresh[0]);
  EXPECT_EQ(results[1].tokens, fresh[1]);
  // The same prompt again: everything but its last token is reused, and the answer is the same.
  f.scheduler.submit(request(next, 2));
  f.scheduler.run_until_idle();
  EXPECT_EQ(results[2].n_cached, next.size() - 1);
  EXPECT_EQ(results[2].tokens, fresh[1]);
  // Hooks change the rows: no reuse for them (refused up front).
  SequenceRequest hooked = request(next, 2);
  hooked.hooks = std::make_shared<ResidualHooks>();
  EXPECT_THROW(f.scheduler.submit(std::move(hooked)), InvalidArgumentError);
}

TEST(SchedulerFeatures, AnUnrelatedPromptTakesTheSlotUsedLongestAgo) {
  Fixture f;  // two slots
  const auto prompts = varied_prompts(2, test::kTinyTokens, 10);
  ASSERT_NE(prompts[0][0], prompts[1][0]);  // nothing in common
  std::vector<GenerateResult> results(3);
  auto request = [&](const std::vector<TokenId>& prompt, size_t i) {
    SequenceRequest r = greedy_request(prompt, 4, results, i);
    r.reuse_prefix = true;
    return r;
  };
  f.scheduler.submit(request(prompts[0], 0));
  f.scheduler.run_until_idle();
  f.scheduler.submit(request(prompts[1], 1));  // must not take the slot that holds prompts[0]
  f.scheduler.run_until_idle();
  f.scheduler.submit(request(prompts[0], 2));
  f.scheduler.run_until_idle();
  EXPECT_EQ(results[1].n_cached, 0u);
  EXPECT_EQ(results[2].n_cached, prompts[0].size() - 1);
  EXPECT_EQ(results[2].tokens, results[0].tokens);
}

TEST(SchedulerFeatures, LogprobsAreTheLogSoftmaxOfTheModelsLogits) {
  Fixture f;
  const std::vector<TokenId> prompt = varied_prompts(1, test::kTinyTokens, 9)[0];
  Session session(f.model, {.n_ctx = 96, .compute = kCompute});
  session.eval(prompt);
  const auto logits = session.logits();
  const uint32_t n = internals(*f.model).n_samplable();
  double max = -INFINITY, sum = 0;
  for (uint32_t i = 0; i < n; ++i) max = std::max<double>(max, logits[i]);
  for (uint32_t i = 0; i < n; ++i) sum += std::exp(logits[i] - max);
  auto reference = [&](TokenId id) { return logits[static_cast<size_t>(id)] - max - std::log(sum); };

  std::vector<GenerateResult> results(1);
  SequenceRequest r = greedy_request(prompt, 1, results, 0);
  r.top_logprobs = 3;
  std::vector<runtime::TokenLogprob> top;
  float chosen = 0;
  r.on_token = [&](const runtime::TokenEvent& e) {
    top.assign(e.top.begin(), e.top.end());
    chosen = e.logprob;
    return true;
  };
  // A sequence that did not ask for log-probabilities is told none (not another one's).
  std::vector<GenerateResult> plain_results(1);
  SequenceRequest plain = greedy_request(prompt, 1, plain_results, 0);
  bool plain_clean = false;
  plain.on_token = [&](const runtime::TokenEvent& e) {
    plain_clean = e.top.empty() && std::isnan(e.logprob);
    return true;
  };
  f.scheduler.submit(std::move(r));
  f.scheduler.submit(std::move(plain));
  f.scheduler.run_until_idle();
  ASSERT_EQ(results[0].tokens.size(), 1u);
  EXPECT_TRUE(plain_clean);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].token, results[0].tokens[0]);  // greedy takes the most likely
  EXPECT_NEAR(chosen, reference(results[0].tokens[0]), 1e-4);
  for (size_t i = 0; i < top.size(); ++i) {
    EXPECT_NEAR(top[i].logprob, reference(top[i].token), 1e-4) << i;
    if (i > 0) {
      EXPECT_GE(top[i - 1].logprob, top[i].logprob);
    }
  }
  // No other token is more likely than the third.
  for (uint32_t id = 0; id < n; ++id) {
    const auto t = static_cast<TokenId>(id);
    if (t != top[0].token && t != top[1].token && t != top[2].token) {
      EXPECT_LE(reference(t), top[2].logprob + 1e-5);
    }
  }
}

TEST(SchedulerFeatures, LogitBiasBansTheGreedyToken) {
  Fixture f;
  const std::vector<TokenId> prompt = varied_prompts(1, test::kTinyTokens, 7)[0];
  std::vector<GenerateResult> results(2);
  f.scheduler.submit(greedy_request(prompt, 1, results, 0));
  f.scheduler.run_until_idle();
  SequenceRequest banned = greedy_request(prompt, 1, results, 1);
  banned.logit_bias = {{results[0].tokens[0], -INFINITY}};
  f.scheduler.submit(std::move(banned));
  f.scheduler.run_until_idle();
  EXPECT_NE(results[1].tokens[0], results[0].tokens[0]);
  SequenceRequest bad = greedy_request(prompt, 1, results, 1);
  bad.logit_bias = {{-1, 1.0f}};
  EXPECT_THROW(f.scheduler.submit(std::move(bad)), InvalidArgumentError);
}

// Allows only `allowed`; complete after `length` tokens.
class FixedSetConstraint : public TokenConstraint {
 public:
  FixedSetConstraint(std::vector<TokenId> allowed, size_t length) : allowed_(std::move(allowed)), length_(length) {}
  void mask(std::span<float> logits) override {
    for (size_t id = 0; id < logits.size(); ++id)
      if (std::find(allowed_.begin(), allowed_.end(), static_cast<TokenId>(id)) == allowed_.end())
        logits[id] = -INFINITY;
  }
  void accept(int32_t token) override {
    if (std::find(allowed_.begin(), allowed_.end(), token) == allowed_.end()) throw InternalError("forbidden token");
    ++taken_;
  }
  bool done_possible() const override { return taken_ >= length_; }
  bool must_end() const override { return taken_ >= length_; }

 private:
  std::vector<TokenId> allowed_;
  size_t length_, taken_ = 0;
};

TEST(SchedulerFeatures, ConstraintChoosesTheTokensAndEndsTheSequence) {
  Fixture f;
  const std::vector<TokenId> prompt = varied_prompts(1, test::kTinyTokens, 5)[0];
  std::vector<GenerateResult> results(1);
  SequenceRequest r = greedy_request(prompt, 20, results, 0);
  r.options.sampling.temperature = 1.0f;  // sampled, yet only ever among the allowed ones
  r.options.sampling.seed = 3;
  r.constraint = std::make_shared<FixedSetConstraint>(std::vector<TokenId>{4, 9}, 6);
  f.scheduler.submit(std::move(r));
  f.scheduler.run_until_idle();
  ASSERT_EQ(results[0].tokens.size(), 6u);
  for (TokenId t : results[0].tokens) EXPECT_TRUE(t == 4 || t == 9) << t;
  EXPECT_EQ(results[0].stop, StopReason::EndOfGeneration);
}

TEST(SchedulerFeatures, AFailingSequenceEndsAloneAndTheOthersGoOn) {
  Fixture f;
  const auto prompts = varied_prompts(2, test::kTinyTokens, 6);
  const auto alone = tokens_alone(f.model, prompts, 10, 96, kCompute);
  std::vector<GenerateResult> results(2);
  SequenceRequest broken = greedy_request(prompts[0], 10, results, 0);
  broken.constraint = std::make_shared<FixedSetConstraint>(std::vector<TokenId>{}, 1);  // nothing allowed
  f.scheduler.submit(std::move(broken));
  f.scheduler.submit(greedy_request(prompts[1], 10, results, 1));
  f.scheduler.run_until_idle();
  EXPECT_EQ(results[0].stop, StopReason::Failed);
  ASSERT_TRUE(results[0].error);
  EXPECT_THROW(std::rethrow_exception(results[0].error), InvalidArgumentError);
  EXPECT_EQ(results[1].tokens, alone[1]);
  EXPECT_EQ(internals(f.engine).engine->free_slots(), 2u);
}

}  // namespace
}  // namespace lathe
