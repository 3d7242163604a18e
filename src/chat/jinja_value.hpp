// The Jinja engine's runtime data model (Value: Python-like values) and what every part of the
// engine shares: source positions (Pos) and the remedy that ends each "not supported" message.
// The lexer uses Pos, the parser builds literal Values, the interpreter computes with them.
// Internal to the chat room; chat/jinja.hpp is the public face.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lathe::jinja {

inline constexpr const char* kRemedy =
    "rewrite the template within the supported subset (docs/CHAT_TEMPLATES.md) or pass another one with --template FILE (`lathe run`, `lathe chat` and `lathe template` take one)";

struct Value;
struct Interp;  // the interpreter (jinja_interpreter.cpp); built-in functions are called with it
using ValueList = std::vector<Value>;

struct Dict {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, like Python dicts
  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Pos {
  int line = 1;
  int col = 1;
};

struct Function {
  std::string name;
  std::function<Value(Interp&, CallArgs&, Pos)> call;
};

struct Value {
  enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };
  Kind kind = Kind::Undefined;
  bool is_tuple = false;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // String; for Undefined: what was undefined, for error messages
  std::shared_ptr<const ValueList> list;
  std::shared_ptr<Dict> dict;  // Dict (never mutated after construction) or Namespace (mutable)
  std::shared_ptr<const Function> fn;

  static Value undefined(std::string what) {
    Value v;
    v.s = std::move(what);
    return v;
  }
  static Value none() { return make(Kind::None); }
  static Value boolean(bool x) {
    Value v = make(Kind::Bool);
    v.b = x;
    return v;
  }
  static Value integer(int64_t x) {
    Value v = make(Kind::Int);
    v.i = x;
    return v;
  }
  static Value number(double x) {
    Value v = make(Kind::Float);
    v.f = x;
    return v;
  }
  static Value string(std::string x) {
    Value v = make(Kind::String);
    v.s = std::move(x);
    return v;
  }
  static Value make_list(ValueList items, bool tuple = false) {
    Value v = make(Kind::List);
    v.list = std::make_shared<const ValueList>(std::move(items));
    v.is_tuple = tuple;
    return v;
  }
  static Value make_dict(Dict d, Kind kind = Kind::Dict) {
    Value v = make(kind);
    v.dict = std::make_shared<Dict>(std::move(d));
    return v;
  }
  static Value function(std::string name, std::function<Value(Interp&, CallArgs&, Pos)> call) {
    Value v = make(Kind::Function);
    v.fn = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
    return v;
  }

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_integral() const { return kind == Kind::Int || kind == Kind::Bool; }
  int64_t as_int() const { return kind == Kind::Bool ? (b ? 1 : 0) : i; }
  double as_double() const { return kind == Kind::Float ? f : static_cast<double>(as_int()); }
  const ValueList& items() const { return *list; }

 private:
  static Value make(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
};

inline const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}
inline void Dict::set(const std::string& key, Value v) {
  for (auto& [k, existing] : items)
    if (k == key) {
      existing = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

}  // namespace lathe::jinja
