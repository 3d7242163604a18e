// GGUF vocabulary -> HF tokenizer.json export. The exported file, loaded by HF `tokenizers`
// (the oracle) and by lathe's own tokenizer.json loader, must encode exactly like lathe's
// GGUF-loaded tokenizer (itself checked against HF in tokenizer_gguf_oracle_test and
// tokenizer_spm_gguf_test).
#include <gtest/gtest.h>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "tokenizer/differential.hpp"
#include "tokenizer/export_hf.hpp"
#include "tokenizer/spm_gguf.hpp"

namespace lathe::test {
namespace {

struct Exported {
  tokenizer::Tokenizer gguf_tokenizer;
  std::filesystem::path json_path;
  nlohmann::json config;
};

Exported export_gguf(const std::filesystem::path& gguf_path, const TempDir& dir) {
  const auto file = gguf::File::open(gguf_path);
  auto tok = tokenizer::Tokenizer::from_gguf(file);
  const auto options = tokenizer::hf_export_options_from_gguf(file);
  const auto json = tokenizer::tokenizer_json_from_vocabulary(tok.vocab(), options);
  const auto config = tokenizer::tokenizer_config_from_vocabulary(tok.vocab(), options);
  write_file(dir / "tokenizer.json", json.dump());
  write_file(dir / "tokenizer_config.json", config.dump());
  return {std::move(tok), dir / "tokenizer.json", config};
}

// lathe's loader reading the exported files gives the GGUF tokenizer's ids, with and without
// special-token parsing and with BOS/EOS added.
void expect_same_ids(const tokenizer::Tokenizer& expected, const tokenizer::Tokenizer& actual,
                     const std::vector<std::string>& texts) {
  size_t mismatches = 0;
  for (const std::string& text : texts) {
    for (const tokenizer::EncodeOptions options : {tokenizer::EncodeOptions{false, true}, tokenizer::EncodeOptions{false, false},
                                                  tokenizer::EncodeOptions{true, true}}) {
      const auto want = expected.encode(text, options), got = actual.encode(text, options);
      if (want != got && ++mismatches <= 10)
        ADD_FAILURE() << "exported json encodes " << escape_text(text) << " differently\n  gguf: " << ids_to_string(want)
                      << "\n  json: " << ids_to_string(got);
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

std::vector<std::string> corpus_for(const tokenizer::Tokenizer& tok, uint32_t seed) {
  auto texts = hard_case_corpus(special_strings_of(tok));
  auto random = random_corpus(2000, seed, special_strings_of(tok));
  texts.insert(texts.end(), random.begin(), random.end());
  return texts;
}

TEST(ExportHf, SmolLM2MatchesHuggingFaceAndLathe) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("export_hf_smollm2");
  const Exported exported = export_gguf(default_model(), dir);
  const auto texts = corpus_for(exported.gguf_tokenizer, 31337u);
  expect_same_as_oracle(exported.gguf_tokenizer, {"--tokenizer-json", exported.json_path.string()}, texts, false);
  expect_same_ids(exported.gguf_tokenizer, tokenizer::Tokenizer::from_hf_file(dir.path()), texts);

  const auto& vocab = exported.gguf_tokenizer.vocab();
  EXPECT_EQ(exported.config.at("bos_token"), vocab.tokens.at(static_cast<size_t>(*vocab.bos)));
  EXPECT_EQ(exported.config.at("eos_token"), vocab.tokens.at(static_cast<size_t>(*vocab.eos)));
  EXPECT_EQ(exported.config.at("add_bos_token"), vocab.add_bos);
  EXPECT_EQ(exported.config.at("chat_template"), vocab.chat_template);
  EXPECT_EQ(exported.config.at("added_tokens_decoder").size(), vocab.added_tokens.size());
}

TEST(ExportHf, SentencePieceMatchesHuggingFaceAndLathe) {
  TempDir dir("export_hf_spm");
  write_llama2_spm_gguf(dir / "llama2-vocab.gguf");
  const Exported exported = export_gguf(dir / "llama2-vocab.gguf", dir);
  const auto texts = corpus_for(exported.gguf_tokenizer, 2718u);
  expect_same_as_oracle(exported.gguf_tokenizer, {"--tokenizer-json", exported.json_path.string()}, texts, false);
  const auto from_json = tokenizer::Tokenizer::from_hf_file(dir.path());
  expect_same_ids(exported.gguf_tokenizer, from_json, texts);
  EXPECT_TRUE(from_json.vocab().add_bos);
  EXPECT_EQ(exported.config.at("unk_token"), "<unk>");
}

TEST(ExportHf, RefusesWhatItCannotExpress) {
  tokenizer::Vocabulary vocab;
  vocab.tokens = {"a"};
  vocab.types = {tokenizer::TokenType::Normal};
  vocab.build_index();
  EXPECT_THROW(tokenizer::tokenizer_json_from_vocabulary(vocab, {.ggml_model = "bert"}), UnsupportedError);
  EXPECT_THROW(tokenizer::tokenizer_json_from_vocabulary(vocab, {.ggml_model = "gpt2", .ggml_pre = "no-such-pre"}),
               UnsupportedError);
  vocab.tokens = {"\xff"};
  vocab.build_index();
  EXPECT_THROW(tokenizer::tokenizer_json_from_vocabulary(vocab, {.ggml_model = "gpt2"}), UnsupportedError);
}

}  // namespace
}  // namespace lathe::test
