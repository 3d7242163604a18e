// Batched generation over many prompts (continuous batching): each sequence has its own KV cache
// slot; prompts are prefilled one at a time, then every active sequence advances by one token in
// a single forward pass, so the weight matrices are read once per step for all of them.
#include <algorithm>
#include <chrono>
#include <fmt/format.h>
#include <optional>

#include "api/model_impl.hpp"
#include "runtime/engine.hpp"

namespace lathe {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct Slot {
  uint32_t id = 0;                  // the engine's slot (its KV cache)
  bool active = false;
  size_t index = 0;                 // prompt index
  uint32_t n_past = 0;              // tokens in the cache
  std::vector<TokenId> history;     // prompt + generated (for the penalties)
  std::optional<Sampler> sampler;
  std::optional<tokenizer::StreamDecoder> decoder;
  TokenId next = 0;                 // sampled, not yet evaluated
  Clock::time_point started;
};

class BatchGenerator {
 public:
  BatchGenerator(const Model& model, const std::vector<std::vector<TokenId>>& prompts, const BatchGenerateOptions& o,
                 const BatchStopCheck& stop, uint32_t n_ctx)
      : model_(model),
        weights_(model.impl().weights),
        prompts_(prompts),
        options_(o),
        stop_(stop),
        slots_(std::min<size_t>(o.n_parallel, prompts.size())),
        engine_(make_engine(weights_, {.cuda_device = o.device.is_cuda() ? o.device.index : -1,
                                       .n_slots = static_cast<uint32_t>(slots_.size()),
                                       .n_ctx = n_ctx,
                                       .max_batch = std::max<uint32_t>(std::min<uint32_t>(512, n_ctx), o.n_parallel),
                                       .n_threads = o.n_threads,
                                       .kv_format = kv_format(o.kv_type)})),
        results_(prompts.size()),
        argmax_only_(picks_argmax(o.generate.sampling)) {
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].id = static_cast<uint32_t>(i);
    engine_->set_hooks(o.hooks.get());
  }

  std::vector<GenerateResult> run() {
    size_t next_prompt = 0;
    for (;;) {
      for (auto& slot : slots_) {
        while (!slot.active && next_prompt < prompts_.size()) start(slot, next_prompt++);
      }
      if (std::none_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.active; })) break;
      decode_step();
    }
    return std::move(results_);
  }

 private:
  std::span<const float> logits_row(size_t row) const {
    return {engine_->logits() + row * weights_.hp.n_vocab, weights_.hp.n_vocab};
  }

  // Prefills prompt `index` into `slot` and samples its first token.
  void start(Slot& slot, size_t index) {
    const auto& prompt = prompts_[index];
    slot.index = index;
    slot.n_past = 0;
    slot.history = prompt;
    slot.sampler.emplace(options_.generate.sampling);
    slot.decoder.emplace(model_.impl().tokenizer);
    const auto t0 = Clock::now();
    const std::span<const TokenId> tokens(prompt);
    for (size_t begin = 0; begin < tokens.size(); begin += engine_->max_batch()) {
      const size_t n = std::min<size_t>(engine_->max_batch(), tokens.size() - begin);
      engine_->run(slot.id, tokens.subspan(begin, n), slot.n_past, false, begin + n == tokens.size());
      slot.n_past += static_cast<uint32_t>(n);
    }
    auto& result = results_[index];
    result.n_prompt = static_cast<uint32_t>(prompt.size());
    slot.started = Clock::now();
    result.prompt_seconds = seconds_between(t0, slot.started);
    slot.active = true;
    accept(slot, 0, greedy_ids(1)[0]);
  }

  // Greedy without penalties: the argmax of each of the engine's first n_rows rows, computed
  // where the logits are (on a GPU only the ids come back); otherwise -1s (sample on the host).
  std::span<const TokenId> greedy_ids(size_t n_rows) {
    greedy_.assign(n_rows, -1);
    if (argmax_only_) engine_->argmax(static_cast<uint32_t>(n_rows), model_.impl().n_samplable(), greedy_.data());
    return greedy_;
  }

  // Takes the slot's next token: `argmax` when there is one, else drawn by the slot's sampler from
  // row `row` of the engine's logits (which also names the problem when every logit is NaN or
  // -inf); finishes the slot when generation ends.
  void accept(Slot& slot, size_t row, TokenId argmax) {
    auto& result = results_[slot.index];
    const auto& gen = options_.generate;
    if (static_cast<int32_t>(result.tokens.size()) >= gen.max_tokens) return finish(slot, StopReason::MaxTokens);
    const TokenId token =
        argmax >= 0 ? argmax : slot.sampler->sample(model_.impl().samplable(logits_row(row)), slot.history);
    if (gen.stop_at_end_of_generation && model_.is_end_of_generation(token))
      return finish(slot, StopReason::EndOfGeneration);
    result.tokens.push_back(token);
    slot.history.push_back(token);
    result.text += slot.decoder->push(token);
    if (stop_ && stop_(slot.index, result.text)) return finish(slot, StopReason::Callback);
    if (static_cast<int32_t>(result.tokens.size()) >= gen.max_tokens) return finish(slot, StopReason::MaxTokens);
    slot.next = token;
  }

  void finish(Slot& slot, StopReason reason) {
    auto& result = results_[slot.index];
    result.text += slot.decoder->finish();
    result.stop = reason;
    result.generate_seconds = seconds_between(slot.started, Clock::now());
    slot.active = false;
  }

  // One forward pass over the pending token of every active slot.
  void decode_step() {
    tokens_.clear();
    positions_.clear();
    slot_ids_.clear();
    active_.clear();
    for (auto& slot : slots_) {
      if (!slot.active) continue;
      tokens_.push_back(slot.next);
      positions_.push_back(slot.n_past);
      slot_ids_.push_back(slot.id);
      active_.push_back(&slot);
    }
    engine_->run_batch(tokens_, slot_ids_, positions_);
    const auto argmax = greedy_ids(active_.size());
    for (size_t row = 0; row < active_.size(); ++row) {
      active_[row]->n_past += 1;
      accept(*active_[row], row, argmax[row]);
    }
  }

  const Model& model_;
  const ModelWeights& weights_;
  const std::vector<std::vector<TokenId>>& prompts_;
  const BatchGenerateOptions& options_;
  const BatchStopCheck& stop_;
  std::vector<Slot> slots_;
  std::unique_ptr<Engine> engine_;
  std::vector<GenerateResult> results_;
  std::vector<TokenId> tokens_;
  std::vector<uint32_t> positions_;
  std::vector<uint32_t> slot_ids_;
  std::vector<Slot*> active_;
  const bool argmax_only_;       // greedy without penalties: picks_argmax
  std::vector<TokenId> greedy_;  // the last greedy_ids()
};

}  // namespace

std::vector<GenerateResult> generate_batch(const std::shared_ptr<const Model>& model,
                                           const std::vector<std::vector<TokenId>>& prompts,
                                           const BatchGenerateOptions& options, const BatchStopCheck& stop) {
  if (!model) throw InvalidArgumentError("generate_batch needs a loaded model (got a null pointer)");
  const auto& gen = options.generate;
  if (gen.max_tokens < 0)
    throw InvalidArgumentError(fmt::format("the number of tokens to generate must be >= 0 (got {})", gen.max_tokens));
  if (options.n_parallel == 0 || options.n_parallel > 512)
    throw InvalidArgumentError(fmt::format("n_parallel must be in 1..512 (got {})", options.n_parallel));
  if (options.n_threads < 0) throw InvalidArgumentError(fmt::format("threads must be >= 0 (got {})", options.n_threads));
  validate(gen.sampling);
  const auto& hp = model->impl().weights.hp;
  if (options.hooks) options.hooks->validate(hp.n_layer, hp.n_embd);
  if (prompts.empty()) return {};

  // Every slot gets a cache long enough for the longest prompt plus max_tokens.
  uint64_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw InvalidArgumentError(fmt::format("prompt {} is empty: give at least one token", i));
    for (TokenId id : prompts[i])
      if (id < 0 || static_cast<uint32_t>(id) >= hp.n_vocab)
        throw InvalidArgumentError(fmt::format("prompt {}: token id {} is outside the vocabulary (0..{})", i, id,
                                               hp.n_vocab - 1));
    longest = std::max<uint64_t>(longest, prompts[i].size() + static_cast<uint64_t>(gen.max_tokens));
  }
  const uint64_t limit = hp.n_ctx_train != 0 ? hp.n_ctx_train : 1u << 22;
  if (longest > limit) throw ContextLengthError(longest, limit);
  BatchGenerator generator(*model, prompts, options, stop, static_cast<uint32_t>(std::max<uint64_t>(longest, 1)));
  return generator.run();
}

}  // namespace lathe
