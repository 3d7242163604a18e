// SentencePiece GGUF vocabularies (tokenizer.ggml.model = "llama": tokens, scores, token types,
// no merges) vs HF `tokenizers` on the Llama 2 tokenizer.json they were converted from.
#include <gtest/gtest.h>

#include "io/gguf.hpp"
#include "tokenizer/differential.hpp"
#include "tokenizer/spm_gguf.hpp"

namespace lathe::test {
namespace {

std::vector<std::string> oracle_args() { return {"--tokenizer-json", (llama2_tokenizer_dir() / "tokenizer.json").string()}; }

class SpmGguf : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("spm_gguf");
    write_llama2_spm_gguf(*dir_ / "llama2-vocab.gguf");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static tokenizer::Tokenizer load() { return tokenizer::Tokenizer::from_gguf(gguf::File::open(*dir_ / "llama2-vocab.gguf")); }
  static TempDir* dir_;
};
TempDir* SpmGguf::dir_ = nullptr;

TEST_F(SpmGguf, LoadsVocabulary) {
  const auto tok = load();
  const auto& vocab = tok.vocab();
  EXPECT_EQ(vocab.size(), 32000u);
  EXPECT_TRUE(vocab.merges.empty());
  EXPECT_EQ(vocab.scores.size(), 32000u);
  EXPECT_EQ(vocab.bos, 1);
  EXPECT_EQ(vocab.eos, 2);
  EXPECT_EQ(vocab.unk, 0);
  EXPECT_TRUE(vocab.add_bos);
  EXPECT_EQ(vocab.added_tokens.size(), 3u);  // <unk>, <s>, </s>
}

TEST_F(SpmGguf, HardCasesMatchHuggingFace) {
  const auto tok = load();
  expect_same_as_oracle(tok, oracle_args(), hard_case_corpus(special_strings_of(tok)), false);
}

TEST_F(SpmGguf, RandomStringsMatchHuggingFace) {
  const auto tok = load();
  expect_same_as_oracle(tok, oracle_args(), random_corpus(3000, 4242u, special_strings_of(tok)), false);
}

TEST_F(SpmGguf, AddSpecialMatchesHuggingFacePostProcessor) {
  const auto tok = load();
  const std::vector<std::string> texts = {"Hello world", "", " x", "<s>hi</s>"};
  const auto expected = run_tokenize_oracle(oracle_args(), texts);
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(tok.encode(texts[i], {.add_special = true, .parse_special = true}), expected[i].ids_special) << escape_text(texts[i]);
}

// Runs of U+2581 (spaces) when all whitespace pieces share one score, as the real Llama 2
// tokenizer.model is believed to hold: llama.cpp/sentencepiece then merge equal-score pairs
// leftmost first, HF by merge rank (id order). Lengths 1..40 between words, both agree.
TEST(SpmGgufTies, EqualScoreWhitespaceRunsMatchHuggingFace) {
  TempDir dir("spm_gguf_ties");
  write_llama2_spm_gguf(dir / "ties.gguf", /*equal_whitespace_scores=*/true);
  const auto tok = tokenizer::Tokenizer::from_gguf(gguf::File::open(dir / "ties.gguf"));
  std::vector<std::string> texts;
  for (size_t n = 1; n <= 40; ++n) {
    texts.push_back("a" + std::string(n, ' ') + "b");
    texts.push_back(std::string(n, ' '));
    texts.push_back("x\n" + std::string(n, ' ') + "return 1;");
  }
  expect_same_as_oracle(tok, oracle_args(), texts, false);
}

}  // namespace
}  // namespace lathe::test
