// The compiled form of a JSON Schema (json_schema.cpp builds it, byte_machine.cpp walks it): a
// table of nodes, one per subschema, that refer to each other by index (so `$ref` recursion is a
// cycle in the table, not in C++), plus one trie of every literal (enum/const values, true, false,
// null). Immutable once built.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace lathe::grammar {

// The generated text nests at most this many objects/arrays (also inside "any" values), so that
// recursive schemas and json_object mode stay bounded.
inline constexpr uint32_t kMaxNesting = 32;
// Whitespace between two tokens of the JSON text: at most one '\n' followed by at most this many
// spaces (or just the spaces). None after the final closing bracket.
inline constexpr uint32_t kMaxSpaces = 32;
// Digits of generated numbers: integer part, fraction and (unbounded numbers only) exponent.
inline constexpr uint32_t kMaxIntDigits = 16;
inline constexpr uint32_t kMaxFracDigits = 16;
inline constexpr uint32_t kMaxExpDigits = 2;

namespace detail {

using Int128 = __int128;

// "Any value" is an AnyOf of the five kinds of value (Program::any_value).
enum class NodeKind : uint8_t { Object, Array, String, Number, Literal, AnyOf, Alias };

struct Property {
  std::string key_text;  // the name as a JSON string, quotes included ("\"zip\"")
  uint32_t value = 0;
  bool required = false;
};

struct LiteralNode {
  std::vector<std::pair<uint8_t, uint32_t>> edges;  // byte -> child
  bool terminal = false;                             // a whole literal ends here
};

inline constexpr uint32_t kNoDepth = std::numeric_limits<uint32_t>::max();

struct Node {
  NodeKind kind = NodeKind::Alias;
  // Nesting levels the smallest value of this node needs (kNoDepth: no finite value). A value may
  // start at nesting d only when d + min_depth <= kMaxNesting, so generation never gets stuck.
  uint32_t min_depth = 0;
  std::array<uint64_t, 4> first{};  // bytes a value of this node can start with
  // Object (any_keys: json_object's "any key, any value")
  bool any_keys = false;
  std::vector<Property> properties;
  std::vector<uint32_t> next_required;  // [i]: first required property index >= i (size n + 1)
  // Array
  uint32_t items = 0;
  uint64_t min_items = 0;
  uint64_t max_items = std::numeric_limits<uint64_t>::max();
  // String (length in code points)
  uint64_t min_length = 0;
  uint64_t max_length = std::numeric_limits<uint64_t>::max();
  // Number: value * 10^scale_digits must lie in [lo, hi]; scale_digits is 0 for integers
  bool integer = false;
  bool exponent = false;  // unbounded numbers may carry an exponent
  Int128 lo = 0;
  Int128 hi = 0;
  // Literal
  uint32_t literal_root = 0;
  // AnyOf (branches start with pairwise different bytes); Alias (compile time only)
  std::vector<uint32_t> branches;
  uint32_t alias = 0;

  bool can_start_with(uint8_t byte) const noexcept { return (first[byte >> 6] >> (byte & 63)) & 1u; }
};

struct Program {
  std::vector<Node> nodes;
  std::vector<LiteralNode> literals;
  uint32_t root = 0;
  // "Any value" (json_object mode, schemas without type) and "any object".
  uint32_t any_value = 0;
  uint32_t any_object = 0;
  uint32_t any_string = 0;  // keys of any_object
};

}  // namespace detail
}  // namespace lathe::grammar
