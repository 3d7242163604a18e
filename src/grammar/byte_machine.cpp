// The recognizer's transitions. A byte goes to the top frame; a frame that cannot take it but may
// end here (a finished number, a whitespace run) is popped and the byte goes to the frame below.
// Frames that can take nothing more (a closed string, object, array, a literal with no longer
// alternative) pop at once, so an empty stack means "the value is finished".
//
// Frame fields per kind:
//   Space   phase bit 0: '\n' seen; a: spaces so far
//   Pending node: the value to start (an AnyOf is resolved by the first byte)
//   Object  phase: ObjectPhase; x: first property index still allowed; a: key candidate;
//           b: key bytes matched
//   Array   phase: ArrayPhase; x: items so far
//   String  phase: StringPhase; x: characters so far; a: \u value or UTF-8 bounds (lo | hi << 8);
//           b: hex digits or continuation bytes left
//   Number  phase: NumberPhase; flags bit 0: minus, bit 1: '.'; x: integer part; y: fraction;
//           a: integer digits; b: fraction (or exponent) digits
//   Literal a: node of the literal trie
#include "grammar/byte_machine.hpp"

#include <algorithm>

#include "lathe/error.hpp"

namespace lathe::grammar::detail {

namespace {

enum ObjectPhase : uint8_t { kObjOpen, kObjFirst, kObjKey, kObjColon, kObjAfterValue, kObjNext };
enum ArrayPhase : uint8_t { kArrOpen, kArrFirst, kArrAfterItem };
enum StringPhase : uint8_t { kStrOpen, kStrBody, kStrEscape, kStrHex, kStrLowSlash, kStrLowU, kStrLowHex, kStrUtf8 };
enum NumberPhase : uint8_t { kNumStart, kNumMinus, kNumInt, kNumDot, kNumFrac, kNumE, kNumESign, kNumEDigits };

constexpr uint8_t kMinus = 1;
constexpr uint8_t kDot = 2;

constexpr Int128 pow10(uint32_t n) {
  Int128 v = 1;
  for (uint32_t i = 0; i < n; ++i) v *= 10;
  return v;
}

const Int128* pow10_table() {
  static const auto table = [] {
    std::vector<Int128> t(kMaxIntDigits + kMaxFracDigits + 1);  // 10^32 is the largest used
    for (uint32_t i = 0; i < t.size(); ++i) t[i] = pow10(i);
    return t;
  }();
  return table.data();
}

int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

bool fits(uint32_t depth, uint32_t min_depth) { return min_depth != kNoDepth && depth + min_depth <= kMaxNesting; }

Frame make_frame(FrameKind kind, uint32_t node, uint8_t depth) {
  Frame f;
  f.kind = kind;
  f.node = node;
  f.depth = depth;
  return f;
}

}  // namespace

ByteMachine::ByteMachine(const Program& program) : p_(program) { arena_.reserve(1024); }

uint32_t ByteMachine::alloc(const Frame& frame, uint32_t parent) {
  arena_.push_back(Entry{frame, parent});
  return static_cast<uint32_t>(arena_.size() - 1);
}

uint32_t ByteMachine::start() {
  const uint32_t value = alloc(make_frame(FrameKind::Pending, p_.root, 0), kEmptyStack);
  return alloc(make_frame(FrameKind::Space, 0, 0), value);
}

uint32_t ByteMachine::step(uint32_t top, uint8_t byte) {
  while (top != kEmptyStack) {
    const Entry e = arena_[top];
    const uint32_t next = consume(e.parent, e.frame, byte);
    if (next != kReject) return next;
    if (!frame_complete(e.frame)) return kReject;
    // The frame ends here: the byte belongs to the frame below. A frame that rejects a byte it
    // could have taken never gets here, since a complete frame only rejects bytes it cannot take.
    top = e.parent;
  }
  return kReject;
}

bool ByteMachine::complete(uint32_t top) const {
  for (; top != kEmptyStack; top = arena_[top].parent)
    if (!frame_complete(arena_[top].frame)) return false;
  return true;
}

bool ByteMachine::finished(uint32_t top) {
  if (top == kEmptyStack) return true;
  if (!complete(top)) return false;
  const size_t m = mark();
  bool more = false;
  for (int b = 0; b < 256 && !more; ++b) more = step(top, static_cast<uint8_t>(b)) != kReject;
  rewind(m);
  return !more;
}

uint32_t ByteMachine::compact(uint32_t top) {
  std::vector<Frame> stack = frames(top);
  arena_.clear();
  uint32_t at = kEmptyStack;
  for (const Frame& f : stack) at = alloc(f, at);
  return at;
}

std::vector<Frame> ByteMachine::frames(uint32_t top) const {
  std::vector<Frame> out;
  for (; top != kEmptyStack; top = arena_[top].parent) out.push_back(arena_[top].frame);
  std::reverse(out.begin(), out.end());
  return out;
}

bool ByteMachine::frame_complete(const Frame& f) const {
  switch (f.kind) {
    case FrameKind::Space: return true;
    case FrameKind::Literal: return p_.literals[f.a].terminal;
    case FrameKind::Number:
      if (f.phase == kNumEDigits) return true;
      return (f.phase == kNumInt || f.phase == kNumFrac) && number_in_range(p_.nodes[f.node], f);
    default: return false;
  }
}

uint32_t ByteMachine::consume(uint32_t parent, Frame f, uint8_t byte) {
  switch (f.kind) {
    case FrameKind::Space: return consume_space(parent, f, byte);
    case FrameKind::Pending: return consume_pending(parent, f, byte);
    case FrameKind::Object: return consume_object(parent, f, byte);
    case FrameKind::Array: return consume_array(parent, f, byte);
    case FrameKind::String: return consume_string(parent, f, byte);
    case FrameKind::Number: return consume_number(parent, f, byte);
    case FrameKind::Literal: return consume_literal(parent, f, byte);
  }
  return kReject;
}

uint32_t ByteMachine::push_value(uint32_t below, uint32_t node, uint8_t depth) {
  const uint32_t after = alloc(make_frame(FrameKind::Space, 0, depth), below);
  const uint32_t value = alloc(make_frame(FrameKind::Pending, node, depth), after);
  return alloc(make_frame(FrameKind::Space, 0, depth), value);
}

// --- whitespace: at most one '\n', then at most kMaxSpaces spaces -------------------------------

uint32_t ByteMachine::consume_space(uint32_t parent, Frame f, uint8_t byte) {
  if (byte == '\n' && f.phase == 0 && f.a == 0) {
    f.phase = 1;
    return alloc(f, parent);
  }
  if (byte == ' ' && f.a < kMaxSpaces) {
    ++f.a;
    return alloc(f, parent);
  }
  return kReject;
}

// --- the first byte of a value picks its kind (and its anyOf branch) ----------------------------

uint32_t ByteMachine::consume_pending(uint32_t parent, const Frame& f, uint8_t byte) {
  uint32_t id = f.node;
  while (p_.nodes[id].kind == NodeKind::AnyOf) {
    uint32_t chosen = kReject;
    for (uint32_t branch : p_.nodes[id].branches)
      if (p_.nodes[branch].can_start_with(byte) && fits(f.depth, p_.nodes[branch].min_depth)) chosen = branch;
    if (chosen == kReject) return kReject;
    id = chosen;
  }
  const Node& n = p_.nodes[id];
  if (!n.can_start_with(byte) || !fits(f.depth, n.min_depth)) return kReject;
  Frame value = make_frame(FrameKind::Literal, id, f.depth);
  switch (n.kind) {
    case NodeKind::Object: value.kind = FrameKind::Object; break;
    case NodeKind::Array: value.kind = FrameKind::Array; break;
    case NodeKind::String: value.kind = FrameKind::String; break;
    case NodeKind::Number: value.kind = FrameKind::Number; break;
    case NodeKind::Literal: value.a = n.literal_root; break;
    default: throw InternalError("grammar: a value of node kind " + std::to_string(int(n.kind)) + " cannot start");
  }
  return consume(parent, value, byte);
}

// --- objects --------------------------------------------------------------------------------------

bool ByteMachine::property_fits(const Node& object, uint32_t k, uint8_t depth) const {
  return fits(depth + 1u, p_.nodes[object.properties[k].value].min_depth);
}

// A key may start: any string for json_object's objects, else the first declared property from
// x on (up to the next required one) whose value fits.
uint32_t ByteMachine::start_key(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  if (byte != '"') return kReject;
  if (n.any_keys) {
    f.phase = kObjColon;
    const uint32_t object = alloc(f, parent);
    const uint32_t space = alloc(make_frame(FrameKind::Space, 0, f.depth), object);
    Frame key = make_frame(FrameKind::String, p_.any_string, f.depth);
    return consume_string(space, key, byte);
  }
  const uint32_t last = std::min<uint32_t>(n.next_required[f.x], static_cast<uint32_t>(n.properties.size()) - 1);
  for (uint32_t k = static_cast<uint32_t>(f.x); k <= last && k < n.properties.size(); ++k) {
    if (!property_fits(n, k, f.depth)) continue;
    f.phase = kObjKey;
    f.a = k;
    f.b = 1;
    return alloc(f, parent);
  }
  return kReject;
}

// Inside a declared key: the candidate moves to the first later property that shares the bytes
// matched so far and continues with `byte`.
uint32_t ByteMachine::consume_key(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  const std::string& current = n.properties[f.a].key_text;
  const uint32_t last = std::min<uint32_t>(n.next_required[f.x], static_cast<uint32_t>(n.properties.size()) - 1);
  for (uint32_t k = f.a; k <= last; ++k) {
    const std::string& key = n.properties[k].key_text;
    if (key.size() <= f.b || static_cast<uint8_t>(key[f.b]) != byte) continue;
    if (k != f.a && (key.compare(0, f.b, current, 0, f.b) != 0 || !property_fits(n, k, f.depth))) continue;
    f.a = k;
    if (++f.b < key.size()) return alloc(f, parent);
    f.phase = kObjColon;
    const uint32_t object = alloc(f, parent);
    return alloc(make_frame(FrameKind::Space, 0, f.depth), object);
  }
  return kReject;
}

uint32_t ByteMachine::consume_object(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  const auto count = static_cast<uint32_t>(n.properties.size());
  const bool may_close = n.any_keys || n.next_required[f.x] == count;
  switch (f.phase) {
    case kObjOpen:
      if (byte != '{') return kReject;
      f.phase = kObjFirst;
      return alloc(make_frame(FrameKind::Space, 0, f.depth), alloc(f, parent));
    case kObjFirst:
      if (byte == '}') return may_close ? parent : kReject;
      return start_key(parent, f, byte);
    case kObjKey: return consume_key(parent, f, byte);
    case kObjColon: {
      if (byte != ':') return kReject;
      const uint32_t value = n.any_keys ? p_.any_value : n.properties[f.a].value;
      f.phase = kObjAfterValue;
      if (!n.any_keys) f.x = f.a + 1;
      return push_value(alloc(f, parent), value, static_cast<uint8_t>(f.depth + 1));
    }
    case kObjAfterValue:
      if (byte == '}') return may_close ? parent : kReject;
      if (byte != ',') return kReject;
      if (!n.any_keys) {
        // Only when a later property can still come (start_key would find one).
        bool any = false;
        const uint32_t last = std::min<uint32_t>(n.next_required[f.x], count - 1);
        for (uint32_t k = static_cast<uint32_t>(f.x); k <= last && k < count && !any; ++k) any = property_fits(n, k, f.depth);
        if (!any) return kReject;
      }
      f.phase = kObjNext;
      return alloc(make_frame(FrameKind::Space, 0, f.depth), alloc(f, parent));
    case kObjNext: return start_key(parent, f, byte);
    default: return kReject;
  }
}

// --- arrays ---------------------------------------------------------------------------------------

uint32_t ByteMachine::consume_array(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  const uint8_t item_depth = static_cast<uint8_t>(f.depth + 1);
  const bool may_add = f.x < n.max_items && fits(item_depth, p_.nodes[n.items].min_depth);
  switch (f.phase) {
    case kArrOpen:
      if (byte != '[') return kReject;
      f.phase = kArrFirst;
      return alloc(make_frame(FrameKind::Space, 0, f.depth), alloc(f, parent));
    case kArrFirst: {
      if (byte == ']') return n.min_items == 0 ? parent : kReject;
      if (!may_add) return kReject;
      f.phase = kArrAfterItem;
      f.x = 1;
      const uint32_t after = alloc(make_frame(FrameKind::Space, 0, item_depth), alloc(f, parent));
      return consume_pending(after, make_frame(FrameKind::Pending, n.items, item_depth), byte);
    }
    case kArrAfterItem:
      if (byte == ']') return f.x >= n.min_items ? parent : kReject;
      if (byte != ',' || !may_add) return kReject;
      ++f.x;
      return push_value(alloc(f, parent), n.items, item_depth);
    default: return kReject;
  }
}

// --- strings: escapes, no raw control characters, UTF-8 without overlongs or surrogates ---------

uint32_t ByteMachine::consume_utf8_lead(uint32_t parent, Frame f, uint8_t byte) {
  uint32_t left = 0;
  uint32_t lo = 0x80;
  uint32_t hi = 0xBF;
  if (byte >= 0xC2 && byte <= 0xDF) left = 1;
  else if (byte == 0xE0) left = 2, lo = 0xA0;
  else if ((byte >= 0xE1 && byte <= 0xEC) || byte == 0xEE || byte == 0xEF) left = 2;
  else if (byte == 0xED) left = 2, hi = 0x9F;
  else if (byte == 0xF0) left = 3, lo = 0x90;
  else if (byte >= 0xF1 && byte <= 0xF3) left = 3;
  else if (byte == 0xF4) left = 3, hi = 0x8F;
  else return kReject;
  f.phase = kStrUtf8;
  f.b = left;
  f.a = lo | (hi << 8);
  return alloc(f, parent);
}

uint32_t ByteMachine::consume_string(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  const bool may_add = f.x < n.max_length;
  switch (f.phase) {
    case kStrOpen:
      if (byte != '"') return kReject;
      f.phase = kStrBody;
      return alloc(f, parent);
    case kStrBody:
      if (byte == '"') return f.x >= n.min_length ? parent : kReject;
      if (byte < 0x20 || !may_add) return kReject;
      if (byte == '\\') {
        f.phase = kStrEscape;
        return alloc(f, parent);
      }
      if (byte >= 0x80) return consume_utf8_lead(parent, f, byte);
      ++f.x;
      return alloc(f, parent);
    case kStrUtf8: {
      if (byte < (f.a & 0xFF) || byte > (f.a >> 8)) return kReject;
      f.a = 0x80 | (0xBF << 8);
      if (--f.b == 0) {
        f.phase = kStrBody;
        ++f.x;
      }
      return alloc(f, parent);
    }
    case kStrEscape:
      if (byte == 'u') {
        f.phase = kStrHex;
        f.a = 0;
        f.b = 0;
        return alloc(f, parent);
      }
      if (byte != '"' && byte != '\\' && byte != '/' && byte != 'b' && byte != 'f' && byte != 'n' && byte != 'r' &&
          byte != 't')
        return kReject;
      f.phase = kStrBody;
      ++f.x;
      return alloc(f, parent);
    case kStrHex: {
      const int v = hex_value(byte);
      if (v < 0) return kReject;
      f.a = f.a * 16 + static_cast<uint32_t>(v);
      ++f.b;
      // A low surrogate may only follow a high one: reject \uDC.. as soon as it shows.
      if (f.b == 2 && f.a >= 0xDC && f.a <= 0xDF) return kReject;
      if (f.b == 4) {
        const bool high = f.a >= 0xD800 && f.a <= 0xDBFF;
        f.phase = high ? kStrLowSlash : kStrBody;
        if (!high) ++f.x;
      }
      return alloc(f, parent);
    }
    case kStrLowSlash:
      if (byte != '\\') return kReject;
      f.phase = kStrLowU;
      return alloc(f, parent);
    case kStrLowU:
      if (byte != 'u') return kReject;
      f.phase = kStrLowHex;
      f.b = 0;
      return alloc(f, parent);
    case kStrLowHex: {
      const int v = hex_value(byte);
      if (v < 0 || (f.b == 0 && v != 0xD) || (f.b == 1 && v < 0xC)) return kReject;
      if (++f.b == 4) {
        f.phase = kStrBody;
        ++f.x;
      }
      return alloc(f, parent);
    }
    default: return kReject;
  }
}

// --- numbers: JSON syntax, at most kMaxIntDigits.kMaxFracDigits, bounds kept reachable ----------

// Whether some completion of the number so far lies in [lo, hi]. Values are scaled by
// 10^scale (scale 0 for integers), so the check is exact integer arithmetic: a prefix with a '.'
// reaches one interval, one without reaches "itself followed by k more digits" for each k.
bool ByteMachine::number_feasible(const Node& n, const Frame& f) const {
  const Int128* p10 = pow10_table();
  const uint32_t scale = n.integer ? 0 : kMaxFracDigits;
  const bool negative = f.flags & kMinus;
  auto hits = [&](Int128 a, Int128 b) {
    if (negative) {
      const Int128 t = a;
      a = -b;
      b = -t;
    }
    return std::max(a, n.lo) <= std::min(b, n.hi);
  };
  const Int128 whole = static_cast<Int128>(f.x);
  if (f.flags & kDot) {
    const Int128 step = p10[scale - f.b];
    const Int128 base = whole * p10[scale] + static_cast<Int128>(f.y) * step;
    return hits(base, base + step - 1);
  }
  if (f.a == 0) return hits(0, p10[kMaxIntDigits + scale] - 1);
  if (f.x == 0) return hits(0, p10[scale] - 1);
  for (uint32_t k = 0; f.a + k <= kMaxIntDigits; ++k)
    if (hits(whole * p10[k + scale], (whole + 1) * p10[k + scale] - 1)) return true;
  return false;
}

bool ByteMachine::number_in_range(const Node& n, const Frame& f) const {
  const Int128* p10 = pow10_table();
  const uint32_t scale = n.integer ? 0 : kMaxFracDigits;
  Int128 v = static_cast<Int128>(f.x) * p10[scale];
  if (f.flags & kDot) v += static_cast<Int128>(f.y) * p10[scale - f.b];
  if (f.flags & kMinus) v = -v;
  return v >= n.lo && v <= n.hi;
}

uint32_t ByteMachine::consume_number(uint32_t parent, Frame f, uint8_t byte) {
  const Node& n = p_.nodes[f.node];
  const bool digit = is_digit(byte);
  const uint64_t d = digit ? byte - '0' : 0;
  auto keep_if_feasible = [&](const Frame& g) { return number_feasible(n, g) ? alloc(g, parent) : kReject; };
  switch (f.phase) {
    case kNumStart:
      if (byte == '-') {
        f.flags |= kMinus;
        f.phase = kNumMinus;
        return keep_if_feasible(f);
      }
      [[fallthrough]];
    case kNumMinus:
      if (!digit) return kReject;
      f.phase = kNumInt;
      f.x = d;
      f.a = 1;
      return keep_if_feasible(f);
    case kNumInt:
      if (digit) {
        if (f.x == 0 || f.a >= kMaxIntDigits) return kReject;  // no leading zeros
        f.x = f.x * 10 + d;
        ++f.a;
        return keep_if_feasible(f);
      }
      if (byte == '.' && !n.integer) {
        f.flags |= kDot;
        f.phase = kNumDot;
        f.b = 0;
        return keep_if_feasible(f);
      }
      break;
    case kNumDot:
    case kNumFrac:
      if (digit) {
        if (f.b >= kMaxFracDigits) return kReject;
        f.y = f.y * 10 + d;
        ++f.b;
        f.phase = kNumFrac;
        return keep_if_feasible(f);
      }
      if (f.phase == kNumDot) return kReject;
      break;
    case kNumE:
      if (byte == '+' || byte == '-') {
        f.phase = kNumESign;
        return alloc(f, parent);
      }
      [[fallthrough]];
    case kNumESign:
      if (!digit) return kReject;
      f.phase = kNumEDigits;
      f.b = 1;
      return alloc(f, parent);
    case kNumEDigits:
      if (!digit || f.b >= kMaxExpDigits) return kReject;
      ++f.b;
      return alloc(f, parent);
    default: return kReject;
  }
  // After a complete mantissa: an exponent for unbounded numbers.
  if ((byte == 'e' || byte == 'E') && n.exponent) {
    f.phase = kNumE;
    f.b = 0;
    return alloc(f, parent);
  }
  return kReject;
}

// --- literals: enum/const values, true, false, null ---------------------------------------------

uint32_t ByteMachine::consume_literal(uint32_t parent, Frame f, uint8_t byte) {
  for (const auto& [b, child] : p_.literals[f.a].edges) {
    if (b != byte) continue;
    const LiteralNode& next = p_.literals[child];
    if (next.terminal && next.edges.empty()) return parent;
    f.a = child;
    return alloc(f, parent);
  }
  return kReject;
}

}  // namespace lathe::grammar::detail
