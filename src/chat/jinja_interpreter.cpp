// Interpreter of the Jinja2 subset: walks the AST of a parsed Template (chat/jinja_ast.hpp) over
// Values (chat/jinja_value.hpp), with Python's string, repr and JSON conventions, and
// Template::render. Semantics follow jinja2 3.1 as used by transformers; see
// docs/CHAT_TEMPLATES.md.
#include "chat/jinja.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <functional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "chat/jinja_ast.hpp"
#include "chat/jinja_value.hpp"
#include "lathe/error.hpp"

namespace lathe::jinja {
namespace {

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers. Python strings index by code point; invalid bytes count as one unit each so
// that arbitrary template bytes never break the engine.

size_t utf8_unit_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  if (i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 1;
  return len;
}

uint32_t utf8_decode_at(std::string_view s, size_t i, size_t len) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k])); };
  switch (len) {
    case 2: return ((b(0) & 0x1f) << 6) | (b(1) & 0x3f);
    case 3: return ((b(0) & 0x0f) << 12) | ((b(1) & 0x3f) << 6) | (b(2) & 0x3f);
    case 4: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3f) << 12) | ((b(2) & 0x3f) << 6) | (b(3) & 0x3f);
    default: return b(0);
  }
}

// The code points of s as byte substrings.
std::vector<std::string_view> utf8_units(std::string_view s) {
  std::vector<std::string_view> units;
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_unit_length(s, i);
    units.push_back(s.substr(i, len));
    i += len;
  }
  return units;
}

size_t utf8_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += utf8_unit_length(s, i)) ++n;
  return n;
}

// Python's str.isspace().
bool is_py_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
         cp == 0x3000;
}

uint32_t unit_cp(std::string_view unit) { return utf8_decode_at(unit, 0, unit.size()); }

// str.strip()/lstrip()/rstrip(): chars == nullptr strips Python whitespace.
std::string py_strip(std::string_view s, const std::string* chars, bool left, bool right) {
  auto units = utf8_units(s);
  std::vector<std::string_view> strip_set;
  if (chars) strip_set = utf8_units(*chars);
  auto strip_it = [&](std::string_view u) {
    if (!chars) return is_py_space(unit_cp(u));
    return std::find(strip_set.begin(), strip_set.end(), u) != strip_set.end();
  };
  size_t b = 0, e = units.size();
  if (left)
    while (b < e && strip_it(units[b])) ++b;
  if (right)
    while (e > b && strip_it(units[e - 1])) --e;
  if (b == e) return {};
  const char* start = units[b].data();
  const char* end = units[e - 1].data() + units[e - 1].size();
  return std::string(start, end);
}

char ascii_upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
std::string to_upper(std::string s) {
  for (char& c : s) c = ascii_upper(c);
  return s;
}
std::string to_lower(std::string s) {
  for (char& c : s) c = ascii_lower(c);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Values: Python's truthiness, str() and repr().

// Values nest only through lists, dicts and namespace attributes; namespace assignments refuse
// namespaces (so no cycles) and deep values, and the recursive helpers below stop at this depth
// instead of overflowing the stack.
constexpr int kMaxValueDepth = 256;
thread_local int g_value_depth = 0;
struct ValueDepthGuard {
  ValueDepthGuard() {
    if (++g_value_depth > kMaxValueDepth) {
      --g_value_depth;
      throw InvalidArgumentError(fmt::format("chat template value nested deeper than {} levels; simplify the template", kMaxValueDepth));
    }
  }
  ~ValueDepthGuard() { --g_value_depth; }
  ValueDepthGuard(const ValueDepthGuard&) = delete;
  ValueDepthGuard& operator=(const ValueDepthGuard&) = delete;
};

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::None: return "NoneType";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::List: return v.is_tuple ? "tuple" : "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Namespace: return "Namespace";
    case Value::Kind::Function: return "function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return false;
    case Value::Kind::Bool: return v.b;
    case Value::Kind::Int: return v.i != 0;
    case Value::Kind::Float: return v.f != 0.0;
    case Value::Kind::String: return !v.s.empty();
    case Value::Kind::List: return !v.list->empty();
    case Value::Kind::Dict: return !v.dict->items.empty();
    case Value::Kind::Namespace:
    case Value::Kind::Function: return true;
  }
  return false;
}

// Python's repr(float): shortest round-trip digits, fixed notation for 1e-4 <= |x| < 1e16.
std::string py_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e_pos = sci.find('e');
  std::string mant = sci.substr(0, e_pos);
  const int exp10 = std::stoi(sci.substr(e_pos + 1));
  std::string sign;
  if (mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  if (exp10 < -4 || exp10 >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    return out + fmt::format("e{}{:02d}", exp10 < 0 ? '-' : '+', std::abs(exp10));
  }
  const int point = exp10 + 1;  // digits before the decimal point
  std::string out;
  if (point <= 0) {
    out = "0." + std::string(static_cast<size_t>(-point), '0') + digits;
  } else if (static_cast<size_t>(point) >= digits.size()) {
    out = digits + std::string(static_cast<size_t>(point) - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, static_cast<size_t>(point)) + "." + digits.substr(static_cast<size_t>(point));
  }
  return sign + out;
}

// Python's repr(str).
std::string py_str_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (auto unit : utf8_units(s)) {
    const uint32_t cp = unit_cp(unit);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
      out += fmt::format("\\x{:02x}", cp);
    } else if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x2064) ||
               cp == 0x1680 || cp == 0x3000 || cp == 0xfeff) {
      out += fmt::format("\\u{:04x}", cp);
    } else {
      out += unit;
    }
  }
  out += quote;
  return out;
}

std::string to_repr(const Value& v);

// Python's str(value), which is what {{ value }} prints.
std::string to_str(const Value& v) {
  ValueDepthGuard guard;
  switch (v.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.b ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.i);
    case Value::Kind::Float: return py_float_repr(v.f);
    case Value::Kind::String: return v.s;
    case Value::Kind::List: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + to_repr((*v.list)[k]);
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Value::Kind::Dict:
    case Value::Kind::Namespace: {
      std::string out = v.kind == Value::Kind::Namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, item] : v.dict->items) {
        out += (first ? "" : ", ") + py_str_repr(k) + ": " + to_repr(item);
        first = false;
      }
      return out + (v.kind == Value::Kind::Namespace ? "}>" : "}");
    }
    case Value::Kind::Function: return "<function " + v.fn->name + ">";
  }
  return "";
}

std::string to_repr(const Value& v) {
  if (v.kind == Value::Kind::Undefined) return "Undefined";
  return v.kind == Value::Kind::String ? py_str_repr(v.s) : to_str(v);
}

// ---------------------------------------------------------------------------------------------
// JSON in and out.

Value from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX))
        throw InvalidArgumentError(fmt::format("chat template context: integer {} is larger than 2^63-1; pass it as a string", u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::number(j.get<double>());
    case nlohmann::json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return Value::make_list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.items.emplace_back(it.key(), from_json(it.value()));
      return Value::make_dict(std::move(d));
    }
    default: throw InvalidArgumentError("chat template context: binary JSON values are not supported; pass strings");
  }
}

struct JsonOptions {
  bool ensure_ascii = false;
  std::string indent;  // empty and !has_indent: compact
  bool has_indent = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};

void json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (auto unit : utf8_units(s)) {
    const uint32_t cp = unit_cp(unit);
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (cp < 0x20) {
      out += fmt::format("\\u{:04x}", cp);
    } else if (ensure_ascii && cp >= 0x80) {
      if (cp >= 0x10000) {
        const uint32_t v = cp - 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
      } else {
        out += fmt::format("\\u{:04x}", cp);
      }
    } else {
      out += unit;
    }
  }
  out += '"';
}

// ---------------------------------------------------------------------------------------------
// Interpreter.

enum class Flow { Normal, Break, Continue };

using Frame = std::unordered_map<std::string, Value>;

}  // namespace

// Declared in chat/jinja_value.hpp (built-in functions take it), so outside the anonymous namespace.
struct Interp {
  const Template::Impl& tpl;
  std::vector<std::shared_ptr<Frame>> frames;  // [globals, template top level, nested scopes...]
  uint64_t iterations = 0;
  uint64_t work = 0;
  int depth = 0;

  explicit Interp(const Template::Impl& t) : tpl(t) {}

  [[noreturn]] void fail(Pos pos, const std::string& what) const {
    throw InvalidArgumentError(fmt::format("{}: line {}, column {}: {}", tpl.name, pos.line, pos.col, what));
  }
  [[noreturn]] void unsupported(Pos pos, const std::string& what) const {
    throw UnsupportedError(fmt::format("{}: line {}, column {}: {} is not supported by lathe's chat template engine; {}",
                                       tpl.name, pos.line, pos.col, what, kRemedy));
  }

  struct DepthGuard {
    Interp& in;
    DepthGuard(Interp& interp, Pos pos) : in(interp) {
      if (++in.depth > in.tpl.limits.max_eval_depth)
        in.fail(pos, fmt::format("evaluation nested deeper than {} levels (runaway macro recursion?); simplify the template",
                                 in.tpl.limits.max_eval_depth));
    }
    ~DepthGuard() { --in.depth; }
  };

  // Every string or list built counts against max_work_bytes, so that loops of concatenations
  // cannot run for hours even though each string stays under max_output_bytes.
  void charge(Pos pos, uint64_t bytes) {
    if (bytes > tpl.limits.max_output_bytes)
      fail(pos, fmt::format("a value of {} bytes exceeds the limit of {} bytes", bytes, tpl.limits.max_output_bytes));
    work += bytes;
    if (work > tpl.limits.max_work_bytes)
      fail(pos, fmt::format("rendering built more than {} bytes of strings; the template is too expensive",
                            tpl.limits.max_work_bytes));
  }

  void emit(std::string& out, std::string_view s, Pos pos) {
    if (out.size() + s.size() > tpl.limits.max_output_bytes)
      fail(pos, fmt::format("output exceeds the limit of {} bytes", tpl.limits.max_output_bytes));
    charge(pos, s.size());
    out += s;
  }

  Value lookup(const std::string& name) const {
    for (auto it = frames.rbegin(); it != frames.rend(); ++it)
      if (auto f = (*it)->find(name); f != (*it)->end()) return f->second;
    return Value::undefined("'" + name + "' is undefined");
  }

  // ---- statements ----

  Flow exec(const Body& body, std::string& out) {
    for (const auto& s : body) {
      const Flow flow = exec_stmt(*s, out);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  Flow exec_stmt(const Stmt& s, std::string& out) {
    DepthGuard guard(*this, s.pos);
    switch (s.k) {
      case Stmt::K::Text: emit(out, s.text, s.pos); return Flow::Normal;
      case Stmt::K::Output: {
        const Value v = eval(*s.expr);
        emit(out, v.kind == Value::Kind::String ? std::string_view(v.s) : std::string_view(to_str(v)), s.pos);
        return Flow::Normal;
      }
      case Stmt::K::If:
        for (const auto& [cond, body] : s.branches)
          if (!cond || truthy(eval(*cond))) return exec(body, out);
        return Flow::Normal;
      case Stmt::K::For: return exec_for(s, out);
      case Stmt::K::Set: assign(s, eval(*s.expr)); return Flow::Normal;
      case Stmt::K::SetBlock: {
        std::string captured;
        exec(s.body, captured);
        assign(s, Value::string(std::move(captured)));
        return Flow::Normal;
      }
      case Stmt::K::Macro: define_macro(s); return Flow::Normal;
      case Stmt::K::Break: return Flow::Break;
      case Stmt::K::Continue: return Flow::Continue;
      case Stmt::K::Block: return exec(s.body, out);
    }
    return Flow::Normal;
  }

  void bind_targets(const std::vector<std::string>& targets, const Value& v, Pos pos) {
    Frame& frame = *frames.back();
    if (targets.size() == 1) {
      frame[targets[0]] = v;
      return;
    }
    const ValueList items = iterate(v, pos);
    if (items.size() != targets.size())
      fail(pos, fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
    for (size_t k = 0; k < targets.size(); ++k) frame[targets[k]] = items[k];
  }

  void assign(const Stmt& s, Value v) {
    if (s.attr.empty()) {
      bind_targets(s.targets, v, s.pos);
      return;
    }
    const Value ns = lookup(s.targets[0]);
    if (ns.kind != Value::Kind::Namespace)
      fail(s.pos, fmt::format("cannot assign attribute '{}' on '{}' ({}): only namespace() objects take attribute assignment",
                              s.attr, s.targets[0], type_name(ns)));
    check_storable(v, s.pos, 0);
    ns.dict->set(s.attr, std::move(v));
  }

  // What a namespace attribute may hold: no namespace (which could close a reference cycle) and
  // nothing nested deeper than kMaxValueDepth.
  void check_storable(const Value& v, Pos pos, int level) {
    if (level > kMaxValueDepth) fail(pos, fmt::format("value nested deeper than {} levels stored in a namespace", kMaxValueDepth));
    charge(pos, 8);
    if (v.kind == Value::Kind::Namespace)
      unsupported(pos, "storing a namespace (or loop) object inside a namespace");
    if (v.kind == Value::Kind::List)
      for (const auto& item : *v.list) check_storable(item, pos, level + 1);
    if (v.kind == Value::Kind::Dict)
      for (const auto& [k, item] : v.dict->items) check_storable(item, pos, level + 1);
  }

  Flow exec_for(const Stmt& s, std::string& out) {
    const Value iterable = eval(*s.expr);
    ValueList items = iterate(iterable, s.expr->pos);
    if (s.cond) {  // the inline filter runs before the loop, so loop.length counts kept items
      ValueList kept;
      for (auto& item : items) {
        frames.push_back(std::make_shared<Frame>());
        bind_targets(s.targets, item, s.pos);
        const bool keep = truthy(eval(*s.cond));
        frames.pop_back();
        if (keep) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(s.else_body, out);
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      if (++iterations > tpl.limits.max_loop_iterations)
        fail(s.pos, fmt::format("more than {} loop iterations; the template is too expensive", tpl.limits.max_loop_iterations));
      frames.push_back(std::make_shared<Frame>());
      bind_targets(s.targets, items[static_cast<size_t>(k)], s.pos);
      (*frames.back())["loop"] = loop_object(items, k, n);
      const Flow flow = exec(s.body, out);
      frames.pop_back();
      if (flow == Flow::Break) break;
    }
    return Flow::Normal;
  }

  static Value loop_object(const ValueList& items, int64_t k, int64_t n) {
    Dict loop;
    loop.items.emplace_back("index", Value::integer(k + 1));
    loop.items.emplace_back("index0", Value::integer(k));
    loop.items.emplace_back("revindex", Value::integer(n - k));
    loop.items.emplace_back("revindex0", Value::integer(n - k - 1));
    loop.items.emplace_back("first", Value::boolean(k == 0));
    loop.items.emplace_back("last", Value::boolean(k == n - 1));
    loop.items.emplace_back("length", Value::integer(n));
    loop.items.emplace_back("depth", Value::integer(1));
    loop.items.emplace_back("depth0", Value::integer(0));
    loop.items.emplace_back("previtem", k > 0 ? items[static_cast<size_t>(k - 1)] : Value::undefined("'loop.previtem' is undefined"));
    loop.items.emplace_back("nextitem", k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value::undefined("'loop.nextitem' is undefined"));
    loop.items.emplace_back("cycle", Value::function("loop.cycle", [k](Interp& in, CallArgs& a, Pos pos) {
      if (a.positional.empty()) in.fail(pos, "loop.cycle() needs at least one argument");
      return a.positional[static_cast<size_t>(k) % a.positional.size()];
    }));
    return Value::make_dict(std::move(loop), Value::Kind::Namespace);
  }

  void define_macro(const Stmt& s) {
    const Stmt* macro = &s;
    // Weak references: the macro is stored in one of these frames, a strong one would be a cycle.
    std::weak_ptr<Frame> top = frames.size() > 1 ? frames[1] : frames[0];
    std::weak_ptr<Frame> globals = frames[0];
    (*frames.back())[s.text] = Value::function(s.text, [macro, top, globals](Interp& in, CallArgs& a, Pos pos) {
      DepthGuard guard(in, pos);
      auto top_frame = top.lock();
      auto global_frame = globals.lock();
      if (!top_frame || !global_frame) in.fail(pos, fmt::format("macro '{}' called after its template finished", macro->text));
      if (a.positional.size() > macro->params.size())
        in.fail(pos, fmt::format("macro '{}' takes {} arguments, {} given", macro->text, macro->params.size(), a.positional.size()));
      auto saved = std::move(in.frames);
      in.frames = {global_frame, top_frame, std::make_shared<Frame>()};
      try {
        Frame& args = *in.frames.back();
        for (size_t k = 0; k < macro->params.size(); ++k) {
          const std::string& pname = macro->params[k].first;
          const ExprP& def = macro->params[k].second;
          if (k < a.positional.size()) {
            args[pname] = a.positional[k];
          } else if (auto it = std::find_if(a.keyword.begin(), a.keyword.end(), [&](auto& kv) { return kv.first == pname; });
                     it != a.keyword.end()) {
            args[pname] = it->second;
          } else {
            args[pname] = def ? in.eval(*def) : Value::undefined("parameter '" + pname + "' was not provided");
          }
        }
        for (const auto& kw : a.keyword) {
          const std::string& key = kw.first;
          if (std::none_of(macro->params.begin(), macro->params.end(), [&](auto& p) { return p.first == key; }))
            in.fail(pos, fmt::format("macro '{}' has no parameter named '{}'", macro->text, key));
        }
        std::string out;
        in.exec(macro->body, out);
        in.frames = std::move(saved);
        return Value::string(std::move(out));
      } catch (...) {
        in.frames = std::move(saved);
        throw;
      }
    });
  }

  // ---- iteration, attribute and item access ----

  ValueList iterate(const Value& v, Pos pos) {
    switch (v.kind) {
      case Value::Kind::Undefined: return {};
      case Value::Kind::List: return *v.list;
      case Value::Kind::Dict: {
        ValueList keys;
        for (const auto& [k, item] : v.dict->items) keys.push_back(Value::string(k));
        return keys;
      }
      case Value::Kind::String: {
        ValueList chars;
        for (auto u : utf8_units(v.s)) chars.push_back(Value::string(std::string(u)));
        charge(pos, chars.size() * sizeof(Value));
        return chars;
      }
      default: fail(pos, fmt::format("'{}' object is not iterable", type_name(v)));
    }
  }

  Value get_attr(const Value& obj, const std::string& name, Pos pos) {
    switch (obj.kind) {
      case Value::Kind::Undefined: fail(pos, obj.s.empty() ? "value is undefined" : obj.s);
      case Value::Kind::Dict:
        if (Value m = dict_method(obj, name); !m.is_undefined()) return m;
        [[fallthrough]];
      case Value::Kind::Namespace:
        if (const Value* found = obj.dict->find(name)) return *found;
        return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(obj), name));
      case Value::Kind::String:
        if (Value m = string_method(obj, name); !m.is_undefined()) return m;
        break;
      default: break;
    }
    return Value::undefined(fmt::format("'{}' object has no attribute '{}'", type_name(obj), name));
  }

  Value get_item(const Value& obj, const Value& key, Pos pos) {
    switch (obj.kind) {
      case Value::Kind::Undefined: fail(pos, obj.s.empty() ? "value is undefined" : obj.s);
      case Value::Kind::Dict:
      case Value::Kind::Namespace:
        if (key.kind == Value::Kind::String) {
          if (const Value* found = obj.dict->find(key.s)) return *found;
          if (obj.kind == Value::Kind::Dict)
            if (Value m = dict_method(obj, key.s); !m.is_undefined()) return m;
        }
        return Value::undefined(fmt::format("'{}' object has no attribute {}", type_name(obj), to_repr(key)));
      case Value::Kind::List:
      case Value::Kind::String: {
        if (key.kind == Value::Kind::String) return get_attr(obj, key.s, pos);
        if (!key.is_integral()) fail(pos, fmt::format("{} indices must be integers, not {}", type_name(obj), type_name(key)));
        if (obj.kind == Value::Kind::List) {
          const int64_t n = static_cast<int64_t>(obj.list->size());
          int64_t idx = key.as_int();
          if (idx < 0) idx += n;
          if (idx < 0 || idx >= n) return Value::undefined(fmt::format("{} index {} out of range", type_name(obj), key.as_int()));
          return (*obj.list)[static_cast<size_t>(idx)];
        }
        const auto units = utf8_units(obj.s);
        const int64_t n = static_cast<int64_t>(units.size());
        int64_t idx = key.as_int();
        if (idx < 0) idx += n;
        if (idx < 0 || idx >= n) return Value::undefined("string index out of range");
        return Value::string(std::string(units[static_cast<size_t>(idx)]));
      }
      default: return Value::undefined(fmt::format("'{}' object has no item {}", type_name(obj), to_repr(key)));
    }
  }

  // Python slice semantics for lists and strings.
  Value slice(const Value& obj, const Value* bounds[3], Pos pos) {
    int64_t step = 1;
    if (bounds[2] && bounds[2]->kind != Value::Kind::None) {
      if (!bounds[2]->is_integral()) fail(pos, "slice step must be an integer");
      step = bounds[2]->as_int();
      if (step == 0) fail(pos, "slice step cannot be zero");
    }
    std::vector<std::string_view> units;
    int64_t n = 0;
    if (obj.kind == Value::Kind::List) {
      n = static_cast<int64_t>(obj.list->size());
    } else if (obj.kind == Value::Kind::String) {
      units = utf8_units(obj.s);
      n = static_cast<int64_t>(units.size());
    } else if (obj.kind == Value::Kind::Undefined) {
      fail(pos, obj.s.empty() ? "value is undefined" : obj.s);
    } else {
      fail(pos, fmt::format("'{}' object is not subscriptable", type_name(obj)));
    }
    auto bound = [&](const Value* b, int64_t def, bool is_start) {
      if (!b || b->kind == Value::Kind::None) return def;
      if (!b->is_integral()) fail(pos, "slice indices must be integers or None");
      int64_t x = b->as_int();
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      (void)is_start;
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = bound(bounds[0], step > 0 ? 0 : n - 1, true);
    const int64_t stop = bound(bounds[1], step > 0 ? n : -1, false);
    std::vector<size_t> picked;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) picked.push_back(static_cast<size_t>(k));
    if (obj.kind == Value::Kind::List) {
      ValueList out;
      for (size_t k : picked) out.push_back((*obj.list)[k]);
      charge(pos, out.size() * sizeof(Value));
      return Value::make_list(std::move(out), obj.is_tuple);
    }
    std::string out;
    for (size_t k : picked) out += units[k];
    charge(pos, out.size());
    return Value::string(std::move(out));
  }

  // ---- expressions ----

  Value eval(const Expr& e) {
    DepthGuard guard(*this, e.pos);
    switch (e.k) {
      case Expr::K::Literal: return e.literal;
      case Expr::K::Name: return lookup(e.name);
      case Expr::K::List:
      case Expr::K::Tuple: {
        ValueList items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::make_list(std::move(items), e.k == Expr::K::Tuple);
      }
      case Expr::K::Dict: {
        Dict d;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (key.kind != Value::Kind::String) unsupported(e.args[k]->pos, fmt::format("a dict key of type {}", type_name(key)));
          d.set(key.s, eval(*e.args[k + 1]));
        }
        return Value::make_dict(std::move(d));
      }
      case Expr::K::Attr: return get_attr(eval(*e.args[0]), e.name, e.pos);
      case Expr::K::Item: {
        const Value obj = eval(*e.args[0]);
        return get_item(obj, eval(*e.args[1]), e.pos);
      }
      case Expr::K::Slice: {
        const Value obj = eval(*e.args[0]);
        Value vals[3];
        const Value* bounds[3] = {nullptr, nullptr, nullptr};
        for (int k = 0; k < 3; ++k)
          if (e.args[static_cast<size_t>(k) + 1]) {
            vals[k] = eval(*e.args[static_cast<size_t>(k) + 1]);
            bounds[k] = &vals[k];
          }
        return slice(obj, bounds, e.pos);
      }
      case Expr::K::Call: return eval_call(e);
      case Expr::K::Filter: return eval_filter(e);
      case Expr::K::Test: {
        const bool result = eval_test(e);
        return Value::boolean(e.negated ? !result : result);
      }
      case Expr::K::Not: return Value::boolean(!truthy(eval(*e.args[0])));
      case Expr::K::Neg:
      case Expr::K::Pos: {
        const Value v = eval(*e.args[0]);
        if (!v.is_number()) fail(e.pos, fmt::format("bad operand type for unary {}: '{}'", e.k == Expr::K::Neg ? '-' : '+', type_name(v)));
        if (e.k == Expr::K::Pos) return v.kind == Value::Kind::Float ? v : Value::integer(v.as_int());
        if (v.kind == Value::Kind::Float) return Value::number(-v.f);
        if (v.as_int() == INT64_MIN) fail(e.pos, "integer overflow");
        return Value::integer(-v.as_int());
      }
      case Expr::K::Binary: return binary_op(e.name, eval(*e.args[0]), eval(*e.args[1]), e.pos);
      case Expr::K::Concat: {
        std::string s = to_str(eval(*e.args[0]));
        s += to_str(eval(*e.args[1]));
        charge(e.pos, s.size());
        return Value::string(std::move(s));
      }
      case Expr::K::Compare: {
        Value lhs = eval(*e.args[0]);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value rhs = eval(*e.args[k + 1]);
          if (!compare(e.ops[k], lhs, rhs, e.pos)) return Value::boolean(false);
          lhs = std::move(rhs);
        }
        return Value::boolean(true);
      }
      case Expr::K::And: {
        Value lhs = eval(*e.args[0]);
        return truthy(lhs) ? eval(*e.args[1]) : lhs;
      }
      case Expr::K::Or: {
        Value lhs = eval(*e.args[0]);
        return truthy(lhs) ? lhs : eval(*e.args[1]);
      }
      case Expr::K::Cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        if (e.args[2]) return eval(*e.args[2]);
        return Value::undefined("the inline if expression had no else branch");
    }
    return {};
  }

  CallArgs eval_args(const Expr& e, size_t first) {
    CallArgs a;
    for (size_t k = first; k < e.args.size(); ++k) a.positional.push_back(eval(*e.args[k]));
    for (const auto& [key, ex] : e.kwargs) a.keyword.emplace_back(key, eval(*ex));
    return a;
  }

  Value eval_call(const Expr& e) {
    const Value callee = eval(*e.args[0]);
    if (callee.kind == Value::Kind::Function) {
      CallArgs a = eval_args(e, 1);
      return callee.fn->call(*this, a, e.pos);
    }
    if (callee.is_undefined()) {
      const Expr& c = *e.args[0];
      if (c.k == Expr::K::Name) {
        static const std::unordered_set<std::string> jinja_globals = {"lipsum", "cycler", "joiner"};
        if (jinja_globals.count(c.name)) unsupported(c.pos, fmt::format("the global function '{}'", c.name));
      }
      if (c.k == Expr::K::Attr) unsupported(e.pos, fmt::format("the method '{}' ({})", c.name, callee.s));
      fail(e.pos, callee.s.empty() ? "called an undefined value" : callee.s);
    }
    fail(e.pos, fmt::format("'{}' object is not callable", type_name(callee)));
  }

  // ---- operators ----

  static bool equals(const Value& a, const Value& b) {
    ValueDepthGuard guard;
    if (a.is_number() && b.is_number()) {
      if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
      return a.as_double() == b.as_double();
    }
    if (a.kind != b.kind) return false;
    switch (a.kind) {
      case Value::Kind::Undefined:
      case Value::Kind::None: return true;
      case Value::Kind::String: return a.s == b.s;
      case Value::Kind::List: {
        if (a.is_tuple != b.is_tuple || a.list->size() != b.list->size()) return false;
        for (size_t k = 0; k < a.list->size(); ++k)
          if (!equals((*a.list)[k], (*b.list)[k])) return false;
        return true;
      }
      case Value::Kind::Dict: {
        if (a.dict->items.size() != b.dict->items.size()) return false;
        for (const auto& [k, v] : a.dict->items) {
          const Value* other = b.dict->find(k);
          if (!other || !equals(v, *other)) return false;
        }
        return true;
      }
      case Value::Kind::Namespace: return a.dict == b.dict;
      case Value::Kind::Function: return a.fn == b.fn;
      default: return false;
    }
  }

  bool less(const Value& a, const Value& b, Pos pos) {
    ValueDepthGuard guard;
    if (a.is_number() && b.is_number()) {
      if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int();
      return a.as_double() < b.as_double();
    }
    if (a.kind == Value::Kind::String && b.kind == Value::Kind::String) return a.s < b.s;
    if (a.kind == Value::Kind::List && b.kind == Value::Kind::List && a.is_tuple == b.is_tuple) {
      const size_t n = std::min(a.list->size(), b.list->size());
      for (size_t k = 0; k < n; ++k) {
        if (equals((*a.list)[k], (*b.list)[k])) continue;
        return less((*a.list)[k], (*b.list)[k], pos);
      }
      return a.list->size() < b.list->size();
    }
    fail(pos, fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b)));
  }

  bool contains(const Value& container, const Value& item, Pos pos) {
    switch (container.kind) {
      case Value::Kind::Undefined: return false;
      case Value::Kind::String:
        if (item.kind != Value::Kind::String)
          fail(pos, fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
        return container.s.find(item.s) != std::string::npos;
      case Value::Kind::List:
        return std::any_of(container.list->begin(), container.list->end(), [&](const Value& v) { return equals(v, item); });
      case Value::Kind::Dict:
      case Value::Kind::Namespace: return item.kind == Value::Kind::String && container.dict->find(item.s) != nullptr;
      default: fail(pos, fmt::format("argument of type '{}' is not iterable", type_name(container)));
    }
  }

  bool compare(const std::string& op, const Value& a, const Value& b, Pos pos) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less(a, b, pos);
    if (op == ">") return less(b, a, pos);
    if (op == "<=") return less(a, b, pos) || equals(a, b);
    if (op == ">=") return less(b, a, pos) || equals(a, b);
    if (op == "in") return contains(b, a, pos);
    return !contains(b, a, pos);  // "not in"
  }

  Value repeat(const Value& seq, int64_t times, Pos pos) {
    if (times <= 0) return seq.kind == Value::Kind::String ? Value::string("") : Value::make_list({}, seq.is_tuple);
    const uint64_t unit = seq.kind == Value::Kind::String ? seq.s.size() : seq.list->size() * sizeof(Value);
    if (unit != 0 && static_cast<uint64_t>(times) > tpl.limits.max_output_bytes / unit + 1)
      charge(pos, tpl.limits.max_output_bytes + 1);
    charge(pos, unit * static_cast<uint64_t>(times));
    if (seq.kind == Value::Kind::String) {
      std::string out;
      for (int64_t k = 0; k < times; ++k) out += seq.s;
      return Value::string(std::move(out));
    }
    ValueList out;
    for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.list->begin(), seq.list->end());
    return Value::make_list(std::move(out), seq.is_tuple);
  }

  Value binary_op(const std::string& op, const Value& a, const Value& b, Pos pos) {
    if (a.is_number() && b.is_number()) return arithmetic(op, a, b, pos);
    if (op == "+" && a.kind == b.kind && a.kind == Value::Kind::String) {
      charge(pos, a.s.size() + b.s.size());
      return Value::string(a.s + b.s);
    }
    if (op == "+" && a.kind == b.kind && a.kind == Value::Kind::List && a.is_tuple == b.is_tuple) {
      charge(pos, (a.list->size() + b.list->size()) * sizeof(Value));
      ValueList out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(out), a.is_tuple);
    }
    if (op == "*" && (a.kind == Value::Kind::String || a.kind == Value::Kind::List) && b.is_integral())
      return repeat(a, b.as_int(), pos);
    if (op == "*" && (b.kind == Value::Kind::String || b.kind == Value::Kind::List) && a.is_integral())
      return repeat(b, a.as_int(), pos);
    if (op == "%" && a.kind == Value::Kind::String) unsupported(pos, "printf-style string formatting ('...' % x)");
    if (a.is_undefined() || b.is_undefined()) {
      const Value& u = a.is_undefined() ? a : b;
      fail(pos, u.s.empty() ? "value is undefined" : u.s);
    }
    fail(pos, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
  }

  Value arithmetic(const std::string& op, const Value& a, const Value& b, Pos pos) {
    const bool ints = a.is_integral() && b.is_integral();
    if (op == "/") {
      if (b.as_double() == 0.0) fail(pos, "division by zero");
      return Value::number(a.as_double() / b.as_double());
    }
    if (ints) {
      const int64_t x = a.as_int(), y = b.as_int();
      int64_t r = 0;
      bool overflow = false;
      if (op == "+") {
        overflow = __builtin_add_overflow(x, y, &r);
      } else if (op == "-") {
        overflow = __builtin_sub_overflow(x, y, &r);
      } else if (op == "*") {
        overflow = __builtin_mul_overflow(x, y, &r);
      } else if (op == "//" || op == "%") {
        if (y == 0) fail(pos, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) fail(pos, "integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        r = op == "//" ? q : m;
      } else {  // "**"
        if (y < 0) return Value::number(std::pow(static_cast<double>(x), static_cast<double>(y)));
        r = 1;
        for (int64_t k = 0; k < y && !overflow; ++k) {
          overflow = __builtin_mul_overflow(r, x, &r);
          if (r == 0 || r == 1) break;
          if (r == -1) {
            r = (y % 2 == 0) ? 1 : -1;
            break;
          }
        }
      }
      if (overflow) fail(pos, fmt::format("integer overflow in {} {} {} (lathe's integers are 64-bit)", x, op, y));
      return Value::integer(r);
    }
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (op == "**") return Value::number(std::pow(x, y));
    if (y == 0.0) fail(pos, "float division or modulo by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    if (op == "%") return Value::number(m);
    return Value::number(std::floor((x - m) / y + 0.5));  // "//"
  }

  // ---- methods of str and dict ----

  static std::string arg_string(Interp& in, const CallArgs& a, size_t k, Pos pos, const char* what) {
    if (k >= a.positional.size() || a.positional[k].kind != Value::Kind::String)
      in.fail(pos, fmt::format("{} expects a string argument", what));
    return a.positional[k].s;
  }

  Value string_method(const Value& obj, const std::string& name) {
    const std::string s = obj.s;
    static const std::unordered_set<std::string> methods = {"strip", "lstrip", "rstrip", "split", "startswith", "endswith",
                                                            "upper", "lower", "replace", "title", "capitalize", "find", "join",
                                                            "count", "rsplit"};
    if (!methods.count(name)) return {};
    return Value::function("str." + name, [s, name](Interp& in, CallArgs& a, Pos pos) -> Value {
      if (name == "strip" || name == "lstrip" || name == "rstrip") {
        const bool has_chars = !a.positional.empty() && a.positional[0].kind != Value::Kind::None;
        std::string chars = has_chars ? arg_string(in, a, 0, pos, "str.strip()") : std::string();
        return Value::string(py_strip(s, has_chars ? &chars : nullptr, name != "rstrip", name != "lstrip"));
      }
      if (name == "split" || name == "rsplit") return in.split(s, a, pos, name == "rsplit");
      if (name == "startswith" || name == "endswith") {
        if (a.positional.empty()) in.fail(pos, "str." + name + "() takes at least 1 argument");
        ValueList options = a.positional[0].kind == Value::Kind::List ? *a.positional[0].list : ValueList{a.positional[0]};
        for (const auto& o : options) {
          if (o.kind != Value::Kind::String) in.fail(pos, "str." + name + "() arguments must be str");
          const bool hit = name == "startswith" ? std::string_view(s).starts_with(o.s) : std::string_view(s).ends_with(o.s);
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      }
      if (name == "upper") return Value::string(to_upper(s));
      if (name == "lower") return Value::string(to_lower(s));
      if (name == "title") return Value::string(py_title(s));
      if (name == "capitalize") return Value::string(capitalize(s));
      if (name == "replace") {
        int64_t count = -1;
        if (a.positional.size() > 2 && a.positional[2].is_integral()) count = a.positional[2].as_int();
        return in.replace(s, arg_string(in, a, 0, pos, "str.replace()"), arg_string(in, a, 1, pos, "str.replace()"), count, pos);
      }
      if (name == "find" || name == "count") {
        const std::string needle = arg_string(in, a, 0, pos, ("str." + name + "()").c_str());
        if (name == "find") {
          const size_t at = s.find(needle);
          return Value::integer(at == std::string::npos ? -1 : static_cast<int64_t>(utf8_count(std::string_view(s).substr(0, at))));
        }
        if (needle.empty()) return Value::integer(static_cast<int64_t>(utf8_count(s) + 1));
        int64_t n = 0;
        for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + needle.size())) ++n;
        return Value::integer(n);
      }
      // join
      if (a.positional.empty()) in.fail(pos, "str.join() takes exactly one argument");
      std::string out;
      bool first = true;
      for (const auto& item : in.iterate(a.positional[0], pos)) {
        if (item.kind != Value::Kind::String) in.fail(pos, fmt::format("str.join(): expected str instance, {} found", type_name(item)));
        if (!first) out += s;
        out += item.s;
        first = false;
        in.charge(pos, item.s.size() + s.size());
      }
      return Value::string(std::move(out));
    });
  }

  Value dict_method(const Value& obj, const std::string& name) {
    if (name != "items" && name != "keys" && name != "values" && name != "get") return {};
    const auto dict = obj.dict;
    return Value::function("dict." + name, [dict, name](Interp& in, CallArgs& a, Pos pos) -> Value {
      if (name == "get") {
        if (a.positional.empty()) in.fail(pos, "dict.get() takes at least 1 argument");
        if (a.positional[0].kind == Value::Kind::String)
          if (const Value* found = dict->find(a.positional[0].s)) return *found;
        return a.positional.size() > 1 ? a.positional[1] : Value::none();
      }
      ValueList out;
      for (const auto& [k, v] : dict->items) {
        if (name == "items") out.push_back(Value::make_list({Value::string(k), v}, true));
        if (name == "keys") out.push_back(Value::string(k));
        if (name == "values") out.push_back(v);
      }
      return Value::make_list(std::move(out));
    });
  }

  Value split(const std::string& s, const CallArgs& a, Pos pos, bool from_right) {
    const Value* sep = a.positional.empty() ? nullptr : &a.positional[0];
    for (const auto& [k, v] : a.keyword)
      if (k == "sep") sep = &v;
    int64_t maxsplit = -1;
    if (a.positional.size() > 1 && a.positional[1].is_integral()) maxsplit = a.positional[1].as_int();
    for (const auto& [k, v] : a.keyword)
      if (k == "maxsplit" && v.is_integral()) maxsplit = v.as_int();
    ValueList parts;
    if (!sep || sep->kind == Value::Kind::None) {
      if (from_right && maxsplit >= 0) unsupported(pos, "str.rsplit() with maxsplit and no separator");
      std::string word;
      const auto units = utf8_units(s);
      size_t k = 0;
      auto skip_space = [&] {
        while (k < units.size() && is_py_space(unit_cp(units[k]))) ++k;
      };
      skip_space();
      while (k < units.size()) {
        if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
          std::string rest;
          for (; k < units.size(); ++k) rest += units[k];
          parts.push_back(Value::string(py_strip(rest, nullptr, false, true)));
          break;
        }
        word.clear();
        while (k < units.size() && !is_py_space(unit_cp(units[k]))) word += units[k++];
        parts.push_back(Value::string(word));
        skip_space();
      }
    } else {
      if (sep->kind != Value::Kind::String) fail(pos, "str.split() separator must be a string or None");
      if (sep->s.empty()) fail(pos, "empty separator");
      std::vector<std::string> pieces;
      if (!from_right) {
        size_t start = 0;
        for (size_t at = s.find(sep->s); at != std::string::npos; at = s.find(sep->s, start)) {
          if (maxsplit >= 0 && static_cast<int64_t>(pieces.size()) >= maxsplit) break;
          pieces.push_back(s.substr(start, at - start));
          start = at + sep->s.size();
        }
        pieces.push_back(s.substr(start));
      } else {
        size_t end = s.size();
        while (maxsplit < 0 || static_cast<int64_t>(pieces.size()) < maxsplit) {
          if (end < sep->s.size()) break;
          const size_t at = s.rfind(sep->s, end - sep->s.size());
          if (at == std::string::npos) break;
          pieces.push_back(s.substr(at + sep->s.size(), end - at - sep->s.size()));
          end = at;
        }
        pieces.push_back(s.substr(0, end));
        std::reverse(pieces.begin(), pieces.end());
      }
      for (auto& p : pieces) parts.push_back(Value::string(std::move(p)));
    }
    charge(pos, s.size() + parts.size() * sizeof(Value));
    return Value::make_list(std::move(parts));
  }

  Value replace(const std::string& s, const std::string& from, const std::string& to, int64_t count, Pos pos) {
    std::string out;
    if (from.empty()) {  // Python inserts `to` around every code point
      int64_t n = 0;
      for (auto u : utf8_units(s)) {
        if (count < 0 || n < count) {
          out += to;
          ++n;
        }
        out += u;
        charge(pos, to.size() + u.size());
      }
      if (count < 0 || n < count) out += to;
      return Value::string(std::move(out));
    }
    size_t start = 0;
    int64_t n = 0;
    for (size_t at = s.find(from); at != std::string::npos && (count < 0 || n < count); at = s.find(from, start), ++n) {
      out.append(s, start, at - start);
      out += to;
      start = at + from.size();
      charge(pos, at - start + to.size() + from.size());
    }
    out.append(s, start);
    charge(pos, out.size());
    return Value::string(std::move(out));
  }

  static std::string capitalize(const std::string& s) {
    std::string out = to_lower(s);
    if (!out.empty()) out[0] = ascii_upper(out[0]);
    return out;
  }

  // Python's str.title(): a letter after a cased letter is lowered, any other letter is raised.
  static std::string py_title(const std::string& s) {
    std::string out = s;
    bool prev_cased = false;
    for (char& c : out) {
      if (ascii_alpha(c)) {
        c = prev_cased ? ascii_lower(c) : ascii_upper(c);
        prev_cased = true;
      } else {
        prev_cased = false;
      }
    }
    return out;
  }

  // jinja2's title filter: words start after "-", whitespace, "(", "{", "[" or "<".
  static std::string jinja_title(const std::string& s) {
    std::string out = s;
    bool word_start = true;
    for (char& c : out) {
      const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || Lexer_is_ws(c);
      if (sep) {
        word_start = true;
        continue;
      }
      c = word_start ? ascii_upper(c) : ascii_lower(c);
      word_start = false;
    }
    return out;
  }
  static bool Lexer_is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

  // ---- filters ----

  const Value* kwarg(const CallArgs& a, std::string_view name, size_t position) const {
    for (const auto& [k, v] : a.keyword)
      if (k == name) return &v;
    return position < a.positional.size() ? &a.positional[position] : nullptr;
  }

  Value eval_filter(const Expr& e) {
    Value input = eval(*e.args[0]);
    CallArgs a = eval_args(e, 1);
    return apply_filter(e.name, input, a, e.pos);
  }

  std::string tojson(const Value& v, const CallArgs& a, Pos pos) {
    JsonOptions o;
    if (const Value* indent = kwarg(a, "indent", 0); indent && indent->kind != Value::Kind::None) {
      o.has_indent = true;
      o.item_sep = ",";
      if (indent->kind == Value::Kind::String) {
        o.indent = indent->s;
      } else if (indent->is_integral()) {
        o.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(indent->as_int(), 0, 64)), ' ');
      } else {
        fail(pos, "tojson(indent=...) expects an integer or a string");
      }
    }
    if (const Value* ea = kwarg(a, "ensure_ascii", 99)) o.ensure_ascii = truthy(*ea);
    if (const Value* sk = kwarg(a, "sort_keys", 99)) o.sort_keys = truthy(*sk);
    if (const Value* sep = kwarg(a, "separators", 99); sep && sep->kind != Value::Kind::None) {
      if (sep->kind != Value::Kind::List || sep->list->size() != 2 || (*sep->list)[0].kind != Value::Kind::String ||
          (*sep->list)[1].kind != Value::Kind::String)
        fail(pos, "tojson(separators=...) expects a pair of strings");
      o.item_sep = (*sep->list)[0].s;
      o.key_sep = (*sep->list)[1].s;
    }
    std::string out;
    write_json(out, v, o, 0, pos);
    return out;
  }

  void write_json(std::string& out, const Value& v, const JsonOptions& o, int level, Pos pos) {
    DepthGuard guard(*this, pos);
    charge(pos, 16);
    if (out.size() > tpl.limits.max_output_bytes) fail(pos, "tojson output exceeds the size limit");
    auto newline = [&](int lvl) {
      if (!o.has_indent) return;
      out += '\n';
      for (int k = 0; k < lvl; ++k) out += o.indent;
    };
    switch (v.kind) {
      case Value::Kind::None: out += "null"; return;
      case Value::Kind::Bool: out += v.b ? "true" : "false"; return;
      case Value::Kind::Int: out += std::to_string(v.i); return;
      case Value::Kind::Float:
        if (std::isnan(v.f)) out += "NaN";
        else if (std::isinf(v.f)) out += v.f < 0 ? "-Infinity" : "Infinity";
        else out += py_float_repr(v.f);
        return;
      case Value::Kind::String: json_string(out, v.s, o.ensure_ascii); return;
      case Value::Kind::List: {
        if (v.list->empty()) {
          out += "[]";
          return;
        }
        out += '[';
        for (size_t k = 0; k < v.list->size(); ++k) {
          if (k) out += o.item_sep;
          newline(level + 1);
          write_json(out, (*v.list)[k], o, level + 1, pos);
        }
        newline(level);
        out += ']';
        return;
      }
      case Value::Kind::Dict: {
        if (v.dict->items.empty()) {
          out += "{}";
          return;
        }
        std::vector<const std::pair<std::string, Value>*> entries;
        for (const auto& kv : v.dict->items) entries.push_back(&kv);
        if (o.sort_keys)
          std::stable_sort(entries.begin(), entries.end(), [](auto* x, auto* y) { return x->first < y->first; });
        out += '{';
        for (size_t k = 0; k < entries.size(); ++k) {
          if (k) out += o.item_sep;
          newline(level + 1);
          json_string(out, entries[k]->first, o.ensure_ascii);
          out += o.key_sep;
          write_json(out, entries[k]->second, o, level + 1, pos);
        }
        newline(level);
        out += '}';
        return;
      }
      default: fail(pos, fmt::format("Object of type {} is not JSON serializable", type_name(v)));
    }
  }

  Value apply_filter(const std::string& name, const Value& in, const CallArgs& a, Pos pos) {
    auto need_string = [&](const char* filter) -> std::string {
      if (in.kind == Value::Kind::String) return in.s;
      (void)filter;
      return to_str(in);
    };
    if (name == "trim") {
      const Value* chars = kwarg(a, "chars", 0);
      std::string c = chars && chars->kind == Value::Kind::String ? chars->s : std::string();
      return Value::string(py_strip(need_string("trim"), chars && chars->kind == Value::Kind::String ? &c : nullptr, true, true));
    }
    if (name == "length" || name == "count") {
      switch (in.kind) {
        case Value::Kind::Undefined: return Value::integer(0);
        case Value::Kind::String: return Value::integer(static_cast<int64_t>(utf8_count(in.s)));
        case Value::Kind::List: return Value::integer(static_cast<int64_t>(in.list->size()));
        case Value::Kind::Dict:
        case Value::Kind::Namespace: return Value::integer(static_cast<int64_t>(in.dict->items.size()));
        default: fail(pos, fmt::format("object of type '{}' has no len()", type_name(in)));
      }
    }
    if (name == "tojson") return Value::string(tojson(in, a, pos));
    if (name == "upper") return Value::string(to_upper(need_string("upper")));
    if (name == "lower") return Value::string(to_lower(need_string("lower")));
    if (name == "capitalize") return Value::string(capitalize(need_string("capitalize")));
    if (name == "title") return Value::string(jinja_title(need_string("title")));
    if (name == "string" || name == "safe") return in.kind == Value::Kind::String ? in : Value::string(to_str(in));
    if (name == "replace") {
      if (a.positional.size() < 2) fail(pos, "replace filter takes (old, new[, count])");
      int64_t count = -1;
      if (const Value* c = kwarg(a, "count", 2); c && c->is_integral()) count = c->as_int();
      return replace(need_string("replace"), to_str(a.positional[0]), to_str(a.positional[1]), count, pos);
    }
    if (name == "join") {
      const Value* sep = kwarg(a, "d", 0);
      const Value* attribute = kwarg(a, "attribute", 1);
      const std::string separator = sep ? to_str(*sep) : std::string();
      std::string out;
      bool first = true;
      for (const auto& item : iterate(in, pos)) {
        if (!first) out += separator;
        first = false;
        const std::string piece = to_str(attribute ? get_attr(item, to_str(*attribute), pos) : item);
        out += piece;
        charge(pos, piece.size() + separator.size());
      }
      return Value::string(std::move(out));
    }
    if (name == "first" || name == "last") {
      if (in.kind == Value::Kind::String) {
        const auto units = utf8_units(in.s);
        if (units.empty()) return Value::undefined("first/last of an empty string");
        return Value::string(std::string(name == "first" ? units.front() : units.back()));
      }
      const ValueList items = iterate(in, pos);
      if (items.empty()) return Value::undefined(fmt::format("{} of an empty sequence", name));
      return name == "first" ? items.front() : items.back();
    }
    if (name == "default" || name == "d") {
      const Value* fallback = kwarg(a, "default_value", 0);
      const Value* boolean = kwarg(a, "boolean", 1);
      const bool use_fallback = in.is_undefined() || (boolean && truthy(*boolean) && !truthy(in));
      if (!use_fallback) return in;
      return fallback ? *fallback : Value::string("");
    }
    if (name == "list") {
      ValueList items = iterate(in, pos);
      return Value::make_list(std::move(items));
    }
    if (name == "items") {
      if (in.is_undefined()) return Value::make_list({});
      if (in.kind != Value::Kind::Dict) fail(pos, fmt::format("items filter expects a mapping, got {}", type_name(in)));
      CallArgs none;
      return dict_method(in, "items").fn->call(*this, none, pos);
    }
    if (name == "int") return to_int(in, a);
    if (name == "float") return to_float(in, a);
    if (name == "abs") {
      if (!in.is_number()) fail(pos, fmt::format("bad operand type for abs(): '{}'", type_name(in)));
      if (in.kind == Value::Kind::Float) return Value::number(std::fabs(in.f));
      if (in.as_int() == INT64_MIN) fail(pos, "integer overflow");
      return Value::integer(std::llabs(in.as_int()));
    }
    if (name == "round") {
      if (!in.is_number()) fail(pos, "round filter expects a number");
      const Value* prec = kwarg(a, "precision", 0);
      const Value* method = kwarg(a, "method", 1);
      const int64_t p = prec && prec->is_integral() ? std::clamp<int64_t>(prec->as_int(), -20, 20) : 0;
      const std::string m = method ? to_str(*method) : "common";
      const double scale = std::pow(10.0, static_cast<double>(p));
      const double x = in.as_double() * scale;
      const double r = m == "ceil" ? std::ceil(x) : m == "floor" ? std::floor(x) : std::round(x);
      return Value::number(r / scale);
    }
    if (name == "wordcount") {
      CallArgs none;
      return Value::integer(static_cast<int64_t>(split(need_string("wordcount"), none, pos, false).list->size()));
    }
    if (name == "reverse") {
      if (in.kind == Value::Kind::String) {
        auto units = utf8_units(in.s);
        std::string out;
        for (auto it = units.rbegin(); it != units.rend(); ++it) out += *it;
        return Value::string(std::move(out));
      }
      ValueList items = iterate(in, pos);
      std::reverse(items.begin(), items.end());
      return Value::make_list(std::move(items));
    }
    if (name == "sort" || name == "min" || name == "max" || name == "unique") return sort_family(name, in, a, pos);
    if (name == "dictsort") {
      if (in.kind != Value::Kind::Dict) fail(pos, "dictsort expects a mapping");
      CallArgs none;
      ValueList items = *dict_method(in, "items").fn->call(*this, none, pos).list;
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        return less(sort_key((*x.list)[0], false), sort_key((*y.list)[0], false), pos);
      });
      return Value::make_list(std::move(items));
    }
    if (name == "sum") {
      Value total = Value::integer(0);
      if (const Value* start = kwarg(a, "start", 1)) total = *start;
      const Value* attribute = kwarg(a, "attribute", 0);
      for (const auto& item : iterate(in, pos))
        total = binary_op("+", total, attribute ? get_attr(item, to_str(*attribute), pos) : item, pos);
      return total;
    }
    if (name == "indent") return indent(need_string("indent"), a, pos);
    return select_family(name, in, a, pos);  // map, select, reject, selectattr, rejectattr
  }

  Value to_int(const Value& in, const CallArgs& a) {
    const Value* def = kwarg(a, "default", 0);
    const Value fallback = def ? *def : Value::integer(0);
    if (in.is_integral()) return Value::integer(in.as_int());
    if (in.kind == Value::Kind::Float) {
      if (!std::isfinite(in.f) || std::fabs(in.f) >= 9.2e18) return fallback;
      return Value::integer(static_cast<int64_t>(in.f));
    }
    if (in.kind != Value::Kind::String) return fallback;
    std::string s = py_strip(in.s, nullptr, true, true);
    std::string digits;
    for (size_t k = 0; k < s.size(); ++k)
      if (s[k] != '_') digits += s[k];
    int64_t v = 0;
    const char* b = digits.data();
    if (!digits.empty() && digits[0] == '+') ++b;
    auto res = std::from_chars(b, digits.data() + digits.size(), v);
    if (res.ec == std::errc() && res.ptr == digits.data() + digits.size()) return Value::integer(v);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);  // jinja2 falls back to int(float(s))
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d) && std::fabs(d) < 9.2e18)
      return Value::integer(static_cast<int64_t>(d));
    return fallback;
  }

  Value to_float(const Value& in, const CallArgs& a) {
    const Value* def = kwarg(a, "default", 0);
    const Value fallback = def ? *def : Value::number(0.0);
    if (in.is_number()) return Value::number(in.as_double());
    if (in.kind != Value::Kind::String) return fallback;
    const std::string s = py_strip(in.s, nullptr, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) return fallback;
    return Value::number(d);
  }

  Value indent(const std::string& s, const CallArgs& a, Pos pos) {
    const Value* width = kwarg(a, "width", 0);
    const Value* first = kwarg(a, "first", 1);
    const Value* blank = kwarg(a, "blank", 2);
    std::string pad = "    ";
    if (width && width->kind == Value::Kind::String) pad = width->s;
    else if (width && width->is_integral()) pad = std::string(static_cast<size_t>(std::clamp<int64_t>(width->as_int(), 0, 256)), ' ');
    std::string out;
    size_t start = 0;
    bool first_line = true;
    for (;;) {
      const size_t nl = s.find('\n', start);
      const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      const bool indent_it = (first_line ? first && truthy(*first) : true) && (!line.empty() || (blank && truthy(*blank)));
      if (indent_it) out += pad;
      out += line;
      charge(pos, line.size() + pad.size());
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
    }
    return Value::string(std::move(out));
  }

  Value sort_key(const Value& v, bool case_sensitive) {
    if (!case_sensitive && v.kind == Value::Kind::String) return Value::string(to_lower(v.s));
    return v;
  }

  Value sort_family(const std::string& name, const Value& in, const CallArgs& a, Pos pos) {
    const size_t arg_base = name == "sort" ? 1 : 0;  // sort(reverse, case_sensitive, attribute)
    const Value* reverse = name == "sort" ? kwarg(a, "reverse", 0) : nullptr;
    const Value* cs = kwarg(a, "case_sensitive", arg_base);
    const Value* attribute = kwarg(a, "attribute", arg_base + 1);
    const bool case_sensitive = cs && truthy(*cs);
    auto key_of = [&](const Value& item) {
      return sort_key(attribute ? get_attr(item, to_str(*attribute), pos) : item, case_sensitive);
    };
    ValueList items = iterate(in, pos);
    if (name == "unique") {
      ValueList out;
      ValueList seen;
      for (const auto& item : items) {
        Value k = key_of(item);
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
          seen.push_back(k);
          out.push_back(item);
        }
      }
      return Value::make_list(std::move(out));
    }
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return less(key_of(x), key_of(y), pos); });
    if (name == "min") return items.empty() ? Value::undefined("min of an empty sequence") : items.front();
    if (name == "max") {
      if (items.empty()) return Value::undefined("max of an empty sequence");
      // Python's max keeps the first of equal maxima.
      size_t best = 0;
      for (size_t k = 1; k < items.size(); ++k)
        if (less(key_of(items[best]), key_of(items[k]), pos)) best = k;
      return items[best];
    }
    if (reverse && truthy(*reverse)) {
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return less(key_of(y), key_of(x), pos); });
    }
    return Value::make_list(std::move(items));
  }

  Value select_family(const std::string& name, const Value& in, const CallArgs& a, Pos pos) {
    ValueList items = iterate(in, pos);
    ValueList out;
    if (name == "map") {
      const Value* attribute = kwarg(a, "attribute", 99);
      if (attribute) {
        const Value* def = kwarg(a, "default", 99);
        for (const auto& item : items) {
          Value v = get_attr(item, to_str(*attribute), pos);
          out.push_back(v.is_undefined() && def ? *def : v);
        }
        return Value::make_list(std::move(out));
      }
      if (a.positional.empty() || a.positional[0].kind != Value::Kind::String) fail(pos, "map needs a filter name or attribute=");
      const std::string filter = a.positional[0].s;
      if (!supported_filters().count(filter) || filter == "map") unsupported(pos, fmt::format("map with the filter '{}'", filter));
      CallArgs rest;
      rest.positional.assign(a.positional.begin() + 1, a.positional.end());
      rest.keyword = a.keyword;
      for (const auto& item : items) out.push_back(apply_filter(filter, item, rest, pos));
      return Value::make_list(std::move(out));
    }
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep_on_true = name == "select" || name == "selectattr";
    const size_t test_at = by_attr ? 1 : 0;
    std::string attribute;
    if (by_attr) {
      if (a.positional.empty()) fail(pos, name + " needs an attribute name");
      attribute = to_str(a.positional[0]);
    }
    std::string test;
    if (a.positional.size() > test_at) {
      test = to_str(a.positional[test_at]);
      if (!supported_tests().count(test)) unsupported(pos, fmt::format("the test '{}'", test));
    }
    ValueList test_args(a.positional.begin() + static_cast<std::ptrdiff_t>(std::min(a.positional.size(), test_at + 1)), a.positional.end());
    for (const auto& item : items) {
      const Value subject = by_attr ? get_attr(item, attribute, pos) : item;
      const bool passed = test.empty() ? truthy(subject) : run_test(test, subject, test_args, pos);
      if (passed == keep_on_true) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }

  // ---- tests ----

  bool eval_test(const Expr& e) {
    const Value subject = eval(*e.args[0]);
    ValueList args;
    for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    for (const auto& [key, ex] : e.kwargs) args.push_back(eval(*ex));
    return run_test(e.name, subject, args, e.pos);
  }

  bool run_test(const std::string& name, const Value& v, const ValueList& args, Pos pos) {
    auto arg = [&]() -> const Value& {
      if (args.empty()) fail(pos, fmt::format("test '{}' needs an argument", name));
      return args[0];
    };
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.kind == Value::Kind::None;
    if (name == "boolean") return v.kind == Value::Kind::Bool;
    if (name == "false") return v.kind == Value::Kind::Bool && !v.b;
    if (name == "true") return v.kind == Value::Kind::Bool && v.b;
    if (name == "integer") return v.kind == Value::Kind::Int;
    if (name == "float") return v.kind == Value::Kind::Float;
    if (name == "number") return v.is_number();
    if (name == "string") return v.kind == Value::Kind::String;
    if (name == "mapping") return v.kind == Value::Kind::Dict;
    if (name == "iterable")
      return v.kind == Value::Kind::List || v.kind == Value::Kind::Dict || v.kind == Value::Kind::String || v.is_undefined();
    if (name == "sequence")
      return v.kind == Value::Kind::List || v.kind == Value::Kind::Dict || v.kind == Value::Kind::String || v.is_undefined();
    if (name == "callable") return v.kind == Value::Kind::Function;
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (!v.is_integral()) fail(pos, fmt::format("test '{}' needs an integer, got {}", name, type_name(v)));
      if (name == "odd") return v.as_int() % 2 != 0;
      if (name == "even") return v.as_int() % 2 == 0;
      const Value& d = arg();
      if (!d.is_integral() || d.as_int() == 0) fail(pos, "divisibleby needs a non-zero integer");
      if (d.as_int() == -1) return true;
      return v.as_int() % d.as_int() == 0;
    }
    if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg());
    if (name == "ne" || name == "!=") return !equals(v, arg());
    if (name == "lt" || name == "lessthan" || name == "<") return less(v, arg(), pos);
    if (name == "le" || name == "<=") return less(v, arg(), pos) || equals(v, arg());
    if (name == "gt" || name == "greaterthan" || name == ">") return less(arg(), v, pos);
    if (name == "ge" || name == ">=") return less(arg(), v, pos) || equals(v, arg());
    if (name == "in") return contains(arg(), v, pos);
    if (name == "sameas") {
      const Value& o = arg();
      if (v.kind != o.kind) return false;
      if (v.kind == Value::Kind::None || v.kind == Value::Kind::Undefined) return true;
      if (v.kind == Value::Kind::Bool) return v.b == o.b;
      return equals(v, o) && (v.list == o.list && v.dict == o.dict && v.fn == o.fn);
    }
    if (name == "lower" || name == "upper") {
      const std::string s = to_str(v);
      const std::string cased = name == "lower" ? to_lower(s) : to_upper(s);
      return cased == s && std::any_of(s.begin(), s.end(), ascii_alpha);
    }
    unsupported(pos, fmt::format("the test '{}'", name));
  }
};

namespace {

// ---------------------------------------------------------------------------------------------
// Globals every template sees (jinja2 defaults plus transformers' additions).

void add_globals(Frame& g, const Limits& limits) {
  g["raise_exception"] = Value::function("raise_exception", [](Interp& in, CallArgs& a, Pos pos) -> Value {
    const std::string msg = a.positional.empty() ? std::string("(no message)") : to_str(a.positional[0]);
    throw InvalidArgumentError(fmt::format("{}: line {}, column {}: the chat template raised an error: {}", in.tpl.name, pos.line,
                                           pos.col, msg));
  });
  g["range"] = Value::function("range", [limits](Interp& in, CallArgs& a, Pos pos) -> Value {
    if (a.positional.empty() || a.positional.size() > 3) in.fail(pos, "range() takes 1 to 3 integer arguments");
    for (const auto& v : a.positional)
      if (!v.is_integral()) in.fail(pos, fmt::format("range() arguments must be integers, not {}", type_name(v)));
    int64_t start = 0, stop = 0, step = 1;
    if (a.positional.size() == 1) {
      stop = a.positional[0].as_int();
    } else {
      start = a.positional[0].as_int();
      stop = a.positional[1].as_int();
      if (a.positional.size() == 3) step = a.positional[2].as_int();
    }
    if (step == 0) in.fail(pos, "range() arg 3 must not be zero");
    // Count without overflow: use long double for the span.
    const long double span = step > 0 ? static_cast<long double>(stop) - start : static_cast<long double>(start) - stop;
    const long double count_ld = span <= 0 ? 0 : std::ceil(span / std::fabs(static_cast<long double>(step)));
    if (count_ld > static_cast<long double>(limits.max_loop_iterations))
      in.fail(pos, fmt::format("range() of {:.0f} items exceeds the limit of {} iterations", static_cast<double>(count_ld),
                               limits.max_loop_iterations));
    const auto count = static_cast<size_t>(count_ld);
    in.charge(pos, count * sizeof(Value));
    ValueList items;
    items.reserve(count);
    for (size_t k = 0; k < count; ++k) items.push_back(Value::integer(start + static_cast<int64_t>(k) * step));
    return Value::make_list(std::move(items));
  });
  g["namespace"] = Value::function("namespace", [](Interp& in, CallArgs& a, Pos pos) -> Value {
    Dict d;
    for (const auto& v : a.positional) {
      if (v.kind != Value::Kind::Dict) in.fail(pos, "namespace() positional arguments must be mappings");
      for (const auto& [k, item] : v.dict->items) d.set(k, item);
    }
    for (const auto& [k, v] : a.keyword) d.set(k, v);
    return Value::make_dict(std::move(d), Value::Kind::Namespace);
  });
  g["dict"] = Value::function("dict", [](Interp& in, CallArgs& a, Pos pos) -> Value {
    Dict d;
    for (const auto& v : a.positional) {
      if (v.kind != Value::Kind::Dict) in.fail(pos, "dict() positional arguments must be mappings");
      for (const auto& [k, item] : v.dict->items) d.set(k, item);
    }
    for (const auto& [k, v] : a.keyword) d.set(k, v);
    return Value::make_dict(std::move(d));
  });
  g["strftime_now"] = Value::function("strftime_now", [](Interp& in, CallArgs& a, Pos pos) -> Value {
    if (a.positional.empty() || a.positional[0].kind != Value::Kind::String) in.fail(pos, "strftime_now() takes a format string");
    const std::string& format = a.positional[0].s;
    if (format.size() > 256) in.fail(pos, "strftime_now() format longer than 256 bytes");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    std::string buf(format.size() * 64 + 64, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &local);
    buf.resize(n);
    return Value::string(std::move(buf));
  });
}

}  // namespace

std::string Template::render(const nlohmann::json& context) const {
  if (!context.is_object() && !context.is_null())
    throw InvalidArgumentError(fmt::format("{}: the render context must be a JSON object, got {}", impl_->name, context.type_name()));
  Interp interp(*impl_);
  auto globals = std::make_shared<Frame>();
  add_globals(*globals, impl_->limits);
  if (context.is_object())
    for (auto it = context.begin(); it != context.end(); ++it) (*globals)[it.key()] = from_json(it.value());
  interp.frames = {globals, std::make_shared<Frame>()};
  std::string out;
  interp.exec(impl_->body, out);
  return out;
}

}  // namespace lathe::jinja
