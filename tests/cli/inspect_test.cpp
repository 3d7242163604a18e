// `lathe inspect` end to end on the default model, through the CLI binary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/test_support.hpp"

namespace lathe::test {
namespace {

TEST(CliInspect, DefaultModelText) {
  LATHE_REQUIRE_MODEL();
  const auto r = run_command({cli_path().string(), "inspect", default_model().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("architecture:    llama"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers:          30\n"), std::string::npos);
  EXPECT_NE(r.out.find("vocab:           49152\n"), std::string::npos);
  EXPECT_NE(r.out.find("heads:           9 (kv 3, head dim 64"), std::string::npos);
  EXPECT_NE(r.out.find("blk.29.ffn_down.weight"), std::string::npos);
  EXPECT_NE(r.out.find("Q4_1     210 tensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Q8_0       1 tensors"), std::string::npos);
  EXPECT_NE(r.out.find("F32       61 tensors"), std::string::npos);
  EXPECT_NE(r.out.find("chat template:   yes"), std::string::npos);
}

TEST(CliInspect, DefaultModelJson) {
  LATHE_REQUIRE_MODEL();
  const auto r = run_command({cli_path().string(), "inspect", "--json", default_model().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "gguf");
  EXPECT_EQ(j["format_version"], "3");
  EXPECT_EQ(j["hparams"]["n_layer"], 30);
  EXPECT_EQ(j["hparams"]["n_vocab"], 49152);
  EXPECT_EQ(j["hparams"]["n_embd"], 576);
  EXPECT_EQ(j["hparams"]["tied_embeddings"], true);
  EXPECT_EQ(j["tokenizer"]["model"], "gpt2");
  EXPECT_EQ(j["tokenizer"]["pre"], "smollm");
  EXPECT_EQ(j["tokenizer"]["n_tokens"], 49152);
  EXPECT_EQ(j["tensors"].size(), 272u);
  EXPECT_EQ(j["totals"]["by_type"]["Q4_1"]["count"], 210);
  EXPECT_EQ(j["totals"]["by_type"]["Q8_0"]["count"], 1);
  EXPECT_EQ(j["totals"]["by_type"]["F32"]["count"], 61);
}

TEST(CliInspect, MissingFileIsAnErrorNamingThePath) {
  const auto r = run_command({cli_path().string(), "inspect", "/nonexistent/model.gguf"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/model.gguf"), std::string::npos) << r.err;
}

TEST(CliInspect, GarbageFileIsAnErrorNotACrash) {
  TempDir dir("inspect");
  write_file(dir / "bad.gguf", "GGUF\x03\x00\x00\x00garbage");
  const auto r = run_command({cli_path().string(), "inspect", (dir / "bad.gguf").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("bad.gguf"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lathe::test
