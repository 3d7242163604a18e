// Ranked-merge BPE, the same algorithm as HF tokenizers' Word::merge_all: repeatedly apply the
// lowest-ranked merge among adjacent symbol pairs, the leftmost one on ties, using a min-heap of
// candidate pairs over a doubly linked list of symbols (O(n log n) per word).
#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <queue>

#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"

namespace lathe::tokenizer {

namespace {
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 18;

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
}  // namespace

BpeModel::BpeModel(const Vocabulary& vocab, BpeOptions options, const std::string& source)
    : vocab_(&vocab), options_(options) {
  if (options_.merge_by_score) add_score_merges(vocab);
  else add_ranked_merges(vocab, source);
  const ByteLevelMap& map = byte_level_map();
  for (int b = 0; b < 256; ++b) {
    byte_level_ids_[b] = vocab.find(map.byte_to_text[b]).value_or(-1);
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_fallback_ids_[b] = vocab.find(name).value_or(-1);
  }
}

void BpeModel::add_ranked_merges(const Vocabulary& vocab, const std::string& source) {
  merges_.reserve(vocab.merges.size() * 2);
  for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
    const auto& [left, right] = vocab.merges[rank];
    const auto left_id = vocab.find(left), right_id = vocab.find(right), merged_id = vocab.find(left + right);
    if (!left_id || !right_id || !merged_id)
      throw FormatError(source, "merges[" + std::to_string(rank) + "]", 0,
                        "merge \"" + left + " " + right + "\" uses or makes a token that is not in the vocabulary",
                        "check that the merges belong to this vocabulary");
    // A later duplicate of a merge keeps the first (better) rank, as HF does.
    merges_.try_emplace(pair_key(*left_id, *right_id), MergeTarget{static_cast<int32_t>(rank), *merged_id});
  }
}

namespace {
std::vector<int32_t> score_ranks(const Vocabulary& vocab) {
  // Dense rank of each token's score, best (highest) first: equal scores share a rank, so that
  // the heap's position tie-break makes equal-score pairs go leftmost first. Missing or NaN
  // scores count as the lowest.
  const size_t n = vocab.size();
  auto score_of = [&](size_t id) {
    const float s = id < vocab.scores.size() ? vocab.scores[id] : 0.0f;
    return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
  };
  std::vector<float> distinct;
  distinct.reserve(n);
  for (size_t id = 0; id < n; ++id) distinct.push_back(score_of(id));
  std::sort(distinct.begin(), distinct.end(), std::greater<>());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  std::vector<int32_t> ranks(n);
  for (size_t id = 0; id < n; ++id) {
    const auto it = std::lower_bound(distinct.begin(), distinct.end(), score_of(id), std::greater<>());
    ranks[id] = static_cast<int32_t>(it - distinct.begin());
  }
  return ranks;
}
}  // namespace

void BpeModel::add_score_merges(const Vocabulary& vocab) {
  const std::vector<int32_t> ranks = score_ranks(vocab);
  for (size_t id = 0; id < vocab.size(); ++id) {
    // Control, unknown, byte and unused tokens are never the result of a merge (sentencepiece
    // merges normal pieces only; HF's converted tokenizer.json has no merge making them).
    const TokenType type = vocab.types[id];
    if (type != TokenType::Normal && type != TokenType::UserDefined) continue;
    // Splits at character boundaries only: the symbols being merged are whole characters.
    for_each_two_token_split(vocab, id, [&](TokenId left, TokenId right) {
      merges_.try_emplace(pair_key(left, right), MergeTarget{ranks[id], static_cast<TokenId>(id)});
    });
  }
}

void BpeModel::initial_symbols(std::string_view word, bool byte_level, std::vector<TokenId>& symbols) const {
  bool last_was_unk = false;
  auto push_unknown = [&]() {
    if (!vocab_->unk) return;  // no unk token: the character is dropped (HF behaviour)
    if (options_.fuse_unk && last_was_unk) return;
    symbols.push_back(*vocab_->unk);
    last_was_unk = true;
  };
  if (byte_level) {
    for (char c : word) {
      const TokenId id = byte_level_ids_[static_cast<uint8_t>(c)];
      if (id >= 0) {
        symbols.push_back(id);
        last_was_unk = false;
      } else {
        push_unknown();
      }
    }
    return;
  }
  size_t pos = 0;
  while (pos < word.size()) {
    size_t len = utf8_sequence_length(word, pos);
    if (len == 0) len = 1;  // unreachable: encode() hands over valid UTF-8
    const std::string_view ch = word.substr(pos, len);
    pos += len;
    if (auto id = vocab_->find(ch)) {
      symbols.push_back(*id);
      last_was_unk = false;
      continue;
    }
    if (options_.byte_fallback &&
        std::all_of(ch.begin(), ch.end(), [&](char b) { return byte_fallback_ids_[static_cast<uint8_t>(b)] >= 0; })) {
      for (char b : ch) symbols.push_back(byte_fallback_ids_[static_cast<uint8_t>(b)]);
      last_was_unk = false;
      continue;
    }
    push_unknown();
  }
}

void BpeModel::merge_symbols(std::vector<TokenId>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  struct Candidate {
    int32_t rank;
    uint32_t pos;
    TokenId left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<int32_t> prev, next;
  thread_local std::vector<Candidate> heap_storage;
  prev.resize(n);
  next.resize(n);
  heap_storage.clear();
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>{}, std::move(heap_storage));
  auto consider = [&](uint32_t pos) {
    const int32_t right = next[pos];
    if (right < 0) return;
    auto it = merges_.find(pair_key(symbols[pos], symbols[static_cast<size_t>(right)]));
    if (it != merges_.end())
      heap.push({it->second.rank, pos, symbols[pos], symbols[static_cast<size_t>(right)], it->second.id});
  };
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  for (uint32_t i = 0; i + 1 < n; ++i) consider(i);
  constexpr TokenId kDead = -1;
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    const int32_t right = next[top.pos];
    // Stale candidate: one of the two symbols changed since it was queued.
    if (symbols[top.pos] != top.left || right < 0 || symbols[static_cast<size_t>(right)] != top.right) continue;
    symbols[top.pos] = top.merged;
    symbols[static_cast<size_t>(right)] = kDead;
    const int32_t after = next[static_cast<size_t>(right)];
    next[top.pos] = after;
    if (after >= 0) prev[static_cast<size_t>(after)] = static_cast<int32_t>(top.pos);
    if (prev[top.pos] >= 0) consider(static_cast<uint32_t>(prev[top.pos]));
    consider(top.pos);
  }
  symbols.erase(std::remove(symbols.begin(), symbols.end(), kDead), symbols.end());
}

void BpeModel::encode_word(std::string_view word, bool byte_level, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<TokenId> symbols;
  std::optional<TokenId> whole;
  if (options_.ignore_merges) {
    if (byte_level) {
      std::string mapped;
      const ByteLevelMap& map = byte_level_map();
      for (char c : word) mapped += map.byte_to_text[static_cast<uint8_t>(c)];
      whole = vocab_->find(mapped);
    } else {
      whole = vocab_->find(word);
    }
  }
  if (whole) {
    symbols.push_back(*whole);
  } else {
    symbols.reserve(word.size());
    initial_symbols(word, byte_level, symbols);
    merge_symbols(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();  // bound memory on adversarial input
    cache_.emplace(std::string(word), std::move(symbols));
  }
}

}  // namespace lathe::tokenizer
