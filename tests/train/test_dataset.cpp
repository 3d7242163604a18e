// Training data files (train/dataset.hpp) on the tiny llama with its ChatML template: chat pairs
// score exactly the answer and the end of turn; raw pairs the answer and EOS; conversations every
// assistant turn and nothing else; plain text is cut into windows; CSV quoting; and every bad file
// is an error naming the file and the row, before any training.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "train/dataset.hpp"

namespace lathe::train {
namespace {

struct Fixture {
  test::TempDir dir{"train_data"};
  std::shared_ptr<const Model> model;
  Fixture() {
    test::TinyModel tiny;
    tiny.add_tokenizer();
    model = Model::load(tiny.write(dir, "tiny.gguf"));
  }
  std::filesystem::path file(const std::string& name, const std::string& text) const {
    test::write_file(dir / name, text);
    return dir / name;
  }
  // The text of the scored targets of an example, in order.
  std::string scored_text(const Example& e) const {
    std::vector<TokenId> ids;
    for (int32_t t : e.targets)
      if (t >= 0) ids.push_back(t);
    return model->detokenize(ids);
  }
};

// The sequence an example was made from: its inputs and the last target.
std::vector<TokenId> sequence_of(const Example& e) {
  std::vector<TokenId> s(e.tokens.begin(), e.tokens.end());
  s.push_back(e.targets.back());
  return s;
}

TEST(TrainingData, ChatPairsScoreTheAnswerAndTheEndOfTurn) {
  Fixture f;
  const auto set = read_training_data(*f.model, f.file("d.jsonl", R"({"prompt": "hi there", "answer": "hello you"})"
                                                                  "\n\n"
                                                                  R"({"prompt": "a", "completion": "b c"})"
                                                                  "\n"),
                                      {.system = ""});
  ASSERT_EQ(set.examples.size(), 2u);
  EXPECT_TRUE(set.chat);
  const nlohmann::json messages = {{{"role", "user"}, {"content", "hi there"}},
                                   {{"role", "assistant"}, {"content", "hello you"}}};
  const auto whole = f.model->tokenize(f.model->apply_chat_template(messages, false), false, true);
  EXPECT_EQ(sequence_of(set.examples[0]), whole);  // the same tokens as the whole rendering
  EXPECT_EQ(f.scored_text(set.examples[0]), "hello you<|im_end|>\n");
  EXPECT_EQ(f.scored_text(set.examples[1]), "b c<|im_end|>\n");
  EXPECT_EQ(set.origins[1], (f.dir / "d.jsonl").string() + " line 3");
  // The system message goes before the user's turn, unscored.
  const auto with_system = read_training_data(*f.model, f.dir / "d.jsonl", {.system = "be brief"});
  EXPECT_GT(with_system.examples[0].tokens.size(), set.examples[0].tokens.size());
  EXPECT_EQ(f.scored_text(with_system.examples[0]), "hello you<|im_end|>\n");
}

TEST(TrainingData, RawPairsScoreTheAnswerAndEos) {
  Fixture f;
  const auto set = read_training_data(*f.model, f.file("d.jsonl", R"({"prompt": "ab", "answer": "cd"})"),
                                      {.pair_format = PairFormat::Raw});
  ASSERT_EQ(set.examples.size(), 1u);
  EXPECT_FALSE(set.chat);
  const auto& e = set.examples[0];
  EXPECT_EQ(e.tokens, (std::vector<int32_t>{0, 1, 2, 3}));  // a b c d (EOS is only predicted)
  EXPECT_EQ(e.targets, (std::vector<int32_t>{-1, 2, 3, 30}));
}

TEST(TrainingData, ConversationsScoreEveryAssistantTurnOnly) {
  Fixture f;
  const std::string row =
      R"({"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"},)"
      R"( {"role": "user", "content": "ef"}, {"role": "assistant", "content": "gh"}]})";
  const auto set = read_training_data(*f.model, f.file("c.jsonl", row));
  ASSERT_EQ(set.examples.size(), 1u);
  EXPECT_EQ(f.scored_text(set.examples[0]), "cd<|im_end|>\ngh<|im_end|>\n");
  const auto whole = f.model->tokenize(
      f.model->apply_chat_template(nlohmann::json::parse(row)["messages"], false), false, true);
  EXPECT_EQ(sequence_of(set.examples[0]), whole);
}

TEST(TrainingData, CsvAndJsonArraysAndTextRows) {
  Fixture f;
  // RFC 4180 quoting, case-insensitive header names, blank records skipped (rows only: the tiny
  // vocabulary cannot spell commas and quotes).
  const auto rows = parse_data_rows("Prompt,ANSWER\r\n\"a, b\",\"c \"\"d\"\"\nnext\"\r\n\r\nx,y\n", "r.csv", ".csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(*rows[0].prompt, "a, b");
  EXPECT_EQ(*rows[0].answer, "c \"d\"\nnext");
  EXPECT_EQ(rows[1].where, "record at line 5");
  const auto csv = read_training_data(*f.model, f.file("d.csv", "prompt,answer\n\"ab\ncd\",ef\n"),
                                      {.pair_format = PairFormat::Raw});
  ASSERT_EQ(csv.examples.size(), 1u);
  EXPECT_EQ(f.scored_text(csv.examples[0]), "ef<|endoftext|>");
  const auto text_csv = read_training_data(*f.model, f.file("t.csv", "id,text\n1,abc\n"));
  EXPECT_EQ(f.scored_text(text_csv.examples[0]), "bc");  // every token after the first
  const auto array = read_training_data(*f.model, f.file("d.json", R"([{"text": "ab"}, {"text": "cde"}])"));
  EXPECT_EQ(array.examples.size(), 2u);
  EXPECT_EQ(array.scored_tokens, 1u + 2u);
  EXPECT_EQ(read_training_data(*f.model, f.dir / "d.json", {.limit = 1}).examples.size(), 1u);
}

TEST(TrainingData, PlainTextIsCutIntoWindows) {
  Fixture f;
  const std::string text(25, 'a');  // one token per letter (the tiny vocabulary has no merges)
  const auto set = read_training_data(*f.model, f.file("doc.txt", text), {.max_tokens = 9});
  ASSERT_EQ(set.examples.size(), 3u);  // windows of 10 tokens: 10, 10, 5
  EXPECT_EQ(set.examples[0].tokens.size(), 9u);
  EXPECT_EQ(set.examples[2].tokens.size(), 4u);
  EXPECT_EQ(set.scored_tokens, 9u + 9u + 4u);
  EXPECT_EQ(set.origins[2], (f.dir / "doc.txt").string() + " window 3");
}

using test::expect_error;

TEST(TrainingData, BadFilesAreErrorsNamingTheFileAndRow) {
  Fixture f;
  auto read = [&](const std::filesystem::path& p, DataOptions o = {}) { read_training_data(*f.model, p, o); };
  expect_error<NotFoundError>([&] { read(f.dir / "missing.jsonl"); }, {"missing.jsonl", "no such data file"});
  expect_error<InvalidArgumentError>([&] { read(f.file("empty.jsonl", "")); }, {"empty.jsonl", "no usable"});
  expect_error<InvalidArgumentError>([&] { read(f.file("blank.jsonl", "\n  \n")); }, {"blank.jsonl", "no usable"});
  expect_error<FormatError>([&] { read(f.file("noanswer.jsonl", "{\"text\": \"ab\"}\n{\"prompt\": \"ab\"}\n")); },
                            {"noanswer.jsonl", "line 2", "no answer"});
  expect_error<FormatError>([&] { read(f.file("number.jsonl", "{\"prompt\": \"ab\", \"answer\": 3}\n")); },
                            {"number.jsonl", "line 1", "\"answer\"", "number"});
  expect_error<FormatError>([&] { read(f.file("broken.jsonl", "{\"prompt\": \n")); }, {"broken.jsonl", "line 1"});
  expect_error<InvalidArgumentError>([&] { read(f.file("emptyanswer.jsonl", "{\"prompt\": \"ab\", \"answer\": \"\"}\n")); },
                                     {"emptyanswer.jsonl line 1", "answer is empty"});
  expect_error<InvalidArgumentError>([&] { read(f.file("long.jsonl", "{\"text\": \"abcdefghij\"}\n"), {.max_tokens = 5}); },
                                     {"long.jsonl line 1", "10 tokens", "--max-length 6"});
  expect_error<InvalidArgumentError>([&] { read(f.file("d.parquet", "x")); }, {"d.parquet", ".jsonl"});
  expect_error<FormatError>([&] { read(f.file("h.csv", "question,reply\na,b\n")); }, {"h.csv", "header"});
  expect_error<FormatError>([&] { read(f.file("f.csv", "prompt,answer\na,b,c\n")); }, {"f.csv", "line 2", "3 fields"});
  expect_error<InvalidArgumentError>(
      [&] { read(f.file("m.jsonl", R"({"messages": [{"role": "user", "content": "ab"}]})")); },
      {"m.jsonl line 1", "no assistant message"});
  expect_error<InvalidArgumentError>([&] { read(f.file("m2.jsonl", R"({"messages": [{"role": "user"}]})")); },
                                     {"m2.jsonl line 1", "message 0"});
}

}  // namespace
}  // namespace lathe::train
