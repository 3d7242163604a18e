// The per-sequence TokenConstraint over a small fake vocabulary: the trie, what mask() allows,
// end tokens, accept() refusing forbidden tokens, and random generation that always ends with
// JSON the grammar accepts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "grammar/grammar_test_support.hpp"
#include "grammar/schemas.hpp"
#include "lathe/error.hpp"

namespace lathe::grammar {
namespace {

using test::fake_vocabulary;
using test::kFakeEos;

std::shared_ptr<const TokenTable> fake_table() {
  static const auto table = TokenTable::build(fake_vocabulary());
  return table;
}

std::vector<std::string> allowed_texts(TokenMatcher& m) {
  std::vector<std::string> out;
  for (int32_t id : m.allowed_tokens()) out.push_back(id == kFakeEos ? "<eos>" : fake_table()->bytes(id));
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(GrammarTokenTable, TrieHoldsEveryTokenOnce) {
  const auto table = TokenTable::build({"ab", "a", "", "abc", "b", "ab"});
  // a -> b -> c, b: 4 nodes in depth-first order; "ab" twice ends at one node.
  ASSERT_EQ(table->nodes().size(), 4u);
  EXPECT_EQ(table->nodes()[0].byte, 'a');
  EXPECT_EQ(table->nodes()[0].skip, 3u);
  EXPECT_EQ(table->nodes()[1].byte, 'b');
  EXPECT_EQ(table->nodes()[1].tokens_end - table->nodes()[1].tokens_begin, 2u);
  EXPECT_EQ(table->nodes()[3].byte, 'b');
  EXPECT_EQ(table->nodes()[3].depth, 1);
  EXPECT_EQ(table->ends().size(), 5u);
  EXPECT_EQ(table->max_depth(), 3);
}

TEST(GrammarTokenMatcher, MaskAllowsWhatTheGrammarAccepts) {
  const auto g = JsonGrammar::from_schema_text(R"({"type":"object","properties":{"name":{"type":"string"}},"required":["name"]})");
  TokenMatcher m(g, fake_table(), {kFakeEos});
  auto first = allowed_texts(m);
  EXPECT_TRUE(contains(first, "{"));
  EXPECT_TRUE(contains(first, " "));
  EXPECT_TRUE(contains(first, "{\""));
  EXPECT_FALSE(contains(first, "["));
  EXPECT_FALSE(contains(first, "<eos>"));
  EXPECT_FALSE(contains(first, ""));  // the special token never comes
  m.accept(258);  // "{\"", the first multi-byte piece
  auto key = allowed_texts(m);
  EXPECT_TRUE(contains(key, "n"));
  EXPECT_TRUE(contains(key, "name"));
  EXPECT_FALSE(contains(key, "a"));
  EXPECT_THROW(m.accept('x'), InternalError);
  EXPECT_EQ(m.text(), "{\"");
  for (char c : std::string("name\":\"\xc3")) m.accept(static_cast<uint8_t>(c));
  auto continuation = allowed_texts(m);
  EXPECT_EQ(continuation.size(), 65u);  // 0x80..0xBF, and the piece "\xac" once more
  m.accept(0xA9);
  m.accept('"');
  EXPECT_FALSE(m.done_possible());
  m.accept('}');
  EXPECT_TRUE(m.done_possible());
  EXPECT_TRUE(m.must_end());
  EXPECT_EQ(allowed_texts(m), std::vector<std::string>{"<eos>"});
  std::vector<float> logits(fake_table()->size() + 3, 1.0f);
  m.mask(logits);
  for (size_t id = 0; id < logits.size(); ++id)
    EXPECT_EQ(std::isfinite(logits[id]), id == static_cast<size_t>(kFakeEos)) << id;
  m.accept(kFakeEos);
  EXPECT_THROW(m.accept('x'), InternalError);
}

TEST(GrammarTokenMatcher, EndTokenOnlyWhenComplete) {
  const auto g = JsonGrammar::from_schema_text(R"({"type":"integer","maximum":500})");
  TokenMatcher m(g, fake_table(), {kFakeEos});
  EXPECT_THROW(m.accept(kFakeEos), InternalError);
  m.accept('4');
  EXPECT_TRUE(m.done_possible());
  EXPECT_FALSE(m.must_end());
  auto after = allowed_texts(m);
  EXPECT_TRUE(contains(after, "<eos>"));
  EXPECT_TRUE(contains(after, "9"));
  EXPECT_TRUE(contains(after, "00"));
  m.accept('9');
  EXPECT_FALSE(m.must_end());  // 49 -> 490..499 still fit
  m.accept('9');
  EXPECT_TRUE(m.must_end());  // 499 is the last
  EXPECT_THROW(TokenMatcher(g, fake_table(), {100000}), InvalidArgumentError);
}

TEST(GrammarTokenMatcher, RandomGenerationEndsWithValidJson) {
  int generated = 0;
  for (const auto& schema : test::finite_schemas()) {
    const auto g = JsonGrammar::from_schema_text(schema);
    for (uint64_t seed = 0; seed < 40; ++seed) {
      const auto out = test::random_generation(g, fake_table(), {kFakeEos}, seed, 4000);
      ASSERT_TRUE(out.ended) << schema << " seed " << seed << ": " << out.text;
      EXPECT_NO_THROW({ auto v = nlohmann::json::parse(out.text); (void)v; }) << out.text;
      EXPECT_TRUE(ByteMatcher::matches(g, out.text)) << out.text;
      ++generated;
    }
  }
  EXPECT_EQ(generated, 40 * static_cast<int>(test::finite_schemas().size()));
}

TEST(GrammarTokenMatcher, AnyObjectModeGeneratesObjects) {
  int ended = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const auto out = test::random_generation(JsonGrammar::any_object(), fake_table(), {kFakeEos}, seed, 3000);
    if (!out.ended) continue;
    ++ended;
    const auto value = nlohmann::json::parse(out.text);
    EXPECT_TRUE(value.is_object()) << out.text;
  }
  EXPECT_GT(ended, 20);
}

}  // namespace
}  // namespace lathe::grammar
