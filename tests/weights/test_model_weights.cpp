// The weight loader on tiny synthetic GGUF files: what it finds, and the errors for a missing
// tensor, a misshapen tensor and an unsupported type; then one forward pass over the tiny model
// (finite logits, and the KV cache reuse of a second call agrees with a one-shot call), which
// also gives the sanitizer run coverage of the forward code without the big default model.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/thread_pool.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "forward/forward.hpp"
#include "io/gguf.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"
#include "runtime/kv_cache.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

using test::TinyModel;
using test::kEmbd;
using test::kVocab;
using test::kLayers;
using test::kKvHeads;
using test::kHeads;

TEST(ModelWeights, LoadsATinyLlamaWithTiedEmbeddings) {
  test::TempDir dir("tiny_weights");
  TinyModel tiny;
  const auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  EXPECT_EQ(w.layers.size(), kLayers);
  EXPECT_EQ(w.format, "gguf");
  EXPECT_EQ(w.output.data, w.token_embd.data);  // no output.weight: tied
  EXPECT_EQ(w.rope.order, RopeOrder::Normal);  // GGUF llama: permuted Q/K rows
  EXPECT_EQ(w.weight_type, "F32");
  EXPECT_EQ(w.layers[1].wk.rows, kKvHeads * (kEmbd / kHeads));
}

TEST(ModelWeights, MissingTensorIsNamed) {
  test::TempDir dir("tiny_missing");
  TinyModel tiny("blk.1.ffn_down.weight");
  try {
    load_model_weights(tiny.write(dir, "missing.gguf"));
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.1.ffn_down.weight is missing"), std::string::npos) << e.what();
  }
}

// A block count far beyond the file's layers (a corrupt file; found by the model_weights fuzz
// target, which ran out of memory reserving four billion layers) names the first missing layer's
// tensor, without allocating for the layers that are not there.
TEST(ModelWeights, ABlockCountBeyondTheTensorsNamesTheFirstMissingLayer) {
  test::TempDir dir("tiny_blocks");
  TinyModel tiny;
  tiny.writer.set("llama.block_count", gguf::Value::u32(4'000'000'000u));
  try {
    load_model_weights(tiny.write(dir, "blocks.gguf"));
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.2.attn_norm.weight is missing"), std::string::npos) << e.what();
  }
}

// In a Hugging Face directory a missing tensor is named as that directory's files name it, not by
// lathe's canonical (GGUF) name.
TEST(ModelWeights, MissingTensorOfAHuggingFaceDirectoryHasItsName) {
  test::TempDir dir("tiny_hf_missing");
  const uint64_t kv = kKvHeads * (kEmbd / test::kHeads);
  test::write_file(dir / "config.json",
                   fmt::format(R"({{"model_type":"llama","hidden_size":{},"intermediate_size":{},)"
                               R"("num_hidden_layers":{},"num_attention_heads":{},"num_key_value_heads":{},)"
                               R"("vocab_size":{},"max_position_embeddings":128,"tie_word_embeddings":true}})",
                               kEmbd, test::kFf, kLayers, test::kHeads, kKvHeads, kVocab));
  std::vector<std::pair<std::string, std::vector<uint64_t>>> tensors = {{"model.embed_tokens.weight", {kVocab, kEmbd}},
                                                                        {"model.norm.weight", {kEmbd}}};
  for (uint32_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<uint64_t>>>{
             {"input_layernorm.weight", {kEmbd}},
             {"post_attention_layernorm.weight", {kEmbd}},
             {"self_attn.q_proj.weight", {kEmbd, kEmbd}},
             {"self_attn.k_proj.weight", {kv, kEmbd}},
             {"self_attn.v_proj.weight", {kv, kEmbd}},
             {"self_attn.o_proj.weight", {kEmbd, kEmbd}},
             {"mlp.gate_proj.weight", {test::kFf, kEmbd}},
             {"mlp.up_proj.weight", {test::kFf, kEmbd}},
             {"mlp.down_proj.weight", {kEmbd, test::kFf}}})
      if (p + name != "model.layers.1.mlp.down_proj.weight") tensors.emplace_back(p + name, shape);
  }
  std::vector<std::vector<uint8_t>> buffers;
  safetensors::Writer writer;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    buffers.emplace_back(n * sizeof(float), 0);
    writer.add_tensor(name, DType::F32, shape, buffers.back());
  }
  writer.write(dir / "model.safetensors");
  try {
    load_model_weights(dir.path());
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("model.layers.1.mlp.down_proj.weight is missing"), std::string::npos) << message;
    EXPECT_EQ(message.find("blk.1"), std::string::npos) << message;
  }
}

TEST(ModelWeights, MisshapenTensorShowsBothShapes) {
  test::TempDir dir("tiny_shape");
  TinyModel tiny("blk.0.attn_k.weight");
  tiny.tensor("blk.0.attn_k.weight", {kEmbd, 8});
  try {
    load_model_weights(tiny.write(dir, "shape.gguf"));
    FAIL() << "expected FormatError";
  } catch (const FormatError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("blk.0.attn_k.weight has shape [8, 64]"), std::string::npos) << m;
    EXPECT_NE(m.find("need [32, 64]"), std::string::npos) << m;
  }
}

TEST(ModelWeights, NaNFoundOnlyWithCheckTensors) {
  test::TempDir dir("tiny_nan");
  TinyModel tiny("blk.1.attn_norm.weight");
  tiny.buffers.emplace_back(kEmbd * 4, 0);
  const float nan = std::nanf("");
  std::memcpy(tiny.buffers.back().data() + 12, &nan, 4);
  tiny.writer.add_tensor("blk.1.attn_norm.weight", DType::F32, {kEmbd}, tiny.buffers.back());
  const auto path = tiny.write(dir, "nan.gguf");
  EXPECT_NO_THROW(load_model_weights(path));
  EXPECT_THROW(load_model_weights(path, {.check_tensors = true}), FormatError);
}

// One forward pass over the tiny model for each weight type the quantizer can write.
class TinyForward : public ::testing::TestWithParam<DType> {};

TEST_P(TinyForward, FiniteLogitsAndIncrementalEqualsOneShot) {
  test::TempDir dir("tiny_forward");
  TinyModel tiny("", GetParam());
  const auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  cpu::ThreadPool pool(2);
  const std::vector<int32_t> tokens = {1, 5, 9, 3, 39, 0, 17};
  KvCache kv_a(w.hp, 16, KvFormat::F16), kv_b(w.hp, 16, KvFormat::F16);
  Forward fa(w, 8, 16), fb(w, 8, 16);
  std::vector<float> all(tokens.size() * kVocab), last(kVocab);
  // One sequence (slot 0) in one pass with every row's logits, and in two chunks keeping the last.
  auto run = [&](Forward& f, KvCache& kv, std::span<const int32_t> chunk, uint32_t first_pos, bool all_logits,
                 float* logits) {
    Batch batch;
    batch.add_chunk(0, chunk, first_pos, all_logits, true, true);
    KvCacheView* caches[] = {&kv.view()};
    f.forward(batch, caches, {}, logits, pool);
  };
  run(fa, kv_a, tokens, 0, true, all.data());
  run(fb, kv_b, std::span(tokens).first(4), 0, false, last.data());
  run(fb, kv_b, std::span(tokens).subspan(4), 4, false, last.data());
  for (float v : all) ASSERT_TRUE(std::isfinite(v));
  for (uint32_t v = 0; v < kVocab; ++v) EXPECT_NEAR(last[v], all[(tokens.size() - 1) * kVocab + v], 1e-3) << v;
}

INSTANTIATE_TEST_SUITE_P(Types, TinyForward, ::testing::Values(DType::F32, DType::F16, DType::Q8_0, DType::Q4_1),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace lathe
