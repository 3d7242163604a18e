// Layer streaming (docs/STREAMING.md) on the GPU: a budget that leaves room for only two layer
// slots streams every layer through them, and greedy generation of a few hundred tokens is
// token-identical to the fully resident run (same kernels, the same bytes at another address, so
// the logits are bit-identical too); a budget between that and the whole model keeps some layers
// resident and streams the rest; a budget below the minimum is an error that says the minimum.
// Tiny synthetic llamas (6 layers, every weight type whose device layout differs from the file's)
// and the default SmolLM2 GGUF (30 layers, tied embeddings). Skips without a GPU.
#include <gtest/gtest.h>

#include <iostream>

#include "common/require_gpu.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

constexpr uint32_t kContext = 512;

struct Greedy {
  std::vector<TokenId> tokens;
  std::vector<float> last_logits;
  MemoryUse memory;
};

// Evaluates `prompt` and `steps` greedy tokens, one per pass (the captured decode step). The model
// is loaded afresh: a model's device copy, once made, is shared by its later sessions as it is.
Greedy greedy(const std::filesystem::path& path, std::span<const TokenId> prompt, int steps, uint64_t vram_budget) {
  Session session(Model::load(path), {.n_ctx = kContext,
                          .compute = {.n_batch = 64, .device = Device::cuda(0), .vram_budget = vram_budget}});
  Greedy out;
  session.eval(prompt);
  for (int i = 0; i < steps; ++i) {
    const TokenId t = session.greedy_token();
    out.tokens.push_back(t);
    session.eval(std::span<const TokenId>(&t, 1));
  }
  const auto logits = session.logits();
  out.last_logits.assign(logits.begin(), logits.end());
  out.memory = session.memory_use();
  return out;
}

std::vector<TokenId> prompt_of(size_t n, uint32_t vocab) {
  std::vector<TokenId> ids;
  for (size_t i = 0; i < n; ++i) ids.push_back(static_cast<TokenId>((i * 7 + 3) % vocab));
  return ids;
}

// Resident, every layer streamed, and part streamed: the same tokens and logits.
void expect_streaming_changes_nothing(const std::filesystem::path& model, const std::string& label,
                                      size_t prompt_tokens, int steps) {
  const auto prompt = prompt_of(prompt_tokens, 30);  // ids every model here has
  const Greedy resident = greedy(model, prompt, steps, 0);
  EXPECT_EQ(resident.memory.streamed_layers, 0u);
  ASSERT_GT(resident.memory.min_budget, 0u);

  const Greedy all = greedy(model, prompt, steps, resident.memory.min_budget);
  const MemoryUse& m = all.memory;
  std::cout << label << ": " << m.streamed_layers << "/" << m.n_layers << " layers streamed through " << m.slots
            << " slots of " << m.slot_bytes << " bytes, pinned " << m.pinned_host << " bytes in " << m.pinning_seconds
            << " s\n";
  EXPECT_EQ(m.streamed_layers, m.n_layers) << label;
  EXPECT_EQ(m.slots, 2u) << label;
  EXPECT_LE(m.weights + m.kv + m.scratch, resident.memory.min_budget) << label;
  EXPECT_EQ(all.tokens, resident.tokens) << label << ": every layer streamed";
  EXPECT_EQ(all.last_logits, resident.last_logits) << label << ": every layer streamed";

  // Room for two more layers: those stay, the rest stream.
  const Greedy part = greedy(model, prompt, steps, resident.memory.min_budget + 2 * m.slot_bytes);
  std::cout << label << ": " << part.memory.streamed_layers << "/" << part.memory.n_layers << " streamed with room for two more\n";
  EXPECT_EQ(part.memory.streamed_layers + 2, part.memory.n_layers) << label;
  EXPECT_EQ(part.tokens, resident.tokens) << label << ": part streamed";
  EXPECT_EQ(part.last_logits, resident.last_logits) << label << ": part streamed";
}

TEST(CudaStream, TinyModelsGiveTheResidentTokens) {
  LATHE_REQUIRE_GPU();
  test::TempDir dir("cuda_stream_tiny");
  for (DType type : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    test::TinyModel m("", type, 6);
    m.add_tokenizer();
    const auto model = m.write(dir, std::string("tiny6-") + std::string(dtype_name(type)) + ".gguf");
    // A prompt of 150 tokens (three prefill chunks) and 300 decode steps: 450 of the 512 positions.
    expect_streaming_changes_nothing(model, std::string("tiny llama ") + std::string(dtype_name(type)), 150, 300);
  }
}

TEST(CudaStream, DefaultModelGivesTheResidentTokens) {
  LATHE_REQUIRE_GPU();
  LATHE_REQUIRE_MODEL();
  expect_streaming_changes_nothing(test::default_model(), "SmolLM2 Q4_1", 120, 200);
}

TEST(CudaStream, BudgetBelowTheMinimumSaysTheMinimum) {
  LATHE_REQUIRE_GPU();
  test::TempDir dir("cuda_stream_small");
  test::TinyModel m("", DType::F32, 6);
  m.add_tokenizer();
  const auto model = Model::load(m.write(dir, "tiny6.gguf"));
  uint64_t min_budget = 0;
  {
    Session resident(model, {.n_ctx = kContext, .compute = {.device = Device::cuda(0)}});
    min_budget = resident.memory_use().min_budget;
  }
  test::expect_error<InvalidArgumentError>(
      [&] {
        Session(model, {.n_ctx = kContext, .compute = {.device = Device::cuda(0), .vram_budget = min_budget - 1}})
            .eval(prompt_of(4, 30));
      },
      {"--vram-budget", "at least", "layer slots"});
}

}  // namespace
}  // namespace lathe
