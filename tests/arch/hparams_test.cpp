#include <gtest/gtest.h>

#include "arch/hparams.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

nlohmann::json qwen_config() {
  return nlohmann::json::parse(R"({
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
    "max_position_embeddings": 32768, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "tie_word_embeddings": true})");
}

TEST(HParams, FromQwenConfig) {
  const auto hp = hparams_from_hf_config(qwen_config(), "config.json");
  EXPECT_EQ(hp.arch, Arch::Qwen2);
  EXPECT_EQ(hp.n_layer, 24u);
  EXPECT_EQ(hp.head_dim, 64u);
  EXPECT_EQ(hp.rope_dim, 64u);
  EXPECT_EQ(hp.n_head_kv, 2u);
  EXPECT_TRUE(hp.tied_embeddings);
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 1e6f);
}

TEST(HParams, MissingRequiredFieldNamesItAndTheFile) {
  auto c = qwen_config();
  c.erase("num_hidden_layers");
  try {
    hparams_from_hf_config(c, "/models/x/config.json");
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("/models/x/config.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("num_hidden_layers"), std::string::npos) << e.what();
  }
}

TEST(HParams, UnsupportedModelTypeListsTheSupportedOnes) {
  auto c = qwen_config();
  c["model_type"] = "gpt_neox";
  try {
    hparams_from_hf_config(c, "config.json");
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("gpt_neox"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("qwen3"), std::string::npos);
  }
}

TEST(HParams, HeadsMustDivide) {
  auto c = qwen_config();
  c["num_key_value_heads"] = 3;
  EXPECT_THROW(hparams_from_hf_config(c, "config.json"), FormatError);
}

TEST(HParams, Llama3RopeScalingRoundTripsThroughConfig) {
  auto c = qwen_config();
  c["model_type"] = "llama";
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192u}};
  const auto hp = hparams_from_hf_config(c, "config.json");
  ASSERT_TRUE(hp.rope_scaling.has_value());
  EXPECT_EQ(hp.rope_scaling->type, "llama3");
  const auto back = hparams_from_hf_config(hf_config_from_hparams(hp, 1, 2), "roundtrip");
  EXPECT_EQ(back.n_layer, hp.n_layer);
  EXPECT_EQ(back.rope_scaling->original_context, 8192u);
  EXPECT_FLOAT_EQ(back.rope_scaling->factor, 8.0f);
}

}  // namespace
}  // namespace lathe

namespace lathe {
// transformers >= 5 writes rope_theta and the scaling fields into one rope_parameters object.
TEST(HParamsHf, ReadsTransformers5RopeParameters) {
  nlohmann::json c = {{"model_type", "llama"}, {"num_hidden_layers", 2u}, {"hidden_size", 128u},
                      {"intermediate_size", 256u}, {"num_attention_heads", 4u}, {"num_key_value_heads", 2u},
                      {"vocab_size", 1000u},
                      {"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                           {"original_max_position_embeddings", 8192u}}}};
  auto hp = hparams_from_hf_config(c, "config.json");
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 500000.0f);
  ASSERT_TRUE(hp.rope_scaling.has_value());
  EXPECT_EQ(hp.rope_scaling->type, "llama3");
  EXPECT_FLOAT_EQ(hp.rope_scaling->factor, 8.0f);
  EXPECT_EQ(hp.rope_scaling->original_context, 8192u);
  c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  hp = hparams_from_hf_config(c, "config.json");
  EXPECT_FLOAT_EQ(hp.rope_freq_base, 1000000.0f);
  EXPECT_FALSE(hp.rope_scaling.has_value());
  c["rope_parameters"]["rope_theta"] = "big";
  EXPECT_THROW(hparams_from_hf_config(c, "config.json"), FormatError);
}
}  // namespace lathe
