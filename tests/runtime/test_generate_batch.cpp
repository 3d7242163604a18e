// generate_batch (continuous batching over per-sequence KV caches) against generate() on fresh
// sessions: greedy continuations must be the same tokens; stop checks end one sequence early
// without disturbing the others; bad input is rejected.
#include <gtest/gtest.h>

#include "common/test_support.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

TEST(GenerateBatch, GreedyMatchesOneSessionPerPrompt) {
  LATHE_REQUIRE_MODEL();
  const auto model = Model::load(test::default_model());
  const std::vector<std::string> texts = {"The capital of France is", "Once upon a time", "1, 2, 3, 4,",
                                          "def fibonacci(n):", "The quick brown fox"};
  std::vector<std::vector<TokenId>> prompts;
  for (const auto& t : texts) prompts.push_back(model->tokenize(t, true));
  BatchGenerateOptions options;
  options.generate.max_tokens = 24;
  options.generate.sampling.temperature = 0;
  options.n_parallel = 3;  // fewer slots than prompts: slots are reused
  options.compute.n_threads = 2;
  const auto batched = generate_batch(model, prompts, options);
  ASSERT_EQ(batched.size(), prompts.size());
  size_t identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    Session session(model, {.n_ctx = 256, .compute = {.n_threads = 2}});
    const auto single = generate(session, prompts[i], options.generate);
    EXPECT_FALSE(batched[i].tokens.empty()) << texts[i];
    identical += batched[i].tokens == single.tokens;
    EXPECT_EQ(batched[i].n_prompt, prompts[i].size());
  }
  // Batched rows take the register-blocked matmul path, single decode the mat-vec path; both
  // round activations to 8 bits identically, so greedy choices agree unless two logits tie
  // within float noise. Allow one divergence out of five.
  EXPECT_GE(identical, prompts.size() - 1);
}

TEST(GenerateBatch, StopCheckEndsOnlyThatSequence) {
  LATHE_REQUIRE_MODEL();
  const auto model = Model::load(test::default_model());
  const std::vector<std::vector<TokenId>> prompts = {model->tokenize("Once upon a time", true),
                                                     model->tokenize("Once upon a time", true)};
  BatchGenerateOptions options;
  options.generate.max_tokens = 16;
  options.generate.sampling.temperature = 0;
  options.generate.stop_at_end_of_generation = false;
  options.compute.n_threads = 2;
  const auto results = generate_batch(model, prompts, options, [](size_t index, std::string_view) { return index == 1; });
  EXPECT_EQ(results[0].tokens.size(), 16u);
  EXPECT_EQ(results[0].stop, StopReason::MaxTokens);
  EXPECT_EQ(results[1].tokens.size(), 1u);
  EXPECT_EQ(results[1].stop, StopReason::Callback);
}

TEST(GenerateBatch, RejectsBadInput) {
  LATHE_REQUIRE_MODEL();
  const auto model = Model::load(test::default_model());
  BatchGenerateOptions options;
  EXPECT_THROW(generate_batch(model, {{}}, options), InvalidArgumentError);
  EXPECT_THROW(generate_batch(model, {{1, -4}}, options), InvalidArgumentError);
  options.n_parallel = 0;
  EXPECT_THROW(generate_batch(model, {{1}}, options), InvalidArgumentError);
  options.n_parallel = 4;
  options.generate.max_tokens = -1;
  EXPECT_THROW(generate_batch(model, {{1}}, options), InvalidArgumentError);
  options.generate.max_tokens = 10;
  const std::vector<TokenId> huge(model->summary().n_ctx_train, 1);
  EXPECT_THROW(generate_batch(model, {huge}, options), ContextLengthError);
  EXPECT_TRUE(generate_batch(model, {}, options).empty());
  EXPECT_THROW(generate_batch(nullptr, {{1}}, options), InvalidArgumentError);
}

}  // namespace
}  // namespace lathe
