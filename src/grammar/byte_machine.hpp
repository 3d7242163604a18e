// The byte-level recognizer of a compiled grammar: a pushdown automaton whose stack is a
// persistent linked list of frames in an arena. A state is one index (the top entry); a step never
// changes an existing entry, it appends new ones, so going back to an earlier state — which the
// token trie walk does at every node — is keeping the earlier index and truncating the arena.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "grammar/grammar_nodes.hpp"

namespace lathe::grammar::detail {

enum class FrameKind : uint8_t { Space, Pending, Object, Array, String, Number, Literal };

// One open value (or a whitespace run). 32 bytes; the meaning of a/b/x/y depends on the kind
// (byte_machine.cpp documents each).
struct Frame {
  uint32_t node = 0;
  FrameKind kind = FrameKind::Space;
  uint8_t phase = 0;
  uint8_t depth = 0;  // objects/arrays open around this value
  uint8_t flags = 0;
  uint32_t a = 0;
  uint32_t b = 0;
  uint64_t x = 0;
  uint64_t y = 0;
};

struct Entry {
  Frame frame;
  uint32_t parent = 0;
};

inline constexpr uint32_t kEmptyStack = std::numeric_limits<uint32_t>::max();  // the value is finished
inline constexpr uint32_t kReject = std::numeric_limits<uint32_t>::max() - 1;  // the byte may not come

class ByteMachine {
 public:
  explicit ByteMachine(const Program& program);

  // The state before any byte: leading whitespace, then the root value.
  uint32_t start();
  // The state after `byte`, or kReject. Appends to the arena; `top` stays valid.
  uint32_t step(uint32_t top, uint8_t byte);
  // The text so far is a complete value (every open frame may end here).
  bool complete(uint32_t top) const;
  // Complete and no byte may follow.
  bool finished(uint32_t top);

  size_t mark() const noexcept { return arena_.size(); }
  void rewind(size_t mark) { arena_.resize(mark); }
  // Drops every entry but the stack of `top`; returns its new index.
  uint32_t compact(uint32_t top);
  // Frames on the stack of `top`, bottom first (tests, debugging).
  std::vector<Frame> frames(uint32_t top) const;

 private:
  uint32_t alloc(const Frame& frame, uint32_t parent);
  uint32_t consume(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_space(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_pending(uint32_t parent, const Frame& f, uint8_t byte);
  uint32_t consume_object(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_key(uint32_t parent, Frame f, uint8_t byte);
  uint32_t start_key(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_array(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_string(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_utf8_lead(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_number(uint32_t parent, Frame f, uint8_t byte);
  uint32_t consume_literal(uint32_t parent, Frame f, uint8_t byte);
  // Pushes [space, pending value, space] above `below` (after ',' or ':').
  uint32_t push_value(uint32_t below, uint32_t node, uint8_t depth);
  bool frame_complete(const Frame& f) const;
  bool property_fits(const Node& object, uint32_t k, uint8_t depth) const;
  bool number_feasible(const Node& n, const Frame& f) const;
  bool number_in_range(const Node& n, const Frame& f) const;

  const Program& p_;
  std::vector<Entry> arena_;
};

}  // namespace lathe::grammar::detail
