// Helpers shared by the scheduler tests: prompts of varied lengths, greedy requests, each prompt
// run alone, and 16 sequences admitted at different steps of one engine.
#pragma once

#include <memory>
#include <vector>

#include "api/model_impl.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"
#include "runtime/scheduler.hpp"

namespace lathe::test::scheduler {

using runtime::Scheduler;
using runtime::SequenceRequest;

// Prompts of different lengths (2..) over the ids below `vocab`.
inline std::vector<std::vector<TokenId>> varied_prompts(size_t n, uint32_t vocab, size_t first_len = 2) {
  std::vector<std::vector<TokenId>> prompts;
  uint32_t state = 12345;
  for (size_t i = 0; i < n; ++i) {
    std::vector<TokenId> p;
    const size_t len = first_len + (i * 7) % 23;
    for (size_t t = 0; t < len; ++t) {
      state = state * 1664525u + 1013904223u;
      p.push_back(static_cast<TokenId>((state >> 8) % vocab));
    }
    prompts.push_back(std::move(p));
  }
  return prompts;
}

// The tiny synthetic model with its byte-level vocabulary (Model::load needs a tokenizer).
inline std::shared_ptr<const Model> tiny_model(const test::TempDir& dir) {
  test::TinyModel tiny;
  tiny.add_tokenizer();
  return Model::load(tiny.write(dir, "tiny.gguf"));
}

inline SequenceRequest greedy_request(const std::vector<TokenId>& prompt, int32_t max_tokens,
                               std::vector<GenerateResult>& results, size_t index) {
  SequenceRequest r;
  r.prompt = prompt;
  r.options.max_tokens = max_tokens;
  r.options.sampling.temperature = 0;
  r.options.stop_at_end_of_generation = false;
  r.on_done = [&results, index](GenerateResult&& done) { results[index] = std::move(done); };
  return r;
}

// Each prompt alone on an engine of one slot.
inline std::vector<std::vector<TokenId>> tokens_alone(const std::shared_ptr<const Model>& model,
                                               const std::vector<std::vector<TokenId>>& prompts, int32_t max_tokens,
                                               uint32_t n_ctx, const ComputeOptions& compute) {
  Engine engine(model, {.n_slots = 1, .n_ctx = n_ctx, .compute = compute});
  std::vector<std::vector<TokenId>> out;
  for (const auto& p : prompts) {
    GenerateOptions o;
    o.max_tokens = max_tokens;
    o.sampling.temperature = 0;
    o.stop_at_end_of_generation = false;
    out.push_back(generate_batch(engine, {p}, o)[0].tokens);
  }
  return out;
}

// 16 sequences admitted at different steps (4 at once, then one more after every step) into an
// engine whose passes hold at most `n_batch` tokens, so prompts are prefilled in chunks beside
// the others' decode steps.
inline std::vector<GenerateResult> staggered(const std::shared_ptr<const Model>& model,
                                      const std::vector<std::vector<TokenId>>& prompts, int32_t max_tokens,
                                      uint32_t n_ctx, ComputeOptions compute, size_t* mixed_steps = nullptr) {
  compute.n_batch = 24;
  Engine engine(model, {.n_slots = 16, .n_ctx = n_ctx, .compute = compute});
  Scheduler scheduler(*internals(engine).engine, internals(*model).vocabulary());
  std::vector<GenerateResult> results(prompts.size());
  size_t submitted = 0;
  for (; submitted < 4; ++submitted) scheduler.submit(greedy_request(prompts[submitted], max_tokens, results, submitted));
  size_t steps = 0;
  while (scheduler.step()) {
    ++steps;
    if (submitted < prompts.size()) {
      scheduler.submit(greedy_request(prompts[submitted], max_tokens, results, submitted));
      ++submitted;
    }
  }
  if (mixed_steps != nullptr) *mixed_steps = steps;
  return results;
}

}  // namespace lathe::test::scheduler
