// `lathe ablate` end to end on the default model (small sets so that it fits a test run):
// directions, a 20-trial search with its journal, Pareto table and plot, export of the chosen
// trial as GGUF with the parameters in its metadata, `lathe run` on the result, resuming the
// journal; and the errors for bad prompt files and a mismatched journal.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "io/gguf.hpp"

namespace lathe::test {
namespace {

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args);
}

size_t count_lines(const std::filesystem::path& path) {
  std::ifstream in(path);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += !line.empty();
  return n;
}

// Small sets: 16 training prompts per side, 8 harmful validation prompts with 32 new tokens, 16
// harmless validation prompts.
std::vector<std::string> small_study(const TempDir& dir, const std::string& trials) {
  return {"ablate", default_model().string(), "--trials", trials, "--startup", "10", "--seed", "3", "--train-limit", "16",
          "--harmful-val-limit", "8", "--harmless-val-limit", "16", "--max-new-tokens", "32", "-t", "2",
          "--journal", (dir / "study.jsonl").string()};
}

TEST(AblateCli, SearchExportsAndResumes) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("ablate_cli");
  auto args = small_study(dir, "20");
  args.insert(args.end(), {"--out", (dir / "ablated.gguf").string(), "--lora-out", (dir / "ablated.lora.gguf").string(),
                           "--bench-restore"});
  const auto r = lathe_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.err.find("weight cache:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("baseline: refusals"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("restore of every edited matrix"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("trial  19:"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("Pareto front"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("exporting trial"), std::string::npos) << r.out;
  EXPECT_EQ(count_lines(dir / "study.jsonl"), 21u);  // header + 20 trials
  const auto svg = read_file(dir / "study.jsonl.svg");
  EXPECT_NE(svg.find("<svg"), std::string::npos);

  // The export: same tensors, parameters and metrics in the metadata; it runs.
  const auto exported = gguf::File::open(dir / "ablated.gguf");
  const auto original = gguf::File::open(default_model());
  EXPECT_EQ(exported.tensors().size(), original.tensors().size());
  ASSERT_NE(exported.find("lathe.ablation.params"), nullptr);
  const auto params = nlohmann::json::parse(exported.find("lathe.ablation.params")->as_string("params"));
  EXPECT_TRUE(params.contains("direction_index"));
  const auto metrics = nlohmann::json::parse(exported.find("lathe.ablation.metrics")->as_string("metrics"));
  EXPECT_TRUE(metrics.contains("kl_divergence"));
  // Edited matrices differ from the input, the rest is byte-identical.
  size_t differing = 0;
  for (const auto& info : original.tensors()) {
    const auto* other = exported.find_tensor(info.name);
    ASSERT_NE(other, nullptr) << info.name;
    const auto a = original.tensor_data(info), b = exported.tensor_data(*other);
    const bool same = std::equal(a.begin(), a.end(), b.begin(), b.end());
    const bool editable = info.name.find("attn_output") != std::string::npos || info.name.find("ffn_down") != std::string::npos;
    if (!editable) {
      EXPECT_TRUE(same) << info.name;
    }
    differing += !same;
  }
  EXPECT_GT(differing, 0u);
  // The export line counts the matrices the chosen trial changed, as its journal line records them
  // (it used to count every matrix the weight cache could write, 60 on this model).
  const size_t said = r.out.find(" changed ");
  ASSERT_NE(said, std::string::npos) << r.out;
  const size_t trial_at = r.out.rfind("trial ", said);
  const int chosen = std::stoi(r.out.substr(trial_at + 6));
  const size_t changed = std::stoul(r.out.substr(said + 9));
  std::ifstream journal(dir / "study.jsonl");
  size_t recorded = 0;
  for (std::string line; std::getline(journal, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("kind", "") == "trial" && j.at("number").get<int>() == chosen)
      recorded = j.at("extra").at("edited_matrices").get<size_t>();
  }
  EXPECT_EQ(changed, recorded) << r.out;
  EXPECT_GT(changed, 0u);
  EXPECT_LE(differing, changed);  // a tensor whose bytes differ was edited
  const auto run = lathe_cli({"run", "-m", (dir / "ablated.gguf").string(), "--chat", "-p", "Hello!", "-n", "8",
                              "--temp", "0", "-t", "2"});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_FALSE(run.out.empty());

  // The same trial as a LoRA adapter (--lora-out): one rank-1 pair per changed matrix, with the
  // study's metadata; `lathe run --lora` merges exactly those matrices into the original model.
  // (That the adapter is the edit is checked against llama.cpp in tests/weights/test_lora_oracle.)
  EXPECT_NE(r.out.find(fmt::format("wrote LoRA adapter {}", (dir / "ablated.lora.gguf").string())), std::string::npos)
      << r.out;
  const auto adapter = gguf::File::open(dir / "ablated.lora.gguf");
  EXPECT_EQ(adapter.get("general.type").as_string("type"), "adapter");
  EXPECT_EQ(adapter.tensors().size(), 2 * changed);
  EXPECT_NE(adapter.find("lathe.ablation.params"), nullptr);
  for (const auto& info : adapter.tensors())
    EXPECT_TRUE(info.name.ends_with(".lora_a") ? info.shape[1] == 1 : info.shape[0] == 1) << info.name;
  const auto with_lora = lathe_cli({"run", "-m", default_model().string(), "--lora",
                                    (dir / "ablated.lora.gguf").string(), "--chat", "-p", "Hello!", "-n", "8", "--temp",
                                    "0", "-t", "2"});
  EXPECT_EQ(with_lora.exit_code, 0) << with_lora.err;
  EXPECT_NE(with_lora.err.find(fmt::format("{} matrices changed", changed)), std::string::npos) << with_lora.err;

  // Resume: two more trials, appended to the same journal.
  const auto resumed = lathe_cli(small_study(dir, "22"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("holds 20 trial(s)"), std::string::npos) << resumed.err;
  EXPECT_EQ(count_lines(dir / "study.jsonl"), 23u);
}

// A model that refuses none of the harmful validation prompts (here: refusal markers it never
// writes) has nothing to abliterate: the study says so before it searches.
TEST(AblateCli, BaselineWithoutRefusalsWarns) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("ablate_no_refusals");
  write_file(dir / "markers.txt", "zqxjv-never-written\n");
  const auto r = lathe_cli({"ablate", default_model().string(), "--trials", "1", "--startup", "1", "--train-limit", "8",
                            "--harmful-val-limit", "2", "--harmless-val-limit", "2", "--max-new-tokens", "4", "-t", "2",
                            "--refusal-markers", (dir / "markers.txt").string(), "--journal",
                            (dir / "study.jsonl").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("baseline (unedited): refusals 0/2"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("warning: the unedited model refuses none of the 2 harmful validation prompts"), std::string::npos)
      << r.err;
}

TEST(AblateCli, BadPromptFilesAndJournalsAreClearErrors) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("ablate_bad");
  write_file(dir / "empty.txt", "");
  auto with = [&](std::vector<std::string> extra) {
    auto args = small_study(dir, "1");
    args.insert(args.end(), extra.begin(), extra.end());
    return lathe_cli(args);
  };
  const auto missing = with({"--harmful-train", (dir / "nope.jsonl").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("error:"), std::string::npos);
  EXPECT_NE(missing.err.find("nope.jsonl"), std::string::npos) << missing.err;

  const auto empty = with({"--harmless-val", (dir / "empty.txt").string()});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.err.find("empty.txt"), std::string::npos) << empty.err;

  // A journal written with other settings is refused rather than mixed.
  write_file(dir / "study.jsonl",
             R"({"kind":"study","version":1,"space":[{"name":"x","low":0,"high":1}],"objectives":["a","b"],"seed":3,"settings":{}})"
             "\n");
  const auto mismatch = with({});
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.err.find("study.jsonl"), std::string::npos) << mismatch.err;

  const auto bad_component = with({"--components", "attn_q"});
  EXPECT_EQ(bad_component.exit_code, 1);
  EXPECT_NE(bad_component.err.find("attn_q"), std::string::npos) << bad_component.err;
}

}  // namespace
}  // namespace lathe::test
