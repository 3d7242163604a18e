// `lathe tokenize` / `lathe detokenize` end to end through the CLI binary. Expected ids, pieces
// and decoded text come from HF `tokenizers` (tests/oracle/tokenize_oracle.py), never from lathe.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "tokenizer/differential.hpp"

namespace lathe::test {
namespace {

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  for (long long value; in >> value;) ids.push_back(static_cast<int32_t>(value));
  return ids;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  return out;
}

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args);
}

std::vector<std::string> gguf_oracle() { return {"--gguf", default_model().string()}; }

const std::vector<std::string> kTexts = {"Hello world", "naïve café, 1234567 ok?", "x <|im_start|>y\n\tz", "日本語 😀"};

TEST(CliTokenize, IdsMatchHuggingFace) {
  LATHE_REQUIRE_MODEL();
  const auto expected = run_tokenize_oracle(gguf_oracle(), kTexts);
  ASSERT_EQ(expected.size(), kTexts.size());
  for (size_t i = 0; i < kTexts.size(); ++i) {
    const auto r = lathe_cli({"tokenize", "-m", default_model().string(), "--ids", kTexts[i]});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(parse_ids(r.out), expected[i].ids_special) << escape_text(kTexts[i]) << "\n" << r.out;
    EXPECT_EQ(r.out, join_ids(parse_ids(r.out)) + "\n") << "one line of space-separated ids";
    // --no-special: special-token strings are plain text (HF encode_special_tokens=True).
    const auto plain = lathe_cli({"tokenize", "-m", default_model().string(), "--no-special", kTexts[i]});
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    EXPECT_EQ(parse_ids(plain.out), expected[i].ids_text) << escape_text(kTexts[i]);
  }
  // The text with a special token must differ between the two modes, or the check above is vacuous.
  EXPECT_NE(expected[2].ids, expected[2].ids_text);
}

TEST(CliTokenize, PiecesMatchHuggingFaceTokens) {
  LATHE_REQUIRE_MODEL();
  const std::string text = "Hello world, it's 42";
  const auto expected = run_tokenize_oracle(gguf_oracle(), {text});
  ASSERT_EQ(expected.size(), 1u);
  const auto r = lathe_cli({"tokenize", "-m", default_model().string(), "--pieces", text});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One line per token: id <TAB> "piece" <TAB> "bytes"; these pieces need no escapes.
  std::istringstream lines(r.out);
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  std::string decoded;
  for (std::string line; std::getline(lines, line);) {
    const size_t tab1 = line.find('\t'), tab2 = line.find('\t', tab1 + 1);
    ASSERT_NE(tab2, std::string::npos) << line;
    ids.push_back(std::stoi(line.substr(0, tab1)));
    const std::string piece = line.substr(tab1 + 1, tab2 - tab1 - 1), bytes = line.substr(tab2 + 1);
    ASSERT_GE(piece.size(), 2u);
    ASSERT_GE(bytes.size(), 2u);
    pieces.push_back(piece.substr(1, piece.size() - 2));
    decoded += bytes.substr(1, bytes.size() - 2);
  }
  EXPECT_EQ(ids, expected[0].ids);
  EXPECT_EQ(pieces, expected[0].tokens);
  EXPECT_EQ(decoded, expected[0].decoded);
  EXPECT_EQ(decoded, text);
}

TEST(CliTokenize, DetokenizeRoundTrip) {
  LATHE_REQUIRE_MODEL();
  const auto expected = run_tokenize_oracle(gguf_oracle(), kTexts);
  ASSERT_EQ(expected.size(), kTexts.size());
  for (size_t i = 0; i < kTexts.size(); ++i) {
    std::vector<std::string> args = {"detokenize", "-m", default_model().string()};
    for (int32_t id : expected[i].ids_text) args.push_back(std::to_string(id));
    const auto r = lathe_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, expected[i].decoded + "\n");
    EXPECT_EQ(r.out, kTexts[i] + "\n");
  }
}

TEST(CliTokenize, DirectoryWithOnlyTokenizerJson) {
  TempDir dir("cli_tokenize");
  const auto source = shared_data_dir() / "tokenizers" / "llama3" / "tokenizer.json";
  std::filesystem::copy_file(source, dir / "tokenizer.json");
  const std::vector<std::string> texts = {"Hello world", "  indented\n\n12345 <|begin_of_text|>"};
  const auto expected = run_tokenize_oracle({"--tokenizer-json", (dir / "tokenizer.json").string()}, texts);
  ASSERT_EQ(expected.size(), texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto r = lathe_cli({"tokenize", "-m", dir.path().string(), texts[i]});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(parse_ids(r.out), expected[i].ids_special) << escape_text(texts[i]);
    std::vector<std::string> args = {"detokenize", "-m", dir.path().string()};
    for (int32_t id : expected[i].ids_text) args.push_back(std::to_string(id));
    const auto back = lathe_cli(args);
    ASSERT_EQ(back.exit_code, 0) << back.err;
    EXPECT_EQ(back.out, expected[i].decoded + "\n");
  }
  // The default mode parses special tokens: the second text's <|begin_of_text|> must be one id.
  EXPECT_NE(expected[1].ids, expected[1].ids_text);
}

void expect_error(const CommandResult& r, const std::string& named_value) {
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(named_value), std::string::npos) << "error does not name " << named_value << ": " << r.err;
}

TEST(CliTokenize, MissingModelIsAnErrorNamingThePath) {
  expect_error(lathe_cli({"tokenize", "-m", "/nonexistent/model.gguf", "hi"}), "/nonexistent/model.gguf");
  expect_error(lathe_cli({"detokenize", "-m", "/nonexistent/dir", "1"}), "/nonexistent/dir");
}

TEST(CliTokenize, NonNumericIdIsAnErrorNamingIt) {
  LATHE_REQUIRE_MODEL();
  expect_error(lathe_cli({"detokenize", "-m", default_model().string(), "12", "12x"}), "12x");
  expect_error(lathe_cli({"detokenize", "-m", default_model().string(), "hello"}), "hello");
  expect_error(lathe_cli({"detokenize", "-m", default_model().string(), "99999999999"}), "99999999999");
}

TEST(CliTokenize, IdOutOfRangeIsAnErrorNamingIt) {
  LATHE_REQUIRE_MODEL();
  expect_error(lathe_cli({"detokenize", "-m", default_model().string(), "1", "49152"}), "49152");
  expect_error(lathe_cli({"detokenize", "-m", default_model().string(), "2000000000"}), "2000000000");
}

}  // namespace
}  // namespace lathe::test
