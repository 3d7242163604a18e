// LoRA against llama.cpp (llama-cpp-python's lora_path, tests/oracle/lora_oracle.py) on the F32
// variant of the default model, where merging the adapter into the weights and llama.cpp's
// run-time W x + s B (A x) compute the same function up to float32 rounding:
// - an adapter written by gguf-py (not by lathe) on every matrix of every layer, with alpha and a
//   scale, plus norm vectors that both engines skip: lathe --lora vs llama.cpp --lora;
// - the adapter `lathe ablate --lora-out` writes for an abliteration edit: llama.cpp applying it to
//   the original model vs lathe running the edited model (the export round-trips through llama.cpp).
// - an adapter trained by `lathe finetune`: llama.cpp --lora vs lathe --lora.
// Each also measures how far the adapter moves llama.cpp's own logits, so that agreement cannot
// come from an adapter that does nothing.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "api/model_impl.hpp"
#include "common/test_support.hpp"
#include "edit/ablation.hpp"
#include "edit/ablation_adapter.hpp"
#include "lathe/lathe.hpp"
#include "weights/editable.hpp"
#include "weights/lora.hpp"

namespace lathe {
namespace {

const char* kText =
    "The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father had "
    "taught him. At the top he trimmed the wick, polished the great lens and watched the ships pass the reef. "
    "Some nights the fog rolled in so thick that he could not see his own hands, and then he rang the bell until "
    "dawn. Nobody in the village remembered a wreck on his watch, and the children said he never slept at all.";

std::filesystem::path f32_variant(const test::TempDir& dir) {
  const auto out = dir / "SmolLM2-135M-Instruct.F32.gguf";
  const auto r = test::run_command({test::cli_path().string(), "quantize", test::default_model().string(),
                                    out.string(), "F32"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

// Three teacher-forced windows of the text; lathe's logits for each to DIR/logits_<i>.f32.
void write_lathe_logits(const test::TempDir& dir, const std::shared_ptr<const Model>& model) {
  const auto ids = model->tokenize(kText, false);
  ASSERT_GE(ids.size(), 72u);
  std::vector<std::vector<TokenId>> sequences;
  for (size_t start : {0, 4, 8}) sequences.emplace_back(ids.begin() + start, ids.begin() + start + 64);
  Session session(model, {.n_ctx = 128, .compute = {.n_threads = 2, .kv_type = KvType::F32}});
  for (size_t i = 0; i < sequences.size(); ++i) {
    session.reset();
    session.eval(sequences[i], true);
    std::ofstream out(dir / ("logits_" + std::to_string(i) + ".f32"), std::ios::binary);
    for (size_t t = 0; t < sequences[i].size(); ++t) {
      const auto row = session.logits_at(t);
      out.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size_bytes()));
    }
  }
  test::write_file(dir / "sequences.json", nlohmann::json(sequences).dump());
}

nlohmann::json compare(const test::TempDir& dir, const std::filesystem::path& model, const std::filesystem::path& lora,
                       float scale) {
  const auto r = test::run_oracle("lora_oracle.py", {"compare", "--model", model.string(), "--sequences",
                                                     (dir / "sequences.json").string(), "--lathe-dir", dir.path().string(),
                                                     "--lora", lora.string(), "--scale", std::to_string(scale)});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto report = nlohmann::json::parse(r.out);
  std::cout << "lora vs llama.cpp: " << report.dump() << "\n";
  return report;
}

// lathe within float32 noise of llama.cpp, and the adapter's own effect far beyond that noise.
void expect_same_function(const nlohmann::json& report) {
  const auto& ours = report.at("lathe_vs_llama");
  const auto& effect = report.at("llama_vs_without");
  EXPECT_GE(ours.at("top1_agreement").get<double>(), 0.99);
  EXPECT_LT(ours.at("mean_abs_diff").get<double>(), 0.01);
  EXPECT_GT(effect.at("mean_abs_diff").get<double>(), 30 * ours.at("mean_abs_diff").get<double>());
  EXPECT_LT(effect.at("top1_agreement").get<double>(), 0.97);  // the adapter changes predictions
}

TEST(LoraVsLlamaCpp, AdapterFromGgufPyGivesLlamaCppsLogits) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("lora_oracle");
  const auto base = f32_variant(dir);
  const auto adapter = dir / "adapter.gguf";
  const auto made = test::run_oracle("lora_oracle.py", {"make", "--base", base.string(), "--out", adapter.string(),
                                                        "--rank", "4", "--alpha", "8", "--std", "0.03", "--norms"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const float scale = 0.75f;
  LoadOptions options;
  options.loras = {{adapter, scale}};
  const auto model = Model::load(base, options);
  ASSERT_EQ(model->summary().loras.size(), 1u);
  EXPECT_EQ(model->summary().loras[0].matrices, 30u * 7);  // 30 layers x q, k, v, o, gate, up, down
  EXPECT_EQ(model->summary().loras[0].ignored.size(), 30u);  // the norm vectors
  write_lathe_logits(dir, model);
  expect_same_function(compare(dir, base, adapter, scale));
}

TEST(LoraVsLlamaCpp, AblationAdapterOnTheOriginalIsTheEditedModel) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("lora_ablation_oracle");
  const auto base = f32_variant(dir);
  auto model = Model::load_mutable(base);
  auto& weights = internals(*model).weights;
  // Directions from the model's own hidden size; the edit's math does not depend on where they came
  // from (the study's direction search is tested elsewhere), only on the weights and the kernel.
  edit::RefusalDirections directions;
  directions.n_layer = weights.hp.n_layer;
  directions.n_embd = weights.hp.n_embd;
  for (uint32_t l = 0; l < directions.n_layer; ++l) {
    std::vector<double> v(directions.n_embd);
    for (uint32_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37 * i + l) + 0.2 * std::cos(1.3 * i);
    double n = 0;
    for (double x : v) n += x * x;
    for (double& x : v) x /= std::sqrt(n);
    directions.per_layer.push_back(std::move(v));
  }
  edit::AblationParams params;
  params.direction_index = 14.5;
  params.components[EditComponent::AttnOutput] = {.max_weight = 1.5, .max_weight_position = 12, .min_weight = 0.3,
                                                  .min_weight_distance = 10};
  params.components[EditComponent::MlpDown] = {.max_weight = 1.2, .max_weight_position = 18, .min_weight = 0.5,
                                               .min_weight_distance = 8};
  const auto made = edit::ablation_adapter(weights, directions, params, false, 1);
  EXPECT_EQ(made.max_rel_error, 0.0);
  const auto adapter = dir / "ablation.lora.gguf";
  write_lora_adapter(made.adapter, adapter, "test");
  make_editable(weights, kAllEditComponents);
  const auto stats = edit::apply_ablation(weights, directions, params, false);
  EXPECT_EQ(stats.n_matrices, made.adapter.pairs.size());
  write_lathe_logits(dir, model);  // lathe: the edited model
  expect_same_function(compare(dir, base, adapter, 1.0f));  // llama.cpp: the original + the adapter
}

// An adapter trained by `lathe finetune` (llama.cpp's LoRA GGUF, as -o writes it) loads in llama.cpp
// and computes what lathe computes with it (--lora). Trained a few steps on the default model (Q4_1,
// as users do) on the text itself, so that it moves the predictions on these windows; both engines
// apply it to the F32 variant, where they agree to float32 rounding.
TEST(LoraVsLlamaCpp, AdapterTrainedByLatheFinetuneGivesLlamaCppsLogits) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("lora_finetune_oracle");
  const auto base = f32_variant(dir);
  const auto data = dir / "text.jsonl";
  test::write_file(data, nlohmann::json{{"text", kText}}.dump() + "\n");
  const auto adapter = dir / "trained.lora.gguf";
  const auto trained = test::run_command({test::cli_path().string(), "finetune", test::default_model().string(),
                                          "--data", data.string(), "-o", adapter.string(), "--steps", "6", "--lr",
                                          "5e-3", "--lora-rank", "4", "--lora-alpha", "8", "--seed", "3", "-t", "2"},
                                         std::chrono::seconds{300});
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  LoadOptions options;
  options.loras = {{adapter, 1.0f}};
  const auto model = Model::load(base, options);
  ASSERT_EQ(model->summary().loras.size(), 1u);
  EXPECT_EQ(model->summary().loras[0].matrices, 30u * 7);
  write_lathe_logits(dir, model);  // what `lathe run --lora` computes (the same load and session)
  expect_same_function(compare(dir, base, adapter, 1.0f));
}

}  // namespace
}  // namespace lathe
