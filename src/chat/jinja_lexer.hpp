// Lexer: template text -> tokens, with jinja2's newline normalization, trim_blocks,
// lstrip_blocks and whitespace control ("{%-", "-%}", "+"). Internal to the chat room.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja_value.hpp"

namespace lathe::jinja {

enum class Tok { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };

struct Token {
  Tok type = Tok::End;
  std::string text;  // Data text, name, operator, or decoded string literal
  Pos pos;
  int64_t ival = 0;
  double fval = 0;
};

// The tokens of `source`, ending with one Tok::End; `name` (kept by reference while lexing) appears
// in error messages. Throws FormatError for syntax errors, UnsupportedError for literals outside
// the subset.
std::vector<Token> lex(std::string_view source, const std::string& name);

}  // namespace lathe::jinja
