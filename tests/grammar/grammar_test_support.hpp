// Helpers of the structured-output tests: a small fake vocabulary, random generation through a
// TokenMatcher (random logits, masked, the best allowed token taken), and validation of generated
// texts by the jsonschema package (tests/oracle/json_schema_oracle.py).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "grammar/json_schema.hpp"
#include "grammar/token_matcher.hpp"

namespace lathe::test {

// Every single byte, some multi-byte pieces a JSON-trained vocabulary has, split UTF-8 sequences,
// and two special tokens (empty bytes): id kFakeEos ends generation, id kFakeEos + 1 never comes.
inline constexpr int32_t kFakeEos = 256;
inline std::vector<std::string> fake_vocabulary() {
  std::vector<std::string> v;
  for (int b = 0; b < 256; ++b) v.emplace_back(1, static_cast<char>(b));
  v.emplace_back("");  // EOS
  v.emplace_back("");  // another special token
  for (const char* piece : {"{\"", "\":", "\": ", "\", \"", "\"}", "\"]", "\",", "},", "}]", "]}", "true", "false",
                            "null", "nul", " \"", "\n  ", "\n    ", "  ", "    ", "12", "3.5", "-0", "e+", "00",
                            "\\u00", "\\ud83d", "\\ude00", "\\n", "é", "\xe2\x82", "\xac", "😀", "name", "\"name\":",
                            "red", "green", "\"red\"", "ab", "id", "value", "next", "\"v\":", ",\n", "[1,", "],"})
    v.emplace_back(piece);
  return v;
}

struct Generation {
  std::string text;
  bool ended = false;  // an end token was taken or must_end() said so
  int steps = 0;
};

// Random logits each step, masked, argmax taken: a uniformly random allowed token. Stops at an end
// token, at must_end(), or after max_steps.
inline Generation random_generation(const std::shared_ptr<const grammar::JsonGrammar>& g,
                                    const std::shared_ptr<const grammar::TokenTable>& table,
                                    const std::vector<int32_t>& end_ids, uint64_t seed, int max_steps) {
  grammar::TokenMatcher m(g, table, end_ids);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> logits(table->size());
  Generation out;
  for (; out.steps < max_steps; ++out.steps) {
    if (m.must_end()) {
      out.ended = true;
      break;
    }
    for (auto& l : logits) l = uniform(rng);
    m.mask(logits);
    int32_t best = -1;
    for (size_t id = 0; id < logits.size(); ++id)
      if (std::isfinite(logits[id]) && (best < 0 || logits[id] > logits[static_cast<size_t>(best)])) best = static_cast<int32_t>(id);
    if (best < 0) {
      ADD_FAILURE() << "no token allowed after '" << m.text() << "'";
      break;
    }
    m.accept(best);
    if (std::find(end_ids.begin(), end_ids.end(), best) != end_ids.end()) {
      out.ended = true;
      ++out.steps;
      break;
    }
  }
  out.text = m.text();
  return out;
}

struct OracleCase {
  nlohmann::ordered_json schema;
  std::string text;
};

// Validates every case with jsonschema in one Python process; expects each to pass.
inline void expect_valid_by_oracle(const std::vector<OracleCase>& cases) {
  TempDir dir("grammar_oracle");
  nlohmann::ordered_json input = nlohmann::ordered_json::array();
  for (const auto& c : cases) input.push_back({{"schema", c.schema}, {"text", c.text}});
  write_file(dir / "cases.json", input.dump());
  const CommandResult r = run_oracle("json_schema_oracle.py", {"validate", (dir / "cases.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json results = nlohmann::json::parse(r.out);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_TRUE(results[i]["ok"].get<bool>()) << "schema " << cases[i].schema.dump() << "\ntext: " << cases[i].text
                                              << "\njsonschema: " << results[i].value("error", "");
}

}  // namespace lathe::test
