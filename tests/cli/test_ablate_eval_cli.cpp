// `lathe ablate-eval` on the default model with tiny prompt sets: the errors for missing flags,
// files and bad values; the model against itself (KL exactly 0, interval [0, 0]); two models
// compared (the default model and its Q8_0 copy, which share the vocabulary); the JSON's shape.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "stats/mcnemar.hpp"

namespace lathe::test {
namespace {

using nlohmann::json;

// The first n lines of a shipped prompt set.
void take_prompts(const std::string& shipped, size_t n, const std::filesystem::path& out) {
  std::ifstream in(source_dir() / "data" / "prompts" / shipped);
  std::vector<std::string> lines;
  for (std::string line; lines.size() < n && std::getline(in, line);) lines.push_back(line);
  write_lines(out, lines);
}

struct Sets {
  TempDir dir{"ablate_eval_cli"};
  std::filesystem::path harmful = dir / "harmful.jsonl", harmless = dir / "harmless.jsonl";
  Sets() {
    take_prompts("harmful_val.jsonl", 5, harmful);
    take_prompts("harmless_val.jsonl", 6, harmless);
  }
  std::vector<std::string> args(std::vector<std::string> models, std::vector<std::string> more) const {
    std::vector<std::string> a{"ablate-eval"};
    a.insert(a.end(), models.begin(), models.end());
    for (std::string s : std::vector<std::string>{"--harmful", harmful.string(), "--harmless", harmless.string(),
                                                  "--max-new-tokens", "6", "--resamples", "2000", "-t", "2"})
      a.push_back(s);
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

void expect_error(const CommandResult& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

TEST(AblateEvalCli, RefusesMissingFlagsFilesAndBadValues) {
  LATHE_REQUIRE_MODEL();
  Sets s;
  const std::string m = default_model().string();
  expect_error(lathe_cli(s.args({m}, {})), {"--reference", "--no-kl"});
  expect_error(lathe_cli({"ablate-eval", m, "--reference", m, "--harmless", s.harmless.string()}), {"--harmful"});
  expect_error(lathe_cli({"ablate-eval", m, "--reference", m, "--harmful", s.harmful.string()}), {"--harmless", "--no-kl"});
  expect_error(lathe_cli(s.args({m}, {"--reference", (s.dir / "none.gguf").string()})), {"none.gguf"});
  expect_error(lathe_cli({"ablate-eval", m, "--reference", m, "--harmful", (s.dir / "missing.jsonl").string(),
                          "--harmless", s.harmless.string()}),
               {"--harmful", "missing.jsonl", "no such file"});
  expect_error(lathe_cli(s.args({m}, {"--reference", m, "--kl-tokens", "0"})), {"--kl-tokens 0", "1..1024"});
  expect_error(lathe_cli(s.args({m}, {"--reference", m, "--confidence", "1.5"})), {"--confidence 1.5", "(0, 1)"});
  expect_error(lathe_cli({"ablate-eval", m, "--reference", m, "--harmful", s.harmful.string(), "--harmless",
                          s.harmless.string(), "--resamples", "5"}),
               {"--resamples 5", "100.."});
  expect_error(lathe_cli(s.args({m, m, m}, {"--reference", m})), {"ablate-eval"});
  write_file(s.dir / "exists.json", "{}");
  expect_error(lathe_cli(s.args({m}, {"--reference", m, "--json", (s.dir / "exists.json").string()})),
               {"--json", "exists.json", "--force"});
  expect_error(lathe_cli(s.args({m}, {"--reference", m, "--json", s.harmful.string(), "--force"})),
               {"--json", "harmful.jsonl"});
}

void expect_interval_shape(const json& interval) {
  for (const char* key : {"estimate", "low", "high", "confidence", "method", "z0", "acceleration", "standard_error",
                          "n_resamples"})
    EXPECT_TRUE(interval.contains(key)) << key << " missing in " << interval.dump();
  EXPECT_LE(interval["low"].get<double>(), interval["estimate"].get<double>());
  EXPECT_GE(interval["high"].get<double>(), interval["estimate"].get<double>());
}

TEST(AblateEvalCli, ModelAgainstItselfHasZeroKlAndAPointInterval) {
  LATHE_REQUIRE_MODEL();
  Sets s;
  const std::string m = default_model().string();
  const auto out = s.dir / "self.json";
  const auto r = lathe_cli(s.args({m}, {"--reference", m, "--kl-tokens", "3", "--json", out.string()}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("KL first token   0 [0, 0]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("KL over 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("reference"), std::string::npos) << r.out;
  const json doc = json::parse(read_file(out));
  EXPECT_EQ(doc["settings"]["kl_tokens"], 3);
  EXPECT_EQ(doc["prompts"]["harmful"]["used"], 5);
  EXPECT_EQ(doc["prompts"]["harmless"]["used"], 6);
  ASSERT_EQ(doc["models"].size(), 1u);
  const json& a = doc["models"][0];
  for (const char* which : {"first_token", "over_tokens"}) {
    const json& kl = a["kl"][which];
    EXPECT_EQ(kl["mean"].get<double>(), 0.0) << which;
    EXPECT_EQ(kl["interval"]["low"].get<double>(), 0.0) << which;
    EXPECT_EQ(kl["interval"]["high"].get<double>(), 0.0) << which;
    EXPECT_EQ(kl["interval"]["method"], "degenerate") << which;
    ASSERT_EQ(kl["per_prompt"].size(), 6u) << which;
    for (const auto& v : kl["per_prompt"]) EXPECT_EQ(v.get<double>(), 0.0) << which;
  }
  for (const auto& positions : a["kl"]["over_tokens"]["positions"]) {
    EXPECT_GE(positions.get<int>(), 1);
    EXPECT_LE(positions.get<int>(), 3);
  }
  // The same weights refuse the same prompts as the reference (the baseline).
  ASSERT_TRUE(doc["reference"].is_object());
  EXPECT_EQ(doc["reference"]["refusals"]["refused"], a["refusals"]["refused"]);
  ASSERT_EQ(a["refusals"]["per_prompt"].size(), 5u);
  for (const auto& p : a["refusals"]["per_prompt"]) {
    EXPECT_TRUE(p["prompt"].is_string());
    EXPECT_TRUE(p["refused"].is_boolean());
    EXPECT_TRUE(p["response"].is_string());
  }
  expect_interval_shape(a["refusals"]["interval"]);
  EXPECT_FALSE(doc.contains("comparison"));
}

TEST(AblateEvalCli, ComparesTwoModelsPaired) {
  LATHE_REQUIRE_MODEL();
  Sets s;
  const std::string m = default_model().string();
  const auto q8 = s.dir / "q8.gguf";
  const auto quantized = lathe_cli({"quantize", "-q", m, q8.string(), "Q8_0"});
  ASSERT_EQ(quantized.exit_code, 0) << quantized.err;
  const auto out = s.dir / "pair.json";
  const auto r = lathe_cli(s.args({m, q8.string()}, {"--reference", m, "--seed", "5", "--json", out.string()}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("McNemar exact p"), std::string::npos) << r.out;
  const json doc = json::parse(read_file(out));
  ASSERT_EQ(doc["models"].size(), 2u);
  const json& a = doc["models"][0];
  const json& b = doc["models"][1];
  EXPECT_EQ(a["kl"]["first_token"]["mean"].get<double>(), 0.0);  // A is the reference itself
  EXPECT_GT(b["kl"]["first_token"]["mean"].get<double>(), 0.0);  // another quantization differs
  expect_interval_shape(b["kl"]["first_token"]["interval"]);
  EXPECT_EQ(b["kl"]["first_token"]["interval"]["method"], "BCa");
  EXPECT_EQ(b["kl"]["first_token"]["interval"]["n_resamples"], 2000);
  // With kl_tokens 1 the K-token figures are the first token's.
  EXPECT_EQ(b["kl"]["over_tokens"]["per_prompt"], b["kl"]["first_token"]["per_prompt"]);

  const json& c = doc["comparison"];
  ASSERT_TRUE(c.is_object());
  uint64_t only_a = 0, only_b = 0;
  for (size_t i = 0; i < 5; ++i) {
    const bool ra = a["refusals"]["per_prompt"][i]["refused"], rb = b["refusals"]["per_prompt"][i]["refused"];
    only_a += ra && !rb;
    only_b += !ra && rb;
  }
  EXPECT_EQ(c["mcnemar"]["b"], only_a);
  EXPECT_EQ(c["mcnemar"]["c"], only_b);
  EXPECT_EQ(c["mcnemar"]["p_value"].get<double>(), stats::mcnemar_exact(only_a, only_b).p_value);
  // A - B: every prompt's difference is -KL_B < 0, so the whole interval is below zero.
  const json& diff = c["kl_difference"]["first_token"];
  expect_interval_shape(diff);
  EXPECT_DOUBLE_EQ(diff["estimate"].get<double>(), -b["kl"]["first_token"]["mean"].get<double>());
  EXPECT_LT(diff["high"].get<double>(), 0.0);

  // The same seed gives the same intervals.
  const auto again = lathe_cli(s.args({m, q8.string()}, {"--reference", m, "--seed", "5"}));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, r.out);
}

TEST(AblateEvalCli, RefusalsOnlyWithoutReference) {
  LATHE_REQUIRE_MODEL();
  Sets s;
  const auto r = lathe_cli({"ablate-eval", default_model().string(), "--no-kl", "--harmful", s.harmful.string(),
                            "--max-new-tokens", "6", "-t", "2", "--json", (s.dir / "r.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(read_file(s.dir / "r.json"));
  EXPECT_TRUE(doc["reference"].is_null());
  EXPECT_FALSE(doc["models"][0].contains("kl"));
  EXPECT_EQ(doc["models"][0]["refusals"]["total"], 5);
}

}  // namespace
}  // namespace lathe::test
