// Parser of the Jinja2 subset: tokens (chat/jinja_lexer.hpp) -> AST (chat/jinja_ast.hpp), and
// Template::parse, which runs both. Semantics follow jinja2 3.1 as used by transformers; see
// docs/CHAT_TEMPLATES.md.
#include "chat/jinja.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "chat/jinja_ast.hpp"
#include "chat/jinja_lexer.hpp"
#include "lathe/error.hpp"

namespace lathe::jinja {

const std::unordered_set<std::string>& supported_filters() {
  static const std::unordered_set<std::string> names = {
      "trim", "length", "count", "tojson", "upper", "lower", "replace", "join", "first", "last", "default", "d",
      "list", "items", "string", "int", "float", "safe", "capitalize", "title", "abs", "reverse", "sort", "map",
      "select", "reject", "selectattr", "rejectattr", "unique", "min", "max", "sum", "indent", "dictsort", "round", "wordcount"};
  return names;
}

const std::unordered_set<std::string>& supported_tests() {
  static const std::unordered_set<std::string> names = {
      "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string", "mapping",
      "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt",
      "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "lower", "upper"};
  return names;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent following jinja2's grammar and operator precedence.

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name, const Limits& limits)
      : toks_(std::move(tokens)), name_(name), limits_(limits) {}

  Body parse_template() {
    Body body = subparse({});
    if (cur().type != Tok::End) fail(cur().pos, fmt::format("unexpected '{{% {} %}}'", cur().text));
    return body;
  }

 private:
  struct DepthGuard {
    Parser& p;
    DepthGuard(Parser& parser, Pos pos) : p(parser) {
      if (++p.depth_ > p.limits_.max_parse_depth)
        throw UnsupportedError(fmt::format("{}: line {}, column {}: nesting deeper than {} levels is not supported; {}", p.name_,
                                           pos.line, pos.col, p.limits_.max_parse_depth, kRemedy));
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return toks_[p_]; }
  const Token& peek(size_t n = 1) const { return toks_[std::min(p_ + n, toks_.size() - 1)]; }
  Token next() { return p_ + 1 < toks_.size() ? toks_[p_++] : toks_[p_]; }
  bool at_op(std::string_view op) const { return cur().type == Tok::Op && cur().text == op; }
  bool at_name(std::string_view n) const { return cur().type == Tok::Name && cur().text == n; }
  bool skip_op(std::string_view op) {
    if (!at_op(op)) return false;
    ++p_;
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!at_name(n)) return false;
    ++p_;
    return true;
  }

  [[noreturn]] void fail(Pos pos, const std::string& what) const {
    throw FormatError(fmt::format("{}: line {}, column {}: template syntax error: {}; fix the template or pass another one with --template FILE (`lathe run`, `lathe chat` and `lathe template` take one)",
                                  name_, pos.line, pos.col, what));
  }
  [[noreturn]] void unsupported(Pos pos, const std::string& what) const {
    throw UnsupportedError(fmt::format("{}: line {}, column {}: {} is not supported by lathe's chat template engine; {}", name_,
                                       pos.line, pos.col, what, kRemedy));
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::End: return "end of template";
      case Tok::VarEnd: return "'}}'";
      case Tok::BlockEnd: return "'%}'";
      case Tok::Data: return "template text";
      case Tok::String: return "string literal";
      case Tok::Int:
      case Tok::Float: return "number " + t.text;
      default: return "'" + t.text + "'";
    }
  }

  void expect_op(std::string_view op) {
    if (!skip_op(op)) fail(cur().pos, fmt::format("expected '{}', found {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail(cur().pos, fmt::format("expected a name, found {}", describe(cur())));
    return next().text;
  }
  void expect_block_end() {
    if (cur().type != Tok::BlockEnd) fail(cur().pos, fmt::format("expected '%}}', found {}", describe(cur())));
    ++p_;
  }

  ExprP node(Expr::K k, Pos pos) {
    auto e = std::make_unique<Expr>();
    e->k = k;
    e->pos = pos;
    return e;
  }

  // Parses statements until a block tag whose name is in `end_names`; leaves the parser on that
  // name (just after "{%").
  Body subparse(const std::vector<std::string_view>& end_names) {
    DepthGuard guard(*this, cur().pos);
    Body body;
    for (;;) {
      const Token& t = cur();
      if (t.type == Tok::End) {
        if (!end_names.empty()) {
          std::string expected;
          for (auto n : end_names) expected += fmt::format("{}'{{% {} %}}'", expected.empty() ? "" : " or ", n);
          fail(t.pos, "unexpected end of template; expected " + expected);
        }
        return body;
      }
      if (t.type == Tok::Data) {
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Text;
        s->pos = t.pos;
        s->text = t.text;
        body.push_back(std::move(s));
        ++p_;
      } else if (t.type == Tok::VarBegin) {
        auto s = std::make_unique<Stmt>();
        s->k = Stmt::K::Output;
        s->pos = t.pos;
        ++p_;
        s->expr = parse_tuple(true, true);
        if (cur().type != Tok::VarEnd) fail(cur().pos, fmt::format("expected '}}}}', found {}", describe(cur())));
        ++p_;
        body.push_back(std::move(s));
      } else if (t.type == Tok::BlockBegin) {
        const Token& tag = peek();
        if (tag.type == Tok::Name && std::find(end_names.begin(), end_names.end(), tag.text) != end_names.end()) {
          ++p_;
          return body;
        }
        ++p_;
        body.push_back(parse_statement());
      } else {
        fail(t.pos, fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  StmtP parse_statement() {
    const Token tag = cur();
    if (tag.type != Tok::Name) fail(tag.pos, fmt::format("expected a tag name after '{{%', found {}", describe(tag)));
    const std::string& n = tag.text;
    if (n == "if") return parse_if();
    if (n == "for") return parse_for();
    if (n == "set") return parse_set();
    if (n == "macro") return parse_macro();
    if (n == "break" || n == "continue") {
      ++p_;
      if (loop_depth_ == 0) fail(tag.pos, fmt::format("'{}' outside of a for loop", n));
      expect_block_end();
      auto s = std::make_unique<Stmt>();
      s->k = n == "break" ? Stmt::K::Break : Stmt::K::Continue;
      s->pos = tag.pos;
      return s;
    }
    if (n == "generation") {  // transformers' AssistantTracker tag: renders its body unchanged
      ++p_;
      expect_block_end();
      auto s = std::make_unique<Stmt>();
      s->k = Stmt::K::Block;
      s->pos = tag.pos;
      s->body = subparse({"endgeneration"});
      ++p_;
      expect_block_end();
      return s;
    }
    static const std::unordered_set<std::string> known_unsupported = {
        "call", "filter", "block", "extends", "include", "import", "from", "with", "do", "autoescape", "trans", "pluralize"};
    if (known_unsupported.count(n)) unsupported(tag.pos, fmt::format("the '{{% {} %}}' statement", n));
    fail(tag.pos, fmt::format("unknown tag '{}' (or a closing tag without its opening one)", n));
  }

  StmtP parse_if() {
    auto s = std::make_unique<Stmt>();
    s->k = Stmt::K::If;
    s->pos = cur().pos;
    ++p_;  // "if"
    for (;;) {
      ExprP cond = parse_tuple(false, false);
      expect_block_end();
      Body body = subparse({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      const std::string tag = next().text;
      if (tag == "elif") continue;
      if (tag == "else") {
        expect_block_end();
        s->branches.emplace_back(nullptr, subparse({"endif"}));
        ++p_;
      }
      expect_block_end();
      return s;
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool paren = skip_op("(");
    do {
      if (paren && at_op(")")) break;
      names.push_back(expect_name());
    } while (skip_op(","));
    if (paren) expect_op(")");
    return names;
  }

  StmtP parse_for() {
    auto s = std::make_unique<Stmt>();
    s->k = Stmt::K::For;
    s->pos = cur().pos;
    ++p_;  // "for"
    s->targets = parse_targets();
    if (!skip_name("in")) fail(cur().pos, fmt::format("expected 'in' in for loop, found {}", describe(cur())));
    s->expr = parse_tuple(false, false);
    if (skip_name("if")) s->cond = parse_expression(true);
    if (at_name("recursive")) unsupported(cur().pos, "the recursive for loop");
    expect_block_end();
    ++loop_depth_;
    s->body = subparse({"endfor", "else"});
    --loop_depth_;
    if (next().text == "else") {
      expect_block_end();
      s->else_body = subparse({"endfor"});
      ++p_;
    }
    expect_block_end();
    return s;
  }

  StmtP parse_set() {
    auto s = std::make_unique<Stmt>();
    s->pos = cur().pos;
    ++p_;  // "set"
    if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == ".") {
      s->targets.push_back(next().text);
      ++p_;
      s->attr = expect_name();
    } else {
      s->targets = parse_targets();
    }
    if (skip_op("=")) {
      s->k = Stmt::K::Set;
      s->expr = parse_tuple(true, false);
      expect_block_end();
      return s;
    }
    if (at_op("|")) unsupported(cur().pos, "a filter on a block '{% set %}'");
    if (!s->attr.empty() || s->targets.size() != 1) fail(s->pos, "a block '{% set %}' assigns exactly one name");
    expect_block_end();
    s->k = Stmt::K::SetBlock;
    s->body = subparse({"endset"});
    ++p_;
    expect_block_end();
    return s;
  }

  StmtP parse_macro() {
    auto s = std::make_unique<Stmt>();
    s->k = Stmt::K::Macro;
    s->pos = cur().pos;
    ++p_;  // "macro"
    s->text = expect_name();
    expect_op("(");
    while (!skip_op(")")) {
      if (!s->params.empty()) expect_op(",");
      if (at_op(")")) continue;
      std::string param = expect_name();
      ExprP def;
      if (skip_op("=")) def = parse_expression(true);
      s->params.emplace_back(std::move(param), std::move(def));
    }
    expect_block_end();
    const int saved_loops = loop_depth_;
    loop_depth_ = 0;
    s->body = subparse({"endmacro"});
    loop_depth_ = saved_loops;
    ++p_;
    if (cur().type == Tok::Name) ++p_;  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  // Comma-separated expressions without brackets form a tuple (jinja2's parse_tuple).
  ExprP parse_tuple(bool with_condexpr, bool allow_empty) {
    const Pos pos = cur().pos;
    std::vector<ExprP> items;
    bool saw_comma = false;
    for (;;) {
      if (!items.empty() && !skip_op(",")) break;
      if (!items.empty()) saw_comma = true;
      if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || at_op(")") ||
          (!items.empty() && at_name("if") && !with_condexpr))
        break;
      items.push_back(parse_expression(with_condexpr));
    }
    if (items.empty()) {
      if (!allow_empty) fail(pos, fmt::format("expected an expression, found {}", describe(cur())));
      fail(pos, "empty expression in '{{ }}'");
    }
    if (!saw_comma) return std::move(items.front());
    auto e = node(Expr::K::Tuple, pos);
    e->args = std::move(items);
    return e;
  }

  ExprP parse_expression(bool with_condexpr) {
    DepthGuard guard(*this, cur().pos);
    if (!with_condexpr) return parse_or();
    ExprP expr = parse_or();
    while (at_name("if")) {
      const Pos pos = next().pos;
      auto e = node(Expr::K::Cond, pos);
      ExprP cond = parse_or();
      ExprP otherwise;
      if (skip_name("else")) otherwise = parse_expression(true);
      e->args.push_back(std::move(expr));
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(otherwise));  // may be null: jinja2 yields undefined
      expr = std::move(e);
    }
    return expr;
  }

  ExprP binary(Expr::K k, Pos pos, ExprP lhs, ExprP rhs, std::string op = {}) {
    auto e = node(k, pos);
    e->name = std::move(op);
    e->args.push_back(std::move(lhs));
    e->args.push_back(std::move(rhs));
    return e;
  }

  ExprP parse_or() {
    ExprP lhs = parse_and();
    while (at_name("or")) {
      const Pos pos = next().pos;
      lhs = binary(Expr::K::Or, pos, std::move(lhs), parse_and());
    }
    return lhs;
  }

  ExprP parse_and() {
    ExprP lhs = parse_not();
    while (at_name("and")) {
      const Pos pos = next().pos;
      lhs = binary(Expr::K::And, pos, std::move(lhs), parse_not());
    }
    return lhs;
  }

  ExprP parse_not() {
    if (at_name("not")) {
      DepthGuard guard(*this, cur().pos);
      auto e = node(Expr::K::Not, next().pos);
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprP parse_compare() {
    const Pos pos = cur().pos;
    ExprP first = parse_math1();
    auto e = node(Expr::K::Compare, pos);
    e->args.push_back(std::move(first));
    for (;;) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == "<=" ||
                                    cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (at_name("in")) {
        ++p_;
        op = "in";
      } else if (at_name("not") && peek().type == Tok::Name && peek().text == "in") {
        p_ += 2;
        op = "not in";
      } else {
        break;
      }
      e->ops.push_back(op);
      e->args.push_back(parse_math1());
    }
    if (e->ops.empty()) return std::move(e->args.front());
    return e;
  }

  ExprP parse_math1() {
    ExprP lhs = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token op = next();
      lhs = binary(Expr::K::Binary, op.pos, std::move(lhs), parse_concat(), op.text);
    }
    return lhs;
  }

  ExprP parse_concat() {
    ExprP lhs = parse_math2();
    while (at_op("~")) {
      const Pos pos = next().pos;
      lhs = binary(Expr::K::Concat, pos, std::move(lhs), parse_math2());
    }
    return lhs;
  }

  ExprP parse_math2() {
    ExprP lhs = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token op = next();
      lhs = binary(Expr::K::Binary, op.pos, std::move(lhs), parse_pow(), op.text);
    }
    return lhs;
  }

  ExprP parse_pow() {
    ExprP lhs = parse_unary(true);
    while (at_op("**")) {
      const Pos pos = next().pos;
      lhs = binary(Expr::K::Binary, pos, std::move(lhs), parse_unary(true), "**");
    }
    return lhs;
  }

  ExprP parse_unary(bool with_filter) {
    DepthGuard guard(*this, cur().pos);
    ExprP e;
    if (at_op("-") || at_op("+")) {
      const Token op = next();
      e = node(op.text == "-" ? Expr::K::Neg : Expr::K::Pos, op.pos);
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprP parse_primary() {
    const Token t = cur();
    switch (t.type) {
      case Tok::Name: {
        ++p_;
        if (t.text == "true" || t.text == "True") return literal(Value::boolean(true), t.pos);
        if (t.text == "false" || t.text == "False") return literal(Value::boolean(false), t.pos);
        if (t.text == "none" || t.text == "None") return literal(Value::none(), t.pos);
        auto e = node(Expr::K::Name, t.pos);
        e->name = t.text;
        return e;
      }
      case Tok::String: {
        std::string s;
        while (cur().type == Tok::String) s += next().text;  // adjacent literals concatenate
        return literal(Value::string(std::move(s)), t.pos);
      }
      case Tok::Int: ++p_; return literal(Value::integer(t.ival), t.pos);
      case Tok::Float: ++p_; return literal(Value::number(t.fval), t.pos);
      case Tok::Op:
        if (t.text == "(") {
          ++p_;
          if (skip_op(")")) return list_node(Expr::K::Tuple, t.pos, {});
          ExprP inner = parse_tuple(true, false);
          expect_op(")");
          return inner;
        }
        if (t.text == "[") return parse_list();
        if (t.text == "{") return parse_dict();
        break;
      default: break;
    }
    fail(t.pos, fmt::format("unexpected {}", describe(t)));
  }

  ExprP literal(Value v, Pos pos) {
    auto e = node(Expr::K::Literal, pos);
    e->literal = std::move(v);
    return e;
  }
  ExprP list_node(Expr::K k, Pos pos, std::vector<ExprP> items) {
    auto e = node(k, pos);
    e->args = std::move(items);
    return e;
  }

  ExprP parse_list() {
    const Pos pos = next().pos;
    std::vector<ExprP> items;
    while (!skip_op("]")) {
      if (!items.empty()) expect_op(",");
      if (skip_op("]")) break;
      items.push_back(parse_expression(true));
    }
    return list_node(Expr::K::List, pos, std::move(items));
  }

  ExprP parse_dict() {
    const Pos pos = next().pos;
    auto e = node(Expr::K::Dict, pos);
    while (!skip_op("}")) {
      if (!e->args.empty()) expect_op(",");
      if (skip_op("}")) break;
      e->args.push_back(parse_expression(true));
      expect_op(":");
      e->args.push_back(parse_expression(true));
    }
    return e;
  }

  ExprP parse_postfix(ExprP e) {
    for (;;) {
      if (at_op(".")) {
        const Pos pos = next().pos;
        auto a = node(Expr::K::Attr, pos);
        if (cur().type == Tok::Int) {  // foo.0 is foo[0] in jinja2
          auto item = node(Expr::K::Item, pos);
          item->args.push_back(std::move(e));
          item->args.push_back(literal(Value::integer(next().ival), pos));
          e = std::move(item);
          continue;
        }
        a->name = expect_name();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (at_op("[")) {
        e = parse_subscript(std::move(e));
      } else if (at_op("(")) {
        e = parse_call(std::move(e), Expr::K::Call);
      } else {
        return e;
      }
    }
  }

  ExprP parse_subscript(ExprP obj) {
    const Pos pos = next().pos;  // "["
    ExprP parts[3];
    bool is_slice = false;
    int part = 0;
    for (;;) {
      if (at_op("]")) break;
      if (at_op(":")) {
        ++p_;
        is_slice = true;
        if (++part > 2) fail(cur().pos, "too many ':' in slice");
        continue;
      }
      if (parts[part]) fail(cur().pos, fmt::format("expected ']' or ':', found {}", describe(cur())));
      parts[part] = parse_expression(true);
      if (!is_slice && at_op(",")) unsupported(cur().pos, "tuple subscripts (a[x, y])");
    }
    ++p_;  // "]"
    if (!is_slice) {
      if (!parts[0]) fail(pos, "empty subscript '[]'");
      auto e = node(Expr::K::Item, pos);
      e->args.push_back(std::move(obj));
      e->args.push_back(std::move(parts[0]));
      return e;
    }
    auto e = node(Expr::K::Slice, pos);
    e->args.push_back(std::move(obj));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  // Call arguments "(a, b, key=value)" appended to e.
  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (skip_op(")")) break;
      if (at_op("*") || at_op("**")) unsupported(cur().pos, "'*args' / '**kwargs' in calls");
      if (cur().type == Tok::Name && peek().type == Tok::Op && peek().text == "=") {
        std::string key = next().text;
        ++p_;
        e.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!e.kwargs.empty()) fail(cur().pos, "positional argument after a keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
  }

  ExprP parse_call(ExprP callee, Expr::K k) {
    auto e = node(k, cur().pos);
    e->args.push_back(std::move(callee));
    parse_call_args(*e);
    return e;
  }

  ExprP parse_filter_expr(ExprP e) {
    for (;;) {
      if (at_op("|")) {
        ++p_;
        const Pos pos = cur().pos;
        std::string name = expect_name();
        while (skip_op(".")) name += "." + expect_name();
        if (!supported_filters().count(name)) unsupported(pos, fmt::format("the filter '{}'", name));
        auto f = node(Expr::K::Filter, pos);
        f->name = name;
        f->args.push_back(std::move(e));
        if (at_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (at_name("is")) {
        ++p_;
        auto t = node(Expr::K::Test, cur().pos);
        t->negated = skip_name("not");
        const Pos pos = cur().pos;
        if (cur().type == Tok::Op && supported_tests().count(cur().text)) {
          t->name = next().text;
        } else {
          t->name = expect_name();
        }
        if (!supported_tests().count(t->name)) unsupported(pos, fmt::format("the test '{}'", t->name));
        t->args.push_back(std::move(e));
        if (at_op("(")) {
          parse_call_args(*t);
        } else if ((cur().type == Tok::Name || cur().type == Tok::String || cur().type == Tok::Int ||
                    cur().type == Tok::Float || at_op("(") || at_op("[") || at_op("{")) &&
                   !at_name("else") && !at_name("or") && !at_name("and")) {
          if (at_name("is")) fail(cur().pos, "unexpected 'is'");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (at_op("(")) {
        e = parse_call(std::move(e), Expr::K::Call);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> toks_;
  size_t p_ = 0;
  const std::string& name_;
  const Limits& limits_;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

Template Template::parse(std::string_view source, std::string name, Limits limits) {
  auto impl = std::make_shared<Impl>();
  impl->name = std::move(name);
  impl->limits = limits;
  Parser parser(lex(source, impl->name), impl->name, impl->limits);
  impl->body = parser.parse_template();
  return Template(std::move(impl));
}

}  // namespace lathe::jinja
