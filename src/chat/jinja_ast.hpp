// AST: what the parser builds from the tokens and the interpreter walks (Expr, Stmt), and the
// state of a parsed Template. Internal to the chat room.
#pragma once

#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "chat/jinja.hpp"
#include "chat/jinja_value.hpp"

namespace lathe::jinja {

struct Expr;
struct Stmt;
using ExprP = std::unique_ptr<Expr>;
using StmtP = std::unique_ptr<Stmt>;
using Body = std::vector<StmtP>;

struct Expr {
  enum class K { Literal, Name, List, Tuple, Dict, Attr, Item, Slice, Call, Filter, Test, Not, Neg, Pos, Binary, Concat, Compare, And, Or, Cond };
  K k = K::Literal;
  Pos pos;
  Value literal;
  std::string name;                  // Name, Attr, Filter, Test, Binary operator
  std::vector<ExprP> args;           // operands; Call/Filter/Test: [callee-or-input, positional args...]
  std::vector<std::pair<std::string, ExprP>> kwargs;
  std::vector<std::string> ops;      // Compare operators
  bool negated = false;              // Test: "is not"
};

struct Stmt {
  enum class K { Text, Output, If, For, Set, SetBlock, Macro, Break, Continue, Block };
  K k = K::Text;
  Pos pos;
  std::string text;                   // Text; Macro name
  ExprP expr;                         // Output, Set value, For iterable
  ExprP cond;                         // For inline filter
  std::vector<std::string> targets;   // For/Set names
  std::string attr;                   // Set ns.attr
  std::vector<std::pair<ExprP, Body>> branches;  // If: (condition or null for else, body)
  Body body, else_body;
  std::vector<std::pair<std::string, ExprP>> params;  // Macro parameters with optional defaults
};

// The filter and test names of the subset: the parser refuses others at parse time, the
// interpreter checks the ones named inside map/select/reject. Defined in jinja_parser.cpp.
const std::unordered_set<std::string>& supported_filters();
const std::unordered_set<std::string>& supported_tests();

struct Template::Impl {
  std::string name;
  Limits limits;
  Body body;
};

}  // namespace lathe::jinja
