// Prompt files: JSON lines, CSV (RFC 4180 quoting) and text, chosen by extension or sniffed;
// limits; and every error (missing, empty, oversized, bad JSON line, broken quoting). The tricky
// files are also read by Python's json and csv modules in test_control_vector_oracle.cpp.
#include <gtest/gtest.h>

#include "common/test_support.hpp"
#include "edit/prompt_file.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using test::TempDir;
using test::write_file;
using Prompts = std::vector<std::string>;

std::string error_of(const std::filesystem::path& path, const PromptFileOptions& options = {}) {
  try {
    read_prompts(path, options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(PromptFile, JsonLinesFieldsStringsAndBlankLines) {
  TempDir dir("prompts");
  const auto path = dir / "p.jsonl";
  write_file(path,
             "{\"prompt\": \"first\", \"category\": null}\n"
             "\n"
             "   \n"
             "\"a bare string\"\r\n"
             "{\"text\": \"from text\"}\n"
             "{\"instruction\": \"from instruction\", \"other\": 1}\n"
             "{\"prompt\": \"line\\nbreak \\u00e9\"}");  // no final newline
  EXPECT_EQ(read_prompts(path),
            (Prompts{"first", "a bare string", "from text", "from instruction", "line\nbreak \xC3\xA9"}));
  EXPECT_EQ(read_prompts(path, {.column = "prompt", .limit = 2}), (Prompts{"first", "a bare string"}));
}

TEST(PromptFile, JsonLinesColumnWinsOverTheUsualFields) {
  TempDir dir("prompts");
  const auto path = dir / "p.jsonl";
  write_file(path, "{\"question\": \"q1\", \"prompt\": \"p1\"}\n{\"prompt\": \"p2\"}\n");
  EXPECT_EQ(read_prompts(path, {.column = "question"}), (Prompts{"q1", "p2"}));
  EXPECT_EQ(read_prompts(path), (Prompts{"p1", "p2"}));
}

TEST(PromptFile, JsonLinesErrorsNameFileLineAndOffset) {
  TempDir dir("prompts");
  const auto bad_json = dir / "bad.jsonl";
  write_file(bad_json, "{\"prompt\": \"ok\"}\n\n{\"prompt\": \"unterminated}\n");
  const std::string message = error_of(bad_json);
  EXPECT_NE(message.find(bad_json.string()), std::string::npos) << message;
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;
  EXPECT_THROW(read_prompts(bad_json), FormatError);

  const auto not_string = dir / "n.jsonl";
  write_file(not_string, "{\"prompt\": 5}\n");
  EXPECT_NE(error_of(not_string).find("field \"prompt\" is a JSON number"), std::string::npos) << error_of(not_string);
  const auto no_field = dir / "f.jsonl";
  write_file(no_field, "\"ok\"\n{\"question\": \"x\"}\n");
  EXPECT_NE(error_of(no_field).find("line 2"), std::string::npos) << error_of(no_field);
  EXPECT_NE(error_of(no_field).find("none of the fields"), std::string::npos) << error_of(no_field);
  const auto array_line = dir / "a.jsonl";
  write_file(array_line, "[1, 2]\n");
  EXPECT_THROW(read_prompts(array_line), FormatError);
}

// Found by the study_files fuzzer (CI): a number beyond double's range on a JSON line made
// nlohmann throw out_of_range, which escaped as a non-lathe exception and ended the process.
// Both JSON readers now parse through parse_json_text, which turns it into a FormatError.
TEST(PromptFile, JsonNumberOutOfRangeIsAFormatError) {
  TempDir dir("prompts");
  const auto lines = dir / "big.jsonl";
  write_file(lines, "\"ok\"\n66000000165984855516351E47433\n");
  EXPECT_THROW(read_prompts(lines), FormatError);
  EXPECT_NE(error_of(lines).find("line 2"), std::string::npos) << error_of(lines);
  EXPECT_NE(error_of(lines).find("cannot represent"), std::string::npos) << error_of(lines);
  const auto array = dir / "big.json";
  write_file(array, "[\"ok\", {\"prompt\": \"x\", \"n\": 1e99999}]");
  EXPECT_THROW(read_prompts(array), FormatError);
  const auto nul = dir / "nul.jsonl";
  write_file(nul, std::string("\"ok\"\n\"a\0b\"\n", 10));
  EXPECT_NE(error_of(nul).find("NUL"), std::string::npos) << error_of(nul);
}

// Found by the study_files fuzzer: sniffing a file without a known extension tried it as CSV,
// whose reader kept a reference to a temporary file name and used it for the error of a quote
// inside an unquoted field (stack-use-after-scope under ASan). Such a file is plain text.
TEST(PromptFile, SniffedFileWithAStrayQuoteIsText) {
  TempDir dir("prompts");
  write_file(dir / "p.dat", "go\"a r,x\nb,y\n");
  EXPECT_EQ(read_prompts(dir / "p.dat"), (Prompts{"go\"a r,x", "b,y"}));
}

TEST(PromptFile, JsonArrayFile) {
  TempDir dir("prompts");
  const auto path = dir / "p.json";
  write_file(path, "[\n  {\"prompt\": \"one\"},\n  \"two\",\n  {\"text\": \"three\"}\n]\n");
  EXPECT_EQ(read_prompts(path), (Prompts{"one", "two", "three"}));
  const auto lines = dir / "lines.json";  // .json holding JSON lines
  write_file(lines, "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n");
  EXPECT_EQ(read_prompts(lines), (Prompts{"a", "b"}));
  const auto bad = dir / "bad.json";
  write_file(bad, "[{\"prompt\": 1}]");
  EXPECT_NE(error_of(bad).find("array element 0"), std::string::npos) << error_of(bad);
}

TEST(PromptFile, CsvQuotingFollowsRfc4180) {
  TempDir dir("prompts");
  const auto path = dir / "p.csv";
  write_file(path,
             "id,prompt,note\r\n"
             "1,plain,x\r\n"
             "2,\"with, comma\",y\r\n"
             "3,\"say \"\"hi\"\"\",z\r\n"
             "\r\n"
             "4,\"two\nlines\",w\n"
             "5,,empty field\n"
             "6,last,\"\"");
  EXPECT_EQ(read_prompts(path), (Prompts{"plain", "with, comma", "say \"hi\"", "two\nlines", "", "last"}));
  // Without the named column: the first one.
  EXPECT_EQ(read_prompts(path, {.column = "missing", .limit = 3}), (Prompts{"1", "2", "3"}));
  EXPECT_EQ(read_prompts(path, {.column = "note"}), (Prompts{"x", "y", "z", "w", "empty field", ""}));
}

TEST(PromptFile, CsvErrorsNameTheLine) {
  TempDir dir("prompts");
  const auto unterminated = dir / "u.csv";
  write_file(unterminated, "prompt\nok\n\"never closed\nstill open\n");
  std::string message = error_of(unterminated);
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_NE(message.find("never closed"), std::string::npos) << message;
  const auto after_quote = dir / "a.csv";
  write_file(after_quote, "prompt\n\"quoted\"tail\n");
  message = error_of(after_quote);
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
  EXPECT_NE(message.find("after a closing quote"), std::string::npos) << message;
  const auto stray = dir / "s.csv";
  write_file(stray, "prompt\nfine\nsay \"hi\"\n");
  message = error_of(stray);
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_THROW(read_prompts(stray), FormatError);
  const auto short_record = dir / "r.csv";
  write_file(short_record, "id,prompt\n1,a\n2\n");
  message = error_of(short_record);
  EXPECT_NE(message.find("line 3"), std::string::npos) << message;
  EXPECT_NE(message.find("1 fields"), std::string::npos) << message;
}

TEST(PromptFile, TextOnePromptPerNonEmptyLine) {
  TempDir dir("prompts");
  const auto path = dir / "p.txt";
  write_file(path, "first line\r\n\n  \nsecond, with \"quotes\"\n{not json}\nlast");
  EXPECT_EQ(read_prompts(path), (Prompts{"first line", "second, with \"quotes\"", "{not json}", "last"}));
  EXPECT_EQ(read_prompts(path, {.column = "prompt", .limit = 1}), (Prompts{"first line"}));
}

TEST(PromptFile, SniffsFilesWithoutAKnownExtension) {
  TempDir dir("prompts");
  write_file(dir / "a", "\n{\"prompt\": \"json\"}\n");
  EXPECT_EQ(read_prompts(dir / "a"), (Prompts{"json"}));
  write_file(dir / "b.data", "id,prompt\n1,\"csv, quoted\"\n");
  EXPECT_EQ(read_prompts(dir / "b.data"), (Prompts{"csv, quoted"}));
  write_file(dir / "c", "Hello, world\n{braces but not json\n");
  EXPECT_EQ(read_prompts(dir / "c"), (Prompts{"Hello, world", "{braces but not json"}));
  write_file(dir / "d", "[\"x\", \"y\"]");
  EXPECT_EQ(read_prompts(dir / "d"), (Prompts{"x", "y"}));
  write_file(dir / "e.TXT", "\xEF\xBB\xBFwith a byte order mark\n");
  EXPECT_EQ(read_prompts(dir / "e.TXT"), (Prompts{"with a byte order mark"}));
}

TEST(PromptFile, MissingEmptyAndOversizedFiles) {
  TempDir dir("prompts");
  EXPECT_THROW(read_prompts(dir / "nope.jsonl"), NotFoundError);
  EXPECT_NE(error_of(dir / "nope.jsonl").find("nope.jsonl"), std::string::npos);
  for (const char* name : {"empty.jsonl", "empty.csv", "empty.txt"}) {
    write_file(dir / name, "");
    EXPECT_THROW(read_prompts(dir / name), InvalidArgumentError) << name;
    EXPECT_NE(error_of(dir / name).find("contains no prompts"), std::string::npos) << name;
  }
  write_file(dir / "blank.txt", "\n \r\n\t\n");
  EXPECT_NE(error_of(dir / "blank.txt").find("contains no prompts"), std::string::npos);
  write_file(dir / "header_only.csv", "id,prompt\n");
  EXPECT_NE(error_of(dir / "header_only.csv").find("contains no prompts"), std::string::npos);
  EXPECT_THROW(read_prompts(dir.path()), InvalidArgumentError);  // a directory
  // A sparse file just over the limit is refused before any of it is read.
  const auto huge = dir / "huge.txt";
  write_file(huge, "x");
  std::filesystem::resize_file(huge, kMaxPromptFileBytes + 1);
  const std::string message = error_of(huge);
  EXPECT_NE(message.find("256 MiB"), std::string::npos) << message;
}

}  // namespace
}  // namespace lathe::edit
