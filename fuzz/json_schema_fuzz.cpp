// libFuzzer target for structured output: any bytes are parsed as a JSON Schema and compiled; a
// schema must either compile or throw a lathe::Error (never crash, recurse without bound, hang or
// allocate without bound). A compiled grammar then walks the input's own bytes and a short
// pseudo-random byte sequence through a ByteMatcher, and masks a small vocabulary a few times.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "grammar/json_schema.hpp"
#include "grammar/token_matcher.hpp"
#include "lathe/error.hpp"

namespace {

const std::shared_ptr<const lathe::grammar::TokenTable>& fuzz_table() {
  static const auto table = [] {
    std::vector<std::string> bytes;
    for (int b = 0; b < 256; ++b) bytes.emplace_back(1, static_cast<char>(b));
    bytes.emplace_back("");  // end of generation
    for (const char* piece : {"{\"", "\":", "\", \"", "\"}", "true", "null", "\n  ", "12", "\\u00", "é", "\"a\""})
      bytes.emplace_back(piece);
    return lathe::grammar::TokenTable::build(std::move(bytes));
  }();
  return table;
}

void walk(const std::shared_ptr<const lathe::grammar::JsonGrammar>& grammar, std::string_view input) {
  lathe::grammar::ByteMatcher bytes(grammar);
  for (char c : input) (void)bytes.feed(std::string_view(&c, 1));
  (void)bytes.done_possible();
  (void)bytes.must_end();
  lathe::grammar::TokenMatcher tokens(grammar, fuzz_table(), {256});
  uint64_t state = input.size() * 0x9E3779B97F4A7C15ull + 1;
  for (int step = 0; step < 16 && !tokens.must_end(); ++step) {
    const std::vector<int32_t> allowed = tokens.allowed_tokens();
    if (allowed.empty()) __builtin_trap();  // a state with no way forward is a grammar bug
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int32_t token = allowed[(state >> 33) % allowed.size()];
    tokens.accept(token);
    if (token == 256) break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  lathe::grammar::SchemaLimits limits;
  limits.max_nodes = 512;
  std::shared_ptr<const lathe::grammar::JsonGrammar> grammar;
  try {
    grammar = lathe::grammar::JsonGrammar::from_schema_text(text, "fuzz", limits);
  } catch (const lathe::Error&) {
    return 0;
  }
  walk(grammar, text);
  return 0;
}
