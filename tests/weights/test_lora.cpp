// LoRA adapters (weights/lora.hpp) on the tiny synthetic llama: the file round-trips, a merge adds
// exactly factor * B A to the targets and nothing else (float32 and Q8_0 weights), Q/K adapters
// (llama.cpp's permuted rows) give the same function on the GGUF model and on its Hugging Face
// export, every malformed adapter is a typed error naming the tensor, and a failed merge leaves the
// weights as they were. The comparison with llama.cpp itself is tests/weights/test_lora_oracle.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/model_logits.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "lathe/convert.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "weights/lora.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

using test::kEmbd;
using test::kFf;
using test::TinyModel;

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 0.1f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

LoraPair random_pair(const std::string& target, int64_t n_out, int64_t n_in, int64_t rank, uint32_t seed) {
  return {target, rank, n_in, n_out, random_values(static_cast<size_t>(rank * n_in), seed),
          random_values(static_cast<size_t>(n_out * rank), seed + 1)};
}

LoraAdapter three_pair_adapter() {
  LoraAdapter adapter;
  adapter.architecture = "llama";
  adapter.alpha = 4;
  adapter.pairs = {random_pair("blk.0.attn_output.weight", kEmbd, kEmbd, 2, 1),
                   random_pair("blk.1.ffn_down.weight", kEmbd, kFf, 2, 3),
                   random_pair("blk.1.attn_k.weight", 32, kEmbd, 2, 5)};
  return adapter;
}

std::vector<float> dequantized(const MatrixView& v) {
  std::vector<float> out(static_cast<size_t>(v.rows * v.cols));
  for (int64_t r = 0; r < v.rows; ++r) dequantize_row(v.type, v.data + r * v.row_bytes, out.data() + r * v.cols, v.cols);
  return out;
}

// W + factor * B A, in double, as the reference of a merge.
std::vector<double> expected_merge(const std::vector<float>& w, const LoraPair& p, double factor) {
  std::vector<double> out(w.begin(), w.end());
  for (int64_t r = 0; r < p.n_out; ++r)
    for (int64_t c = 0; c < p.n_in; ++c) {
      double sum = 0;
      for (int64_t k = 0; k < p.rank; ++k) sum += double(p.b[r * p.rank + k]) * p.a[k * p.n_in + c];
      out[r * p.n_in + c] += factor * sum;
    }
  return out;
}

struct Tiny {
  test::TempDir dir{"lora"};
  std::filesystem::path path;
  explicit Tiny(DType type = DType::F32, bool tokenizer = false) {
    TinyModel tiny("", type);
    if (tokenizer) tiny.add_tokenizer();
    path = tiny.write(dir, "tiny.gguf");
  }
};

TEST(Lora, WrittenAdapterReadsBackEqual) {
  Tiny tiny;
  const auto adapter = three_pair_adapter();
  write_lora_adapter(adapter, tiny.dir / "a.gguf", "test", {{"lathe.note", "x"}});
  const auto file = gguf::File::open(tiny.dir / "a.gguf");
  EXPECT_EQ(file.get("general.type").as_string("t"), "adapter");
  EXPECT_EQ(file.get("adapter.type").as_string("t"), "lora");
  EXPECT_EQ(file.get("lathe.note").as_string("t"), "x");
  // ggml shapes as llama.cpp checks them: lora_a [n_in, rank], lora_b [rank, n_out].
  const auto* a = file.find_tensor("blk.1.ffn_down.weight.lora_a");
  const auto* b = file.find_tensor("blk.1.ffn_down.weight.lora_b");
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->shape, (std::vector<uint64_t>{kFf, 2}));
  EXPECT_EQ(b->shape, (std::vector<uint64_t>{2, kEmbd}));

  const auto back = read_lora_adapter(tiny.dir / "a.gguf");
  EXPECT_EQ(back.architecture, "llama");
  EXPECT_EQ(back.alpha, 4.0f);
  ASSERT_EQ(back.pairs.size(), 3u);
  for (const auto& want : adapter.pairs) {
    const auto it = std::find_if(back.pairs.begin(), back.pairs.end(), [&](auto& p) { return p.target == want.target; });
    ASSERT_NE(it, back.pairs.end()) << want.target;
    EXPECT_EQ(it->rank, want.rank);
    EXPECT_EQ(it->n_in, want.n_in);
    EXPECT_EQ(it->n_out, want.n_out);
    EXPECT_EQ(it->a, want.a);
    EXPECT_EQ(it->b, want.b);
  }
}

TEST(Lora, MergeAddsTheScaledProductToTheTargetsOnly) {
  for (DType type : {DType::F32, DType::Q8_0}) {
    SCOPED_TRACE(dtype_name(type));
    Tiny tiny(type);
    const auto original = load_model_weights(tiny.path);
    auto weights = load_model_weights(tiny.path);
    const auto adapter = three_pair_adapter();
    const auto stats = merge_lora(weights, adapter, 0.5f, 2);
    EXPECT_EQ(stats.matrices, 3u);
    EXPECT_EQ(stats.requantization_rel_rms > 0, type != DType::F32);
    const double factor = 0.5 * 4 / 2;  // scale * alpha / rank
    const MatrixView* merged[] = {&weights.layers[0].wo, &weights.layers[1].w_down, &weights.layers[1].wk};
    const MatrixView* before[] = {&original.layers[0].wo, &original.layers[1].w_down, &original.layers[1].wk};
    for (size_t p = 0; p < 3; ++p) {
      const auto want = expected_merge(dequantized(*before[p]), adapter.pairs[p], factor);
      const auto got = dequantized(*merged[p]);
      if (type == DType::F32) {
        for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-6) << adapter.pairs[p].target << " " << i;
      } else {
        // The merged float row rounded once to Q8_0, as quantize_row does it.
        std::vector<float> row(want.begin(), want.end());
        const auto requantized = quantize(type, row);
        const auto expect = dequantize(type, requantized, static_cast<int64_t>(row.size()));
        for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expect[i], 1e-6) << adapter.pairs[p].target << " " << i;
      }
    }
    // Every other matrix is the original.
    const auto same = [](const MatrixView& x, const MatrixView& y) {
      return std::equal(x.data, x.data + x.rows * x.row_bytes, y.data);
    };
    EXPECT_TRUE(same(weights.layers[0].wq, original.layers[0].wq));
    EXPECT_TRUE(same(weights.layers[1].wo, original.layers[1].wo));
    EXPECT_TRUE(same(weights.layers[0].w_down, original.layers[0].w_down));
    EXPECT_TRUE(same(weights.token_embd, original.token_embd));
  }
}

TEST(Lora, BadAdaptersAreTypedErrorsNamingTheTensor) {
  Tiny tiny;
  auto write = [&](const std::string& name, auto&& fill) {
    gguf::Writer writer;
    std::vector<std::vector<float>> keep;
    writer.set("general.architecture", gguf::Value::str("llama"));
    writer.set("general.type", gguf::Value::str("adapter"));
    writer.set("adapter.type", gguf::Value::str("lora"));
    fill(writer, keep);
    writer.write(tiny.dir / name);
    return tiny.dir / name;
  };
  auto tensor = [](gguf::Writer& w, std::vector<std::vector<float>>& keep, const std::string& name,
                   std::vector<uint64_t> shape, float value = 0.1f) {
    keep.emplace_back(shape[0] * shape[1], value);
    w.add_tensor(name, DType::F32, shape, std::span(reinterpret_cast<const uint8_t*>(keep.back().data()),
                                                     keep.back().size() * sizeof(float)));
  };
  const auto no_b = write("no_b.gguf", [&](auto& w, auto& k) { tensor(w, k, "blk.0.attn_q.weight.lora_a", {kEmbd, 2}); });
  test::expect_error<FormatError>([&] { read_lora_adapter(no_b); }, {"blk.0.attn_q.weight.lora_a", "lora_b"});
  const auto rank = write("rank.gguf", [&](auto& w, auto& k) {
    tensor(w, k, "blk.0.attn_q.weight.lora_a", {kEmbd, 2});
    tensor(w, k, "blk.0.attn_q.weight.lora_b", {3, kEmbd});
  });
  test::expect_error<FormatError>([&] { read_lora_adapter(rank); }, {"rank.gguf", "blk.0.attn_q.weight.lora_a", "rank 2"});
  const auto odd = write("odd.gguf", [&](auto& w, auto& k) { tensor(w, k, "blk.0.attn_q.weight.delta", {kEmbd, 2}); });
  test::expect_error<FormatError>([&] { read_lora_adapter(odd); }, {"blk.0.attn_q.weight.delta"});
  const auto nan = write("nan.gguf", [&](auto& w, auto& k) {
    tensor(w, k, "blk.0.attn_q.weight.lora_a", {kEmbd, 2}, std::nanf(""));
    tensor(w, k, "blk.0.attn_q.weight.lora_b", {2, kEmbd});
  });
  test::expect_error<FormatError>([&] { read_lora_adapter(nan); }, {"blk.0.attn_q.weight.lora_a", "non-finite"});
  test::expect_error<FormatError>([&] { read_lora_adapter(tiny.path); }, {"tiny.gguf", "general.type", "not a LoRA"});
  test::expect_error<NotFoundError>([&] { read_lora_adapter(tiny.dir / "missing.gguf"); }, {"missing.gguf"});

  // Adapters that do not fit the model: nothing is changed, whichever pair is at fault.
  auto weights = load_model_weights(tiny.path);
  const auto original = load_model_weights(tiny.path);
  auto expect_unchanged = [&] {
    for (size_t l = 0; l < weights.layers.size(); ++l)
      EXPECT_TRUE(std::equal(weights.layers[l].wo.data, weights.layers[l].wo.data + kEmbd * weights.layers[l].wo.row_bytes,
                             original.layers[l].wo.data));
  };
  auto bad = three_pair_adapter();
  bad.source = "bad.gguf";
  bad.pairs.push_back(random_pair("blk.7.attn_q.weight", kEmbd, kEmbd, 2, 9));
  test::expect_error<NotFoundError>([&] { merge_lora(weights, bad, 1.0f); }, {"bad.gguf", "blk.7.attn_q.weight"});
  expect_unchanged();
  bad.pairs.back() = random_pair("blk.1.attn_q.weight", kEmbd, kEmbd + 1, 2, 9);
  test::expect_error<InvalidArgumentError>([&] { merge_lora(weights, bad, 1.0f); },
                                           {"blk.1.attn_q.weight", "64 x 65", "64 x 64"});
  expect_unchanged();
  bad.pairs.back() = random_pair("token_embd.weight", test::kVocab, kEmbd, 2, 9);
  test::expect_error<UnsupportedError>([&] { merge_lora(weights, bad, 1.0f); }, {"token_embd.weight"});
  bad.pairs.back() = random_pair("output.weight", test::kVocab, kEmbd, 2, 9);  // the tiny model ties it
  test::expect_error<UnsupportedError>([&] { merge_lora(weights, bad, 1.0f); }, {"output.weight", "ties"});
  expect_unchanged();
  auto other_arch = three_pair_adapter();
  other_arch.architecture = "qwen2";
  test::expect_error<InvalidArgumentError>([&] { merge_lora(weights, other_arch, 1.0f); }, {"qwen2", "llama"});
  expect_unchanged();
}

TEST(Lora, AdapterNormVectorsAreSkippedAsLlamaCppDoes) {
  Tiny tiny;
  gguf::Writer writer;
  auto adapter = three_pair_adapter();
  write_lora_adapter(adapter, tiny.dir / "plain.gguf", "x");
  // The same file plus a norm vector: read, the vector listed as ignored.
  const auto plain = gguf::File::open(tiny.dir / "plain.gguf");
  for (const auto& [key, value] : plain.metadata()) writer.set(key, value);
  for (const auto& info : plain.tensors()) writer.add_tensor(info.name, info.type, info.shape, plain.tensor_data(info));
  std::vector<float> ones(kEmbd, 1.0f);
  writer.add_tensor("blk.0.attn_norm.weight", DType::F32, {kEmbd},
                    std::span(reinterpret_cast<const uint8_t*>(ones.data()), ones.size() * sizeof(float)));
  writer.write(tiny.dir / "norms.gguf");
  const auto read = read_lora_adapter(tiny.dir / "norms.gguf");
  EXPECT_EQ(read.pairs.size(), 3u);
  EXPECT_EQ(read.ignored, std::vector<std::string>{"blk.0.attn_norm.weight"});
}

// Q and K adapters carry llama.cpp's row order; a Llama loaded from its Hugging Face export keeps
// Hugging Face's, so the merge reorders B's rows there. Same adapter, same logits on both.
TEST(Lora, QkAdaptersGiveTheSameFunctionOnGgufAndHuggingFaceFiles) {
  Tiny tiny(DType::F32, /*tokenizer=*/true);
  ConvertOptions convert;
  convert.out_dir = (tiny.dir / "hf").string();
  convert_gguf_to_hf(tiny.path.string(), convert);
  LoraAdapter adapter;
  adapter.architecture = "llama";
  adapter.pairs = {random_pair("blk.0.attn_q.weight", kEmbd, kEmbd, 3, 11),
                   random_pair("blk.1.attn_k.weight", 32, kEmbd, 3, 13)};
  for (auto& p : adapter.pairs)
    for (auto& x : p.b) x *= 5;  // large enough to move the logits well beyond rounding
  write_lora_adapter(adapter, tiny.dir / "qk.gguf", "qk");
  const std::vector<TokenId> ids = {1, 5, 9, 2, 7, 3, 11, 4};
  auto logits = [&](const std::filesystem::path& path, bool with_adapter) {
    LoadOptions options;
    if (with_adapter) options.loras = {{tiny.dir / "qk.gguf", 1.0f}};
    Session session(Model::load(path, options), {.n_ctx = 16, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
    return test::session_logits(session, ids);
  };
  const auto gguf_plain = logits(tiny.path, false), gguf_lora = logits(tiny.path, true);
  const auto hf_lora = logits(tiny.dir / "hf", true);
  double effect = 0, difference = 0;
  for (size_t i = 0; i < gguf_lora.size(); ++i) {
    effect = std::max(effect, double(std::abs(gguf_lora[i] - gguf_plain[i])));
    difference = std::max(difference, double(std::abs(gguf_lora[i] - hf_lora[i])));
  }
  EXPECT_GT(effect, 0.05);  // the adapter changes the function
  EXPECT_LT(difference, 1e-4) << "effect " << effect;  // identically on both files
}

}  // namespace
}  // namespace lathe
