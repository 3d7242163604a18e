// Batch invariance on the default model: each of 16 prompts' 64 greedy tokens are the same
// whether the prompt runs alone or beside 15 others admitted at different steps, with prefill
// chunks sharing passes with decode steps (slow: about 1,000 single-sequence steps on the CPU).
#include <gtest/gtest.h>

#include <iostream>

#include "runtime/scheduler_test_helpers.hpp"

namespace lathe {
namespace {

using namespace test::scheduler;

TEST(SchedulerSlow, DefaultModelGreedyTokensDoNotDependOnTheBatch) {
  LATHE_REQUIRE_MODEL();
  const auto model = Model::load(test::default_model());
  const std::vector<std::string> texts = {
      "The capital of France is", "Once upon a time", "1, 2, 3, 4,", "def fibonacci(n):", "The quick brown fox",
      "Water boils at", "In 1492, Columbus", "Photosynthesis is the process by which plants",
      "A haiku about the sea:", "The three primary colors are", "To make a cup of tea, first",
      "Python lists are", "The largest planet in the solar system", "Dear hiring manager, I am writing to",
      "SELECT name FROM users WHERE", "The mitochondria is the powerhouse of the cell, and in this essay I will"};
  std::vector<std::vector<TokenId>> prompts;
  for (const auto& t : texts) prompts.push_back(model->tokenize(t, true));
  const ComputeOptions compute{.n_threads = 2};
  const auto alone = tokens_alone(model, prompts, 64, 128, compute);
  size_t steps = 0;
  const auto together = staggered(model, prompts, 64, 128, compute, &steps);
  size_t identical = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_EQ(alone[i].size(), 64u);
    EXPECT_EQ(together[i].tokens, alone[i]) << "\"" << texts[i] << "\"";
    identical += together[i].tokens == alone[i];
  }
  std::cout << "batch invariance on the CPU: " << identical << "/16 sequences token-identical over 64 tokens, "
            << steps << " steps\n";
}

}  // namespace
}  // namespace lathe
