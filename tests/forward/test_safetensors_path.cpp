// The Hugging Face path (config.json + safetensors, Q/K rows in HF order, NeoX RoPE pairs) must
// give the GGUF path's logits (permuted Q/K rows, adjacent RoPE pairs). Both models hold the same
// F32 numbers: the default model re-typed to F32 by `lathe quantize`, and the default model
// exported by `lathe convert` (F32). Remaining differences are float summation order only.
#include <gtest/gtest.h>

#include <cmath>

#include "common/test_support.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

TEST(SafetensorsPath, SameLogitsAsGguf) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("st_path");
  const auto gguf_f32 = dir / "model.F32.gguf";
  const auto hf_dir = dir / "hf";
  auto r = test::run_command({test::cli_path().string(), "quantize", test::default_model().string(), gguf_f32.string(), "F32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_command({test::cli_path().string(), "convert", test::default_model().string(), "-o", hf_dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const auto gguf_model = Model::load(gguf_f32);
  const auto hf_model = Model::load(hf_dir);
  EXPECT_EQ(hf_model->summary().format, "safetensors");
  EXPECT_EQ(gguf_model->summary().weight_type, "F32");
  const auto ids = gguf_model->tokenize("The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away,", false);
  ASSERT_EQ(ids, hf_model->tokenize("The quick brown fox jumps over the lazy dog. Once upon a time, in a land far away,", false));

  Session a(gguf_model, {.n_ctx = 128, .compute = {.n_threads = 2}});
  Session b(hf_model, {.n_ctx = 128, .compute = {.n_threads = 2, .kv_type = KvType::F32}});
  Session a32(gguf_model, {.n_ctx = 128, .compute = {.n_threads = 2, .kv_type = KvType::F32}});
  a.eval(ids, true);
  a32.eval(ids, true);
  b.eval(ids, true);
  double max_diff = 0, max_logit = 0, max_diff_f16kv = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto la = a32.logits_at(t), lb = b.logits_at(t), l16 = a.logits_at(t);
    for (size_t v = 0; v < la.size(); ++v) {
      max_diff = std::max(max_diff, double(std::abs(la[v] - lb[v])));
      max_diff_f16kv = std::max(max_diff_f16kv, double(std::abs(l16[v] - lb[v])));
      max_logit = std::max(max_logit, double(std::abs(la[v])));
    }
  }
  std::cout << "max |logit| " << max_logit << ", max |diff| F32 KV " << max_diff << ", F16 KV vs F32 KV " << max_diff_f16kv << "\n";
  // Same numbers, same kernels; only the order of a few float sums differs.
  EXPECT_LE(max_diff, 1e-4 * max_logit);
  // An F16 KV cache rounds keys/values to 11 significant bits: a visible but small change.
  EXPECT_LE(max_diff_f16kv, 2e-2 * max_logit);
}

}  // namespace
}  // namespace lathe
