// JSON Schema -> grammar nodes (grammar_nodes.hpp). One pass builds a node per subschema ($ref
// targets once each, through Alias nodes so that recursion is a cycle of indices), then three
// passes over the table: resolve aliases, compute each node's minimum nesting (so generation can
// never start a value it cannot finish within kMaxNesting), and compute first bytes (anyOf branches
// must start with different bytes, which keeps the matcher deterministic: one stack, no sets).
#include "grammar/json_schema.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

namespace lathe::grammar {

namespace {

using detail::Int128;
using detail::kNoDepth;
using detail::LiteralNode;
using detail::Node;
using detail::NodeKind;
using detail::Program;
using nlohmann::ordered_json;

constexpr const char* kSupportedText =
    "type (object, array, string, number, integer, boolean, null, or an array of these), properties, required, "
    "additionalProperties (false only), items, minItems, maxItems, minLength, maxLength, minimum, maximum, "
    "exclusiveMinimum, exclusiveMaximum, enum, const, anyOf, $ref (local: #, #/$defs/..., #/definitions/...), "
    "$defs, definitions; ignored annotations: title, description, default, examples, deprecated, readOnly, "
    "writeOnly, $schema, $id, $comment";

const std::set<std::string>& annotation_keywords() {
  static const std::set<std::string> k = {"title",    "description", "default",   "examples", "deprecated",
                                          "readOnly", "writeOnly",   "$schema",   "$id",      "$comment"};
  return k;
}

const std::set<std::string>& object_keywords() {
  static const std::set<std::string> k = {"properties", "required", "additionalProperties"};
  return k;
}
const std::set<std::string>& array_keywords() {
  static const std::set<std::string> k = {"items", "minItems", "maxItems"};
  return k;
}
const std::set<std::string>& string_keywords() {
  static const std::set<std::string> k = {"minLength", "maxLength"};
  return k;
}
const std::set<std::string>& number_keywords() {
  static const std::set<std::string> k = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
  return k;
}
// Keywords that hold definitions only reached through $ref.
bool is_definitions(const std::string& key) { return key == "$defs" || key == "definitions"; }

bool is_known_keyword(const std::string& key) {
  return annotation_keywords().count(key) || object_keywords().count(key) || array_keywords().count(key) ||
         string_keywords().count(key) || number_keywords().count(key) || is_definitions(key) || key == "type" ||
         key == "enum" || key == "const" || key == "anyOf" || key == "$ref";
}

std::string pointer_token(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::string where_text(const std::string& pointer) { return pointer.empty() ? "the schema root" : pointer; }

Int128 pow10(uint32_t n) {
  Int128 v = 1;
  for (uint32_t i = 0; i < n; ++i) v *= 10;
  return v;
}

// ceil (up = true) or floor of d * 10^digits, exactly, clamped to +-limit.
Int128 scaled_round(double d, uint32_t digits, bool up, Int128 limit) {
  if (d >= 1e18) return limit;
  if (d <= -1e18) return -limit;
  int exp = 0;
  const double fraction = std::frexp(d, &exp);
  const auto mantissa = static_cast<int64_t>(std::ldexp(fraction, 53));  // exact: 53 bits
  const int shift = exp - 53;
  Int128 num = static_cast<Int128>(mantissa) * pow10(digits);
  Int128 out = 0;
  if (shift >= 0) {
    out = num << shift;  // |d| < 1e18 and digits <= 16: below 2^121
  } else if (-shift >= 120) {
    out = num < 0 ? -1 : 0;  // floor of a tiny value
    if (up && num != 0) out += 1;
  } else {
    out = num >> (-shift);  // arithmetic shift: floor
    const bool exact = (out << (-shift)) == num;
    if (up && !exact) out += 1;
  }
  return std::clamp(out, -limit, limit);
}

std::string type_name(const ordered_json& v) { return v.type_name(); }

class Compiler {
 public:
  Compiler(const ordered_json& root, std::string where, const SchemaLimits& limits)
      : root_(root), where_(std::move(where)), limits_(limits) {}

  Program run() {
    build_any_nodes();
    p_.root = compile_ref_target("", 0);
    resolve_aliases();
    compute_min_depth();
    compute_first_bytes();
    if (p_.nodes[p_.root].min_depth > kMaxNesting)
      invalid("", "$ref",
              fmt::format("no value of the schema nests at most {} objects/arrays deep (a required property or "
                          "minItems > 0 recurses without end)",
                          kMaxNesting),
              "make the recursive property optional or allow an empty array");
    return std::move(p_);
  }

  static Program any_object() {
    Compiler c(ordered_json::object(), "json_object", SchemaLimits{});
    c.build_any_nodes();
    c.p_.root = c.p_.any_object;
    c.compute_min_depth();
    c.compute_first_bytes();
    return std::move(c.p_);
  }

 private:
  [[noreturn]] void unsupported(const std::string& pointer, const std::string& keyword, const std::string& detail = "") {
    throw UnsupportedSchemaError(fmt::format("{}: keyword '{}' at {} is not supported{}; supported: {}", where_, keyword,
                                             where_text(pointer), detail.empty() ? "" : " (" + detail + ")",
                                             kSupportedText));
  }
  [[noreturn]] void invalid(const std::string& pointer, const std::string& keyword, const std::string& problem,
                            const std::string& remedy) {
    throw InvalidSchemaError(
        fmt::format("{}: keyword '{}' at {}: {}; {}", where_, keyword, where_text(pointer), problem, remedy));
  }

  uint32_t add_node(Node node, const std::string& pointer) {
    if (p_.nodes.size() >= limits_.max_nodes)
      throw UnsupportedSchemaError(fmt::format(
          "{}: the schema at {} needs more than {} grammar nodes (subschemas); lathe refuses schemas this large",
          where_, where_text(pointer), limits_.max_nodes));
    p_.nodes.push_back(std::move(node));
    paths_.push_back(pointer);
    return static_cast<uint32_t>(p_.nodes.size() - 1);
  }

  // A literal trie for `texts` (serialized JSON values); returns its root.
  uint32_t add_literals(const std::vector<std::string>& texts, const std::string& pointer) {
    const auto root = static_cast<uint32_t>(p_.literals.size());
    p_.literals.emplace_back();
    for (const auto& text : texts) {
      literal_bytes_ += text.size();
      if (literal_bytes_ > limits_.max_literal_bytes)
        throw UnsupportedSchemaError(fmt::format(
            "{}: enum/const values and property names up to {} add up to more than {} bytes; lathe refuses "
            "schemas this large",
            where_, where_text(pointer), limits_.max_literal_bytes));
      uint32_t at = root;
      for (unsigned char c : text) {
        uint32_t next = 0;
        for (const auto& [byte, child] : p_.literals[at].edges)
          if (byte == c) next = child;
        if (next == 0) {
          next = static_cast<uint32_t>(p_.literals.size());
          p_.literals.emplace_back();
          p_.literals[at].edges.emplace_back(c, next);
        }
        at = next;
      }
      p_.literals[at].terminal = true;
    }
    return root;
  }

  uint32_t literal_node(const std::vector<std::string>& texts, const std::string& pointer) {
    Node n;
    n.kind = NodeKind::Literal;
    n.literal_root = add_literals(texts, pointer);
    return add_node(std::move(n), pointer);
  }

  void build_any_nodes() {
    Node any;
    any.kind = NodeKind::AnyOf;
    p_.any_value = add_node(any, "");
    Node object;
    object.kind = NodeKind::Object;
    object.any_keys = true;
    object.items = p_.any_value;
    object.next_required = {0};
    p_.any_object = add_node(object, "");
    Node array;
    array.kind = NodeKind::Array;
    array.items = p_.any_value;
    const uint32_t any_array = add_node(array, "");
    Node string;
    string.kind = NodeKind::String;
    const uint32_t any_string = add_node(string, "");
    p_.any_string = any_string;
    const uint32_t any_number = add_node(number_node(false, {}, ""), "");
    const uint32_t scalars = literal_node({"true", "false", "null"}, "");
    p_.nodes[p_.any_value].branches = {p_.any_object, any_array, any_string, any_number, scalars};
  }

  // --- $ref -------------------------------------------------------------------------------------

  uint32_t compile_ref_target(const std::string& pointer, size_t depth) {
    if (auto it = refs_.find(pointer); it != refs_.end()) return it->second;
    Node alias;
    alias.kind = NodeKind::Alias;
    const uint32_t id = add_node(alias, pointer);
    refs_[pointer] = id;
    const ordered_json* target = nullptr;
    try {
      target = &root_.at(ordered_json::json_pointer(pointer));
    } catch (const ordered_json::exception&) {
      target = nullptr;
    }
    if (target == nullptr)
      invalid(pointer, "$ref", fmt::format("'#{}' points to nothing in the schema", pointer),
              "point $ref at a definition under #/$defs/ or #/definitions/");
    const uint32_t body = compile(*target, pointer, depth + 1);
    p_.nodes[id].alias = body;
    return id;
  }

  uint32_t compile_ref(const ordered_json& s, const std::string& pointer, size_t depth) {
    const auto& ref = s["$ref"];
    if (!ref.is_string()) invalid(pointer, "$ref", "must be a string, is " + type_name(ref), "write \"#/$defs/Name\"");
    const std::string text = ref.get<std::string>();
    if (text.empty() || text[0] != '#' || (text.size() > 1 && text[1] != '/'))
      unsupported(pointer, "$ref", "only local references such as '#/$defs/Name' are supported, not '" + text + "'");
    return compile_ref_target(text.substr(1), depth);
  }

  // --- dispatch ---------------------------------------------------------------------------------

  // Every key must be known; keys in `allowed_beside` (plus annotations and definitions) are the
  // only siblings a $ref / anyOf / enum may have.
  void check_siblings(const ordered_json& s, const std::string& pointer, const std::string& keyword,
                      const std::set<std::string>& allowed_beside) {
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& key = it.key();
      if (key == keyword || annotation_keywords().count(key) || is_definitions(key) || allowed_beside.count(key))
        continue;
      unsupported(pointer, key, "beside '" + keyword + "'");
    }
  }

  uint32_t compile(const ordered_json& s, const std::string& pointer, size_t depth) {
    if (depth > limits_.max_schema_depth)
      throw UnsupportedSchemaError(fmt::format("{}: subschemas nest deeper than {} at {}; lathe refuses schemas this deep",
                                               where_, limits_.max_schema_depth, where_text(pointer)));
    if (s.is_boolean()) {
      if (s.get<bool>()) return p_.any_value;
      unsupported(pointer, "false", "the schema false, which admits no value");
    }
    if (!s.is_object())
      invalid(pointer, "(schema)", "a schema must be an object or a boolean, is " + type_name(s),
              "write a schema object such as {\"type\": \"string\"}");
    for (auto it = s.begin(); it != s.end(); ++it)
      if (!is_known_keyword(it.key())) unsupported(pointer, it.key());
    if (s.contains("$ref")) {
      check_siblings(s, pointer, "$ref", {});
      return compile_ref(s, pointer, depth);
    }
    if (s.contains("anyOf")) {
      check_siblings(s, pointer, "anyOf", {});
      return compile_any_of(s, pointer, depth);
    }
    if (s.contains("enum") || s.contains("const")) {
      check_siblings(s, pointer, s.contains("enum") ? "enum" : "const", {"type", "enum", "const"});
      return compile_literals(s, pointer);
    }
    const std::vector<std::string> types = value_types(s, pointer);
    if (types.empty()) return p_.any_value;
    if (types.size() == 1) return compile_typed(s, types[0], pointer, depth);
    Node any_of;
    any_of.kind = NodeKind::AnyOf;
    for (const auto& type : types) any_of.branches.push_back(compile_typed(s, type, pointer, depth));
    return add_node(std::move(any_of), pointer);
  }

  // The types of `type` (number absorbs integer), or those the keywords imply when it is absent.
  std::vector<std::string> value_types(const ordered_json& s, const std::string& pointer) {
    static const std::vector<std::string> known = {"object", "array", "string", "number", "integer", "boolean", "null"};
    std::vector<std::string> types;
    if (s.contains("type")) {
      const auto& t = s["type"];
      std::vector<ordered_json> listed;
      if (t.is_string()) listed.push_back(t);
      else if (t.is_array() && !t.empty()) listed.assign(t.begin(), t.end());
      else
        invalid(pointer, "type", "must be a type name or a non-empty array of them, is " + t.dump(),
                "write e.g. \"string\" or [\"string\", \"null\"]");
      for (const auto& v : listed) {
        if (!v.is_string() || std::find(known.begin(), known.end(), v.get<std::string>()) == known.end())
          invalid(pointer, "type", v.dump() + " is not a JSON Schema type",
                  "use object, array, string, number, integer, boolean or null");
        if (std::find(types.begin(), types.end(), v.get<std::string>()) != types.end())
          invalid(pointer, "type", v.dump() + " is listed twice", "list each type once");
        types.push_back(v.get<std::string>());
      }
    } else {
      auto has_any = [&](const std::set<std::string>& keys) {
        return std::any_of(keys.begin(), keys.end(), [&](const std::string& k) { return s.contains(k); });
      };
      if (has_any(object_keywords())) types.push_back("object");
      if (has_any(array_keywords())) types.push_back("array");
      if (has_any(string_keywords())) types.push_back("string");
      if (has_any(number_keywords())) types.push_back("number");
    }
    if (std::find(types.begin(), types.end(), "number") != types.end())
      types.erase(std::remove(types.begin(), types.end(), "integer"), types.end());
    return types;
  }

  uint32_t compile_typed(const ordered_json& s, const std::string& type, const std::string& pointer, size_t depth) {
    if (type == "null") return literal_node({"null"}, pointer);
    if (type == "boolean") return literal_node({"true", "false"}, pointer);
    if (type == "string") return add_node(string_node(s, pointer), pointer);
    if (type == "number" || type == "integer") return add_node(number_node(type == "integer", s, pointer), pointer);
    if (type == "array") return compile_array(s, pointer, depth);
    return compile_object(s, pointer, depth);
  }

  // --- keywords ---------------------------------------------------------------------------------

  uint64_t count_keyword(const ordered_json& s, const char* keyword, const std::string& pointer, uint64_t fallback) {
    if (!s.contains(keyword)) return fallback;
    const auto& v = s[keyword];
    if (v.is_number_unsigned()) return v.get<uint64_t>();
    if (v.is_number_float() && v.get<double>() >= 0 && v.get<double>() < 1.8e19 &&
        std::floor(v.get<double>()) == v.get<double>())
      return static_cast<uint64_t>(v.get<double>());
    invalid(pointer, keyword, "must be a non-negative integer, is " + v.dump(), "write e.g. 0 or 10");
  }

  Node string_node(const ordered_json& s, const std::string& pointer) {
    Node n;
    n.kind = NodeKind::String;
    n.min_length = count_keyword(s, "minLength", pointer, 0);
    n.max_length = count_keyword(s, "maxLength", pointer, n.max_length);
    if (n.min_length > n.max_length)
      invalid(pointer, "minLength", fmt::format("minLength {} exceeds maxLength {}", n.min_length, n.max_length),
              "make minLength <= maxLength");
    return n;
  }

  // The bound of `keyword` scaled to the node's grid, or nullopt-like `fallback` when absent.
  Int128 number_bound(const ordered_json& s, const char* keyword, bool integer, bool lower, bool exclusive,
                      const std::string& pointer, Int128 fallback, bool& present) {
    if (!s.contains(keyword)) return fallback;
    const auto& v = s[keyword];
    if (!v.is_number()) invalid(pointer, keyword, "must be a number, is " + v.dump(), "write e.g. 0 or 1.5");
    present = true;
    const uint32_t digits = integer ? 0 : kMaxFracDigits;
    const Int128 limit = pow10(kMaxIntDigits + digits);  // one past the largest generated value
    if (v.is_number_integer() && integer) {
      Int128 exact = v.is_number_unsigned() ? static_cast<Int128>(v.get<uint64_t>()) : static_cast<Int128>(v.get<int64_t>());
      if (exclusive) exact += lower ? 1 : -1;
      return std::clamp(exact, -limit, limit);
    }
    // Through a double as the validator compares: any decimal at or past the bound's exact value
    // (a step further for exclusive bounds, the next double) passes, whatever rounding it gets.
    double d = v.get<double>();
    if (v.is_number_integer()) {
      const Int128 exact = v.is_number_unsigned() ? static_cast<Int128>(v.get<uint64_t>()) : static_cast<Int128>(v.get<int64_t>());
      if (lower && static_cast<Int128>(d) < exact) d = std::nextafter(d, HUGE_VAL);
      if (!lower && static_cast<Int128>(d) > exact) d = std::nextafter(d, -HUGE_VAL);
    }
    if (exclusive) d = std::nextafter(d, lower ? HUGE_VAL : -HUGE_VAL);
    return scaled_round(d, digits, lower, limit);
  }

  Node number_node(bool integer, const ordered_json& s, const std::string& pointer) {
    Node n;
    n.kind = NodeKind::Number;
    n.integer = integer;
    const Int128 largest = pow10(kMaxIntDigits + (integer ? 0 : kMaxFracDigits)) - 1;
    bool bounded = false;
    Int128 lo = -largest;
    Int128 hi = largest;
    lo = std::max(lo, number_bound(s, "minimum", integer, true, false, pointer, lo, bounded));
    lo = std::max(lo, number_bound(s, "exclusiveMinimum", integer, true, true, pointer, lo, bounded));
    hi = std::min(hi, number_bound(s, "maximum", integer, false, false, pointer, hi, bounded));
    hi = std::min(hi, number_bound(s, "exclusiveMaximum", integer, false, true, pointer, hi, bounded));
    if (lo > hi)
      invalid(pointer, "minimum",
              fmt::format("no {} lies within the bounds (lathe generates at most {} integer digits{})",
                          integer ? "integer" : "number", kMaxIntDigits,
                          integer ? "" : fmt::format(" and {} fraction digits", kMaxFracDigits)),
              "widen minimum/maximum so that the range holds a value");
    n.lo = lo;
    n.hi = hi;
    n.exponent = !integer && !bounded;
    return n;
  }

  uint32_t compile_array(const ordered_json& s, const std::string& pointer, size_t depth) {
    Node n;
    n.kind = NodeKind::Array;
    n.min_items = count_keyword(s, "minItems", pointer, 0);
    n.max_items = count_keyword(s, "maxItems", pointer, n.max_items);
    if (n.min_items > n.max_items)
      invalid(pointer, "minItems", fmt::format("minItems {} exceeds maxItems {}", n.min_items, n.max_items),
              "make minItems <= maxItems");
    n.items = p_.any_value;
    if (s.contains("items")) {
      const auto& items = s["items"];
      if (items.is_array()) unsupported(pointer + "/items", "items", "an array of schemas (tuple form)");
      if (items.is_boolean() && !items.get<bool>()) {
        if (n.min_items > 0)
          invalid(pointer, "items", "items is false (no item allowed) but minItems > 0", "drop minItems or items");
        n.max_items = 0;
      } else {
        n.items = compile(items, pointer + "/items", depth + 1);
      }
    }
    return add_node(std::move(n), pointer);
  }

  uint32_t compile_object(const ordered_json& s, const std::string& pointer, size_t depth) {
    Node n;
    n.kind = NodeKind::Object;
    if (s.contains("additionalProperties")) {
      const auto& extra = s["additionalProperties"];
      if (!(extra.is_boolean() && !extra.get<bool>()))
        unsupported(pointer, "additionalProperties",
                    "only false is supported: lathe generates the declared properties only, got " + extra.dump());
    }
    if (s.contains("properties")) {
      const auto& props = s["properties"];
      if (!props.is_object())
        invalid(pointer, "properties", "must be an object of schemas, is " + type_name(props),
                "write {\"name\": {\"type\": \"string\"}}");
      if (props.size() > limits_.max_properties)
        throw UnsupportedSchemaError(fmt::format("{}: the object at {} has {} properties, more than the {} lathe accepts",
                                                 where_, where_text(pointer), props.size(), limits_.max_properties));
      for (auto it = props.begin(); it != props.end(); ++it) {
        detail::Property prop;
        prop.key_text = ordered_json(it.key()).dump();
        add_literal_bytes(prop.key_text.size(), pointer);
        prop.value = compile(it.value(), pointer + "/properties/" + pointer_token(it.key()), depth + 1);
        n.properties.push_back(std::move(prop));
      }
    }
    if (s.contains("required")) mark_required(s["required"], s, n, pointer);
    n.next_required.assign(n.properties.size() + 1, static_cast<uint32_t>(n.properties.size()));
    for (size_t i = n.properties.size(); i-- > 0;)
      n.next_required[i] = n.properties[i].required ? static_cast<uint32_t>(i) : n.next_required[i + 1];
    return add_node(std::move(n), pointer);
  }

  void mark_required(const ordered_json& required, const ordered_json& s, Node& n, const std::string& pointer) {
    if (!required.is_array())
      invalid(pointer, "required", "must be an array of property names, is " + type_name(required),
              "write [\"name\", ...]");
    for (const auto& name : required) {
      if (!name.is_string())
        invalid(pointer, "required", "must be an array of property names, holds " + name.dump(), "write [\"name\", ...]");
      const std::string key_text = ordered_json(name.get<std::string>()).dump();
      auto it = std::find_if(n.properties.begin(), n.properties.end(),
                             [&](const detail::Property& p) { return p.key_text == key_text; });
      if (it == n.properties.end())
        invalid(pointer, "required",
                fmt::format("required property {} is not in properties{}", key_text,
                            s.contains("properties") ? "" : " (there are no properties)"),
                "declare it under properties (lathe generates declared properties only)");
      it->required = true;
    }
  }

  void add_literal_bytes(size_t bytes, const std::string& pointer) {
    literal_bytes_ += bytes;
    if (literal_bytes_ > limits_.max_literal_bytes)
      throw UnsupportedSchemaError(fmt::format(
          "{}: enum/const values and property names up to {} add up to more than {} bytes; lathe refuses schemas this large",
          where_, where_text(pointer), limits_.max_literal_bytes));
  }

  static bool value_has_type(const ordered_json& v, const std::string& type) {
    if (type == "null") return v.is_null();
    if (type == "boolean") return v.is_boolean();
    if (type == "string") return v.is_string();
    if (type == "object") return v.is_object();
    if (type == "array") return v.is_array();
    if (type == "number") return v.is_number();
    return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  }

  uint32_t compile_literals(const ordered_json& s, const std::string& pointer) {
    std::vector<ordered_json> values;
    const char* keyword = s.contains("enum") ? "enum" : "const";
    if (s.contains("enum")) {
      const auto& e = s["enum"];
      if (!e.is_array() || e.empty())
        invalid(pointer, "enum", "must be a non-empty array of values, is " + e.dump(), "list at least one value");
      if (e.size() > limits_.max_enum_values)
        throw UnsupportedSchemaError(fmt::format("{}: the enum at {} has {} values, more than the {} lathe accepts",
                                                 where_, where_text(pointer), e.size(), limits_.max_enum_values));
      values.assign(e.begin(), e.end());
    }
    if (s.contains("const")) {
      if (s.contains("enum")) unsupported(pointer, "const", "beside 'enum'");
      values.push_back(s["const"]);
    }
    std::vector<std::string> texts;
    for (const auto& v : values) {
      if (s.contains("type")) {
        const auto types = value_types(s, pointer);
        const bool ok = std::any_of(types.begin(), types.end(), [&](const std::string& t) {
          return value_has_type(v, t) || (t == "number" && v.is_number());
        });
        if (!ok)
          invalid(pointer, keyword, "value " + v.dump() + " does not have the schema's type " + s["type"].dump(),
                  "make the values match the type or drop the type");
      }
      try {
        texts.push_back(v.dump());
      } catch (const ordered_json::exception& e) {
        invalid(pointer, keyword, std::string("a value cannot be written as JSON: ") + e.what(), "use valid UTF-8 text");
      }
    }
    return literal_node(texts, pointer);
  }

  uint32_t compile_any_of(const ordered_json& s, const std::string& pointer, size_t depth) {
    const auto& list = s["anyOf"];
    if (!list.is_array() || list.empty())
      invalid(pointer, "anyOf", "must be a non-empty array of schemas, is " + list.dump(), "list at least one schema");
    if (list.size() > limits_.max_any_of)
      throw UnsupportedSchemaError(fmt::format("{}: the anyOf at {} has {} branches, more than the {} lathe accepts",
                                               where_, where_text(pointer), list.size(), limits_.max_any_of));
    Node n;
    n.kind = NodeKind::AnyOf;
    for (size_t i = 0; i < list.size(); ++i)
      n.branches.push_back(compile(list[i], fmt::format("{}/anyOf/{}", pointer, i), depth + 1));
    return add_node(std::move(n), pointer);
  }

  // --- passes over the table --------------------------------------------------------------------

  uint32_t resolve(uint32_t id) {
    for (size_t steps = 0; p_.nodes[id].kind == NodeKind::Alias; ++steps) {
      if (steps > p_.nodes.size())
        invalid(paths_[id], "$ref", "the reference refers back to itself without describing a value",
                "point it at a schema with a type");
      id = p_.nodes[id].alias;
    }
    return id;
  }

  void resolve_aliases() {
    p_.root = resolve(p_.root);
    for (auto& node : p_.nodes) {
      node.items = resolve(node.items);
      for (auto& prop : node.properties) prop.value = resolve(prop.value);
      for (auto& branch : node.branches) branch = resolve(branch);
    }
  }

  static uint32_t add_depth(uint32_t d) { return d == kNoDepth ? kNoDepth : d + 1; }

  uint32_t min_depth_of(const Node& n) const {
    switch (n.kind) {
      case NodeKind::Object: {
        uint32_t deepest = 0;
        for (const auto& prop : n.properties)
          if (prop.required) deepest = std::max(deepest, p_.nodes[prop.value].min_depth);
        return add_depth(deepest);
      }
      case NodeKind::Array:
        return n.min_items > 0 ? add_depth(p_.nodes[n.items].min_depth) : 1;
      case NodeKind::AnyOf: {
        uint32_t best = kNoDepth;
        for (uint32_t b : n.branches) best = std::min(best, p_.nodes[b].min_depth);
        return best;
      }
      default:
        return 0;
    }
  }

  // Least fixpoint from "no finite value" downwards; each round can only lower a depth, and a
  // depth above kMaxNesting + 1 is as good as none, so the rounds are bounded.
  void compute_min_depth() {
    for (auto& node : p_.nodes) node.min_depth = kNoDepth;
    for (bool changed = true; changed;) {
      changed = false;
      for (auto& node : p_.nodes) {
        if (node.kind == NodeKind::Alias) continue;
        uint32_t d = min_depth_of(node);
        if (d != kNoDepth && d > kMaxNesting + 1) d = kMaxNesting + 1;
        if (d < node.min_depth) {
          node.min_depth = d;
          changed = true;
        }
      }
    }
  }

  static void set_byte(Node& n, uint8_t b) { n.first[b >> 6] |= uint64_t{1} << (b & 63); }

  // First bytes of node `id`; anyOf branches must not share one (the matcher follows one branch).
  void first_bytes(uint32_t id, std::vector<uint8_t>& state) {
    if (state[id] == 2) return;
    Node& n = p_.nodes[id];
    if (state[id] == 1)
      invalid(paths_[id], "anyOf", "a branch refers back to the anyOf itself without describing a value",
              "give each branch a type");
    state[id] = 1;
    switch (n.kind) {
      case NodeKind::Object: set_byte(n, '{'); break;
      case NodeKind::Array: set_byte(n, '['); break;
      case NodeKind::String: set_byte(n, '"'); break;
      case NodeKind::Number:
        set_byte(n, '-');
        for (uint8_t c = '0'; c <= '9'; ++c) set_byte(n, c);
        break;
      case NodeKind::Literal:
        for (const auto& [byte, child] : p_.literals[n.literal_root].edges) set_byte(n, byte);
        break;
      case NodeKind::AnyOf: any_of_first_bytes(id, state); break;
      case NodeKind::Alias: break;
    }
    state[id] = 2;
  }

  void any_of_first_bytes(uint32_t id, std::vector<uint8_t>& state) {
    std::array<uint64_t, 4> seen{};
    const std::vector<uint32_t> branches = p_.nodes[id].branches;
    for (size_t i = 0; i < branches.size(); ++i) {
      first_bytes(branches[i], state);
      const auto& f = p_.nodes[branches[i]].first;
      for (int w = 0; w < 4; ++w) {
        if (const uint64_t overlap = seen[w] & f[w]; overlap != 0) {
          const int byte = w * 64 + __builtin_ctzll(overlap);
          unsupported(paths_[id], "anyOf",
                      fmt::format("branch {} can start with '{}' like an earlier branch; lathe supports anyOf only "
                                  "when its branches start differently, e.g. one type plus null (Optional), or "
                                  "string | number | boolean | object | array | null (integer and number overlap)",
                                  i, static_cast<char>(byte)));
        }
        seen[w] |= f[w];
      }
    }
    p_.nodes[id].first = seen;
  }

  void compute_first_bytes() {
    std::vector<uint8_t> state(p_.nodes.size(), 0);
    for (uint32_t id = 0; id < p_.nodes.size(); ++id)
      if (p_.nodes[id].kind != NodeKind::Alias) first_bytes(id, state);
  }

  const ordered_json& root_;
  std::string where_;
  SchemaLimits limits_;
  Program p_;
  std::vector<std::string> paths_;  // JSON pointer of each node, for errors
  std::map<std::string, uint32_t> refs_;
  size_t literal_bytes_ = 0;
};

}  // namespace

const char* supported_keywords_text() noexcept { return kSupportedText; }

std::shared_ptr<const JsonGrammar> JsonGrammar::any_object() {
  static const std::shared_ptr<const JsonGrammar> grammar = std::make_shared<const JsonGrammar>(Compiler::any_object());
  return grammar;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const nlohmann::ordered_json& schema, const std::string& where,
                                                            const SchemaLimits& limits) {
  return std::make_shared<const JsonGrammar>(Compiler(schema, where, limits).run());
}

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema_text(std::string_view schema_text, const std::string& where,
                                                                 const SchemaLimits& limits) {
  if (schema_text.size() > limits.max_schema_bytes)
    throw UnsupportedSchemaError(fmt::format("{}: the schema is {} bytes, more than the {} lathe accepts", where,
                                             schema_text.size(), limits.max_schema_bytes));
  nlohmann::ordered_json schema;
  try {
    schema = nlohmann::ordered_json::parse(schema_text);
  } catch (const nlohmann::ordered_json::exception& e) {
    throw InvalidSchemaError(fmt::format("{}: not valid JSON ({}); send the schema as a JSON object", where, e.what()));
  }
  return from_schema(schema, where, limits);
}

}  // namespace lathe::grammar
