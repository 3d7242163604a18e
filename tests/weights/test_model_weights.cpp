// The weight loader on tiny synthetic GGUF files: what it finds, and the errors for a missing
// tensor, a misshapen tensor and an unsupported type; then one forward pass over the tiny model
// (finite logits, and the KV cache reuse of a second call agrees with a one-shot call), which
// also gives the sanitizer run coverage of the forward code without the big default model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/thread_pool.hpp"
#include "common/test_support.hpp"
#include "core/quant.hpp"
#include "forward/forward.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "runtime/kv_cache.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

constexpr uint32_t kEmbd = 64, kFf = 96, kHeads = 4, kKvHeads = 2, kVocab = 40, kLayers = 2;

struct TinyModel {
  std::vector<std::vector<uint8_t>> buffers;  // tensor bytes (the writer references them)
  gguf::Writer writer;
  std::mt19937 rng{7};

  void tensor(const std::string& name, std::vector<uint64_t> shape_ggml, DType type = DType::F32, float scale = 0.2f) {
    uint64_t n = 1;
    for (auto d : shape_ggml) n *= d;
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> values(n);
    for (auto& v : values) v = name.find("norm") != std::string::npos ? 1.0f + dist(rng) : dist(rng);
    buffers.push_back(quantize(type, values));
    writer.add_tensor(name, type, std::move(shape_ggml), buffers.back());
  }

  // A complete 2-layer llama, except the tensor named `skip` and with `override_name` reshaped.
  explicit TinyModel(const std::string& skip = "", DType matrix_type = DType::F32) {
    writer.set("general.architecture", gguf::Value::str("llama"));
    writer.set("llama.block_count", gguf::Value::u32(kLayers));
    writer.set("llama.embedding_length", gguf::Value::u32(kEmbd));
    writer.set("llama.feed_forward_length", gguf::Value::u32(kFf));
    writer.set("llama.attention.head_count", gguf::Value::u32(kHeads));
    writer.set("llama.attention.head_count_kv", gguf::Value::u32(kKvHeads));
    writer.set("llama.context_length", gguf::Value::u32(128));
    writer.set("llama.vocab_size", gguf::Value::u32(kVocab));
    const uint32_t head_dim = kEmbd / kHeads, kv = kKvHeads * head_dim;
    auto add = [&](const std::string& name, std::vector<uint64_t> shape, DType type = DType::F32) {
      if (name != skip) tensor(name, std::move(shape), type);
    };
    add("token_embd.weight", {kEmbd, kVocab}, matrix_type);
    add("output_norm.weight", {kEmbd});
    for (uint32_t i = 0; i < kLayers; ++i) {
      const std::string p = "blk." + std::to_string(i) + ".";
      add(p + "attn_norm.weight", {kEmbd});
      add(p + "ffn_norm.weight", {kEmbd});
      add(p + "attn_q.weight", {kEmbd, kEmbd}, matrix_type);
      add(p + "attn_k.weight", {kEmbd, kv}, matrix_type);
      add(p + "attn_v.weight", {kEmbd, kv}, matrix_type);
      add(p + "attn_output.weight", {kEmbd, kEmbd}, matrix_type);
      add(p + "ffn_gate.weight", {kEmbd, kFf}, matrix_type);
      add(p + "ffn_up.weight", {kEmbd, kFf}, matrix_type);
      add(p + "ffn_down.weight", {kFf, kEmbd}, matrix_type);
    }
  }
  std::filesystem::path write(const test::TempDir& dir, const std::string& name) {
    const auto path = dir / name;
    writer.write(path);
    return path;
  }
};

TEST(ModelWeights, LoadsATinyLlamaWithTiedEmbeddings) {
  test::TempDir dir("tiny_weights");
  TinyModel tiny;
  const auto w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  EXPECT_EQ(w.layers.size(), kLayers);
  EXPECT_EQ(w.format, "gguf");
  EXPECT_EQ(w.output.data, w.token_embd.data);  // no output.weight: tied
  EXPECT_EQ(w.rope.order, cpu::RopeOrder::Normal);  // GGUF llama: permuted Q/K rows
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
  KvCache kv_a(w.hp, 16, true), kv_b(w.hp, 16, true);
  Forward fa(w, 8, 16), fb(w, 8, 16);
  std::vector<float> all(tokens.size() * kVocab), last(kVocab);
  fa.run(tokens, 0, kv_a.view(), true, all.data(), pool);
  fb.run(std::span(tokens).first(4), 0, kv_b.view(), false, last.data(), pool);
  fb.run(std::span(tokens).subspan(4), 4, kv_b.view(), false, last.data(), pool);
  for (float v : all) ASSERT_TRUE(std::isfinite(v));
  for (uint32_t v = 0; v < kVocab; ++v) EXPECT_NEAR(last[v], all[(tokens.size() - 1) * kVocab + v], 1e-3) << v;
}

INSTANTIATE_TEST_SUITE_P(Types, TinyForward, ::testing::Values(DType::F32, DType::F16, DType::Q8_0, DType::Q4_1),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace lathe
