// lathe's tokenizer loaded from the default model's GGUF metadata (SmolLM2: gpt2 model, pre
// "smollm") vs an equivalent HF tokenizer built from the same metadata by the oracle.
#include <gtest/gtest.h>

#include "io/gguf.hpp"
#include "tokenizer/differential.hpp"

namespace lathe::test {
namespace {

std::vector<std::string> oracle_args() { return {"--gguf", default_model().string()}; }

TEST(GgufVocab, LoadsSmolLM2Metadata) {
  LATHE_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_gguf(gguf::File::open(default_model()));
  const auto& vocab = tok.vocab();
  EXPECT_EQ(vocab.size(), 49152u);
  EXPECT_EQ(vocab.merges.size(), 48900u);
  EXPECT_EQ(vocab.bos, 1);
  EXPECT_EQ(vocab.eos, 2);
  EXPECT_FALSE(vocab.add_bos);
  EXPECT_EQ(tok.token_text(1), "<|im_start|>");
  EXPECT_FALSE(vocab.chat_template.empty());
}

TEST(GgufVocab, HardCasesMatchHuggingFace) {
  LATHE_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_path(default_model());
  expect_same_as_oracle(tok, oracle_args(), hard_case_corpus(special_strings_of(tok)), false);
}

TEST(GgufVocab, RandomStringsMatchHuggingFace) {
  LATHE_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_path(default_model());
  expect_same_as_oracle(tok, oracle_args(), random_corpus(10000, 777u, special_strings_of(tok)), false);
}

TEST(GgufVocab, NaturalPromptsMatchHuggingFace) {
  LATHE_REQUIRE_MODEL();
  const auto tok = tokenizer::Tokenizer::from_path(default_model());
  expect_same_as_oracle(tok, oracle_args(), natural_prompt_corpus(), false);
}

}  // namespace
}  // namespace lathe::test
