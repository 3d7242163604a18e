// What one forward pass evaluates: a list of entries (token, sequence slot, position, flags) in
// any mix — prefill chunks of some sequences, single decode tokens of others. Each entry writes
// its K/V row at `position` of its slot's cache and attends over rows 0..position of that cache,
// so the rows before an entry's position must already hold that sequence's earlier tokens (from an
// earlier pass or from an earlier entry of this one). Logits are kept only for the entries that
// ask for them, one row each, in batch order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

namespace lathe {

class Batch {
 public:
  // Entry flags.
  static constexpr uint8_t kLogits = 1;    // keep this entry's logits
  static constexpr uint8_t kEndsInput = 2;  // last token of its sequence's input for this call
                                            // (hooks capturing the "last" row read this one)

  void add(int32_t token, uint32_t slot, uint32_t position, uint8_t flags) {
    tokens_.push_back(token);
    slots_.push_back(slot);
    positions_.push_back(position);
    flags_.push_back(flags);
    if (flags & kLogits) ++n_logits_;
  }
  // Tokens of one sequence at consecutive positions from first_pos; logits for every token
  // (all_logits) or only the last (want_last), whose entry also ends the input when ends_input.
  void add_chunk(uint32_t slot, std::span<const int32_t> tokens, uint32_t first_pos, bool all_logits,
                 bool want_last, bool ends_input) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool last = i + 1 == tokens.size();
      const uint8_t flags = static_cast<uint8_t>(((all_logits || (last && want_last)) ? kLogits : 0) |
                                                 (last && ends_input ? kEndsInput : 0));
      add(tokens[i], slot, first_pos + static_cast<uint32_t>(i), flags);
    }
  }
  void clear() {
    tokens_.clear();
    slots_.clear();
    positions_.clear();
    flags_.clear();
    n_logits_ = 0;
  }

  size_t size() const noexcept { return tokens_.size(); }
  bool empty() const noexcept { return tokens_.empty(); }
  // Rows of logits the pass leaves (entries with kLogits).
  uint32_t n_logits() const noexcept { return n_logits_; }
  bool wants_logits(size_t i) const noexcept { return (flags_[i] & kLogits) != 0; }
  bool ends_input(size_t i) const noexcept { return (flags_[i] & kEndsInput) != 0; }

  std::span<const int32_t> tokens() const noexcept { return tokens_; }
  std::span<const uint32_t> slots() const noexcept { return slots_; }
  std::span<const uint32_t> positions() const noexcept { return positions_; }

  // A run of entries of one slot at consecutive positions (a prefill chunk, or one decode token).
  struct Run {
    size_t begin = 0, size = 0;
    uint32_t slot = 0, first_pos = 0;
  };
  // The batch split into maximal runs, in order.
  std::vector<Run> runs() const {
    std::vector<Run> out;
    for (size_t i = 0; i < size(); ++i) {
      if (!out.empty()) {
        Run& r = out.back();
        if (slots_[i] == r.slot && positions_[i] == r.first_pos + r.size) {
          ++r.size;
          continue;
        }
      }
      out.push_back({i, 1, slots_[i], positions_[i]});
    }
    return out;
  }
  // Whether every entry belongs to a different slot (a pure decode step).
  bool one_token_per_slot() const {
    std::vector<uint32_t> seen(slots_.begin(), slots_.end());
    std::sort(seen.begin(), seen.end());
    return std::adjacent_find(seen.begin(), seen.end()) == seen.end();
  }

 private:
  std::vector<int32_t> tokens_;
  std::vector<uint32_t> slots_;
  std::vector<uint32_t> positions_;
  std::vector<uint8_t> flags_;
  uint32_t n_logits_ = 0;
};

}  // namespace lathe
