// What a lathe::Model holds: the placed weights, the tokenizer and the chat template.
#pragma once

#include <algorithm>
#include <span>
#include <unordered_set>

#include "lathe/lathe.hpp"
#include "runtime/engine.hpp"
#include "runtime/scheduler.hpp"
#include "chat/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct Model::Impl {
  ModelWeights weights;
  tokenizer::Tokenizer tokenizer;
  ChatTemplateSource chat_template;
  std::unordered_set<TokenId> end_of_generation;
  ModelSummary summary;

  // The logits a sampler may choose from: embedding matrices are often padded past the
  // tokenizer's last id (Qwen2.5: 151,936 rows for 151,665 tokens); those rows are not tokens.
  std::span<const float> samplable(std::span<const float> logits) const {
    return logits.first(std::min(logits.size(), tokenizer.vocab().size()));
  }
  // How many of a logit row's entries samplable() keeps.
  uint32_t n_samplable() const {
    return static_cast<uint32_t>(std::min<size_t>(weights.hp.n_vocab, tokenizer.vocab().size()));
  }
  // What the runtime's scheduler needs of the vocabulary.
  runtime::Vocabulary vocabulary() const { return {&tokenizer, &end_of_generation, n_samplable()}; }
};

// The context a session or engine gets when none is asked for: the training context, at most 4096.
uint32_t default_context(const Model& model, uint32_t requested);

// An engine's memory as the public API reports it.
inline MemoryUse public_memory_use(const runtime::EngineMemory& m) {
  return {.device = m.device,
          .weights = m.weights,
          .kv = m.kv,
          .scratch = m.scratch,
          .free = m.free,
          .total = m.total,
          .streamed_layers = m.streamed_layers,
          .n_layers = m.n_layers,
          .slots = m.slots,
          .slot_bytes = m.slot_bytes,
          .pinned_host = m.pinned_host,
          .min_budget = m.min_budget,
          .pinning_seconds = m.pinning_seconds};
}

struct Session::Impl {
  std::shared_ptr<const Model> model;
  SessionOptions options;
  std::unique_ptr<runtime::Engine> engine;  // one slot: the session's
  uint32_t slot = 0;
  uint64_t kv_bytes = 0;
  std::vector<TokenId> tokens;
  std::shared_ptr<ResidualHooks> hooks;
  Batch batch;
  std::vector<float> all_logits;  // [n_rows x n_vocab] from the last eval(all_logits)
  size_t n_logit_rows = 0;
  bool rows_in_engine = false;    // the last pass left this session's one row as the engine's row 0
};

struct Engine::Impl {
  std::shared_ptr<const Model> model;
  EngineOptions options;
  std::unique_ptr<runtime::Engine> engine;
};

// The inside of the public objects, for lathe's rooms (api/ and the rooms above it: edit/, cli/)
// and its tests; not part of the public API.
struct Internals {
  static const Model::Impl& of(const Model& m) noexcept { return *m.impl_; }
  static Model::Impl& of(Model& m) noexcept { return *m.impl_; }
  static Engine::Impl& of(Engine& e) noexcept { return *e.impl_; }
};
inline const Model::Impl& internals(const Model& m) noexcept { return Internals::of(m); }
inline Model::Impl& internals(Model& m) noexcept { return Internals::of(m); }
inline Engine::Impl& internals(Engine& e) noexcept { return Internals::of(e); }

}  // namespace lathe
