// What a lathe::Model holds: the placed weights, the tokenizer and the chat template.
#pragma once

#include <algorithm>
#include <span>
#include <unordered_set>

#include "core/kv_format.hpp"
#include "lathe/lathe.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

// The engines' name for a public KV cache type.
constexpr KvFormat kv_format(KvType type) noexcept {
  return type == KvType::F32 ? KvFormat::F32 : type == KvType::Q8_0 ? KvFormat::Q8_0 : KvFormat::F16;
}

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
};

}  // namespace lathe
