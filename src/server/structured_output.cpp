#include "server/structured_output.hpp"

#include <fmt/format.h>

#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "api/model_impl.hpp"
#include "grammar/json_schema.hpp"
#include "grammar/token_matcher.hpp"
#include "server/api_error.hpp"

namespace lathe::server {
namespace {

constexpr size_t kCachedGrammars = 64;
constexpr const char* kSchemaField = "response_format.json_schema.schema";

// Every token's bytes, with control/special/unused tokens blanked (never generated inside JSON).
std::shared_ptr<const grammar::TokenTable> build_table(const Model& model) {
  const tokenizer::Tokenizer& tok = internals(model).tokenizer;
  const tokenizer::Vocabulary& vocab = tok.vocab();
  const size_t n = internals(model).n_samplable();
  std::vector<std::string> bytes(n);
  for (size_t id = 0; id < n; ++id) {
    const auto type = vocab.types[id];
    if (type == tokenizer::TokenType::Control || type == tokenizer::TokenType::Unknown ||
        type == tokenizer::TokenType::Unused)
      continue;
    bytes[id] = tok.token_bytes(static_cast<TokenId>(id));
  }
  for (const auto& added : vocab.added_tokens)
    if (added.special && static_cast<size_t>(added.id) < n) bytes[static_cast<size_t>(added.id)].clear();
  return grammar::TokenTable::build(std::move(bytes));
}

// Per model: its token table (built on first use); per schema text: its compiled grammar (the
// last kCachedGrammars used).
class Cache {
 public:
  // Keyed by the model's ownership, not its address: a model loaded where a freed one lived is
  // another key (and the freed model's table goes at the next insert).
  std::shared_ptr<const grammar::TokenTable> table(const std::shared_ptr<const Model>& model) {
    std::lock_guard lock(mutex_);
    std::erase_if(tables_, [](const auto& entry) { return entry.first.expired(); });
    auto& table = tables_[model];
    if (!table) table = build_table(*model);
    return table;
  }
  std::shared_ptr<const grammar::JsonGrammar> grammar(const nlohmann::ordered_json& schema) {
    const std::string key = schema.dump();
    {
      std::lock_guard lock(mutex_);
      if (auto it = grammars_.find(key); it != grammars_.end()) {
        order_.splice(order_.begin(), order_, it->second.second);
        return it->second.first;
      }
    }
    auto compiled = grammar::JsonGrammar::from_schema(schema, kSchemaField);  // outside the lock: may take a while
    std::lock_guard lock(mutex_);
    if (grammars_.count(key) == 0) {
      order_.push_front(key);
      grammars_[key] = {compiled, order_.begin()};
      if (grammars_.size() > kCachedGrammars) {
        grammars_.erase(order_.back());
        order_.pop_back();
      }
    }
    return compiled;
  }

 private:
  std::mutex mutex_;
  std::map<std::weak_ptr<const Model>, std::shared_ptr<const grammar::TokenTable>, std::owner_less<>> tables_;
  std::list<std::string> order_;  // most recently used first
  std::unordered_map<std::string, std::pair<std::shared_ptr<const grammar::JsonGrammar>, std::list<std::string>::iterator>>
      grammars_;
};

Cache& cache() {
  static Cache instance;
  return instance;
}

}  // namespace

std::shared_ptr<TokenConstraint> make_constraint(const std::shared_ptr<const Model>& model,
                                                 const CompletionRequest& request) {
  std::shared_ptr<const grammar::JsonGrammar> compiled;
  try {
    compiled = request.format == ResponseFormat::JsonObject ? grammar::JsonGrammar::any_object()
                                                            : cache().grammar(request.schema);
  } catch (const grammar::UnsupportedSchemaError& e) {
    throw ApiError(400, "invalid_request_error", e.what(), kSchemaField, "unsupported_schema");
  } catch (const InvalidArgumentError& e) {
    throw ApiError(400, "invalid_request_error", e.what(), kSchemaField, "invalid_schema");
  }
  const auto& eog = internals(*model).end_of_generation;
  std::vector<int32_t> end_ids(eog.begin(), eog.end());
  return std::make_shared<grammar::TokenMatcher>(compiled, cache().table(model), std::move(end_ids));
}

}  // namespace lathe::server
