// On the default model (SmolLM2-135M-Instruct): chat_prompt_tokens against the chat template as
// jinja2 renders it (the rendering `lathe run --chat` prints), and train_control_vector's layers,
// normalization and methods.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "edit/control_vector_train.hpp"
#include "edit/prompt_file.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

using nlohmann::json;

std::shared_ptr<const Model> default_model() {
  static const auto model = Model::load(test::default_model());
  return model;
}

// SmolLM2's template (read by gguf-py) rendered by jinja2 over `messages`, with the generation prompt.
std::string jinja2_rendering(const json& messages) {
  const auto source = test::run_oracle("chat_template_oracle.py", {"gguf-template", test::default_model().string()});
  EXPECT_EQ(source.exit_code, 0) << source.err;
  const json context = {{"messages", messages}, {"add_generation_prompt", true}, {"bos_token", "<|im_start|>"},
                        {"eos_token", "<|im_end|>"}, {"tools", nullptr}, {"documents", nullptr}};
  test::TempDir dir("chat_prompt");
  test::write_file(dir / "cases.json", json::array({{{"template", source.out}, {"context", context}}}).dump());
  const auto r = test::run_oracle("chat_template_oracle.py", {"render", (dir / "cases.json").string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const json out = json::parse(r.out);
  EXPECT_TRUE(out[0]["ok"].get<bool>()) << out.dump();
  return out[0]["out"].get<std::string>();
}

TEST(ChatPromptTokens, EqualTheTemplateRenderingTokenized) {
  LATHE_REQUIRE_MODEL();
  const auto model = default_model();
  const std::string prompt = "Write a haiku about \"rain\" <|im_end|>\n";
  const std::string with_system = jinja2_rendering(
      json::array({{{"role", "system"}, {"content", "You are a helpful assistant."}}, {{"role", "user"}, {"content", prompt}}}));
  EXPECT_EQ(with_system.rfind("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n", 0), 0u);
  const auto ids = chat_prompt_tokens(*model, prompt);
  EXPECT_EQ(ids, model->tokenize(with_system, /*add_special=*/false, /*parse_special=*/true));
  // The template starts with <|im_start|>, SmolLM2's BOS: it is not doubled.
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], model->bos());
  EXPECT_NE(ids[1], model->bos());
  EXPECT_EQ(model->detokenize(ids), with_system);

  // No system message: the template's own default system prompt, as `lathe run --chat` renders it.
  const std::string no_system = jinja2_rendering(json::array({{{"role", "user"}, {"content", prompt}}}));
  EXPECT_EQ(chat_prompt_tokens(*model, prompt, {.system = "", .use_template = true}),
            model->tokenize(no_system, false, true));
  const auto cli = test::run_command({test::cli_path().string(), "run", "-m", test::default_model().string(), "--chat",
                                      "-p", prompt, "-n", "1", "--temp", "0"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out.rfind(no_system, 0), 0u) << cli.out;

  // Without the template: the raw text with special tokens parsed, as `lathe run` does.
  const auto raw = chat_prompt_tokens(*model, prompt, {.system = "ignored", .use_template = false});
  EXPECT_EQ(raw, model->tokenize(prompt, true, true));
  EXPECT_EQ(model->detokenize(raw), prompt);
}

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += double(a[i]) * b[i];
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
  }
  return dot / std::sqrt(na * nb);
}

TEST(TrainControlVector, LayersNormalizationAndMethods) {
  LATHE_REQUIRE_MODEL();
  const auto model = default_model();
  const uint32_t n_layer = model->summary().n_layer;
  const std::vector<std::string> positive{"I love this wonderful sunny day!", "Everything is great and joyful."};
  const std::vector<std::string> negative{"I hate this miserable rainy day.", "Everything is awful and gloomy."};
  ControlVectorTraining options;
  size_t progress_calls = 0;
  options.progress = [&](size_t done, size_t total) {
    ++progress_calls;
    EXPECT_EQ(total, 2u);
    EXPECT_EQ(done, progress_calls);
  };
  const ControlVector mean = train_control_vector(model, positive, negative, options);
  EXPECT_EQ(progress_calls, 2u);
  EXPECT_EQ(mean.n_embd, model->summary().n_embd);
  EXPECT_EQ(mean.model_hint, "llama");
  ASSERT_EQ(mean.directions.size(), n_layer - 1);
  EXPECT_EQ(mean.directions.begin()->first, 1u);
  EXPECT_EQ(mean.directions.rbegin()->first, n_layer - 1);
  for (const auto& [layer, v] : mean.directions) {
    double norm = 0;
    for (float x : v) norm += double(x) * x;
    EXPECT_NEAR(norm, 1.0, 1e-5) << "unit length, as llama.cpp's generator writes, layer " << layer;
  }

  // PCA of a single pair is that pair's normalized difference, i.e. the mean method's result.
  options.progress = {};
  options.layers = std::pair<uint32_t, uint32_t>{5, 7};
  const std::vector<std::string> one_pos{positive[0]}, one_neg{negative[0]};
  const ControlVector mean_one = train_control_vector(model, one_pos, one_neg, options);
  options.method = DirectionMethod::Pca;
  const ControlVector pca_one = train_control_vector(model, one_pos, one_neg, options);
  ASSERT_EQ(pca_one.directions.size(), 3u);
  for (uint32_t layer = 5; layer <= 7; ++layer) {
    ASSERT_EQ(pca_one.directions.count(layer), 1u);
    EXPECT_NEAR(cosine(pca_one.directions.at(layer), mean_one.directions.at(layer)), 1.0, 1e-5) << layer;
  }
  // With two pairs, the sign of the PCA direction follows the mean difference.
  const ControlVector pca = train_control_vector(model, positive, negative, options);
  for (uint32_t layer = 5; layer <= 7; ++layer) EXPECT_GT(cosine(pca.directions.at(layer), mean.directions.at(layer)), 0.0);

  EXPECT_THROW(train_control_vector(model, positive, one_neg, options), InvalidArgumentError);
  EXPECT_THROW(train_control_vector(model, one_pos, one_pos, options), InvalidArgumentError) << "identical prompts";
  options.layers = std::pair<uint32_t, uint32_t>{0, 0};
  EXPECT_THROW(train_control_vector(model, one_pos, one_neg, options), InvalidArgumentError) << "layer 0 only";
  // A given range is used as given: one reaching past the steerable layers is refused (naming
  // --layers), not silently cut to them.
  for (const auto& range : {std::pair<uint32_t, uint32_t>{0, 5}, std::pair<uint32_t, uint32_t>{5, 99}}) {
    options.layers = range;
    test::expect_error<InvalidArgumentError>([&] { train_control_vector(model, one_pos, one_neg, options); },
                                             {"--layers", fmt::format("{}-{}", range.first, range.second)});
  }
}

}  // namespace
}  // namespace lathe::edit
