// Self-contained tokenizer tests: UTF-8 policy, a synthetic byte-level vocabulary, loader errors.
#include <gtest/gtest.h>

#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace lathe::tokenizer {
namespace {

TEST(Utf8, ReplacesEachMaximalSubpart) {
  // Expected strings are what Python's bytes.decode("utf-8", "replace") gives.
  EXPECT_EQ(replace_invalid_utf8("\xe2\x82("), "\xEF\xBF\xBD(");
  EXPECT_EQ(replace_invalid_utf8("\xf0\x9f\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(replace_invalid_utf8("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(replace_invalid_utf8("\xc0\xaf"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(replace_invalid_utf8("a\xff" "b"), "a\xEF\xBF\xBD" "b");
  EXPECT_TRUE(is_valid_utf8("\xf4\x8f\xbf\xbf"));
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));
}

TEST(Utf8, ByteLevelMapIsGpt2s) {
  const auto& map = byte_level_map();
  EXPECT_EQ(map.byte_to_text[' '], "\xC4\xA0");  // Ġ
  EXPECT_EQ(map.byte_to_text['\n'], "\xC4\x8A");  // Ċ
  EXPECT_EQ(map.byte_to_text['a'], "a");
  for (int b = 0; b < 256; ++b) {
    const std::string& text = map.byte_to_text[b];
    const char32_t cp = decode_code_point(text, 0, text.size());
    EXPECT_EQ(map.code_point_to_byte[cp], b);
  }
}

// Byte-level vocabulary: the 256 byte characters plus merges "a b" -> "ab", "ab c" -> "abc",
// "Ġ a" -> "Ġa" and an added special token.
std::string synthetic_json() {
  std::string vocab = "{";
  const auto& map = byte_level_map();
  int id = 0;
  for (int b = 0; b < 256; ++b) {
    std::string text = map.byte_to_text[b];
    if (text == "\"" || text == "\\") text = "\\" + text;
    vocab += (b ? "," : "") + std::string("\"") + text + "\":" + std::to_string(id++);
  }
  vocab += ",\"ab\":256,\"abc\":257,\"\xC4\xA0" "a\":258}";
  return R"({"added_tokens":[{"id":259,"content":"<|end|>","special":true,"lstrip":false,"rstrip":false,"normalized":false,"single_word":false}],
    "normalizer":null,
    "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
    "decoder":{"type":"ByteLevel"},
    "model":{"type":"BPE","vocab":)" + vocab + R"(,"merges":["a b","ab c","Ġ a"]}})";
}

TEST(Synthetic, EncodesWithMergesAndAddedTokens) {
  const auto tok = Tokenizer::from_hf_json(synthetic_json(), "", "synthetic");
  EXPECT_EQ(tok.encode("abc"), (std::vector<TokenId>{257}));
  EXPECT_EQ(tok.encode("abd a"), (std::vector<TokenId>{256, 'd', 258}));
  EXPECT_EQ(tok.encode("x<|end|>"), (std::vector<TokenId>{'x', 259}));
  EXPECT_EQ(tok.encode("x<|end|>", {.add_special = false, .parse_special = false}).size(), 8u);
  EXPECT_EQ(tok.decode(tok.encode("abc a<|end|>\xc3\xa9")), "abc a<|end|>\xc3\xa9");
  EXPECT_EQ(tok.decode({257, 259}, {.skip_special = true}), "abc");
  // Invalid UTF-8 is encoded as U+FFFD.
  EXPECT_EQ(tok.decode(tok.encode("a\xff")), "a\xEF\xBF\xBD");
  EXPECT_THROW(tok.decode({260}), InvalidArgumentError);
  EXPECT_THROW(tok.decode({-1}), InvalidArgumentError);
}

TEST(Synthetic, RejectsBadFiles) {
  EXPECT_THROW(Tokenizer::from_hf_json("{not json", "", "bad"), FormatError);
  EXPECT_THROW(Tokenizer::from_hf_json(R"({"model":{"type":"WordPiece","vocab":{}}})", "", "wp"), UnsupportedError);
  EXPECT_THROW(Tokenizer::from_hf_json(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a b"]}})", "", "m"), FormatError);
  EXPECT_THROW(Tokenizer::from_hf_json(R"({"model":{"type":"BPE","vocab":{"a":99999999},"merges":[]}})", "", "big"), FormatError);
  EXPECT_THROW(Tokenizer::from_hf_json(R"({"model":{"type":"BPE","vocab":{},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"(("},"behavior":"Isolated"}})", "", "re"), FormatError);
  EXPECT_THROW(Tokenizer::from_path("/nonexistent/path"), NotFoundError);
}

// GGUF pre-tokenizer names map to llama.cpp's choices (llama-vocab.cpp): a Llama-3 vocabulary that
// llama.cpp's converter tagged "smaug-bpe" gets Llama 3's regex without ignore_merges.
TEST(PreTokenizerNames, FollowLlamaCpp) {
  for (const char* name : {"llama3", "llama-bpe", "llama-v3"}) {
    const auto choice = choose_pre_tokenizer(name, "f.gguf");
    EXPECT_EQ(choice.patterns, std::vector<std::string>{kLlama3Pattern}) << name;
    EXPECT_TRUE(choice.ignore_merges) << name;
  }
  for (const char* name : {"smaug-bpe", "dbrx"}) {
    const auto choice = choose_pre_tokenizer(name, "f.gguf");
    EXPECT_EQ(choice.patterns, std::vector<std::string>{kLlama3Pattern}) << name;
    EXPECT_FALSE(choice.ignore_merges) << name;
  }
  EXPECT_THROW(choose_pre_tokenizer("no-such-pre", "f.gguf"), UnsupportedError);
}

}  // namespace
}  // namespace lathe::tokenizer
