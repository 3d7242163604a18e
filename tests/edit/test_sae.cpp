// SAEs in SAELens's format: every malformed or unsupported file is a typed error naming the file
// and the field or tensor; hook names; the feature spec; and the gate's identities (no edit, an
// edit to the same value, the reconstruction error kept) on small random SAEs.
#include <gtest/gtest.h>

#include <cmath>

#include "edit/sae.hpp"
#include "edit/sae_test_support.hpp"
#include "lathe/error.hpp"
#include "lathe/hooks.hpp"

namespace lathe::edit {
namespace {

using test::expect_error;
using test::TempDir;
using test::TestSae;

std::filesystem::path write(const TempDir& dir, const TestSae& s, const std::string& name = "sae") {
  test::write_test_sae(dir / name, s);
  return dir / name;
}

TEST(SaeLoad, ReadsEveryArchitectureFromDirectoryOrFile) {
  TempDir dir("sae");
  for (const char* arch : {"standard", "jumprelu", "topk"}) {
    const auto path = write(dir, {.architecture = arch}, arch);
    for (const auto& p : {path, path / "cfg.json", path / "sae_weights.safetensors"}) {
      const Sae sae = load_sae(p);
      EXPECT_EQ(sae_architecture_name(sae.architecture), arch);
      EXPECT_EQ(sae.d_in, 8);
      EXPECT_EQ(sae.d_sae, 16);
      EXPECT_EQ(sae.hook_name, "blocks.2.hook_resid_post");
      EXPECT_EQ(sae.w_enc_t.size(), 128u);
      EXPECT_EQ(sae.threshold.size(), std::string(arch) == "jumprelu" ? 16u : 0u);
      EXPECT_EQ(sae.k, std::string(arch) == "topk" ? 4 : 0);
    }
  }
}

TEST(SaeLoad, ReadsTheOlderLayout) {
  TempDir dir("sae");
  // SAELens < 6: hook_point at the top level, topk as the activation of a "standard" SAE.
  const auto path = write(dir, {.architecture = "standard",
                                .cfg_extra = {{"metadata", nullptr},
                                              {"hook_point", "blocks.1.hook_resid_pre"},
                                              {"activation_fn_str", "topk"},
                                              {"activation_fn_kwargs", {{"k", 3}}},
                                              {"normalize_activations", false}}});
  const Sae sae = load_sae(path);
  EXPECT_EQ(sae.architecture, SaeArchitecture::TopK);
  EXPECT_EQ(sae.k, 3);
  EXPECT_EQ(sae.normalization, SaeNormalization::None);
  EXPECT_EQ(sae.hook_name, "blocks.1.hook_resid_pre");
}

TEST(SaeLoad, MissingFilesAreNamed) {
  TempDir dir("sae");
  expect_error<NotFoundError>([&] { load_sae(dir / "nowhere"); }, {"nowhere", "cfg.json"});
  const auto path = write(dir, {});
  std::filesystem::remove(path / "sae_weights.safetensors");
  expect_error<NotFoundError>([&] { load_sae(path); }, {"sae_weights.safetensors"});
}

TEST(SaeLoad, MalformedConfigIsAFormatErrorNamingTheField) {
  TempDir dir("sae");
  auto path = write(dir, {});
  test::write_file(path / "cfg.json", "{not json");
  expect_error<FormatError>([&] { load_sae(path); }, {"cfg.json", "not valid JSON"});
  test::write_file(path / "cfg.json", "[1, 2]");
  expect_error<FormatError>([&] { load_sae(path); }, {"cfg.json", "object"});
  path = write(dir, {.cfg_extra = {{"d_sae", nullptr}}}, "no_d_sae");
  expect_error<FormatError>([&] { load_sae(path); }, {"cfg.json", "d_sae", "missing"});
  path = write(dir, {.cfg_extra = {{"d_in", -3}}}, "neg");
  expect_error<FormatError>([&] { load_sae(path); }, {"d_in", "-3"});
  path = write(dir, {.cfg_extra = {{"apply_b_dec_to_input", "yes"}}}, "bool");
  expect_error<FormatError>([&] { load_sae(path); }, {"apply_b_dec_to_input", "true or false"});
  path = write(dir, {.architecture = "topk", .cfg_extra = {{"k", 17}}}, "big_k");
  expect_error<FormatError>([&] { load_sae(path); }, {"k", "17", "1..d_sae (16)"});
  path = write(dir, {.architecture = "topk", .cfg_extra = {{"k", nullptr}}}, "no_k");
  expect_error<FormatError>([&] { load_sae(path); }, {"k", "missing"});
}

TEST(SaeLoad, UnsupportedSettingsAreNamed) {
  TempDir dir("sae");
  const std::vector<std::pair<nlohmann::json, std::vector<std::string>>> cases = {
      {{{"architecture", "gated"}}, {"architecture", "gated", "standard (ReLU), jumprelu and topk"}},
      {{{"architecture", "batchtopk"}}, {"architecture", "batchtopk"}},
      {{{"normalize_activations", "expected_average_only_in"}}, {"normalize_activations", "fold"}},
      {{{"normalize_activations", "whatever"}}, {"normalize_activations", "whatever"}},
      {{{"finetuning_scaling_factor", true}}, {"finetuning_scaling_factor"}},
      {{{"rescale_acts_by_decoder_norm", true}}, {"rescale_acts_by_decoder_norm", "folded"}},
      {{{"hook_head_index", 3}}, {"hook_head_index"}},
      {{{"reshape_activations", "hook_z"}}, {"reshape_activations", "hook_z"}},
      {{{"activation_fn", "tanh-relu"}}, {"activation_fn", "tanh-relu"}},
  };
  int i = 0;
  for (const auto& [extra, parts] : cases) {
    const auto path = write(dir, {.cfg_extra = extra}, "case" + std::to_string(i++));
    auto expected = parts;
    expected.push_back("cfg.json");
    expect_error<UnsupportedError>([&] { load_sae(path); }, expected);
  }
}

TEST(SaeLoad, BadTensorsAreFormatErrorsNamingTheTensor) {
  TempDir dir("sae");
  auto path = write(dir, {.skip = {"b_enc"}}, "missing");
  expect_error<FormatError>([&] { load_sae(path); }, {"sae_weights.safetensors", "b_enc", "missing", "[16]"});
  path = write(dir, {.architecture = "jumprelu", .skip = {"threshold"}}, "no_threshold");
  expect_error<FormatError>([&] { load_sae(path); }, {"threshold", "missing"});
  path = write(dir, {.shapes = {{"W_enc", {16, 8}}}}, "transposed");
  expect_error<FormatError>([&] { load_sae(path); }, {"W_enc", "[16, 8]", "expected [8, 16]"});
  path = write(dir, {.shapes = {{"b_dec", {1, 8}}}}, "2d_bias");
  expect_error<FormatError>([&] { load_sae(path); }, {"b_dec", "[1, 8]"});
  path = write(dir, {.nan_in = "W_dec"}, "nan");
  expect_error<FormatError>([&] { load_sae(path); }, {"W_dec", "element 0", "not finite"});
  // A cfg.json whose d_in disagrees with the weights.
  path = write(dir, {.cfg_extra = {{"d_in", 9}}}, "wrong_d_in");
  expect_error<FormatError>([&] { load_sae(path); }, {"W_enc", "d_in"});
  // Not a safetensors file at all.
  path = write(dir, {}, "garbage");
  test::write_file(path / "sae_weights.safetensors", "garbage");
  EXPECT_THROW(load_sae(path), FormatError);
}

TEST(SaeHook, MapsSaeLensNamesToLathePoints) {
  EXPECT_EQ(sae_hook_site("blocks.3.hook_resid_pre", "x").name(), "blocks.3.resid_pre");
  EXPECT_EQ(sae_hook_site("blocks.0.hook_resid_mid", "x").name(), "blocks.0.resid_mid");
  EXPECT_EQ(sae_hook_site("blocks.12.hook_resid_post", "x").name(), "blocks.12.resid_post");
  EXPECT_EQ(sae_hook_site("blocks.12.resid_post", "x").name(), "blocks.12.resid_post");
  expect_error<UnsupportedError>([] { sae_hook_site("blocks.3.hook_mlp_out", "--sae-hook"); },
                                 {"--sae-hook", "blocks.3.hook_mlp_out", "residual stream"});
  expect_error<UnsupportedError>([] { sae_hook_site("blocks.3.attn.hook_z", "cfg"); }, {"hook_z"});
  expect_error<InvalidArgumentError>([] { sae_hook_site("layer3", "--sae-hook"); }, {"--sae-hook", "layer3"});
}

TEST(SaeHook, FitsTheModel) {
  TempDir dir("sae");
  const Sae sae = load_sae(write(dir, {}));
  EXPECT_NO_THROW(check_sae_fits(sae, HookSite::parse("blocks.2.resid_post"), 4, 8));
  expect_error<InvalidArgumentError>([&] { check_sae_fits(sae, HookSite::parse("blocks.2.resid_post"), 4, 576); },
                                     {"cfg.json", "d_in is 8", "576"});
  expect_error<InvalidArgumentError>([&] { check_sae_fits(sae, HookSite::parse("blocks.4.resid_post"), 4, 8); },
                                     {"blocks.4.resid_post", "0..3", "--sae-hook"});
}

TEST(SaeFeatures, ParsesTheSpec) {
  const auto e = parse_sae_features("12, 57:-4,90*0.5,3:+1e-1", "--sae-features");
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].id, 12u);
  EXPECT_EQ(e[0].kind, SaeFeatureEdit::Kind::Set);
  EXPECT_EQ(e[0].value, 0.0f);
  EXPECT_EQ(e[1].id, 57u);
  EXPECT_EQ(e[1].kind, SaeFeatureEdit::Kind::Set);
  EXPECT_EQ(e[1].value, -4.0f);
  EXPECT_EQ(e[2].id, 90u);
  EXPECT_EQ(e[2].kind, SaeFeatureEdit::Kind::Scale);
  EXPECT_EQ(e[2].value, 0.5f);
  EXPECT_FLOAT_EQ(e[3].value, 0.1f);
}

TEST(SaeFeatures, BadSpecsNameTheFlagAndTheItem) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "empty"},        {"1,,2", "item 2 is empty"}, {"1,", "item 2 is empty"},
      {"x", "'x' is not a feature id"}, {"-1", "'-1' is not a feature id"}, {"1:", "'' is not a finite number"},
      {"1:abc", "'abc'"},  {"1*inf", "'inf'"},          {"1:nan", "'nan'"},
      {"4,4:2", "feature 4 is given twice"}, {"3.5", "'3.5' is not a feature id"}, {"1:2:3", "'2:3'"},
  };
  for (const auto& item : bad) {
    const std::string& spec = item.first;  // (clang 14 cannot capture a structured binding)
    expect_error<InvalidArgumentError>([&] { parse_sae_features(spec, "--sae-features"); },
                                       {"--sae-features", "'" + spec + "'", item.second});
  }
  const auto edits = parse_sae_features("3,16", "--sae-features");
  expect_error<InvalidArgumentError>([&] { check_sae_features(edits, 16, "--sae-features"); },
                                     {"--sae-features", "feature 16", "0..15"});
}

// Random rows of the SAE's width, scaled so that features fire.
std::vector<float> rows_for(const Sae& sae, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.3f, 2.0f);
  std::vector<float> x(static_cast<size_t>(n * sae.d_in));
  for (auto& v : x) v = d(rng);
  return x;
}

TEST(SaeGate, UneditedFeaturesLeaveRowsBitForBit) {
  TempDir dir("sae");
  for (const char* arch : {"standard", "jumprelu", "topk"}) {
    auto sae = std::make_shared<const Sae>(load_sae(write(dir, {.architecture = arch}, arch)));
    const auto x = rows_for(*sae, 6, 2);
    // Scale 1 and a clamp of an inactive feature (not everywhere) change no feature.
    std::vector<SaeFeatureEdit> edits;
    for (uint32_t j = 0; j < 16; ++j) edits.push_back({j, SaeFeatureEdit::Kind::Scale, 1.0f});
    for (auto options : {SaeGateOptions{}, SaeGateOptions{.clamp_everywhere = true}}) {
      SaeGate gate(sae, edits, options);
      auto y = x;
      gate.apply(y.data(), 6, sae->d_in);
      EXPECT_EQ(y, x) << arch;
      EXPECT_EQ(gate.rows_changed(), 0u);
    }
    SaeGate none(sae, {}, {});
    auto y = x;
    none.apply(y.data(), 6, sae->d_in);
    EXPECT_EQ(y, x);
  }
}

// x' - x = (f' - f) @ W_dec, checked against the full encode.
TEST(SaeGate, AddsOnlyTheEditedFeaturesDecoderRows) {
  TempDir dir("sae");
  for (const char* arch : {"standard", "jumprelu", "topk"}) {
    auto sae = std::make_shared<const Sae>(load_sae(write(dir, {.architecture = arch, .seed = 5}, arch)));
    const int64_t n = 5;
    const auto x = rows_for(*sae, n, 9);
    const auto f = sae_encode(*sae, x.data(), n);
    const auto edits = parse_sae_features("0,1:-3,2*2.5,3:4", "test");
    for (bool everywhere : {false, true}) {
      SaeGate gate(sae, edits, {.clamp_everywhere = everywhere});
      auto y = x;
      gate.apply(y.data(), n, sae->d_in);
      for (int64_t r = 0; r < n; ++r) {
        const float* fr = f.data() + r * 16;
        const double delta[4] = {-fr[0], (fr[1] > 0 || everywhere ? -3.0 : fr[1]) - fr[1], 1.5 * fr[2],
                                 (fr[3] > 0 || everywhere ? 4.0 : fr[3]) - fr[3]};
        for (int64_t i = 0; i < sae->d_in; ++i) {
          double expected = x[r * 8 + i];
          for (int j = 0; j < 4; ++j) expected += delta[j] * sae->w_dec[j * 8 + i];
          EXPECT_NEAR(y[r * 8 + i], expected, 1e-5) << arch << " row " << r << " i " << i;
        }
      }
    }
  }
}

TEST(SaeGate, IsARowTransformHook) {
  TempDir dir("sae");
  auto sae = std::make_shared<const Sae>(load_sae(write(dir, {})));
  ResidualHooks hooks;
  hooks.transform(HookSite::parse("blocks.2.resid_post"), std::make_shared<SaeGate>(sae, parse_sae_features("1", "t"),
                                                                                    SaeGateOptions{}));
  EXPECT_TRUE(hooks.has(HookSite::parse("blocks.2.resid_post")));
  EXPECT_FALSE(hooks.has(HookSite::parse("blocks.1.resid_post")));
  EXPECT_NO_THROW(hooks.validate(4, 8));
  expect_error<InvalidArgumentError>([&] { hooks.validate(4, 9); }, {"blocks.2.resid_post", "SAE gate", "8", "9"});
  EXPECT_THROW(hooks.transform(HookSite::parse("final_norm"), nullptr), InvalidArgumentError);
  auto x = rows_for(*sae, 3, 4);
  const auto before = x;
  hooks.apply(HookSite::parse("blocks.1.resid_post"), x.data(), 3, 8, true);
  EXPECT_EQ(x, before);
}

// Attribution of an edit to a loss is the gate's own change of each row dotted with the loss's
// gradient there: checked feature by feature against a gate that edits that feature alone, for
// every architecture and normalization, clamps (where active and everywhere) and scales.
TEST(SaeAttribution, IsTheGatesChangeDottedWithTheGradient) {
  TempDir dir("sae");
  const int64_t n = 5;
  for (const char* arch : {"standard", "jumprelu", "topk"})
    for (const char* norm : {"none", "constant_norm_rescale", "layer_norm"}) {
      SCOPED_TRACE(std::string(arch) + " " + norm);
      auto sae = std::make_shared<const Sae>(load_sae(write(
          dir, {.architecture = arch, .seed = 7, .cfg_extra = {{"normalize_activations", norm}}}, std::string(arch) + norm)));
      const auto x = rows_for(*sae, n, 3);
      const auto g = rows_for(*sae, n, 4);
      for (const SaeFeatureEdit edit : {SaeFeatureEdit{0, SaeFeatureEdit::Kind::Set, -2.0f},
                                        SaeFeatureEdit{0, SaeFeatureEdit::Kind::Set, 0.0f},
                                        SaeFeatureEdit{0, SaeFeatureEdit::Kind::Scale, 0.5f}})
        for (const bool everywhere : {false, true}) {
          const SaeGateOptions options{.clamp_everywhere = everywhere};
          const auto effects = sae_edit_attribution(*sae, x.data(), g.data(), n, edit, options);
          ASSERT_EQ(effects.size(), static_cast<size_t>(sae->d_sae));
          int nonzero = 0;
          for (uint32_t j = 0; j < sae->d_sae; ++j) {
            SaeGate gate(sae, {{j, edit.kind, edit.value}}, options);
            auto y = x;
            gate.apply(y.data(), n, sae->d_in);
            double expected = 0;
            for (size_t i = 0; i < y.size(); ++i) expected += (double(y[i]) - x[i]) * g[i];
            EXPECT_NEAR(effects[j], expected, 1e-4 * (1 + std::abs(expected))) << "feature " << j;
            nonzero += effects[j] != 0;
          }
          EXPECT_GT(nonzero, 0);  // the edits change something
        }
    }
}

TEST(SaeAttribution, RowsTheSaeCannotEncodeAddNothing) {
  TempDir dir("sae");
  auto sae = std::make_shared<const Sae>(load_sae(
      write(dir, {.architecture = "standard", .seed = 2, .cfg_extra = {{"normalize_activations", "constant_norm_rescale"}}})));
  auto x = rows_for(*sae, 3, 5);
  const auto g = rows_for(*sae, 3, 6);
  const SaeFeatureEdit edit{0, SaeFeatureEdit::Kind::Set, 1.0f};
  const auto two = sae_edit_attribution(*sae, x.data(), g.data(), 2, edit, {.clamp_everywhere = true});
  std::fill(x.begin() + 2 * sae->d_in, x.end(), 0.0f);  // a zero row: no norm to rescale by
  const auto three = sae_edit_attribution(*sae, x.data(), g.data(), 3, edit, {.clamp_everywhere = true});
  EXPECT_EQ(two, three);
}

}  // namespace
}  // namespace lathe::edit
