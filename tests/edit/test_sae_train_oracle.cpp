// An SAE trained by edit/sae_train.hpp on the tiny llama and written in SAELens's format, read
// back by tests/oracle/sae_oracle.py (json + safetensors.numpy, not lathe's reader): lathe's
// encoding of the training rows equals SAELens's TopK formula computed by numpy in float64.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "edit/sae.hpp"
#include "edit/sae_train.hpp"
#include "io/safetensors.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

std::vector<float> tensor(const safetensors::File& file, const char* name) {
  const auto& info = file.tensor(name);
  return dequantize(info.type, file.tensor_data(info), static_cast<int64_t>(info.n_elements()));
}

TEST(SaeTrainOracle, TrainedSaeEncodesAsSaeLensFormula) {
  test::TempDir dir("sae_train_oracle");
  test::TinyModel tiny;
  tiny.add_tokenizer();
  const auto model = Model::load(tiny.write(dir, "tiny.gguf"));
  std::mt19937 rng(5);
  std::uniform_int_distribution<TokenId> token(0, static_cast<TokenId>(test::kTinyTokens) - 1);
  std::vector<std::vector<TokenId>> sequences(8, std::vector<TokenId>(32));
  for (auto& s : sequences)
    for (auto& t : s) t = token(rng);
  const auto rows = collect_rows(model, sequences, HookSite::parse("blocks.0.resid_mid"), 1 << 20, {.n_threads = 1});
  const int64_t n = static_cast<int64_t>(rows.size()) / test::kEmbd;
  ASSERT_EQ(n, 8 * 32);
  SaeTrainer trainer(rows.data(), n, test::kEmbd,
                     {.d_sae = 96, .k = 6, .batch = 32, .steps = 100, .lr = 5e-3, .seed = 9, .n_threads = 1});
  while (!trainer.done()) trainer.step();
  write_sae(trainer.sae("blocks.0.hook_resid_mid"), dir / "sae", {{"model_name", "tiny.gguf"}});

  safetensors::Writer writer;
  writer.add_tensor("x", DType::F32, {static_cast<uint64_t>(n), test::kEmbd},
                    {reinterpret_cast<const uint8_t*>(rows.data()), rows.size() * sizeof(float)});
  writer.write(dir / "rows.safetensors");
  const auto r = test::run_oracle("sae_oracle.py", {"encode", (dir / "sae").string(), (dir / "rows.safetensors").string(),
                                                    (dir / "expected.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto expected = safetensors::File::open(dir / "expected.safetensors");
  const auto f_ref = tensor(expected, "f"), gap = tensor(expected, "gap");

  const Sae sae = load_sae(dir / "sae");
  const auto f = sae_encode(sae, rows.data(), n);
  ASSERT_EQ(f.size(), f_ref.size());
  double scale = 1;
  for (float v : f_ref) scale = std::max(scale, double(std::abs(v)));
  int64_t checked = 0;
  for (int64_t row = 0; row < n; ++row) {
    if (gap[row] < 1e-4 * scale) continue;  // float32 may pick the other of two near-equal features
    ++checked;
    for (int64_t j = 0; j < sae.d_sae; ++j) {
      const size_t i = static_cast<size_t>(row * sae.d_sae + j);
      ASSERT_EQ(f[i] > 0, f_ref[i] > 0) << "row " << row << " feature " << j;
      ASSERT_NEAR(f[i], f_ref[i], 1e-5 * scale) << "row " << row << " feature " << j;
    }
  }
  EXPECT_GT(checked, n * 9 / 10);
}

}  // namespace
}  // namespace lathe::edit
