// Study configurations: TOML and JSON give the same study, relative paths follow the file, and
// every mistake is an error naming the file and the key (a typo must never run another study).
#include <gtest/gtest.h>

#include <string>

#include "common/test_support.hpp"
#include "lathe/error.hpp"
#include "study/config.hpp"

namespace lathe::study {
namespace {

using test::expect_error;
using test::TempDir;
using test::write_file;

const char* kToml = R"(
model = "m.gguf"
lora = ["ft.gguf"]
seeds = [1, 2, 3]
max_length = 256
[train]
forget = "data/f.jsonl"
retain = "/abs/r.jsonl"
[[eval]]
name = "forget-hi"
file = "f_hi.jsonl"
kind = "forget"
language = "hi"
[[eval]]
name = "general"
file = "g.jsonl"
kind = "general"
[[arm]]
name = "npo"
method = "unlearn"
objective = "npo"
lr = 2e-4
epochs = 2
[[arm]]
name = "none"
method = "none"
[[arm]]
name = "proj"
method = "projection"
layer = 3
)";

TEST(StudyConfig, TomlIsReadWithPathsBesideTheFile) {
  TempDir dir("study_cfg");
  write_file(dir / "s.toml", kToml);
  const auto c = read_study_config(dir / "s.toml");
  EXPECT_EQ(c.model, dir.path() / "m.gguf");
  ASSERT_EQ(c.loras.size(), 1u);
  EXPECT_EQ(c.loras[0], dir.path() / "ft.gguf");
  EXPECT_EQ(c.seeds, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(c.max_length, 256);
  EXPECT_EQ(c.train_forget, dir.path() / "data/f.jsonl");
  EXPECT_EQ(c.train_retain, std::filesystem::path("/abs/r.jsonl"));
  ASSERT_EQ(c.evals.size(), 2u);
  EXPECT_EQ(c.evals[0].kind, EvalKind::Forget);
  EXPECT_EQ(c.evals[0].language, "hi");
  EXPECT_EQ(c.evals[1].kind, EvalKind::General);
  EXPECT_EQ(c.evals[1].language, "");
  ASSERT_EQ(c.arms.size(), 3u);
  EXPECT_EQ(c.arms[0].method, ArmMethod::Unlearn);
  EXPECT_DOUBLE_EQ(c.arms[0].lr, 2e-4);
  EXPECT_DOUBLE_EQ(c.arms[0].epochs, 2);
  EXPECT_EQ(c.arms[2].layer, 3);
  // The baseline is the first arm of method none, wherever it is.
  EXPECT_EQ(c.baseline, "none");
  EXPECT_EQ(c.resamples, 9999u);
}

TEST(StudyConfig, JsonGivesTheSameStudy) {
  TempDir dir("study_cfg");
  write_file(dir / "s.json", R"({"model": "m.gguf", "seeds": [7], "train": {"forget": "f.jsonl"},
    "eval": [{"name": "f", "file": "f.jsonl", "kind": "forget"}],
    "arm": [{"name": "ga", "method": "unlearn", "objective": "gradascent", "steps": 3}]})");
  const auto c = read_study_config(dir / "s.json");
  EXPECT_EQ(c.seeds, (std::vector<uint64_t>{7}));
  EXPECT_EQ(c.arms[0].objective, "gradascent");
  EXPECT_EQ(c.arms[0].steps, 3);
  EXPECT_EQ(c.baseline, "ga");  // no arm of method none: the first arm
  EXPECT_TRUE(c.train_retain.empty());
}

struct BadConfig {
  std::string from, to;  // replace `from` in kToml by `to`
  std::vector<std::string> message;
};

TEST(StudyConfig, MistakesAreErrorsNamingTheKey) {
  const std::vector<BadConfig> cases = {
      {"lr = 2e-4", "lrr = 2e-4", {"arm[0].lrr", "not a key", "accepted"}},
      {"max_length = 256", "max_lenght = 256", {"max_lenght", "top level"}},
      {"seeds = [1, 2, 3]", "seeds = [1, 1]", {"seeds", "twice"}},
      {"seeds = [1, 2, 3]", "seeds = [-1]", {"seeds", ">= 0"}},
      {"seeds = [1, 2, 3]", "", {"seeds", "missing"}},
      {"method = \"none\"", "method = \"nothing\"", {"arm[1].method", "nothing", "none, unlearn, projection or sae"}},
      {"epochs = 2", "epochs = 2\nsteps = 5", {"arm[0].steps", "both given"}},
      {"epochs = 2", "", {"arm[0].steps", "give one"}},
      {"objective = \"npo\"", "objective = \"rmu\"", {"arm[0].objective", "rmu"}},
      {"lr = 2e-4", "lr = 0", {"arm[0].lr"}},
      {"kind = \"general\"", "kind = \"misc\"", {"eval[1].kind", "misc"}},
      {"name = \"proj\"", "name = \"npo\"", {"two arms", "npo"}},
      {"name = \"proj\"", "name = \"a b\"", {"arm[2].name", "spaces"}},
      {"layer = 3", "layer = \"3\"", {"arm[2].layer", "integer"}},
      {"max_length = 256", "max_length = 256\nbaseline = \"nobody\"", {"baseline", "nobody"}},
      {"[train]\nforget = \"data/f.jsonl\"\nretain = \"/abs/r.jsonl\"", "", {"train", "missing"}},
      {"language = \"hi\"", "language = 5", {"eval[0].language", "string"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"", {"arm[3].features", "select"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"\nfeatures = \"1\"\nselect = 2",
       {"arm[3].features", "give one"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"\nfeatures = \"1\"\nvalue = 2",
       {"arm[3].value", "select"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"\nselect = 2\nlr = 1",
       {"arm[3].lr", "not a key"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"\nselect = 2\nselect_by = \"grad\"",
       {"arm[3].select_by", "\"grad\"", "attribution"}},
      {"layer = 3", "layer = 3\n[[arm]]\nname = \"g\"\nmethod = \"sae\"\nsae = \"s\"\nfeatures = \"1\"\nselect_by = \"attribution\"",
       {"arm[3].select_by", "goes with select"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.to);
    std::string text = kToml;
    const auto at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    text.replace(at, c.from.size(), c.to);
    TempDir dir("study_cfg");
    write_file(dir / "s.toml", text);
    std::vector<std::string> parts = c.message;
    parts.push_back("s.toml");
    expect_error<InvalidArgumentError>([&] { read_study_config(dir / "s.toml"); }, parts);
  }
}

TEST(StudyConfig, UnreadableFilesAreErrors) {
  TempDir dir("study_cfg");
  expect_error<NotFoundError>([&] { read_study_config(dir / "none.toml"); }, {"none.toml", "no such file"});
  write_file(dir / "s.yaml", "model: x\n");
  expect_error<InvalidArgumentError>([&] { read_study_config(dir / "s.yaml"); }, {"s.yaml", ".toml or .json"});
  write_file(dir / "bad.toml", "model = \"m.gguf\"\nseeds = [1,\n[[arm]\n");
  expect_error<FormatError>([&] { read_study_config(dir / "bad.toml"); }, {"bad.toml", "line"});
  write_file(dir / "bad.json", "{\"model\": ");
  expect_error<FormatError>([&] { read_study_config(dir / "bad.json"); }, {"bad.json", "byte"});
  // Valid JSON whose number no double holds (found by the study_config fuzz target).
  write_file(dir / "huge.json", "{\"model\": \"m.gguf\", \"seeds\": [1e999]}");
  expect_error<FormatError>([&] { read_study_config(dir / "huge.json"); }, {"huge.json", "fix the value"});
  write_file(dir / "date.toml", std::string(kToml) + "when = 1979-05-27\n");
  expect_error<InvalidArgumentError>([&] { read_study_config(dir / "date.toml"); }, {"when", "dates"});
}

}  // namespace
}  // namespace lathe::study
