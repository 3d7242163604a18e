// `lathe convert` of the default model to a Hugging Face directory (F32 safetensors), checked
// tensor by tensor against gguf-py's dequantization, and inspected back.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/test_support.hpp"

namespace lathe::test {
namespace {

class CliConvert : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(default_model())) return;
    dir_ = new TempDir("convert");
    result_ = new CommandResult(
        run_command({cli_path().string(), "convert", default_model().string(), "-o", (*dir_ / "out").string(), "-q"}));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete dir_;
  }
  static std::filesystem::path out() { return *dir_ / "out"; }
  static TempDir* dir_;
  static CommandResult* result_;
};
TempDir* CliConvert::dir_ = nullptr;
CommandResult* CliConvert::result_ = nullptr;

TEST_F(CliConvert, WritesAHuggingFaceDirectory) {
  LATHE_REQUIRE_MODEL();
  ASSERT_EQ(result_->exit_code, 0) << result_->err;
  for (const char* f : {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json"})
    EXPECT_TRUE(std::filesystem::exists(out() / f)) << f;
  const auto config = nlohmann::json::parse(read_file(out() / "config.json"));
  EXPECT_EQ(config["model_type"], "llama");
  EXPECT_EQ(config["num_hidden_layers"], 30);
  EXPECT_EQ(config["vocab_size"], 49152);
  EXPECT_EQ(config["tie_word_embeddings"], true);
  const auto tok = nlohmann::json::parse(read_file(out() / "tokenizer_config.json"));
  EXPECT_TRUE(tok["chat_template"].is_string());
}

TEST_F(CliConvert, EveryTensorEqualsGgufPyDequantization) {
  LATHE_REQUIRE_MODEL();
  if (oracle_python().empty()) GTEST_SKIP() << "LATHE_ORACLE_PYTHON not configured";
  ASSERT_EQ(result_->exit_code, 0) << result_->err;
  const auto r = run_oracle("convert_check.py", {default_model().string(), out().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto report = nlohmann::json::parse(r.out);
  EXPECT_EQ(report["checked"], 272);
  EXPECT_TRUE(report["mismatches"].empty()) << report["mismatches"].dump(1);
  EXPECT_TRUE(report["extra"].empty()) << report["extra"].dump(1);
}

TEST_F(CliConvert, InspectOfTheExportMatchesTheGguf) {
  LATHE_REQUIRE_MODEL();
  ASSERT_EQ(result_->exit_code, 0) << result_->err;
  const auto gguf = run_command({cli_path().string(), "inspect", "--json", default_model().string()});
  const auto st = run_command({cli_path().string(), "inspect", "--json", out().string()});
  ASSERT_EQ(gguf.exit_code, 0) << gguf.err;
  ASSERT_EQ(st.exit_code, 0) << st.err;
  const auto a = nlohmann::json::parse(gguf.out), b = nlohmann::json::parse(st.out);
  EXPECT_EQ(b["format"], "safetensors");
  EXPECT_EQ(a["hparams"], b["hparams"]);
  EXPECT_EQ(a["totals"]["parameters"], b["totals"]["parameters"]);
  EXPECT_EQ(b["tensors"].size(), 272u);
  EXPECT_EQ(b["totals"]["by_type"]["F32"]["count"], 272);
  EXPECT_EQ(b["tokenizer"]["n_tokens"], a["tokenizer"]["n_tokens"]);
  EXPECT_EQ(b["tokenizer"]["n_merges"], a["tokenizer"]["n_merges"]);
  EXPECT_EQ(b["tokenizer"]["bos_id"], a["tokenizer"]["bos_id"]);
  EXPECT_EQ(b["tokenizer"]["eos_id"], a["tokenizer"]["eos_id"]);
  EXPECT_EQ(b["tokenizer"]["has_chat_template"], true);
  const auto text = run_command({cli_path().string(), "inspect", out().string()});
  EXPECT_NE(text.out.find("layers:          30\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("vocab:           49152\n"), std::string::npos);
}

TEST_F(CliConvert, ExportTokenizesLikeTheGguf) {
  LATHE_REQUIRE_MODEL();
  ASSERT_EQ(result_->exit_code, 0) << result_->err;
  const std::string text = "<|im_start|>user\nHow many r's in 'strawberry'? 12345 \xF0\x9F\x8D\x93<|im_end|>";
  const auto a = run_command({cli_path().string(), "tokenize", "-m", default_model().string(), "--ids", text});
  const auto b = run_command({cli_path().string(), "tokenize", "-m", out().string(), "--ids", text});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
}

TEST_F(CliConvert, ShardedExportHasAnIndex) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("convert-sharded");
  const auto r = run_command({cli_path().string(), "convert", default_model().string(), "-o", (dir / "out").string(),
                              "-q", "--type", "BF16", "--max-shard-size", "100MB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "model.safetensors.index.json"));
  const auto index = nlohmann::json::parse(read_file(dir / "out" / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : index["weight_map"].items()) shards.insert(shard.get<std::string>());
  EXPECT_GE(shards.size(), 3u);  // 270 MB of BF16 cannot fit in fewer 100 MB shards
  for (const auto& s : shards) EXPECT_TRUE(std::filesystem::exists(dir / "out" / s)) << s;
  const auto st = run_command({cli_path().string(), "inspect", "--json", (dir / "out").string()});
  ASSERT_EQ(st.exit_code, 0) << st.err;
  const auto j = nlohmann::json::parse(st.out);
  EXPECT_EQ(j["files"].size(), shards.size());
  EXPECT_EQ(j["totals"]["by_type"]["BF16"]["count"], 272);
}

TEST_F(CliConvert, RefusesANonEmptyDirectoryAndKeepsItsFiles) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("convert-existing");
  write_file(dir / "config.json", "precious");
  const auto r = run_command({cli_path().string(), "convert", default_model().string(), "-o", dir.path().string(), "-q"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(dir / "config.json"), "precious");
}

TEST_F(CliConvert, RejectsAnUnknownOutputType) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("convert-type");
  const auto r = run_command(
      {cli_path().string(), "convert", default_model().string(), "-o", (dir / "o").string(), "--type", "Q4_1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Q4_1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lathe::test
