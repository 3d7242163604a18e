// A tiny synthetic llama GGUF (2 layers, 64-wide, 40-token vocabulary, random weights) for tests
// that need a whole model without the 100 MB default one: loader errors, forward passes under the
// sanitizers, editing and the weight cache.
#pragma once

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"

namespace lathe::test {

inline constexpr uint32_t kTinyTokens = 31;
inline constexpr uint32_t kEmbd = 64, kFf = 96, kHeads = 4, kKvHeads = 2, kVocab = 40, kLayers = 2;

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

  // Nothing yet: metadata and tensors are the caller's (tests/common/tiny_moe.hpp).
  struct Empty {};
  explicit TinyModel(Empty) {}
  // A complete llama of `layers` layers (2 by default), except the tensor named `skip`.
  explicit TinyModel(const std::string& skip = "", DType matrix_type = DType::F32, uint32_t layers = kLayers) {
    writer.set("general.architecture", gguf::Value::str("llama"));
    writer.set("llama.block_count", gguf::Value::u32(layers));
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
    for (uint32_t i = 0; i < layers; ++i) {
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
  // A byte-level BPE vocabulary of kTinyTokens (< kVocab) tokens: the 26 lowercase letters, 'Ġ'
  // (space), 'Ċ' (newline), the ChatML markers and an end-of-text token, with a ChatML template,
  // so that Model::load() accepts the file. Ids kTinyTokens..kVocab-1 are embedding rows that
  // are not tokens (as in padded real vocabularies).
  void add_tokenizer() {
    std::vector<std::string> tokens;
    for (char c = 'a'; c <= 'z'; ++c) tokens.emplace_back(1, c);
    tokens.insert(tokens.end(), {"\xC4\xA0", "\xC4\x8A", "<|im_start|>", "<|im_end|>", "<|endoftext|>"});
    std::vector<gguf::Value> types;
    for (size_t i = 0; i < tokens.size(); ++i) types.push_back(gguf::Value::i32(i < 28 ? 1 : 3));
    writer.set("tokenizer.ggml.model", gguf::Value::str("gpt2"));
    writer.set("tokenizer.ggml.pre", gguf::Value::str("qwen2"));
    writer.set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
    writer.set("tokenizer.ggml.token_type", gguf::Value::array({gguf::ValueType::INT32, types}));
    writer.set("tokenizer.ggml.merges", gguf::Value::string_array({}));
    writer.set("tokenizer.ggml.eos_token_id", gguf::Value::u32(30));
    writer.set("tokenizer.chat_template",
               gguf::Value::str("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"));
  }

  // Replaces the final norm's weights with NaN (build with skip = "output_norm.weight"), so that
  // every logit is NaN.
  void add_nan_output_norm() {
    buffers.push_back(quantize(DType::F32, std::vector<float>(kEmbd, std::nanf(""))));
    writer.add_tensor("output_norm.weight", DType::F32, {kEmbd}, buffers.back());
  }

  std::filesystem::path write(const test::TempDir& dir, const std::string& name) {
    const auto path = dir / name;
    writer.write(path);
    return path;
  }
};

}  // namespace lathe::test
