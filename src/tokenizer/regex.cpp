// PCRE2 wrapper for pre-tokenizer patterns. HF tokenizers runs these patterns with Oniguruma;
// with PCRE2_UTF | PCRE2_UCP, PCRE2 10.42 agrees with it on \s, \p{L}, \p{N} and (?i) for the
// patterns shipped with current models (checked by tests/tokenizer differential tests).
#include <pcre2.h>

#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"

namespace lathe::tokenizer {

namespace {

// Per-thread match data and JIT stack: matching allocates nothing per call.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_context* context = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    context = pcre2_match_context_create(nullptr);
    if (context != nullptr && jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  if (s.data == nullptr || s.context == nullptr) throw OutOfMemoryError("PCRE2 match data allocation failed");
  return s;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& what) : what_(what) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw FormatError(what, "pattern", error_offset,
                      std::string("regex does not compile: ") + reinterpret_cast<const char*>(message),
                      "use a PCRE-compatible pattern");
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view subject, std::vector<std::pair<uint32_t, uint32_t>>& matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  MatchScratch& s = scratch();
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t pos = 0;
  while (pos <= subject.size()) {
    int rc = jit_ ? pcre2_jit_match(code, text, subject.size(), pos, 0, s.data, s.context)
                  : pcre2_match(code, text, subject.size(), pos, PCRE2_NO_UTF_CHECK, s.data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // pathological backtracking: retry with the interpreter
      rc = pcre2_match(code, text, subject.size(), pos, PCRE2_NO_UTF_CHECK, s.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw InternalError(what_ + ": regex match failed at byte " + std::to_string(pos) + ": " +
                          reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(s.data);
    const size_t start = ovector[0], end = ovector[1];
    if (end > start) {
      matches.emplace_back(static_cast<uint32_t>(start), static_cast<uint32_t>(end));
      pos = end;
    } else {
      // Empty matches produce no piece (HF drops empty splits); step over one character.
      if (start >= subject.size()) return;
      size_t step = 1;
      while (start + step < subject.size() && (static_cast<uint8_t>(subject[start + step]) & 0xC0) == 0x80) ++step;
      pos = start + step;
    }
  }
}

std::string Regex::escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (std::string_view("\\^$.|?*+()[]{}-/#").find(c) != std::string_view::npos) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace lathe::tokenizer
