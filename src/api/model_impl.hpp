// What a lathe::Model holds: the placed weights, the tokenizer and the chat template.
#pragma once

#include <unordered_set>

#include "lathe/lathe.hpp"
#include "tokenizer/chat_template.hpp"
#include "tokenizer/tokenizer.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct Model::Impl {
  ModelWeights weights;
  tokenizer::Tokenizer tokenizer;
  ChatTemplateSource chat_template;
  std::unordered_set<TokenId> end_of_generation;
  ModelSummary summary;
};

}  // namespace lathe
