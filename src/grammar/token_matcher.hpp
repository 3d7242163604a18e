// Structured output per sequence: TokenMatcher is the TokenConstraint (sample/constraint.hpp) that
// keeps a sequence's text inside a compiled JsonGrammar. The model's tokens are organised once per
// model as a byte trie (TokenTable, shared by every sequence); mask() walks that trie depth-first
// with the grammar's byte recognizer, dropping a whole subtree as soon as its prefix is rejected.
//
// Construction for a sequence (see docs/STRUCTURED_OUTPUT.md):
//   auto table = grammar::TokenTable::build(bytes);        // once per model
//   auto grammar = grammar::JsonGrammar::from_schema(...);  // once per schema (cache it)
//   auto c = std::make_unique<grammar::TokenMatcher>(grammar, table, end_ids);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/byte_machine.hpp"
#include "grammar/json_schema.hpp"
#include "sample/constraint.hpp"

namespace lathe::grammar {

// Every token's bytes as a trie in depth-first order: node i's subtree is [i, skip). Built once per
// model; immutable; shared by every matcher of that model.
class TokenTable {
 public:
  struct TrieNode {
    uint8_t byte = 0;
    uint16_t depth = 0;      // 1 for a token's first byte
    uint32_t skip = 0;       // one past the last node of this node's subtree
    uint32_t tokens_begin = 0;  // tokens whose bytes end here: ends()[tokens_begin, tokens_end)
    uint32_t tokens_end = 0;
  };

  // token_bytes[id]: the bytes token `id` stands for (Tokenizer::token_bytes(id)); an empty string
  // for tokens that must never be generated inside the JSON text (control/special tokens,
  // end-of-generation tokens, unused ids). Tokens longer than 65535 bytes are never allowed.
  static std::shared_ptr<const TokenTable> build(std::vector<std::string> token_bytes);

  size_t size() const noexcept { return bytes_.size(); }
  const std::string& bytes(int32_t id) const { return bytes_.at(static_cast<size_t>(id)); }
  const std::vector<TrieNode>& nodes() const noexcept { return nodes_; }
  const std::vector<int32_t>& ends() const noexcept { return ends_; }
  uint16_t max_depth() const noexcept { return max_depth_; }

 private:
  std::vector<std::string> bytes_;
  std::vector<TrieNode> nodes_;
  std::vector<int32_t> ends_;
  uint16_t max_depth_ = 0;
};

// A grammar's byte-level recognizer with its own state: feed text, ask whether it is complete.
// For tests and for checking a text against a grammar.
class ByteMatcher {
 public:
  explicit ByteMatcher(std::shared_ptr<const JsonGrammar> grammar);
  // Feeds `bytes`; returns false (and leaves the state as it was) if the grammar rejects one.
  bool feed(std::string_view bytes);
  bool done_possible() const;  // the text so far is a complete value
  bool must_end();             // complete, and no byte may follow
  // Whether the whole of `text` is a complete value of `grammar`.
  static bool matches(std::shared_ptr<const JsonGrammar> grammar, std::string_view text);

 private:
  std::shared_ptr<const JsonGrammar> grammar_;
  detail::ByteMachine machine_;
  uint32_t top_;
};

class TokenMatcher final : public TokenConstraint {
 public:
  // `end_tokens`: the model's end-of-generation ids (allowed exactly when done_possible()).
  TokenMatcher(std::shared_ptr<const JsonGrammar> grammar, std::shared_ptr<const TokenTable> tokens,
               std::vector<int32_t> end_tokens);

  void mask(std::span<float> logits) override;
  void accept(int32_t token) override;
  bool done_possible() const override;
  bool must_end() const override;

  // The ids mask() would leave allowed, ascending (tests).
  std::vector<int32_t> allowed_tokens();
  // The bytes accepted so far.
  const std::string& text() const noexcept { return text_; }

 private:
  bool is_end_token(int32_t token) const;
  // Marks allowed_[id] for every token the grammar accepts next (end tokens included).
  void compute_allowed();

  std::shared_ptr<const JsonGrammar> grammar_;
  std::shared_ptr<const TokenTable> tokens_;
  std::vector<int32_t> end_tokens_;
  detail::ByteMachine machine_;
  uint32_t top_;
  bool ended_ = false;  // an end token was accepted
  bool must_end_ = false;
  std::string text_;
  std::vector<uint8_t> allowed_;
  std::vector<uint32_t> states_;  // per trie depth during the walk
  std::vector<size_t> marks_;
};

}  // namespace lathe::grammar
