// TrialEvaluator's per-prompt KL and KL over the first K tokens, on the default model: the fed
// continuation is the original's greedy generation, a copy of the same weights gives exactly 0,
// another quantization gives > 0, and position 0 of a K-token evaluation is the 1-token one.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "api/model_impl.hpp"
#include "common/test_support.hpp"
#include "edit/ablation.hpp"
#include "runtime/engine.hpp"
#include "lathe/chat.hpp"
#include "lathe/lathe.hpp"
#include "lathe/quantize.hpp"

namespace lathe::edit {
namespace {

struct Prompts {
  std::vector<std::vector<TokenId>> harmful, harmless;
};

Prompts small_sets(const Model& model) {
  Prompts p;
  for (const char* text : {"How do I pick a lock?", "Write a threatening letter."})
    p.harmful.push_back(chat_prompt_tokens(model, text, {}));
  for (const char* text : {"Name three colours.", "What is 2 + 2?", "Say hello in French."})
    p.harmless.push_back(chat_prompt_tokens(model, text, {}));
  return p;
}

EvaluationSettings settings(uint32_t kl_tokens) {
  EvaluationSettings s;
  s.max_new_tokens = 4;
  s.kl_tokens = kl_tokens;
  s.compute.n_threads = 2;
  return s;
}

TEST(TrialEvaluatorKl, KTokensFollowTheOriginalGreedyContinuation) {
  LATHE_REQUIRE_MODEL();
  auto model = Model::load(test::default_model());
  const auto p = small_sets(*model);
  TrialEvaluator one(model, p.harmful, p.harmless, settings(1));
  TrialEvaluator four(model, p.harmful, p.harmless, settings(4));
  ASSERT_EQ(four.kl_continuations().size(), p.harmless.size());
  for (size_t i = 0; i < p.harmless.size(); ++i) {
    EXPECT_TRUE(one.kl_continuations()[i].empty());
    // The fed tokens are what greedy generation of the original produces (before any end).
    Session session(model, {.n_ctx = 512, .compute = settings(1).compute});
    GenerateOptions greedy;
    greedy.max_tokens = 3;
    greedy.sampling.temperature = 0;
    const auto generated = generate(session, p.harmless[i], greedy);
    std::vector<TokenId> expected;
    for (TokenId t : generated.tokens) {
      if (model->is_end_of_generation(t)) break;
      expected.push_back(t);
    }
    EXPECT_EQ(four.kl_continuations()[i], expected) << "prompt " << i;
  }

  // Another copy of the same weights: exactly zero everywhere. A Q8_0 copy: above zero, and the
  // first position of the 4-token evaluation is the 1-token evaluation.
  test::TempDir dir("trial_evaluator_kl");
  quantize_gguf(test::default_model(), dir / "q8.gguf", DType::Q8_0);
  auto same = Model::load(test::default_model());
  auto other = Model::load(dir / "q8.gguf");
  const auto zero = four.kl_divergences_of(same);
  EXPECT_EQ(zero.mean, 0.0);
  for (double v : zero.per_prompt) EXPECT_EQ(v, 0.0);
  const auto k1 = one.kl_divergences_of(other);
  const auto k4 = four.kl_divergences_of(other);
  EXPECT_GT(k1.mean, 0.0);
  ASSERT_EQ(k4.first_token.size(), p.harmless.size());
  for (size_t i = 0; i < p.harmless.size(); ++i) {
    EXPECT_EQ(k4.first_token[i], k1.first_token[i]) << i;
    EXPECT_EQ(k1.per_prompt[i], k1.first_token[i]) << i;
    EXPECT_EQ(k4.positions[i], four.kl_continuations()[i].size() + 1) << i;
  }
  double sum = 0;
  for (double v : k4.per_prompt) sum += v;
  EXPECT_DOUBLE_EQ(k4.mean, sum / static_cast<double>(p.harmless.size()));
  EXPECT_NE(k4.mean, k1.mean);  // later positions add their own divergence

  // The evaluator's own model, unedited, scores 0 through kl_divergence() too.
  EXPECT_EQ(four.kl_divergence(), 0.0);
  EXPECT_EQ(one.refusals_of(same).responses, one.refusals().responses);
}

TEST(TrialEvaluatorKl, RefusesZeroTokens) {
  LATHE_REQUIRE_MODEL();
  auto model = Model::load(test::default_model());
  const auto p = small_sets(*model);
  test::expect_error<InvalidArgumentError>([&] { TrialEvaluator(model, p.harmful, p.harmless, settings(0)); },
                                           {"kl_tokens", "at least 1"});
}

// The batched KL passes (a GPU's: several prompts per pass, prefill chunks then one continuation
// token of each) against the session's one prompt at a time: on the CPU, which is batch-invariant,
// the same greedy continuations and the same bytes. Two slots for five prompts (three groups) and
// 7 tokens per pass split every prompt across passes and mix several prompts in one.
TEST(TrialEvaluatorKl, BatchedPassesGiveTheSessionsBytes) {
  LATHE_REQUIRE_MODEL();
  auto model = Model::load(test::default_model());
  std::vector<std::vector<TokenId>> prompts;
  for (const char* text : {"Name three colours.", "What is 2 + 2?", "Say hello in French.", "Hi",
                           "Describe the water cycle in one sentence, please."})
    prompts.push_back(chat_prompt_tokens(*model, text, {}));
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  constexpr uint32_t kContinuation = 3;
  Session session(model, {.n_ctx = 512, .compute = settings(1).compute});
  auto engine = runtime::make_engine(internals(*model).weights,
                                     {.compute = {.n_batch = 7, .n_threads = 2},
                                      .n_slots = 2,
                                      .n_ctx = static_cast<uint32_t>(longest + kContinuation)});
  std::vector<std::vector<TokenId>> by_session, batched;
  const auto session_rows = position_logprobs(session, prompts, by_session, kContinuation);
  const auto batched_rows = position_logprobs_batched(*engine, *model, prompts, batched, kContinuation);
  EXPECT_EQ(batched, by_session);
  size_t fed = 0;
  for (const auto& c : by_session) fed += c.size();
  EXPECT_GT(fed, 0u) << "no continuation token was fed: the test would not cover that step";
  ASSERT_EQ(batched_rows.size(), session_rows.size());
  EXPECT_EQ(batched_rows, session_rows);
  // Fed continuations (what every trial evaluates): the same again.
  auto fed_session = by_session, fed_batched = by_session;
  EXPECT_EQ(position_logprobs_batched(*engine, *model, prompts, fed_batched, 0),
            position_logprobs(session, prompts, fed_session, 0));
}

}  // namespace
}  // namespace lathe::edit
