// `lathe sae-train`, `lathe sae-eval` and `lathe sae-select` through the binary on the tiny llama:
// the SAE directory in SAELens's format (cfg.json fields, tensors), the same files for the same
// seed, `lathe run --sae` with it, sae-eval's JSON, sae-select's features taken by `lathe run`;
// every bad hook, missing file, bad flag or existing output is an `error:`.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "edit/sae_test_support.hpp"
#include "io/safetensors.hpp"

namespace lathe::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Workspace {
  TempDir dir{"sae_cli"};
  fs::path model, data;
  Workspace() {
    TinyModel tiny;
    tiny.add_tokenizer();
    model = tiny.write(dir, "tiny.gguf");
    data = dir / "text.jsonl";
    std::vector<std::string> lines;
    const std::vector<std::string> words = {"the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "sun"};
    for (size_t i = 0; i < 24; ++i) {
      std::string text;
      for (size_t w = 0; w < 8; ++w) text += (w ? " " : "") + words[(i * 7 + w * 3 + i * w) % words.size()];
      lines.push_back(json({{"text", text}}).dump());
    }
    write_lines(data, lines);
  }
  std::vector<std::string> train(const std::string& out, std::vector<std::string> more = {}) const {
    std::vector<std::string> a{"sae-train", model.string(), "--hook", "blocks.1.resid_post", "--data", data.string(),
                               "-o", (dir / out).string(), "--d-sae", "64", "--k", "4", "--batch", "32",
                               "--steps", "60", "--lr", "0.005", "--seed", "2", "-t", "1"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

TEST(SaeCli, TrainWritesSaeLensFilesDeterministically) {
  Workspace w;
  const auto r = lathe_cli(w.train("sae"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("fvu"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("dead"), std::string::npos) << r.err;
  const auto cfg = json::parse(read_file(w.dir / "sae" / "cfg.json"));
  EXPECT_EQ(cfg["architecture"], "topk");
  EXPECT_EQ(cfg["d_in"], 64);
  EXPECT_EQ(cfg["d_sae"], 64);
  EXPECT_EQ(cfg["k"], 4);
  EXPECT_EQ(cfg["dtype"], "float32");
  EXPECT_EQ(cfg["apply_b_dec_to_input"], true);
  EXPECT_EQ(cfg["normalize_activations"], "none");
  EXPECT_EQ(cfg["metadata"]["hook_name"], "blocks.1.hook_resid_post");
  EXPECT_EQ(cfg["metadata"]["model_name"], "tiny.gguf");
  EXPECT_EQ(cfg["metadata"]["training"]["steps"], 60);
  EXPECT_TRUE(cfg["metadata"].contains("lathe_version"));
  const auto weights = safetensors::File::open(w.dir / "sae" / "sae_weights.safetensors");
  EXPECT_EQ(weights.tensor("W_enc").shape, (std::vector<uint64_t>{64, 64}));
  EXPECT_EQ(weights.tensor("W_dec").shape, (std::vector<uint64_t>{64, 64}));
  EXPECT_EQ(weights.tensor("b_enc").shape, (std::vector<uint64_t>{64}));
  EXPECT_EQ(weights.tensor("b_dec").shape, (std::vector<uint64_t>{64}));

  // The same command gives the same files; --force replaces them in place.
  ASSERT_EQ(lathe_cli(w.train("again")).exit_code, 0);
  EXPECT_EQ(read_file(w.dir / "again" / "sae_weights.safetensors"), read_file(w.dir / "sae" / "sae_weights.safetensors"));
  EXPECT_EQ(read_file(w.dir / "again" / "cfg.json"), read_file(w.dir / "sae" / "cfg.json"));
  auto reseeded = w.train("again", {"--force"});
  *(std::find(reseeded.begin(), reseeded.end(), "--seed") + 1) = "3";
  const auto forced = lathe_cli(reseeded);
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(read_file(w.dir / "again" / "sae_weights.safetensors"), read_file(w.dir / "sae" / "sae_weights.safetensors"));

  // lathe run uses it.
  const auto run = lathe_cli({"run", "-m", w.model.string(), "-p", "the cat", "-n", "4", "--temp", "0", "--sae",
                              (w.dir / "sae").string(), "--sae-features", "0,1:2"});
  EXPECT_EQ(run.exit_code, 0) << run.err;

  // sae-eval: JSON with SAELens's metric names.
  const auto ev = lathe_cli({"sae-eval", w.model.string(), "--sae", (w.dir / "sae").string(), "--data", w.data.string(),
                             "--json", "-t", "1"});
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  const auto m = json::parse(ev.out);
  EXPECT_EQ(m["hook"], "blocks.1.resid_post");
  EXPECT_LE(m["l0"].get<double>(), 4.0);
  EXPECT_GT(m["explained_variance"].get<double>(), 0.0);
  EXPECT_LT(m["explained_variance"].get<double>(), 1.0);
  for (const char* key : {"mse", "ce_loss_score", "ce_loss_with_sae", "ce_loss_without_sae", "ce_loss_with_ablation",
                          "kl_div_with_sae", "kl_div_with_ablation", "kl_div_score", "dead_features"})
    EXPECT_TRUE(m.contains(key)) << key;
  const auto table = lathe_cli({"sae-eval", w.model.string(), "--sae", (w.dir / "sae").string(), "--data",
                                w.data.string(), "-t", "1"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("CE loss recovered"), std::string::npos) << table.out;
}

TEST(SaeCli, ErrorsBeforeWork) {
  Workspace w;
  auto with = [&](const std::string& flag, const std::string& value) {
    auto a = w.train("bad");
    for (size_t i = 0; i + 1 < a.size(); ++i)
      if (a[i] == flag) a[i + 1] = value;
    return a;
  };
  expect_cli_error(lathe_cli(with("--hook", "blocks.1.mlp_out")), {"--hook", "blocks.1.mlp_out"});
  expect_cli_error(lathe_cli(with("--hook", "blocks.7.resid_post")), {"--hook", "layers 0..1"});
  expect_cli_error(lathe_cli(with("--hook", "final_norm")), {"--hook final_norm"});
  expect_cli_error(lathe_cli(with("--data", (w.dir / "missing.jsonl").string())), {"missing.jsonl", "no such data file"});
  expect_cli_error(lathe_cli(with("--k", "65")), {"--k 65"});
  expect_cli_error(lathe_cli(with("--batch", "100000")), {"--batch"});
  expect_cli_error(lathe_cli(with("--lr", "0")), {"--lr"});
  EXPECT_FALSE(fs::exists(w.dir / "bad"));
  // An existing output without --force.
  fs::create_directories(w.dir / "taken");
  write_file(w.dir / "taken" / "cfg.json", "{}");
  expect_cli_error(lathe_cli(w.train("taken")), {"taken", "--force"});
  EXPECT_EQ(read_file(w.dir / "taken" / "cfg.json"), "{}");
  // sae-eval: a missing SAE, missing data, an SAE whose d_in is not the model's.
  expect_cli_error(lathe_cli({"sae-eval", w.model.string(), "--sae", (w.dir / "nope").string(), "--data",
                              w.data.string()}),
                   {"nope", "no such SAE"});
  ASSERT_EQ(lathe_cli(w.train("ok")).exit_code, 0);
  expect_cli_error(lathe_cli({"sae-eval", w.model.string(), "--sae", (w.dir / "ok").string(), "--data",
                              (w.dir / "missing.jsonl").string()}),
                   {"missing.jsonl"});
  expect_cli_error(lathe_cli({"sae-eval", w.model.string(), "--sae", (w.dir / "ok").string(), "--data",
                              w.data.string(), "--sae-hook", "blocks.5.resid_post"}),
                   {"blocks.5.resid_post", "layers"});
}

TEST(SaeCli, SelectPrintsFeaturesThatRunTakes) {
  Workspace w;
  write_test_sae(w.dir / "gate", {.architecture = "standard", .d_in = 64, .d_sae = 32,
                                  .hook = "blocks.1.hook_resid_post", .seed = 4, .enc_scale = 3.0f});
  const fs::path forget = w.dir / "forget.jsonl", retain = w.dir / "retain.jsonl";
  write_lines(forget, {R"({"prompt": "the cat", "answer": "sat on a mat"})", R"({"prompt": "a dog", "answer": "ran far away"})"});
  write_lines(retain, {R"({"prompt": "the sun", "answer": "sat on the dog"})", R"({"prompt": "a mat", "answer": "ran on"})"});
  auto select = [&](std::vector<std::string> more) {
    std::vector<std::string> a{"sae-select", w.model.string(), "--sae", (w.dir / "gate").string(), "--forget",
                               forget.string(), "--retain", retain.string(), "--raw", "-t", "1"};
    a.insert(a.end(), more.begin(), more.end());
    return lathe_cli(a);
  };
  const auto r = select({"--count", "3", "--value", "-2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto out = json::parse(r.out);
  EXPECT_EQ(out["by"], "attribution");
  EXPECT_EQ(out["hook"], "blocks.1.resid_post");
  const auto& features = out["features"];
  ASSERT_GE(features.size(), 1u);
  ASSERT_LE(features.size(), 3u);
  std::string spec;
  for (size_t i = 0; i < features.size(); ++i) {
    EXPECT_GT(features[i]["score"].get<double>(), 0.0);
    if (i > 0) {
      EXPECT_GE(features[i - 1]["score"].get<double>(), features[i]["score"].get<double>());
    }
    spec += (i ? "," : "") + std::to_string(features[i]["feature"].get<int>()) + ":-2";
  }
  EXPECT_EQ(out["sae_features"], spec);
  // lathe run takes the list.
  const auto run = lathe_cli({"run", "-m", w.model.string(), "-p", "the cat", "-n", "4", "--temp", "0", "--sae",
                              (w.dir / "gate").string(), "--sae-features", spec});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  // By activation, as a table ending with the flags to use.
  const auto table = select({"--by", "activation", "--count", "2"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("by activation"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("--sae-features "), std::string::npos) << table.out;
  // Bad requests.
  expect_cli_error(select({"--by", "gradient"}), {"--by", "gradient", "activation or attribution"});
  expect_cli_error(select({"--count", "0"}), {"--count 0"});
  expect_cli_error(select({"--value", "nan"}), {"--value"});
  expect_cli_error(select({"--sae-hook", "blocks.9.resid_post"}), {"blocks.9.resid_post", "layers"});
  expect_cli_error(lathe_cli({"sae-select", w.model.string(), "--sae", (w.dir / "gate").string(), "--forget",
                              forget.string(), "--retain", (w.dir / "none.jsonl").string()}),
                   {"--retain", "none.jsonl", "no such data file"});
}

}  // namespace
}  // namespace lathe::test
