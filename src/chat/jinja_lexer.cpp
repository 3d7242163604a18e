// Lexer of the Jinja2 subset (see chat/jinja_lexer.hpp). Semantics follow jinja2 3.1 as used by
// transformers; see docs/CHAT_TEMPLATES.md.
#include "chat/jinja_lexer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <unordered_map>

#include "lathe/error.hpp"

namespace lathe::jinja {
namespace {

// Encodes a code point decoded from a string literal's escape (\x, \u, \U, octal).
void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& name) : name_(name) {
    // jinja2 normalizes every newline sequence to "\n" and drops one trailing newline
    // (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t k = 0; k < source.size(); ++k) {
      if (source[k] == '\r') {
        src_ += '\n';
        if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
      } else {
        src_ += source[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t k = 0; k < src_.size(); ++k)
      if (src_[k] == '\n') line_starts_.push_back(k + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = find_tag_start(pos);
      if (tag == std::string::npos) {
        emit_data(src_.substr(pos), pos);
        break;
      }
      const char kind = src_[tag + 1];
      size_t after = tag + 2;
      char mod = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) mod = src_[after++];
      std::string text = src_.substr(pos, tag - pos);
      strip_before_tag(text, mod, kind != '{', line_starting);
      emit_data(std::move(text), pos);
      if (kind == '#') {
        pos = lex_comment(tag, after);
      } else if (kind == '%' && try_raw(tag, after, pos)) {
        // pos advanced past {% endraw %}
      } else {
        pos = lex_tag(tag, after, kind == '{');
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    Token end;
    end.type = Tok::End;
    end.pos = pos_of(src_.size());
    tokens_.push_back(end);
    return std::move(tokens_);
  }

 private:
  Pos pos_of(size_t offset) const {
    auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void fail(size_t offset, const std::string& what) const {
    const Pos p = pos_of(offset);
    throw FormatError(fmt::format("{}: line {}, column {}: template syntax error: {}; fix the template or pass another one with --template FILE (`lathe run`, `lathe chat` and `lathe template` take one)",
                                  name_, p.line, p.col, what));
  }

  size_t find_tag_start(size_t from) const {
    for (size_t k = src_.find('{', from); k != std::string::npos; k = src_.find('{', k + 1))
      if (k + 1 < src_.size() && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    return std::string::npos;
  }

  static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

  // "{%-" strips all whitespace before the tag; lstrip_blocks strips spaces and tabs between the
  // start of the line and a block or comment tag.
  static void strip_before_tag(std::string& text, char mod, bool block_or_comment, bool line_starting) {
    if (mod == '-') {
      while (!text.empty() && is_ws(text.back())) text.pop_back();
      return;
    }
    if (mod == '+' || !block_or_comment) return;
    const size_t line_begin = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (line_begin == 0 && !line_starting) return;
    for (size_t k = line_begin; k < text.size(); ++k)
      if (!is_ws(text[k])) return;
    text.resize(line_begin);
  }

  void emit_data(std::string text, size_t offset) {
    if (text.empty()) return;
    Token t;
    t.type = Tok::Data;
    t.text = std::move(text);
    t.pos = pos_of(offset);
    tokens_.push_back(std::move(t));
  }

  void emit(Tok type, std::string text, size_t offset) {
    Token t;
    t.type = type;
    t.text = std::move(text);
    t.pos = pos_of(offset);
    tokens_.push_back(std::move(t));
  }

  // After "%}" / "#}": "-" strips all following whitespace, "+" keeps it, else trim_blocks drops
  // one newline. Returns the position after what was consumed.
  size_t after_block_end(size_t end_pos, char mod) const {
    if (mod == '-') {
      while (end_pos < src_.size() && is_ws(src_[end_pos])) ++end_pos;
    } else if (mod != '+' && end_pos < src_.size() && src_[end_pos] == '\n') {
      ++end_pos;
    }
    return end_pos;
  }

  size_t lex_comment(size_t tag, size_t after) const {
    const size_t close = src_.find("#}", after);
    if (close == std::string::npos) fail(tag, "comment opened with '{#' is never closed with '#}'");
    char mod = 0;
    if (close > after && (src_[close - 1] == '-' || src_[close - 1] == '+')) mod = src_[close - 1];
    return after_block_end(close + 2, mod);
  }

  // Matches "{%[-+]? <ws> word <ws> [-+]?%}" at `at`; returns the position after it or npos,
  // with the modifiers found.
  size_t match_simple_tag(size_t at, std::string_view word, char& open_mod, char& close_mod) const {
    if (src_.compare(at, 2, "{%") != 0) return std::string::npos;
    size_t k = at + 2;
    open_mod = 0;
    if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) open_mod = src_[k++];
    while (k < src_.size() && is_ws(src_[k])) ++k;
    if (src_.compare(k, word.size(), word) != 0) return std::string::npos;
    k += word.size();
    if (k < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[k])) || src_[k] == '_')) return std::string::npos;
    while (k < src_.size() && is_ws(src_[k])) ++k;
    close_mod = 0;
    if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) close_mod = src_[k++];
    if (src_.compare(k, 2, "%}") != 0) return std::string::npos;
    return k + 2;
  }

  bool try_raw(size_t tag, size_t /*after*/, size_t& pos) {
    char open_mod = 0, close_mod = 0;
    size_t body = match_simple_tag(tag, "raw", open_mod, close_mod);
    if (body == std::string::npos) return false;
    if (close_mod == '-')
      while (body < src_.size() && is_ws(src_[body])) ++body;
    const bool line_starting = body > 0 && src_[body - 1] == '\n';
    for (size_t k = src_.find("{%", body); k != std::string::npos; k = src_.find("{%", k + 1)) {
      char end_open = 0, end_close = 0;
      const size_t end = match_simple_tag(k, "endraw", end_open, end_close);
      if (end == std::string::npos) continue;
      std::string text = src_.substr(body, k - body);
      strip_before_tag(text, end_open, true, line_starting);
      emit_data(std::move(text), body);
      pos = after_block_end(end, end_close);
      return true;
    }
    fail(tag, "'{% raw %}' is never closed with '{% endraw %}'");
  }

  // Tokens inside {{ }} or {% %}. Returns the position after the closing delimiter.
  size_t lex_tag(size_t tag, size_t pos, bool is_var) {
    emit(is_var ? Tok::VarBegin : Tok::BlockBegin, "", tag);
    std::vector<char> brackets;
    const char close = is_var ? '}' : '%';
    for (;;) {
      while (pos < src_.size() && is_ws(src_[pos])) ++pos;
      if (pos >= src_.size())
        fail(tag, fmt::format("tag opened here is never closed with '{}'", is_var ? "}}" : "%}"));
      if (brackets.empty()) {
        char mod = 0;
        size_t k = pos;
        if ((src_[k] == '-' || (!is_var && src_[k] == '+')) && k + 1 < src_.size()) mod = src_[k++];
        if (src_[k] == close && k + 1 < src_.size() && src_[k + 1] == '}') {
          emit(is_var ? Tok::VarEnd : Tok::BlockEnd, "", pos);
          if (is_var) {
            size_t end = k + 2;
            if (mod == '-')
              while (end < src_.size() && is_ws(src_[end])) ++end;
            return end;
          }
          return after_block_end(k + 2, mod);
        }
      }
      pos = lex_token(pos, brackets);
    }
  }

  size_t lex_token(size_t pos, std::vector<char>& brackets) {
    const char c = src_[pos];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = pos;
      while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      emit(Tok::Name, src_.substr(pos, e - pos), pos);
      return e;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return lex_number(pos);
    if (c == '\'' || c == '"') return lex_string(pos);
    static const char* const two_char_ops[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : two_char_ops)
      if (src_.compare(pos, 2, op) == 0) {
        emit(Tok::Op, op, pos);
        return pos + 2;
      }
    if (std::string_view("+-*/%~()[]{}<>=.:|,;").find(c) == std::string_view::npos)
      fail(pos, fmt::format("unexpected character '{}'", c == '\0' ? std::string("\\0") : std::string(1, c)));
    if (c == '(' || c == '[' || c == '{') brackets.push_back(c);
    if (c == ')' || c == ']' || c == '}') {
      const char want = c == ')' ? '(' : c == ']' ? '[' : '{';
      if (brackets.empty() || brackets.back() != want) fail(pos, fmt::format("unexpected '{}'", c));
      brackets.pop_back();
    }
    emit(Tok::Op, std::string(1, c), pos);
    return pos + 1;
  }

  size_t scan_digits(size_t pos) const {
    while (pos < src_.size() &&
           (std::isdigit(static_cast<unsigned char>(src_[pos])) ||
            (src_[pos] == '_' && pos + 1 < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos + 1])))))
      ++pos;
    return pos;
  }

  size_t lex_number(size_t start) {
    size_t pos = scan_digits(start);
    bool is_float = false;
    if (pos + 1 < src_.size() && src_[pos] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
      is_float = true;
      pos = scan_digits(pos + 1);
    }
    if (pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t k = pos + 1;
      if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
      if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
        is_float = true;
        pos = scan_digits(k);
      }
    }
    std::string digits;
    for (size_t k = start; k < pos; ++k)
      if (src_[k] != '_') digits += src_[k];
    Token t;
    t.pos = pos_of(start);
    t.text = digits;
    if (is_float) {
      t.type = Tok::Float;
      t.fval = std::strtod(digits.c_str(), nullptr);
    } else {
      t.type = Tok::Int;
      auto res = std::from_chars(digits.data(), digits.data() + digits.size(), t.ival);
      if (res.ec != std::errc())
        throw UnsupportedError(fmt::format("{}: line {}, column {}: integer literal {} does not fit in 64 bits; {}", name_,
                                           t.pos.line, t.pos.col, digits, kRemedy));
    }
    tokens_.push_back(std::move(t));
    return pos;
  }

  // Python's "unicode-escape" decoding of a string literal body, as jinja2 does.
  size_t lex_string(size_t start) {
    const char quote = src_[start];
    std::string value;
    size_t pos = start + 1;
    for (;;) {
      if (pos >= src_.size()) fail(start, "string literal is never closed");
      const char c = src_[pos];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++pos;
        continue;
      }
      if (pos + 1 >= src_.size()) fail(start, "string literal is never closed");
      pos = decode_escape(pos, value, start);
    }
    Token t;
    t.type = Tok::String;
    t.text = std::move(value);
    t.pos = pos_of(start);
    tokens_.push_back(std::move(t));
    return pos + 1;
  }

  size_t decode_escape(size_t pos, std::string& value, size_t start) const {
    const char e = src_[pos + 1];
    static const std::unordered_map<char, char> simple = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'\\', '\\'},
                                                          {'\'', '\''}, {'"', '"'},  {'a', '\a'}, {'b', '\b'},
                                                          {'f', '\f'}, {'v', '\v'}, {'\n', '\0'}};
    if (auto it = simple.find(e); it != simple.end()) {
      if (e != '\n') value += it->second;  // backslash-newline is a line continuation
      return pos + 2;
    }
    if (e >= '0' && e <= '7') {
      uint32_t cp = 0;
      size_t k = pos + 1;
      for (int n = 0; n < 3 && k < src_.size() && src_[k] >= '0' && src_[k] <= '7'; ++n, ++k) cp = cp * 8 + (src_[k] - '0');
      utf8_append(value, cp);
      return k;
    }
    const int hex_len = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (hex_len > 0) {
      uint32_t cp = 0;
      for (int n = 0; n < hex_len; ++n) {
        const size_t k = pos + 2 + static_cast<size_t>(n);
        if (k >= src_.size() || !std::isxdigit(static_cast<unsigned char>(src_[k])))
          fail(start, fmt::format("truncated \\{} escape in string literal", e));
        const char h = src_[k];
        cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
      }
      if (cp > 0x10ffff) fail(start, "\\U escape beyond U+10FFFF in string literal");
      utf8_append(value, cp);
      return pos + 2 + static_cast<size_t>(hex_len);
    }
    if (e == 'N') {
      const Pos p = pos_of(pos);
      throw UnsupportedError(fmt::format("{}: line {}, column {}: \\N{{...}} escapes in string literals are not supported; {}",
                                         name_, p.line, p.col, kRemedy));
    }
    value += '\\';  // unknown escapes stay as written, as in Python
    return pos + 1;
  }

  std::string src_;
  const std::string& name_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(std::string_view source, const std::string& name) { return Lexer(source, name).run(); }

}  // namespace lathe::jinja
