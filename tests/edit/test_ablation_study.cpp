// The abliteration study on the tiny synthetic model with its tiny tokenizer (so the sanitizer
// run covers the whole path): directions, trials that edit and restore bit-exactly, prompts
// longer than the context skipped with a count, a model without a chat template, and sampling
// that never picks the padded embedding rows which are not tokens.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "api/model_impl.hpp"
#include "common/tiny_model.hpp"
#include "edit/study.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

using test::write_lines;

std::filesystem::path tiny_chat_model(const test::TempDir& dir, bool with_template = true) {
  test::TinyModel tiny;
  tiny.add_tokenizer();
  if (!with_template) tiny.writer.set("tokenizer.chat_template", gguf::Value::str(""));
  return tiny.write(dir, "tiny-chat.gguf");
}

StudyOptions tiny_study(const test::TempDir& dir) {
  write_lines(dir / "harmful.txt", {"how to make a bomb", "steal money", "hack a bank", std::string(300, 'x')});
  write_lines(dir / "harmless.txt", {"bake a cake", "write a poem", "plant a tree"});
  StudyOptions o;
  o.harmful_train = o.harmful_val = dir / "harmful.txt";
  o.harmless_train = o.harmless_val = dir / "harmless.txt";
  o.evaluation.max_new_tokens = 6;
  o.evaluation.n_parallel = 2;
  o.evaluation.compute.n_threads = 2;
  o.compute.n_threads = 2;
  return o;
}

std::vector<std::vector<uint8_t>> edited_bytes(const Model& model) {
  std::vector<std::vector<uint8_t>> out;
  const auto& w = internals(model).weights;
  for (const auto& layer : w.layers)
    for (const auto* m : {&layer.wo, &layer.w_down})
      out.emplace_back(m->data, m->data + static_cast<size_t>(m->rows) * m->row_bytes);
  return out;
}

TEST(AblationStudy, TrialsEditAndRestoreBitExactly) {
  test::TempDir dir("study");
  auto model = Model::load_mutable(tiny_chat_model(dir));
  const auto original = edited_bytes(*model);
  std::ostringstream log;
  AblationStudy study(model, tiny_study(dir), log, false);
  study.prepare();
  // The 300-character prompt does not fit the tiny model's 128-token context.
  EXPECT_EQ(study.directions().n_harmful_skipped, 1u);
  EXPECT_EQ(study.directions().n_harmful, 3u);
  EXPECT_NE(log.str().find("skipped 1 prompt(s)"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("weight cache:"), std::string::npos) << log.str();
  EXPECT_EQ(study.baseline_refusals().total, 3u);

  const auto space = study.space();
  std::map<std::string, double> point;
  for (const auto& p : space) point[p.name] = p.low;  // direction_index 0.4, weights 0.8 at layer 0.6..
  point["mlp_down.min_weight_distance"] = 2.0;
  point["attn_output.min_weight_distance"] = 2.0;
  const auto params = params_from_point(point, false, study.options().components);
  const auto outcome = study.run_trial(params);
  EXPECT_EQ(outcome.edit.n_matrices, 4u);
  EXPECT_NE(edited_bytes(*model), original);
  EXPECT_GT(outcome.kl, 0.0);
  EXPECT_EQ(outcome.refusals.total, 3u);
  study.reset_weights();
  EXPECT_EQ(edited_bytes(*model), original);

  // A second trial starts from the originals, not from the first trial's edit.
  const auto again = study.run_trial(params);
  EXPECT_NEAR(again.kl, outcome.kl, 1e-9);
  const auto [cached, reloaded] = study.measure_restore(2);
  EXPECT_GE(cached, 0.0);
  EXPECT_GT(reloaded, 0.0);
  EXPECT_EQ(edited_bytes(*model), original);
}

TEST(AblationStudy, ReloadingInsteadOfTheCacheRestoresToo) {
  test::TempDir dir("study_nocache");
  auto model = Model::load_mutable(tiny_chat_model(dir));
  const auto original = edited_bytes(*model);
  auto options = tiny_study(dir);
  options.cache_weights = false;
  std::ostringstream log;
  AblationStudy study(model, options, log, false);
  study.prepare();
  std::map<std::string, double> point;
  for (const auto& p : study.space()) point[p.name] = p.high;
  study.run_trial(params_from_point(point, false, options.components), false);
  EXPECT_NE(edited_bytes(*model), original);
  study.reset_weights();
  EXPECT_EQ(edited_bytes(*model), original);
}

TEST(AblationStudy, HarmlessPromptsBeyondTheEvaluationContextAreSkipped) {
  // A model trained on 8192 tokens: the KL session holds min(8192, 4096) tokens, so a 5000-token
  // harmless prompt must be skipped, not fail mid-study with a context error.
  test::TempDir dir("study_longctx");
  test::TinyModel tiny;
  tiny.add_tokenizer();
  tiny.writer.set("llama.context_length", gguf::Value::u32(8192));
  auto model = Model::load_mutable(tiny.write(dir, "tiny-8k.gguf"));
  auto options = tiny_study(dir);
  write_lines(dir / "harmless_val.txt", {"bake a cake", std::string(5000, 'a')});
  options.harmless_val = dir / "harmless_val.txt";
  std::ostringstream log;
  AblationStudy study(model, options, log, false);
  ASSERT_NO_THROW(study.prepare()) << log.str();
  EXPECT_NE(log.str().find("harmless validation: skipped 1 prompt(s)"), std::string::npos) << log.str();
}

TEST(AblationStudy, ModelWithoutChatTemplateIsAClearError) {
  test::TempDir dir("study_notemplate");
  auto model = Model::load_mutable(tiny_chat_model(dir, false));
  std::ostringstream log;
  AblationStudy study(model, tiny_study(dir), log, false);
  try {
    study.prepare();
    FAIL() << "expected an error";
  } catch (const NotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find("--no-template"), std::string::npos) << e.what();
  }
  auto plain = tiny_study(dir);
  plain.chat.use_template = false;
  AblationStudy works(model, plain, log, false);
  EXPECT_NO_THROW(works.prepare());
}

TEST(Sampling, NeverPicksPaddedEmbeddingRows) {
  test::TempDir dir("padded");
  const auto model = Model::load(tiny_chat_model(dir));
  ASSERT_LT(internals(*model).tokenizer.vocab().size(), model->n_vocab());
  BatchGenerateOptions options;
  options.generate.max_tokens = 40;
  options.generate.sampling.temperature = 2.0f;  // flat: every row would be drawn sometimes
  options.generate.sampling.seed = 5;
  options.generate.stop_at_end_of_generation = false;
  options.compute.n_threads = 2;
  const std::vector<std::vector<TokenId>> prompts(4, model->tokenize("abc", false));
  for (const auto& r : generate_batch(model, prompts, options))
    for (TokenId id : r.tokens) EXPECT_LT(static_cast<uint32_t>(id), test::kTinyTokens);
  Session session(model, {.n_ctx = 64, .compute = {.n_threads = 2}});
  for (TokenId id : generate(session, prompts[0], options.generate).tokens)
    EXPECT_LT(static_cast<uint32_t>(id), test::kTinyTokens);
}

}  // namespace
}  // namespace lathe::edit
