// The memory lathe needs (docs/RELIABILITY.md states the budget): a command that runs no model
// holds a few MiB, and a CPU run holds the model's mapped weights, the KV cache it uses and a small
// constant, in builds with or without CUDA: the CUDA libraries (cuBLAS alone is about 150 MB
// resident) are opened only when a CUDA device runs a product.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/test_support.hpp"

namespace lathe::test {
namespace {

constexpr uint64_t kMiB = 1024;  // in KiB, as the harness reports resident memory

// AddressSanitizer's shadow memory and quarantine multiply resident memory: the budget is for
// lathe as users build it.
#define LATHE_SKIP_UNDER_SANITIZERS() \
  if (test::kUnderAddressSanitizer) GTEST_SKIP() << "resident memory is not lathe's under AddressSanitizer"

TEST(CliMemory, VersionHoldsAFewMiB) {
  LATHE_SKIP_UNDER_SANITIZERS();
  const auto r = run_command({cli_path().string(), "--version"}, std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(r.max_rss_kib, 32 * kMiB) << "lathe --version held " << r.max_rss_kib / kMiB << " MiB";
}

TEST(CliMemory, CpuRunHoldsTheModelTheKvCacheAndASmallConstant) {
  LATHE_SKIP_UNDER_SANITIZERS();
  LATHE_REQUIRE_MODEL();
  const auto r = run_command({cli_path().string(), "run", "-m", default_model().string(), "-p", "Hello", "-n", "4",
                              "-c", "256", "-t", "1", "--temp", "0", "--device", "cpu"},
                             std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 256 positions of SmolLM2's KV cache (30 layers, K and V, 3 x 64 halves per row) are 5.6 MiB;
  // the constant covers the tokenizer, ICU, the activations of one pass and the logits.
  const uint64_t model_kib = std::filesystem::file_size(default_model()) / 1024;
  const uint64_t budget = model_kib + 6 * kMiB + 64 * kMiB;
  EXPECT_LT(r.max_rss_kib, budget) << "held " << r.max_rss_kib / kMiB << " MiB; budget " << budget / kMiB << " MiB";
}

}  // namespace
}  // namespace lathe::test
