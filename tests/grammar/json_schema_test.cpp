// The schema compiler and the byte-level recognizer: each supported keyword accepts the texts it
// should and rejects the rest; every unsupported keyword and malformed schema is refused by name.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "grammar/json_schema.hpp"
#include "grammar/token_matcher.hpp"

namespace lathe::grammar {
namespace {

using nlohmann::ordered_json;
using test::expect_error;

std::shared_ptr<const JsonGrammar> compile(const std::string& text) { return JsonGrammar::from_schema_text(text); }

void expect_texts(const std::string& schema, const std::vector<std::string>& good, const std::vector<std::string>& bad) {
  const auto g = compile(schema);
  for (const auto& t : good) {
    EXPECT_TRUE(ByteMatcher::matches(g, t)) << schema << " should accept: " << t;
    EXPECT_NO_THROW({ auto v = nlohmann::json::parse(t); (void)v; }) << t;
  }
  for (const auto& t : bad) EXPECT_FALSE(ByteMatcher::matches(g, t)) << schema << " should reject: " << t;
}

TEST(GrammarSchema, Scalars) {
  expect_texts(R"({"type":"null"})", {"null", " null", "\n  null"}, {"nul", "null ", "nulll", "Null", "\"null\""});
  expect_texts(R"({"type":"boolean"})", {"true", "false"}, {"tru", "1", "true false", "truefalse"});
  expect_texts(R"({"type":"string"})",
               {R"("")", R"("abc")", R"("a\"b\\c\/\b\f\n\r\t")", R"("\u00e9\u0000")", R"("\ud83d\ude00")",
                "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
               {R"("abc)", "\"a\nb\"", R"("\x")", R"("\u12")", R"("\ud83d")", R"("\ude00")", R"("\ud83dx")",
                "\"\xc3\"", "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"", "abc"});
}

TEST(GrammarSchema, StringLengthCountsCodePoints) {
  expect_texts(R"({"type":"string","minLength":2,"maxLength":3})",
               {R"("ab")", R"("abc")", "\"\xc3\xa9\xe2\x82\xac\"", R"("\ud83d\ude00\n")", R"("\u00e9\\")"},
               {R"("a")", R"("abcd")", "\"\xf0\x9f\x98\x80\"", R"("\n\n\n\n")", R"("")"});
}

TEST(GrammarSchema, Integers) {
  expect_texts(R"({"type":"integer"})", {"0", "-0", "7", "-123", "9999999999999999"},
               {"01", "1.0", "1e3", "-", "+1", "99999999999999999", "--1", ".5"});
  expect_texts(R"({"type":"integer","minimum":-5,"maximum":300})", {"-5", "0", "300", "42"},
               {"-6", "301", "1000", "-10"});
  expect_texts(R"({"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":10})", {"1", "9"}, {"0", "10", "-1"});
  expect_texts(R"({"type":"integer","minimum":2.5,"maximum":4.5})", {"3", "4"}, {"2", "5"});
}

TEST(GrammarSchema, Numbers) {
  expect_texts(R"({"type":"number"})", {"0", "-0.5", "3.25", "1e5", "1E+10", "-2.5e-3", "0.0001"},
               {"01", "1.", ".5", "1e", "1e+", "1e123", "- 1", "0x10", "NaN", "Infinity"});
  expect_texts(R"({"type":"number","minimum":0.5,"maximum":1.5})", {"0.5", "1", "1.5", "0.75", "1.4999"},
               {"0.4", "1.6", "2", "-1", "1e0", "0.49"});
  expect_texts(R"({"type":"number","exclusiveMinimum":0,"exclusiveMaximum":1})", {"0.5", "0.0001", "0.9999"},
               {"0", "1", "0.0", "1.0", "-0.5"});
}

TEST(GrammarSchema, NumberPrefixesStayCompletable) {
  // With minimum 100 a leading "-" or "0" can never finish in range: the prefix itself is refused.
  const auto g = compile(R"({"type":"integer","minimum":100,"maximum":150})");
  ByteMatcher m(g);
  EXPECT_FALSE(m.feed("-"));
  EXPECT_FALSE(m.feed("0"));
  EXPECT_FALSE(m.feed("2"));
  EXPECT_TRUE(m.feed("1"));
  EXPECT_FALSE(m.feed("6"));
  EXPECT_TRUE(m.feed("4"));
  EXPECT_FALSE(m.done_possible());
  EXPECT_TRUE(m.feed("9"));
  EXPECT_TRUE(m.done_possible());
  EXPECT_TRUE(m.must_end());
}

TEST(GrammarSchema, EnumAndConst) {
  expect_texts(R"({"enum":["red","green",3,null,{"a":[1,2]},12]})",
               {R"("red")", R"("green")", "3", "null", R"({"a":[1,2]})", "12"},
               {R"("blue")", "4", R"({"a": [1,2]})", "1", R"("re")"});
  expect_texts(R"({"const":"x\"y"})", {R"("x\"y")"}, {R"("x")", R"("x\"y" )"});
  expect_texts(R"({"type":"string","enum":["a","b"]})", {R"("a")"}, {R"("c")"});
}

TEST(GrammarSchema, ObjectsGeneratePropertiesInOrder) {
  const std::string schema = R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},
    "nick":{"type":"string"}},"required":["name","nick"]})";
  expect_texts(schema,
               {R"({"name":"a","nick":"b"})", R"({"name":"a","age":3,"nick":"b"})",
                "{\n  \"name\": \"a\",\n  \"age\": 3,\n  \"nick\": \"b\"\n}", R"({ "name" : "a" , "nick" : "b" })"},
               {R"({"nick":"b","name":"a"})", R"({"name":"a"})", R"({"name":"a","nick":"b","age":3})",
                R"({"name":"a","nick":"b","extra":1})", R"({"name":"a","name":"a","nick":"b"})", "{}",
                R"({"name":"a","nick":"b"} )", R"({"name":"a","nick":"b"},)"});
  expect_texts(R"({"type":"object"})", {"{}", "{ }"}, {R"({"a":1})"});
  expect_texts(R"({"type":"object","properties":{"id":{"type":"integer"},"identifier":{"type":"string"}}})",
               {"{}", R"({"id":1})", R"({"identifier":"x"})", R"({"id":1,"identifier":"x"})"},
               {R"({"identifier":"x","id":1})", R"({"ident":1})"});
}

TEST(GrammarSchema, WhitespaceIsBounded) {
  const auto g = compile(R"({"type":"array","items":{"type":"integer"}})");
  EXPECT_TRUE(ByteMatcher::matches(g, "[\n" + std::string(kMaxSpaces, ' ') + "1]"));
  EXPECT_FALSE(ByteMatcher::matches(g, "[\n" + std::string(kMaxSpaces + 1, ' ') + "1]"));
  EXPECT_FALSE(ByteMatcher::matches(g, "[\n\n1]"));
  EXPECT_FALSE(ByteMatcher::matches(g, "[ \n1]"));
  EXPECT_FALSE(ByteMatcher::matches(g, "[\t1]"));
  EXPECT_FALSE(ByteMatcher::matches(g, "[1] "));
  ByteMatcher m(g);
  EXPECT_TRUE(m.feed("[1]"));
  EXPECT_TRUE(m.must_end());
}

TEST(GrammarSchema, Arrays) {
  expect_texts(R"({"type":"array","items":{"type":"boolean"},"minItems":1,"maxItems":2})",
               {"[true]", "[true, false]", "[ true ,\n false ]"}, {"[]", "[true,true,true]", "[1]", "[true,]"});
  expect_texts(R"({"type":"array"})", {"[]", R"([1,"a",{"b":[null]}])"}, {"[,]"});
  expect_texts(R"({"type":"array","items":false})", {"[]"}, {"[1]"});
}

TEST(GrammarSchema, TypeArraysAndAnyOf) {
  expect_texts(R"({"type":["string","null"],"maxLength":2})", {R"("ab")", "null"}, {R"("abc")", "1"});
  expect_texts(R"({"type":["integer","number"]})", {"1", "1.5"}, {"\"1\""});
  expect_texts(R"({"anyOf":[{"type":"integer","minimum":0},{"type":"null"},{"type":"array","items":{"type":"string"}}]})",
               {"3", "null", R"(["a"])"}, {"-1", R"([1])", "true"});
}

TEST(GrammarSchema, LocalRefsAndRecursion) {
  const std::string list = R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
    "next":{"$ref":"#/$defs/node"}},"required":["v"]}},"$ref":"#/$defs/node"})";
  expect_texts(list, {R"({"v":1})", R"({"v":1,"next":{"v":2,"next":{"v":3}}})"}, {R"({"next":{"v":2}})"});
  expect_texts(R"({"definitions":{"s":{"type":"string"}},"type":"array","items":{"$ref":"#/definitions/s"}})",
               {R"(["a","b"])"}, {"[1]"});
  // Recursion through the root and nesting beyond kMaxNesting.
  const auto g = compile(R"({"type":"array","items":{"$ref":"#"}})");
  EXPECT_TRUE(ByteMatcher::matches(g, std::string(kMaxNesting, '[') + std::string(kMaxNesting, ']')));
  EXPECT_FALSE(ByteMatcher::matches(g, std::string(kMaxNesting + 1, '[') + std::string(kMaxNesting + 1, ']')));
}

TEST(GrammarSchema, AnyObjectMode) {
  const auto g = JsonGrammar::any_object();
  for (const char* good : {"{}", R"({"a":1,"b":[true,null,{"c":"d"}],"e":-1.5e3})", "{\n  \"x\": \"y\"\n}"})
    EXPECT_TRUE(ByteMatcher::matches(g, good)) << good;
  for (const char* bad : {"[]", "1", R"({"a"})", R"({a:1})", R"({"a":1,})", "{} "})
    EXPECT_FALSE(ByteMatcher::matches(g, bad)) << bad;
  EXPECT_TRUE(ByteMatcher::matches(g, "{\"a\":" + std::string(kMaxNesting - 1, '[') + std::string(kMaxNesting - 1, ']') + "}"));
  EXPECT_FALSE(ByteMatcher::matches(g, "{\"a\":" + std::string(kMaxNesting, '[') + std::string(kMaxNesting, ']') + "}"));
}

TEST(GrammarSchema, AnnotationsAreIgnored) {
  expect_texts(R"({"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","title":"T","description":"d",
    "$comment":"c","type":"object","properties":{"a":{"type":"integer","default":1,"examples":[1]}},"required":["a"]})",
               {R"({"a":1})"}, {"{}"});
}

TEST(GrammarSchema, PydanticOptional) {
  expect_texts(R"({"properties":{"name":{"title":"Name","type":"string"},"age":{"anyOf":[{"type":"integer"},
    {"type":"null"}],"default":null,"title":"Age"}},"required":["name"],"title":"User","type":"object"})",
               {R"({"name":"x"})", R"({"name":"x","age":null})", R"({"name":"x","age":3})"}, {R"({"age":3})"});
}

TEST(GrammarSchema, UnsupportedKeywordsAreNamed) {
  for (const std::string keyword : {"pattern", "format", "oneOf", "allOf", "not", "if", "then", "else",
                                    "patternProperties", "uniqueItems", "multipleOf", "minProperties",
                                    "maxProperties", "prefixItems", "contains", "dependentRequired",
                                    "propertyNames", "unevaluatedProperties", "contentEncoding", "nonsense"}) {
    const std::string schema = R"({"type":"object","properties":{"zip":{"type":"string",")" + keyword + R"(":1}}})";
    expect_error<UnsupportedSchemaError>([&] { (void)JsonGrammar::from_schema_text(schema, "response_format.json_schema.schema"); },
                                         {"response_format.json_schema.schema: keyword '" + keyword + "'",
                                          "at /properties/zip", "supported: type"});
  }
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"type":"object","additionalProperties":true})"); },
                                       {"'additionalProperties'", "only false"});
  expect_error<UnsupportedSchemaError>(
      [] { (void)compile(R"({"type":"object","additionalProperties":{"type":"string"}})"); }, {"'additionalProperties'"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"type":"array","items":[{"type":"string"}]})"); },
                                       {"'items'", "tuple"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"$ref":"other.json#/a"})"); }, {"'$ref'", "local"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"$ref":"#/$defs/a","type":"string","$defs":{"a":{}}})"); },
                                       {"'type'", "beside '$ref'"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"anyOf":[{"type":"integer"},{"type":"number"}]})"); },
                                       {"'anyOf'", "branch 1"});
  expect_error<UnsupportedSchemaError>(
      [] { (void)compile(R"({"anyOf":[{"type":"object","properties":{"a":{}}},{"type":"object"}]})"); },
      {"'anyOf'", "'{'"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"properties":{"a":false}})"); }, {"'false'", "/properties/a"});
  expect_error<UnsupportedSchemaError>([] { (void)compile(R"({"enum":["a"],"maxLength":3})"); }, {"'maxLength'", "beside 'enum'"});
}

TEST(GrammarSchema, MalformedSchemasAreNamed) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {R"({"type":3})", {"keyword 'type'", "must be a type name"}},
      {R"({"type":"strin"})", {"keyword 'type'", "\"strin\""}},
      {R"({"type":[]})", {"keyword 'type'"}},
      {R"({"type":["string","string"]})", {"listed twice"}},
      {R"({"type":"object","properties":{"a":{}},"required":"a"})", {"keyword 'required'", "array of property names"}},
      {R"({"type":"object","properties":{"a":{}},"required":[1]})", {"keyword 'required'"}},
      {R"({"type":"object","properties":{"a":{}},"required":["b"]})", {"keyword 'required'", "\"b\" is not in properties"}},
      {R"({"type":"object","properties":[]})", {"keyword 'properties'"}},
      {R"({"type":"array","minItems":3,"maxItems":2})", {"keyword 'minItems'", "exceeds maxItems"}},
      {R"({"type":"array","minItems":-1})", {"keyword 'minItems'", "non-negative integer"}},
      {R"({"type":"string","minLength":5,"maxLength":2})", {"keyword 'minLength'"}},
      {R"({"type":"string","maxLength":"3"})", {"keyword 'maxLength'"}},
      {R"({"type":"integer","minimum":5,"maximum":4})", {"keyword 'minimum'", "no integer"}},
      {R"({"type":"integer","exclusiveMinimum":1,"exclusiveMaximum":2})", {"no integer"}},
      {R"({"type":"number","minimum":"0"})", {"keyword 'minimum'", "must be a number"}},
      {R"({"enum":[]})", {"keyword 'enum'", "non-empty"}},
      {R"({"type":"string","enum":["a",1]})", {"keyword 'enum'", "value 1"}},
      {R"({"anyOf":[]})", {"keyword 'anyOf'"}},
      {R"({"$ref":"#/$defs/missing"})", {"keyword '$ref'", "points to nothing"}},
      {R"({"$ref":"#/$defs/a","$defs":{"a":{"$ref":"#/$defs/a"}}})", {"keyword '$ref'", "refers back"}},
      {R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"})", {"keyword 'anyOf'"}},
      {R"({"type":"object","properties":{"a":{"$ref":"#"}},"required":["a"]})", {"nests at most 32"}},
      {R"(3)", {"a schema must be an object"}},
      {R"({"type": "object", )", {"not valid JSON"}},
  };
  // (clang 14 cannot capture a structured binding, hence the element.)
  for (const auto& c : cases) expect_error<InvalidSchemaError>([&] { (void)compile(c.first); }, c.second);
}

TEST(GrammarSchema, HostileSchemasHitLimits) {
  std::string deep = R"({"type":"string"})";
  for (int i = 0; i < 100; ++i) deep = R"({"type":"array","items":)" + deep + "}";
  expect_error<UnsupportedSchemaError>([&] { (void)compile(deep); }, {"nest deeper than 64"});
  ordered_json big_enum = {{"enum", ordered_json::array()}};
  for (int i = 0; i < 2000; ++i) big_enum["enum"].push_back(i);
  expect_error<UnsupportedSchemaError>([&] { (void)JsonGrammar::from_schema(big_enum); }, {"2000 values", "1024"});
  ordered_json wide = {{"type", "object"}, {"properties", ordered_json::object()}};
  for (int i = 0; i < 1500; ++i) wide["properties"]["p" + std::to_string(i)] = {{"type", "integer"}};
  expect_error<UnsupportedSchemaError>([&] { (void)JsonGrammar::from_schema(wide); }, {"1500 properties"});
  ordered_json many = {{"type", "object"}, {"properties", ordered_json::object()}};
  for (int i = 0; i < 1000; ++i)
    many["properties"]["p" + std::to_string(i)] = {{"type", ordered_json::array({"string", "integer", "null", "boolean", "array"})}};
  expect_error<UnsupportedSchemaError>([&] { (void)JsonGrammar::from_schema(many); }, {"4096 grammar nodes"});
}

TEST(GrammarSchema, TrueSchemaAndUntypedSchemasAreAnyValue) {
  expect_texts(R"({"type":"object","properties":{"a":true,"b":{}},"required":["a","b"]})",
               {R"({"a":[1,{"x":null}],"b":"s"})"}, {R"({"a":1})"});
  expect_texts(R"({"minLength":2})", {R"("ab")"}, {R"("a")", "12"});
}

}  // namespace
}  // namespace lathe::grammar
