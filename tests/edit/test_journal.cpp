#include "edit/journal.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "common/test_support.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using test::expect_error;

using nlohmann::json;
using test::read_file;
using test::TempDir;
using test::write_file;

const std::vector<ParamSpec> kSpace = {{"scale", 0.0, 1.5}, {"layer", 2.0, 20.0}};

json header(const std::string& model = "model.gguf") {
  return make_study_header(kSpace, {"refusals", "kl"}, 1234567890123ULL, {{"model", model}, {"prompts", "harmful.txt"}});
}

Trial trial(int number, double scale, std::vector<double> values) {
  Trial t;
  t.number = number;
  t.params = {{"scale", scale}, {"layer", 2.0 + number}};
  t.values = std::move(values);
  t.seconds = 1.5 * number;
  t.extra = {{"refused", number}, {"note", "a \"quoted\" <b>"}};
  return t;
}

void expect_same(const Trial& a, const Trial& b) {
  EXPECT_EQ(a.number, b.number);
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.values, b.values);
  EXPECT_EQ(a.seconds, b.seconds);
  EXPECT_EQ(a.extra, b.extra);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A journal with a header and three trials (one failed) written through the API.
std::filesystem::path make_journal(const TempDir& dir) {
  const auto path = dir / "study.jsonl";
  auto journal = Journal::open(path, header());
  journal.append(trial(0, 0.1, {0.5, 0.25}));
  journal.append(trial(1, 1.0 / 3.0, {}));
  journal.append(trial(2, 0.7, {0.125, 1e-17}));
  return path;
}

TEST(Journal, CreatesWithHeaderAndRoundTripsTrialsExactly) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  const auto lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 4u);
  const json stored = json::parse(lines[0]);
  EXPECT_EQ(stored["kind"], "study");
  EXPECT_EQ(stored["version"], 1);
  EXPECT_EQ(stored["seed"].get<uint64_t>(), 1234567890123ULL);
  EXPECT_EQ(stored["settings"]["model"], "model.gguf");
  EXPECT_EQ(stored["space"][1]["name"], "layer");
  EXPECT_EQ(json::parse(lines[2])["values"], json::array());
  EXPECT_EQ(json::parse(lines[3])["kind"], "trial");

  const auto journal = Journal::open(path, header());
  ASSERT_EQ(journal.trials().size(), 3u);
  expect_same(journal.trials()[0], trial(0, 0.1, {0.5, 0.25}));
  expect_same(journal.trials()[1], trial(1, 1.0 / 3.0, {}));  // 1/3 comes back bit for bit
  expect_same(journal.trials()[2], trial(2, 0.7, {0.125, 1e-17}));
  EXPECT_FALSE(journal.trials()[1].completed());
  EXPECT_EQ(journal.header()["settings"]["prompts"], "harmful.txt");
}

TEST(Journal, ResumeAppendsWithoutRewritingEarlierLines) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  const std::string before = read_file(path);
  {
    auto journal = Journal::open(path, header());
    journal.append(trial(3, 1.25, {0.0, 2.0}));
  }
  const std::string after = read_file(path);
  ASSERT_GT(after.size(), before.size());
  EXPECT_EQ(after.substr(0, before.size()), before);
  const auto journal = Journal::open(path, header());
  ASSERT_EQ(journal.trials().size(), 4u);
  expect_same(journal.trials()[3], trial(3, 1.25, {0.0, 2.0}));
}

TEST(Journal, TornLastLineIsDroppedWithAWarningAndCutOff) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  const std::string good = read_file(path);
  write_file(path, good + R"({"kind":"trial","number":3,"params":{"sca)");
  std::vector<std::string> warnings;
  {
    auto journal = Journal::open(path, header(), [&](std::string_view w) { warnings.emplace_back(w); });
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("line 5"), std::string::npos) << warnings[0];
    EXPECT_NE(warnings[0].find("incomplete"), std::string::npos) << warnings[0];
    EXPECT_EQ(journal.trials().size(), 3u);
    EXPECT_EQ(read_file(path), good);  // the fragment is gone before anything is appended
    journal.append(trial(3, 0.9, {1, 1}));
  }
  warnings.clear();
  const auto journal = Journal::open(path, header(), [&](std::string_view w) { warnings.emplace_back(w); });
  EXPECT_TRUE(warnings.empty());
  ASSERT_EQ(journal.trials().size(), 4u);
  expect_same(journal.trials()[3], trial(3, 0.9, {1, 1}));
}

TEST(Journal, CompleteLastLineWithoutNewlineIsKept) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  std::string text = read_file(path);
  text.pop_back();  // the crash hit between the JSON and its newline
  write_file(path, text);
  bool warned = false;
  {
    auto journal = Journal::open(path, header(), [&](std::string_view) { warned = true; });
    EXPECT_FALSE(warned);
    EXPECT_EQ(journal.trials().size(), 3u);
    journal.append(trial(3, 0.9, {1, 1}));
  }
  EXPECT_EQ(Journal::open(path, header()).trials().size(), 4u);
}

TEST(Journal, CorruptMiddleLineIsAFormatErrorWithLineNumber) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  auto lines = lines_of(read_file(path));
  auto rewrite = [&](size_t index, const std::string& replacement) {
    auto copy = lines;
    copy[index] = replacement;
    std::string text;
    for (const auto& l : copy) text += l + "\n";
    write_file(path, text);
  };
  const uint64_t offset_line3 = lines[0].size() + 1 + lines[1].size() + 1;
  rewrite(2, "{not json");
  expect_error<FormatError>([&] { Journal::open(path, header()); },
                            {path.string(), "line 3", fmt::format("offset {}", offset_line3), "not valid JSON", "--journal"});
  rewrite(2, R"({"kind":"trial","number":1,"params":{"scale":0.5,"depth":3},"values":[],"seconds":0})");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 3", "'layer'"});
  rewrite(2, R"({"kind":"trial","number":1,"params":{"scale":0.5,"layer":3},"values":[1,2,3],"seconds":0})");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 3", "3 values", "2 objectives"});
  rewrite(2, R"({"kind":"trial","number":1,"params":{"scale":0.5,"layer":3},"values":[1,"x"],"seconds":0})");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 3", "non-number"});
  rewrite(2, "");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 3"});
  rewrite(2, std::string(R"({"kind":"trial"})") + '\0' + "garbage");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 3", "NUL"});
  rewrite(0, R"({"kind":"trial"})");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 1", "study header"});
  rewrite(0, R"({"kind":"study","version":2})");
  expect_error<UnsupportedError>([&] { Journal::open(path, header()); }, {"line 1", "version 2"});
}

TEST(Journal, OverlongLineIsAnErrorNotAnAllocation) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  write_file(path, read_file(path) + std::string(Journal::kMaxLineBytes + 10, ' ') + "\n" + "{}\n");
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 5", "longer than 1048576 bytes"});
  // Even when it is the last line and has no newline: too long is not a torn line.
  write_file(path, std::string(Journal::kMaxLineBytes + 10, 'x'));
  expect_error<FormatError>([&] { Journal::open(path, header()); }, {"line 1", "longer than"});
}

TEST(Journal, HeaderMismatchListsWhatDiffers) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  expect_error<InvalidArgumentError>([&] { Journal::open(path, header("other.gguf")); },
                                     {path.string(), "settings.model", "model.gguf", "other.gguf", "original settings",
                                      "--journal"});
  auto wider = kSpace;
  wider[0].high = 2.0;
  expect_error<InvalidArgumentError>(
      [&] { Journal::open(path, make_study_header(wider, {"refusals", "kl"}, 1234567890123ULL,
                                                  {{"model", "model.gguf"}, {"prompts", "harmful.txt"}})); },
      {"space (journal:"});
  expect_error<InvalidArgumentError>(
      [&] { Journal::open(path, make_study_header(kSpace, {"refusals", "kl"}, 1, header()["settings"])); }, {"seed"});
  // The caller's header must describe a study.
  expect_error<InvalidArgumentError>([&] { Journal::open(dir / "x.jsonl", json::object()); }, {"space"});
  expect_error<InvalidArgumentError>([&] { Journal::open(dir / "x.jsonl", json::parse(R"({"space":[{"name":"a"}]})")); },
                                     {"objectives"});
}

TEST(Journal, MissingEmptyAndTornHeaderFilesStartFresh) {
  TempDir dir("journal");
  {
    const auto journal = Journal::open(dir / "new.jsonl", header());
    EXPECT_TRUE(journal.trials().empty());
  }
  EXPECT_EQ(lines_of(read_file(dir / "new.jsonl")).size(), 1u);
  EXPECT_TRUE(Journal::open(dir / "new.jsonl", header()).trials().empty());

  write_file(dir / "empty.jsonl", "");
  { const auto journal = Journal::open(dir / "empty.jsonl", header()); }
  EXPECT_EQ(json::parse(read_file(dir / "empty.jsonl"))["kind"], "study");

  write_file(dir / "torn.jsonl", R"({"kind":"study","vers)");
  int warnings = 0;
  { const auto journal = Journal::open(dir / "torn.jsonl", header(), [&](std::string_view) { ++warnings; }); }
  EXPECT_EQ(warnings, 1);
  EXPECT_EQ(json::parse(read_file(dir / "torn.jsonl"))["settings"]["model"], "model.gguf");

  expect_error<IoError>([&] { Journal::open(dir / "no_such_dir" / "j.jsonl", header()); }, {"no_such_dir", "cannot open"});
}

TEST(Journal, SecondWriterIsRefused) {
  TempDir dir("journal");
  const auto first = Journal::open(dir / "j.jsonl", header());
  expect_error<IoError>([&] { Journal::open(dir / "j.jsonl", header()); }, {"in use by another process"});
}

TEST(Journal, AppendValidatesTheTrial) {
  TempDir dir("journal");
  auto journal = Journal::open(dir / "j.jsonl", header());
  const std::string before = read_file(dir / "j.jsonl");
  Trial t = trial(0, 0.5, {1, 2});
  t.params.erase("layer");
  t.params["depth"] = 1;
  expect_error<InvalidArgumentError>([&] { journal.append(t); }, {"trial 0", "'layer'"});
  t = trial(0, 0.5, {1, 2});
  t.params["depth"] = 1;
  expect_error<InvalidArgumentError>([&] { journal.append(t); }, {"3 params"});
  expect_error<InvalidArgumentError>([&] { journal.append(trial(0, 0.5, {1})); }, {"1 values", "2 objectives"});
  expect_error<InvalidArgumentError>([&] { journal.append(trial(0, 0.5, {1, NAN})); }, {"non-finite"});
  expect_error<InvalidArgumentError>([&] { journal.append(trial(0, INFINITY, {1, 2})); }, {"'scale'"});
  t = trial(0, 0.5, {1, 2});
  t.extra = {{"blob", std::string(Journal::kMaxLineBytes, 'a')}};
  expect_error<InvalidArgumentError>([&] { journal.append(t); }, {"line limit"});
  EXPECT_EQ(read_file(dir / "j.jsonl"), before);
  EXPECT_TRUE(journal.trials().empty());
}

json inputs(const std::string& model_path, const std::string& model_fp, const std::string& prompts_fp) {
  return {{"model", {{"path", model_path}, {"fingerprint", model_fp}}},
          {"harmful_val", {{"path", "harmful.txt"}, {"fingerprint", prompts_fp}}}};
}

json header_with_inputs(const json& in) {
  return make_study_header(kSpace, {"refusals", "kl"}, 1234567890123ULL, {{"limit", 8}}, in);
}

TEST(Journal, InputsAreIdentifiedByFingerprintNotPath) {
  TempDir dir("journal");
  const auto path = dir / "study.jsonl";
  {
    auto journal = Journal::open(path, header_with_inputs(inputs("/a/model.gguf", "sha256:aa", "sha256:pp")));
    journal.append(trial(0, 0.1, {0.5, 0.25}));
  }
  const std::string before = read_file(path);
  // Moved: same content elsewhere resumes.
  EXPECT_EQ(Journal::open(path, header_with_inputs(inputs("/b/moved.gguf", "sha256:aa", "sha256:pp"))).trials().size(), 1u);
  // Another model at the same path: refused, naming the input, its path and both fingerprints.
  expect_error<InvalidArgumentError>(
      [&] { Journal::open(path, header_with_inputs(inputs("/a/model.gguf", "sha256:bb", "sha256:pp"))); },
      {path.string(), "the model /a/model.gguf", "not the one", "sha256:aa", "sha256:bb", "--restart", "--journal"});
  expect_error<InvalidArgumentError>(
      [&] { Journal::open(path, header_with_inputs(inputs("/a/model.gguf", "sha256:aa", "sha256:qq"))); },
      {"the harmful_val harmful.txt", "sha256:pp", "sha256:qq"});
  EXPECT_EQ(read_file(path), before) << "a refused journal is not touched";
  // A journal written without fingerprints cannot vouch for its inputs.
  const auto old = dir / "old.jsonl";
  { Journal::open(old, header_with_inputs(json::object())); }
  expect_error<InvalidArgumentError>(
      [&] { Journal::open(old, header_with_inputs(inputs("/a/model.gguf", "sha256:aa", "sha256:pp"))); },
      {"records no fingerprint", "--restart"});
}

TEST(Journal, RestartDiscardsTheTrialsAndStartsANewStudy) {
  TempDir dir("journal");
  const auto path = make_journal(dir);
  const json other = header_with_inputs(inputs("/a/model.gguf", "sha256:new", "sha256:pp"));
  auto journal = Journal::open(path, other, {}, /*restart=*/true);
  EXPECT_TRUE(journal.trials().empty());
  journal.append(trial(0, 0.2, {0.1, 0.2}));
  const auto lines = lines_of(read_file(path));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(json::parse(lines[0])["inputs"]["model"]["fingerprint"], "sha256:new");
}

}  // namespace
}  // namespace lathe::edit
