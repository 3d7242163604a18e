// Generated texts validated by a real JSON Schema validator (the jsonschema package): random
// generation over the fake vocabulary for every finite schema, and json_object mode.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "grammar/grammar_test_support.hpp"
#include "grammar/schemas.hpp"

namespace lathe::grammar {
namespace {

TEST(GrammarOracle, RandomGenerationsValidate) {
  const auto table = TokenTable::build(test::fake_vocabulary());
  std::vector<test::OracleCase> cases;
  for (const auto& schema : test::finite_schemas()) {
    const auto g = JsonGrammar::from_schema_text(schema);
    for (uint64_t seed = 100; seed < 130; ++seed) {
      const auto out = test::random_generation(g, table, {test::kFakeEos}, seed, 4000);
      ASSERT_TRUE(out.ended) << schema << ": " << out.text;
      cases.push_back({nlohmann::ordered_json::parse(schema), out.text});
    }
  }
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const auto out = test::random_generation(JsonGrammar::any_object(), table, {test::kFakeEos}, seed, 3000);
    if (out.ended) cases.push_back({{{"type", "object"}}, out.text});
  }
  test::expect_valid_by_oracle(cases);
  EXPECT_GT(cases.size(), 300u);
}

TEST(GrammarOracle, HandWrittenAcceptedTextsValidate) {
  // Texts at the edges of the bounds: whatever the recognizer accepts, jsonschema must accept.
  const std::vector<std::pair<std::string, std::vector<std::string>>> table = {
      {R"({"type":"number","exclusiveMinimum":0.1,"exclusiveMaximum":0.3})",
       {"0.1000000000000001", "0.2999999999999999", "0.2", "0.11"}},
      {R"({"type":"number","minimum":1e15,"exclusiveMaximum":1000000000000000.5})", {"1000000000000000", "1000000000000000.4"}},
      {R"({"type":"integer","minimum":-9007199254740993,"maximum":9007199254740993})", {"9007199254740993", "-9007199254740993"}},
      {R"({"type":"string","maxLength":2})", {R"("\ud83d\ude00\u00e9")", "\"\xf0\x9f\x98\x80\xc3\xa9\""}},
  };
  std::vector<test::OracleCase> cases;
  for (const auto& [schema, texts] : table) {
    const auto g = JsonGrammar::from_schema_text(schema);
    for (const auto& text : texts)
      if (ByteMatcher::matches(g, text)) cases.push_back({nlohmann::ordered_json::parse(schema), text});
  }
  test::expect_valid_by_oracle(cases);
  EXPECT_GE(cases.size(), 6u);
}

}  // namespace
}  // namespace lathe::grammar
