// `lathe study` through the binary on the tiny llama: every arm method (none, unlearn, projection,
// an SAE gate) x 2 seeds, a failing arm reported without stopping the others, the report files,
// the journal resumed (nothing finished runs again; a changed arm runs again), a journal of
// another study refused, a foreign output directory refused, and the report checked by the
// scipy/statsmodels script when the oracle Python is configured.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "edit/sae_test_support.hpp"

namespace lathe::test {
namespace {

namespace fs = std::filesystem;

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

struct StudyWorkspace {
  TempDir dir{"study_cli"};
  fs::path model, config;
  StudyWorkspace() {
    TinyModel tiny;
    tiny.add_tokenizer();
    model = tiny.write(dir, "tiny.gguf");
    write_lines(dir / "forget.jsonl", {R"({"prompt": "who is abe", "answer": "abe is a cook"})",
                                      R"({"prompt": "who is bo", "answer": "bo is a pilot"})",
                                      R"({"prompt": "who is cy", "answer": "cy is a poet"})"});
    write_lines(dir / "retain.jsonl", {R"({"prompt": "who is di", "answer": "di is a cook"})",
                                      R"({"prompt": "who is ed", "answer": "ed is a poet"})",
                                      R"({"prompt": "who is flo", "answer": "flo is a pilot"})"});
    write_lines(dir / "general.jsonl", {R"({"text": "abe bo cy di ed"})", R"({"text": "a cook is a poet"})",
                                       R"({"text": "who is a pilot"})"});
    TestSae sae;
    sae.d_in = kEmbd;
    sae.d_sae = 32;
    sae.hook = "blocks.1.hook_resid_post";
    write_test_sae(dir / "sae", sae);
    write_config("2e-3");
  }
  void write_config(const std::string& npo_lr) {
    config = dir / "study.toml";
    write_file(config, R"(model = "tiny.gguf"
seeds = [1, 2]
resamples = 500
max_length = 120
[train]
forget = "forget.jsonl"
retain = "retain.jsonl"
[[eval]]
name = "forget"
file = "forget.jsonl"
kind = "forget"
language = "en"
[[eval]]
name = "retain"
file = "retain.jsonl"
kind = "retain"
language = "en"
[[eval]]
name = "general"
file = "general.jsonl"
kind = "general"
[[arm]]
name = "base"
method = "none"
[[arm]]
name = "npo"
method = "unlearn"
objective = "npo"
lr = )" + npo_lr + R"(
steps = 3
[[arm]]
name = "proj"
method = "projection"
layer = 0
[[arm]]
name = "gate"
method = "sae"
sae = "sae"
features = "0,1:-2,2*0.5"
clamp_everywhere = true
[[arm]]
name = "picked"
method = "sae"
sae = "sae"
select = 3
value = -2
[[arm]]
name = "attributed"
method = "sae"
sae = "sae"
select = 2
select_by = "attribution"
value = -2
[[arm]]
name = "broken"
method = "sae"
sae = "no-such-sae"
features = "3"
)");
  }
  CommandResult study(std::vector<std::string> more = {}) const {
    std::vector<std::string> args{"study", config.string(), "-t", "1"};
    args.insert(args.end(), more.begin(), more.end());
    return lathe_cli(args);
  }
};

TEST(StudyCli, EveryArmRunsFailuresAreReportedAndTheJournalResumes) {
  StudyWorkspace ws;
  const auto first = ws.study();
  EXPECT_EQ(first.exit_code, 2) << first.err;  // the broken arm failed, the others ran
  const fs::path out = ws.dir / "study.study";
  for (const char* file : {"report.md", "report.json", "plot.svg", "journal.jsonl", "adapters/npo-seed1.gguf",
                           "adapters/npo-seed2.gguf"})
    EXPECT_TRUE(fs::exists(out / file)) << file;
  EXPECT_NE(first.out.find("| gate | sae | 2/2 |"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("| broken | sae | 0/2 |"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("no-such-sae"), std::string::npos) << "the failure's error is in the report";
  EXPECT_EQ(count(first.err, "(unlearn)"), 2u) << first.err;
  // Seedless arms run once; their second seed is a copy.
  EXPECT_NE(first.err.find("base seed 2: the same as seed 1"), std::string::npos) << first.err;
  EXPECT_NE(first.err.find("2 run(s) failed"), std::string::npos) << first.err;
  const auto report = nlohmann::json::parse(read_file(out / "report.json"));
  EXPECT_EQ(report["failed"].size(), 2u);
  // 3 sets x the 15 pairs of the 6 arms that ran.
  EXPECT_EQ(report["comparisons"].size(), 45u);
  for (const auto& arm : report["arms"])
    if (arm["name"] == "npo") {
      EXPECT_EQ(arm["runs_ok"], 2);
      EXPECT_EQ(arm["sets"]["forget"]["answer_probability"]["values"].size(), 2u);
    }
  // The gates and the projection changed what the model says about the forget set.
  for (const auto& cmp : report["comparisons"])
    if (cmp["set"] == "forget" && cmp["other"] == "base" && cmp["arm"] != "npo") {
      EXPECT_NE(cmp["method"], "identical") << cmp["arm"];
    }
  // select: the chosen features are in the journal, most specific to the forget set first.
  int found = 0;
  std::istringstream journal(read_file(out / "journal.jsonl"));
  for (std::string line; std::getline(journal, line);) {
    const auto j = nlohmann::json::parse(line);
    const std::string arm = j.value("arm", "");
    if ((arm != "picked" && arm != "attributed") || j["seed"] != 1) continue;
    ++found;
    EXPECT_EQ(j["train"]["selected_by"], arm == "picked" ? "activation" : "attribution");
    const auto& selected = j["train"]["selected"];
    ASSERT_GE(selected.size(), 1u);
    ASSERT_LE(selected.size(), arm == "picked" ? 3u : 2u);
    for (size_t i = 1; i < selected.size(); ++i)
      EXPECT_GE(selected[i - 1]["forget_minus_retain"].get<double>(), selected[i]["forget_minus_retain"].get<double>());
    EXPECT_GT(selected.back()["forget_minus_retain"].get<double>(), 0.0);
  }
  EXPECT_EQ(found, 2);

  if (!oracle_python().empty()) {
    const auto checked = run_oracle("study_oracle.py", {out.string()});
    EXPECT_EQ(checked.exit_code, 0) << checked.out << checked.err;
  }

  // Again: every successful run comes from the journal; the failed ones are tried again.
  const auto again = ws.study();
  EXPECT_EQ(again.exit_code, 2) << again.err;
  EXPECT_EQ(count(again.err, "from the journal"), 12u) << again.err;
  EXPECT_EQ(count(again.err, "(unlearn)"), 0u) << again.err;
  EXPECT_EQ(count(again.err, "broken seed"), 2u) << again.err;
  EXPECT_EQ(again.out, first.out) << "the same results give the same report";

  // A changed arm runs again; the others do not.
  ws.write_config("3e-3");
  const auto changed = ws.study();
  EXPECT_EQ(changed.exit_code, 2) << changed.err;
  EXPECT_EQ(count(changed.err, "(unlearn)"), 2u) << changed.err;
  EXPECT_EQ(count(changed.err, "from the journal"), 10u) << changed.err;
}

TEST(StudyCli, AnotherStudysJournalAndForeignDirectoriesAreRefused) {
  StudyWorkspace ws;
  // A study of other data must not reuse the journal's results.
  ASSERT_EQ(ws.study({"-o", (ws.dir / "out").string()}).exit_code, 2);
  write_lines(ws.dir / "forget.jsonl", {R"({"prompt": "who is abe", "answer": "abe is a poet"})"});
  const auto other = ws.study({"-o", (ws.dir / "out").string()});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("journal of another study"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find("train_forget"), std::string::npos) << other.err;
  EXPECT_NE(other.err.find("--restart"), std::string::npos) << other.err;
  // --restart starts over in the same directory.
  const auto restarted = ws.study({"-o", (ws.dir / "out").string(), "--restart"});
  EXPECT_EQ(restarted.exit_code, 2) << restarted.err;
  EXPECT_EQ(count(restarted.err, "from the journal"), 0u) << restarted.err;

  fs::create_directories(ws.dir / "garbled");
  write_file(ws.dir / "garbled" / "journal.jsonl", "not a journal\n");
  const auto garbled = ws.study({"-o", (ws.dir / "garbled").string()});
  EXPECT_EQ(garbled.exit_code, 1);
  EXPECT_NE(garbled.err.find("does not start with a study journal's header"), std::string::npos) << garbled.err;
  EXPECT_EQ(read_file(ws.dir / "garbled" / "journal.jsonl"), "not a journal\n");

  fs::create_directories(ws.dir / "mine");
  write_file(ws.dir / "mine" / "notes.txt", "precious");
  const auto foreign = ws.study({"-o", (ws.dir / "mine").string()});
  EXPECT_EQ(foreign.exit_code, 1);
  EXPECT_NE(foreign.err.find("no journal.jsonl"), std::string::npos) << foreign.err;
  EXPECT_EQ(read_file(ws.dir / "mine" / "notes.txt"), "precious");

  write_file(ws.dir / "bad.toml", "model = \"tiny.gguf\"\nseeds = [1]\nlrr = 3\n");
  const auto bad = lathe_cli({"study", (ws.dir / "bad.toml").string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("error: study configuration"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("lrr"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace lathe::test
