// The token trie and the masking walk. Cost: one recognizer step per trie node visited; a rejected
// node skips its whole subtree, so states where few bytes may come (between object members, inside
// a number or a key) visit little more than the root's children, and a string body — where most
// tokens are allowed — visits about every node once (docs/STRUCTURED_OUTPUT.md has the numbers).
#include "grammar/token_matcher.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>

#include <fmt/format.h>

#include "lathe/error.hpp"

namespace lathe::grammar {

namespace {

constexpr size_t kMaxTokenBytes = std::numeric_limits<uint16_t>::max();

std::string printable(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7F && c != '\\') out += static_cast<char>(c);
    else out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

}  // namespace

// Sorted by bytes, tokens that share a prefix are neighbours: each token only adds the nodes past
// its common prefix with the previous one, and a node's subtree ends when the walk leaves it.
std::shared_ptr<const TokenTable> TokenTable::build(std::vector<std::string> token_bytes) {
  auto table = std::make_shared<TokenTable>();
  table->bytes_ = std::move(token_bytes);
  std::vector<int32_t> order;
  for (size_t id = 0; id < table->bytes_.size(); ++id)
    if (!table->bytes_[id].empty() && table->bytes_[id].size() <= kMaxTokenBytes) order.push_back(static_cast<int32_t>(id));
  const auto& bytes = table->bytes_;
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return bytes[a] < bytes[b]; });
  std::vector<uint32_t> open;  // nodes on the current path, by depth - 1
  std::string_view previous;
  auto close_to = [&](size_t depth) {
    while (open.size() > depth) {
      table->nodes_[open.back()].skip = static_cast<uint32_t>(table->nodes_.size());
      open.pop_back();
    }
  };
  for (int32_t id : order) {
    const std::string_view text = bytes[id];
    size_t common = 0;
    while (common < text.size() && common < previous.size() && text[common] == previous[common]) ++common;
    close_to(common);
    for (size_t i = common; i < text.size(); ++i) {
      TrieNode node;
      node.byte = static_cast<uint8_t>(text[i]);
      node.depth = static_cast<uint16_t>(i + 1);
      open.push_back(static_cast<uint32_t>(table->nodes_.size()));
      table->nodes_.push_back(node);
    }
    TrieNode& end = table->nodes_[open.back()];
    if (end.tokens_begin == end.tokens_end) end.tokens_begin = static_cast<uint32_t>(table->ends_.size());
    table->ends_.push_back(id);
    end.tokens_end = static_cast<uint32_t>(table->ends_.size());
    table->max_depth_ = std::max<uint16_t>(table->max_depth_, static_cast<uint16_t>(text.size()));
    previous = text;
  }
  close_to(0);
  return table;
}

// --- ByteMatcher --------------------------------------------------------------------------------

ByteMatcher::ByteMatcher(std::shared_ptr<const JsonGrammar> grammar)
    : grammar_(std::move(grammar)), machine_(grammar_->program()), top_(machine_.start()) {}

bool ByteMatcher::feed(std::string_view bytes) {
  const size_t mark = machine_.mark();
  uint32_t top = top_;
  for (unsigned char c : bytes) {
    top = machine_.step(top, c);
    if (top == detail::kReject) {
      machine_.rewind(mark);
      return false;
    }
  }
  top_ = machine_.compact(top);
  return true;
}

bool ByteMatcher::done_possible() const { return machine_.complete(top_); }

bool ByteMatcher::must_end() { return machine_.finished(top_); }

bool ByteMatcher::matches(std::shared_ptr<const JsonGrammar> grammar, std::string_view text) {
  ByteMatcher m(std::move(grammar));
  return m.feed(text) && m.done_possible();
}

// --- TokenMatcher -------------------------------------------------------------------------------

TokenMatcher::TokenMatcher(std::shared_ptr<const JsonGrammar> grammar, std::shared_ptr<const TokenTable> tokens,
                           std::vector<int32_t> end_tokens)
    : grammar_(std::move(grammar)),
      tokens_(std::move(tokens)),
      end_tokens_(std::move(end_tokens)),
      machine_(grammar_->program()),
      top_(machine_.start()) {
  for (int32_t id : end_tokens_)
    if (id < 0 || static_cast<size_t>(id) >= tokens_->size())
      throw InvalidArgumentError(fmt::format(
          "structured output: end-of-generation token id {} is outside the token table ({} tokens); pass the "
          "model's end-of-generation ids",
          id, tokens_->size()));
  allowed_.assign(tokens_->size(), 0);
  states_.assign(static_cast<size_t>(tokens_->max_depth()) + 1, 0);
  marks_.assign(static_cast<size_t>(tokens_->max_depth()) + 1, 0);
}

bool TokenMatcher::is_end_token(int32_t token) const {
  return std::find(end_tokens_.begin(), end_tokens_.end(), token) != end_tokens_.end();
}

void TokenMatcher::compute_allowed() {
  std::fill(allowed_.begin(), allowed_.end(), uint8_t{0});
  if (ended_) return;
  const auto& nodes = tokens_->nodes();
  const auto& ends = tokens_->ends();
  const size_t base = machine_.mark();
  states_[0] = top_;
  marks_[0] = base;
  for (size_t i = 0; i < nodes.size();) {
    const TokenTable::TrieNode& node = nodes[i];
    machine_.rewind(marks_[node.depth - 1]);
    const uint32_t next = machine_.step(states_[node.depth - 1], node.byte);
    if (next == detail::kReject) {
      i = node.skip;
      continue;
    }
    states_[node.depth] = next;
    marks_[node.depth] = machine_.mark();
    for (uint32_t t = node.tokens_begin; t < node.tokens_end; ++t) allowed_[static_cast<size_t>(ends[t])] = 1;
    ++i;
  }
  machine_.rewind(base);
  if (machine_.complete(top_))
    for (int32_t id : end_tokens_) allowed_[static_cast<size_t>(id)] = 1;
}

void TokenMatcher::mask(std::span<float> logits) {
  compute_allowed();
  const size_t known = std::min(logits.size(), allowed_.size());
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  for (size_t id = 0; id < known; ++id)
    if (!allowed_[id]) logits[id] = kMasked;
  // Ids past the token table (padded embedding rows) are never text.
  for (size_t id = known; id < logits.size(); ++id) logits[id] = kMasked;
}

std::vector<int32_t> TokenMatcher::allowed_tokens() {
  compute_allowed();
  std::vector<int32_t> out;
  for (size_t id = 0; id < allowed_.size(); ++id)
    if (allowed_[id]) out.push_back(static_cast<int32_t>(id));
  return out;
}

void TokenMatcher::accept(int32_t token) {
  if (token < 0 || static_cast<size_t>(token) >= tokens_->size())
    throw InternalError(fmt::format("structured output: token id {} is outside the token table ({} tokens)", token,
                                    tokens_->size()));
  if (ended_)
    throw InternalError(fmt::format("structured output: token {} came after an end-of-generation token", token));
  if (is_end_token(token)) {
    if (!done_possible())
      throw InternalError(fmt::format("structured output: end-of-generation token {} came before the JSON text "
                                      "was complete (text so far: '{}')",
                                      token, printable(text_)));
    ended_ = true;
    must_end_ = true;
    return;
  }
  const std::string& bytes = tokens_->bytes(token);
  const size_t mark = machine_.mark();
  uint32_t top = top_;
  for (unsigned char c : bytes) {
    top = machine_.step(top, c);
    if (top == detail::kReject) break;
  }
  if (bytes.empty() || top == detail::kReject) {
    machine_.rewind(mark);
    throw InternalError(fmt::format("structured output: token {} ('{}') is not allowed after '{}'; the mask forbade it",
                                    token, printable(bytes), printable(text_)));
  }
  top_ = machine_.compact(top);
  text_ += bytes;
  must_end_ = machine_.finished(top_);
}

bool TokenMatcher::done_possible() const { return machine_.complete(top_); }

bool TokenMatcher::must_end() const { return must_end_; }

}  // namespace lathe::grammar
