// Batched generation over many prompts on a long-lived Engine: every prompt is submitted to the
// runtime's scheduler, which admits them into the engine's slots, prefills new prompts in chunks
// beside the decode steps of the running ones, and frees a slot for the next prompt as soon as a
// sequence ends (continuous batching).
#include <algorithm>
#include <fmt/format.h>

#include "api/model_impl.hpp"

namespace lathe {
namespace {

// Every prompt non-empty, every id a token, every prompt + max_tokens within `n_ctx` (the checks
// name the prompt at fault).
void check_prompts(const std::vector<std::vector<TokenId>>& prompts, uint32_t n_vocab, int32_t max_tokens,
                   uint64_t n_ctx) {
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw InvalidArgumentError(fmt::format("prompt {} is empty: give at least one token", i));
    for (TokenId id : prompts[i])
      if (id < 0 || static_cast<uint32_t>(id) >= n_vocab)
        throw InvalidArgumentError(
            fmt::format("prompt {}: token id {} is outside the vocabulary (0..{})", i, id, n_vocab - 1));
    const uint64_t needed = prompts[i].size() + static_cast<uint64_t>(max_tokens);
    if (needed > n_ctx) throw ContextLengthError(needed, n_ctx);
  }
}

void check_generate_options(const GenerateOptions& options) {
  if (options.max_tokens < 0)
    throw InvalidArgumentError(fmt::format("the number of tokens to generate must be >= 0 (got {})", options.max_tokens));
  validate(options.sampling);
}

}  // namespace

std::vector<GenerateResult> generate_batch(Engine& engine, const std::vector<std::vector<TokenId>>& prompts,
                                           const GenerateOptions& options,
                                           const std::shared_ptr<ResidualHooks>& hooks, const BatchStopCheck& stop) {
  check_generate_options(options);
  const Model::Impl& model = internals(engine.model());
  if (hooks) hooks->validate(model.weights.hp.n_layer, model.weights.hp.n_embd);
  check_prompts(prompts, model.weights.hp.n_vocab, options.max_tokens, engine.options().n_ctx);

  runtime::Scheduler scheduler(*internals(engine).engine, model.vocabulary());
  std::vector<GenerateResult> results(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    runtime::SequenceRequest request;
    request.prompt = prompts[i];
    request.options = options;
    request.hooks = hooks;
    if (stop) request.stop_check = [&stop, i](std::string_view text) { return stop(i, text); };
    request.on_done = [&results, i](GenerateResult&& done) { results[i] = std::move(done); };
    scheduler.submit(std::move(request));
  }
  scheduler.run_until_idle();
  for (const GenerateResult& result : results)
    if (result.error) std::rethrow_exception(result.error);
  return results;
}

std::vector<GenerateResult> generate_batch(const std::shared_ptr<const Model>& model,
                                           const std::vector<std::vector<TokenId>>& prompts,
                                           const BatchGenerateOptions& options, const BatchStopCheck& stop) {
  if (!model) throw InvalidArgumentError("generate_batch needs a loaded model (got a null pointer)");
  const auto& gen = options.generate;
  check_generate_options(gen);
  if (options.n_parallel == 0 || options.n_parallel > 512)
    throw InvalidArgumentError(fmt::format("n_parallel (sequences decoded together: --parallel, --n-parallel) must be in 1..512 (got {})", options.n_parallel));
  validate(options.compute);
  const auto& hp = internals(*model).weights.hp;
  if (options.hooks) options.hooks->validate(hp.n_layer, hp.n_embd);
  if (prompts.empty()) return {};

  // Every slot gets a cache long enough for the longest prompt plus max_tokens.
  const uint64_t limit = hp.n_ctx_train != 0 ? hp.n_ctx_train : 1u << 22;
  check_prompts(prompts, hp.n_vocab, gen.max_tokens, limit);
  uint64_t longest = 1;
  for (const auto& prompt : prompts)
    longest = std::max<uint64_t>(longest, prompt.size() + static_cast<uint64_t>(gen.max_tokens));
  Engine engine(model, {.n_slots = static_cast<uint32_t>(std::min<size_t>(options.n_parallel, prompts.size())),
                        .n_ctx = static_cast<uint32_t>(longest),
                        .compute = options.compute});
  return generate_batch(engine, prompts, gen, options.hooks, stop);
}

}  // namespace lathe
