// The long-running generation checks on the default model (label slow: skipped by the sanitizer
// run): seeded determinism over sampled text, and no memory growth across 100 generations.
#include <gtest/gtest.h>

#include <fstream>
#include <unistd.h>

#include "common/test_support.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

std::shared_ptr<const Model> default_model() {
  static auto model = Model::load(test::default_model());
  return model;
}

TEST(Session, SameSeedSameTokens) {
  LATHE_REQUIRE_MODEL();
  auto model = default_model();
  const auto prompt = model->tokenize("Tell me a story about a dragon.", false);
  GenerateOptions options;
  options.max_tokens = 24;
  options.sampling.temperature = 1.0f;
  options.sampling.seed = 1234;
  options.stop_at_end_of_generation = false;
  Session s(model, {.n_ctx = 128, .compute = {.n_threads = 2}});
  const auto first = generate(s, prompt, options);
  s.reset();
  const auto second = generate(s, prompt, options);
  EXPECT_EQ(first.tokens, second.tokens);
  options.sampling.seed = 99;
  s.reset();
  EXPECT_NE(generate(s, prompt, options).tokens, first.tokens);
}

long resident_kib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

TEST(Session, NoMemoryGrowthOver100Generations) {
  LATHE_REQUIRE_MODEL();
  auto model = default_model();
  Session s(model, {.n_ctx = 256, .compute = {.n_threads = 2}});
  GenerateOptions options;
  options.max_tokens = 8;
  options.sampling.seed = 7;
  const auto prompt = model->tokenize("Write a haiku about autumn.", false);
  for (int i = 0; i < 10; ++i) s.reset(), generate(s, prompt, options);  // warm-up: caches, pools
  const long before = resident_kib();
  for (int i = 0; i < 100; ++i) {
    s.reset();
    options.sampling.seed = static_cast<uint64_t>(i);
    generate(s, prompt, options);
  }
  const long growth = resident_kib() - before;
  EXPECT_LT(growth, 2048) << "resident memory grew by " << growth << " KiB over 100 generations";
}

}  // namespace
}  // namespace lathe
