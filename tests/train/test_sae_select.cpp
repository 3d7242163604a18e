// Choosing SAE features for a gate (src/train/sae_select.hpp) on the tiny synthetic llama with a
// random SAE: the attribution criterion's predicted loss changes against the engine's actual
// losses with the gate editing each feature alone; both criteria's ordering, scores and errors.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "edit/sae.hpp"
#include "edit/sae_test_support.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "train/evaluate.hpp"
#include "train/sae_select.hpp"

namespace lathe::train {
namespace {

const ComputeOptions kExact{.n_threads = 1, .kv_type = KvType::F32};

struct Fixture {
  test::TempDir dir{"sae_select"};
  std::shared_ptr<const Model> model;
  std::shared_ptr<const edit::Sae> sae;
  HookSite site = HookSite::parse("blocks.0.resid_post");
  std::vector<Example> forget, retain;

  Fixture() {
    test::TinyModel tiny;
    tiny.add_tokenizer();
    model = Model::load(tiny.write(dir, "tiny.gguf"));
    test::write_test_sae(dir.path() / "sae", {.architecture = "standard", .d_in = 64, .d_sae = 24,
                                              .hook = "blocks.0.hook_resid_post", .seed = 3, .enc_scale = 3.0f});
    sae = std::make_shared<const edit::Sae>(edit::load_sae(dir.path() / "sae"));
    forget = {example({1, 5, 9, 2, 7, 3, 11}, 3), example({4, 8, 15, 16, 23, 1}, 2)};
    retain = {example({2, 6, 10, 14, 18, 22, 26}, 3), example({30, 12, 7, 7, 9}, 2)};
  }
  // Tokens whose positions from `first` on predict the next token (the "answer").
  static Example example(std::vector<int32_t> tokens, size_t first) {
    Example e{tokens, std::vector<int32_t>(tokens.size(), -1)};
    for (size_t t = first; t + 1 < tokens.size(); ++t) e.targets[t] = tokens[t + 1];
    return e;
  }
};

// Mean over examples of each example's mean answer cross-entropy, by the engine.
double engine_loss(const Fixture& f, const std::vector<Example>& examples, std::shared_ptr<ResidualHooks> hooks) {
  const auto score = score_examples(f.model, examples, kExact, {}, std::move(hooks));
  double sum = 0;
  for (const auto& e : score.examples) sum += -e.logprob / static_cast<double>(e.scored);
  return sum / static_cast<double>(score.examples.size());
}

// Attribution is first order: for a small edit (each feature scaled by 0.999) it predicts the
// engine's change of the loss with the gate editing that feature alone (measured centrally, from
// the scales 0.999 and 1.001).
TEST(SaeSelect, AttributionPredictsTheLossChangeOfEachFeaturesEdit) {
  Fixture f;
  const FeatureSelectOptions options{.by = FeatureCriterion::Attribution,
                                     .count = 8,
                                     .edit = {.id = 0, .kind = edit::SaeFeatureEdit::Kind::Scale, .value = 0.999f},
                                     .gate = {},
                                     .rows = FeatureSelectOptions::Rows::All,
                                     .compute = kExact,
                                     .on_progress = {}};
  const auto predicted = sae_feature_effects(f.model, *f.sae, f.site, f.forget, options);
  ASSERT_EQ(predicted.size(), 24u);
  auto scaled_loss = [&](uint32_t j, float scale) {
    auto hooks = std::make_shared<ResidualHooks>();
    hooks->transform(f.site, std::make_shared<edit::SaeGate>(
                                 f.sae, std::vector<edit::SaeFeatureEdit>{{j, edit::SaeFeatureEdit::Kind::Scale, scale}},
                                 edit::SaeGateOptions{}));
    return engine_loss(f, f.forget, hooks);
  };
  int checked = 0;
  for (uint32_t j = 0; j < 24; ++j) {
    // Central: the edit's second-order term (large for strongly active features) cancels.
    const double actual = (scaled_loss(j, 0.999f) - scaled_loss(j, 1.001f)) / 2;
    if (std::abs(actual) < 1e-6) {  // a feature that never fires (or barely matters): both ~0
      EXPECT_LT(std::abs(predicted[j]), 1e-5) << "feature " << j;
      continue;
    }
    EXPECT_NEAR(predicted[j], actual, 0.02 * std::abs(actual) + 1e-6) << "feature " << j;
    ++checked;
  }
  EXPECT_GE(checked, 6);  // enough features fire for the check to mean something
}

TEST(SaeSelect, BothCriteriaRankByForgetMinusRetain) {
  Fixture f;
  for (const auto by : {FeatureCriterion::Activation, FeatureCriterion::Attribution}) {
    SCOPED_TRACE(std::string(feature_criterion_name(by)));
    size_t calls = 0;
    const FeatureSelectOptions options{.by = by,
                                       .count = 5,
                                       .edit = {.id = 0, .kind = edit::SaeFeatureEdit::Kind::Set, .value = 0.0f},
                                       .gate = {},
                                       .rows = FeatureSelectOptions::Rows::Answers,
                                       .compute = kExact,
                                       .on_progress = [&](size_t done, size_t total) {
                                         EXPECT_EQ(done, ++calls);
                                         EXPECT_EQ(total, 4u);
                                       }};
    const auto chosen = select_sae_features(f.model, f.sae, f.site, f.forget, f.retain, options);
    EXPECT_EQ(calls, 4u);
    ASSERT_FALSE(chosen.empty());
    EXPECT_LE(chosen.size(), 5u);
    for (size_t i = 0; i < chosen.size(); ++i) {
      EXPECT_GT(chosen[i].score, 0.0);
      EXPECT_DOUBLE_EQ(chosen[i].score, chosen[i].forget - chosen[i].retain);
      if (i > 0) {
        EXPECT_GE(chosen[i - 1].score, chosen[i].score);
      }
    }
    if (by == FeatureCriterion::Attribution) {
      // The prompt rows' edits count only with Rows::All.
      auto all_rows = options;
      all_rows.rows = FeatureSelectOptions::Rows::All;
      EXPECT_NE(sae_feature_effects(f.model, *f.sae, f.site, f.forget, all_rows),
                sae_feature_effects(f.model, *f.sae, f.site, f.forget, options));
      // The scores are the per-set effects' difference.
      const auto forget = sae_feature_effects(f.model, *f.sae, f.site, f.forget, options);
      const auto retain = sae_feature_effects(f.model, *f.sae, f.site, f.retain, options);
      for (const auto& c : chosen) {
        EXPECT_DOUBLE_EQ(c.forget, forget[c.id]);
        EXPECT_DOUBLE_EQ(c.retain, retain[c.id]);
      }
      // ...and nothing left out scores higher than the last one chosen.
      if (chosen.size() == 5u) {
        for (uint32_t j = 0; j < 24; ++j) {
          if (std::none_of(chosen.begin(), chosen.end(), [&](const auto& c) { return c.id == j; })) {
            EXPECT_LE(forget[j] - retain[j], chosen.back().score);
          }
        }
      }
    }
  }
}

TEST(SaeSelect, BadRequestsAreClearErrors) {
  Fixture f;
  FeatureSelectOptions options;
  options.compute = kExact;
  test::expect_error<InvalidArgumentError>(
      [&] { select_sae_features(f.model, f.sae, f.site, {}, f.retain, options); }, {"forget and retain"});
  options.count = 0;
  test::expect_error<InvalidArgumentError>(
      [&] { select_sae_features(f.model, f.sae, f.site, f.forget, f.retain, options); }, {"0", "give 1 or more"});
  options.count = 3;
  test::expect_error<InvalidArgumentError>(
      [&] { select_sae_features(f.model, f.sae, HookSite::parse("blocks.5.resid_post"), f.forget, f.retain, options); },
      {"blocks.5"});
  // The same set as forget and retain: every score is 0, none is chosen.
  test::expect_error<InvalidArgumentError>(
      [&] { select_sae_features(f.model, f.sae, f.site, f.forget, f.forget, options); }, {"scores above 0", "attribution"});
  EXPECT_EQ(parse_feature_criterion("activation", "--by"), FeatureCriterion::Activation);
  test::expect_error<InvalidArgumentError>([] { parse_feature_criterion("gradient", "--by"); },
                                           {"--by", "\"gradient\"", "activation or attribution"});
}

}  // namespace
}  // namespace lathe::train
