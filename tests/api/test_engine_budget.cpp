// EngineOptions::vram_budget (`lathe serve --vram-budget`): an engine holds at most that much GPU
// memory. Left to lathe, the context shrinks until the engine fits; a given context that does not
// fit is an error saying what would fit; weights alone over the budget stream
// (tests/forward/test_cuda_stream.cpp), and below streaming's minimum are an error saying it. On the CPU a budget is
// refused. The GPU cases skip without a device (scripts/gpu-check.sh runs them). The tiny synthetic
// model, with a trained context of 4096 tokens so that the default context can shrink: no model
// file needs to travel to the GPU machine.
#include <gtest/gtest.h>

#include <iostream>
#include <string>

#include "common/require_gpu.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

uint64_t total(const MemoryUse& m) { return m.weights + m.kv + m.scratch; }

std::shared_ptr<const Model> tiny_model_4096(const test::TempDir& dir) {
  test::TinyModel tiny;
  tiny.add_tokenizer();
  tiny.writer.set("llama.context_length", gguf::Value::u32(4096));
  return Model::load(tiny.write(dir, "tiny.gguf"));
}

// An engine of 16 slots on the GPU without a budget (n_ctx 0: the model's context): what it holds,
// and a budget with room for about half of its KV cache.
struct Unlimited {
  MemoryUse memory;
  uint32_t n_ctx = 0;
  uint64_t half_kv_budget() const { return memory.weights + memory.scratch + memory.kv / 2; }
};
Unlimited measure_unlimited(const std::shared_ptr<const Model>& model, uint32_t n_ctx) {
  Engine engine(model, {.n_slots = 16, .n_ctx = n_ctx, .compute = {.device = Device::cuda(0)}});
  return {engine.memory_use(), engine.options().n_ctx};
}

std::string refusal(const std::shared_ptr<const Model>& model, const EngineOptions& options) {
  try {
    Engine engine(model, options);
  } catch (const InvalidArgumentError& e) {
    return e.what();
  }
  return "";
}

TEST(EngineBudget, RefusedOnTheCpu) {
  test::TempDir dir("budget_cpu");
  const auto model = tiny_model_4096(dir);
  const std::string why = refusal(model, {.n_slots = 2, .n_ctx = 256, .compute = {}, .vram_budget = uint64_t{1} << 30});
  EXPECT_NE(why.find("--vram-budget"), std::string::npos) << why;
  EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
}

TEST(EngineBudget, ContextShrinksToFitWhenLeftToLathe) {
  LATHE_REQUIRE_GPU();
  test::TempDir dir("budget_shrink");
  const auto model = tiny_model_4096(dir);
  const ComputeOptions gpu{.device = Device::cuda(0)};
  const Unlimited unlimited = measure_unlimited(model, 0);
  ASSERT_EQ(unlimited.n_ctx, 4096u);  // the trained context
  // Room for about half of the KV cache: the context must come down to at most 2048 tokens, by
  // steps of 256, and no further than one step below what fits.
  const uint64_t budget = unlimited.half_kv_budget();
  Engine fitted(model, {.n_slots = 16, .compute = gpu, .vram_budget = budget});
  const MemoryUse m = fitted.memory_use();
  std::cout << "budget " << budget << " bytes: n_ctx " << fitted.options().n_ctx << ", engine " << total(m) << "\n";
  EXPECT_LE(total(m), budget);
  EXPECT_LE(fitted.options().n_ctx, 2048u);
  EXPECT_GE(fitted.options().n_ctx, 2048u - 256u);
  EXPECT_EQ(fitted.options().n_ctx % 256, 0u);
  // A budget that holds the whole engine changes nothing.
  Engine roomy(model, {.n_slots = 16, .compute = gpu, .vram_budget = total(unlimited.memory) + (1u << 20)});
  EXPECT_EQ(roomy.options().n_ctx, 4096u);
}

TEST(EngineBudget, GivenContextOrWeightsOverTheBudgetAreErrors) {
  LATHE_REQUIRE_GPU();
  test::TempDir dir("budget_errors");
  const auto model = tiny_model_4096(dir);
  const ComputeOptions gpu{.device = Device::cuda(0)};
  const uint64_t budget = measure_unlimited(model, 4096).half_kv_budget();
  const std::string given = refusal(model, {.n_slots = 16, .n_ctx = 4096, .compute = gpu, .vram_budget = budget});
  EXPECT_NE(given.find("--vram-budget"), std::string::npos) << given;
  EXPECT_NE(given.find("16 slots x 4096 tokens"), std::string::npos) << given;
  // What fits: about half the cache, in steps of 256 tokens.
  const size_t at = given.find("(-c ");
  ASSERT_NE(at, std::string::npos) << given;
  const int fits = std::stoi(given.substr(at + 4));
  EXPECT_TRUE(fits == 2048 || fits == 1792) << given;
  const std::string weights = refusal(model, {.n_slots = 1, .compute = gpu, .vram_budget = 1024});  // < its weights
  EXPECT_NE(weights.find("--vram-budget"), std::string::npos) << weights;
  EXPECT_NE(weights.find("streaming them needs at least"), std::string::npos) << weights;
}

}  // namespace
}  // namespace lathe
