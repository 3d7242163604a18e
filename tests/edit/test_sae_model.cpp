// SAE gates on the default model (SmolLM2-135M-Instruct, n_embd 576) with random SAEs written by
// the test: a gate that edits nothing leaves the logits bit for bit, one that ablates the most
// active feature moves the stream by exactly that feature's decoder row and changes the logits;
// and `lathe run|bench --sae`, with the errors of the SAE flags.
#include <gtest/gtest.h>

#include <cmath>

#include "common/test_support.hpp"
#include "edit/control_vector.hpp"
#include "edit/sae.hpp"
#include "edit/sae_test_support.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

constexpr const char* kSite = "blocks.5.resid_post";

std::shared_ptr<const Model> default_model() {
  static const auto model = Model::load(test::default_model());
  return model;
}

std::vector<TokenId> prompt_tokens(const Model& model) {
  return model.tokenize("The capital of France is Paris, and the capital of Italy is", true, false);
}

// Logits of every prompt token with `hooks` attached.
std::vector<float> logits(const std::shared_ptr<ResidualHooks>& hooks) {
  const auto model = default_model();
  Session session(model);
  session.set_hooks(hooks);
  const auto ids = prompt_tokens(*model);
  session.eval(ids, /*all_logits=*/true);
  std::vector<float> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto l = session.logits_at(i);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

std::shared_ptr<ResidualHooks> gated(std::shared_ptr<const Sae> sae, std::vector<SaeFeatureEdit> edits,
                                     SaeGateOptions options = {}) {
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->transform(HookSite::parse(kSite), std::make_shared<SaeGate>(std::move(sae), std::move(edits), options));
  return hooks;
}

std::shared_ptr<const Sae> random_sae(const test::TempDir& dir, const std::string& arch) {
  // Encoder columns scaled up so that the residual stream (norms of tens) makes features fire.
  test::write_test_sae(dir / arch, {.architecture = arch, .d_in = 576, .d_sae = 256, .k = 16,
                                    .hook = "blocks.5.hook_resid_post", .seed = 3});
  return std::make_shared<const Sae>(load_sae(dir / arch));
}

TEST(SaeModel, GateThatEditsNothingLeavesLogitsBitForBit) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("sae_model");
  const auto plain = logits(nullptr);
  for (const char* arch : {"standard", "jumprelu", "topk"}) {
    const auto sae = random_sae(dir, arch);
    EXPECT_EQ(logits(gated(sae, {})), plain) << arch;
    // Every feature scaled by 1, and clamps of features where they are inactive: f' == f everywhere.
    std::vector<SaeFeatureEdit> same;
    for (uint32_t j = 0; j < 256; ++j) same.push_back({j, SaeFeatureEdit::Kind::Scale, 1.0f});
    EXPECT_EQ(logits(gated(sae, same)), plain) << arch;
  }
}

TEST(SaeModel, AblatingTheMostActiveFeatureMovesTheStreamByItsDecoderRow) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("sae_model");
  const auto model = default_model();
  const auto plain = logits(nullptr);
  for (const char* arch : {"standard", "jumprelu", "topk"}) {
    SCOPED_TRACE(arch);
    const auto sae = random_sae(dir, arch);
    // The stream at the SAE's point, every prompt row.
    auto capture_hooks = std::make_shared<ResidualHooks>();
    capture_hooks->capture(HookSite::parse(kSite), CaptureRows::All);
    Session probe(model);
    probe.set_hooks(capture_hooks);
    const auto ids = prompt_tokens(*model);
    probe.eval(ids);
    // Rows one by one are not kept by a capture; the mean is, and the gate's effect is linear in
    // the features, so compare means: mean(x') - mean(x) = -mean_r(f_r[j]) W_dec[j].
    const auto& cap = capture_hooks->captured(0);
    ASSERT_EQ(cap.count, ids.size());
    // Find the feature with the largest summed activation by encoding the rows one at a time
    // through a per-row capture.
    std::vector<float> rows;
    for (size_t t = 0; t < ids.size(); ++t) {
      auto one = std::make_shared<ResidualHooks>();
      one->capture(HookSite::parse(kSite), CaptureRows::Last);
      Session s(model);
      s.set_hooks(one);
      s.eval(std::span<const TokenId>(ids.data(), t + 1));
      for (double v : one->captured(0).mean()) rows.push_back(static_cast<float>(v));
    }
    const auto n = static_cast<int64_t>(ids.size());
    const auto f = sae_encode(*sae, rows.data(), n);
    std::vector<double> total(256, 0.0);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < 256; ++j) total[j] += f[r * 256 + j];
    const auto top = static_cast<uint32_t>(std::max_element(total.begin(), total.end()) - total.begin());
    ASSERT_GT(total[top], 1.0) << "no feature fires on the prompt";

    auto hooks = gated(sae, {{top, SaeFeatureEdit::Kind::Set, 0.0f}});
    const size_t before = hooks->capture(HookSite::parse(kSite), CaptureRows::All);  // after the gate
    Session gated_session(model);
    gated_session.set_hooks(hooks);
    gated_session.eval(ids, true);
    const auto mean_plain = cap.mean();
    const auto mean_gated = hooks->captured(before).mean();
    for (int64_t i = 0; i < 576; ++i) {
      const double expected = mean_plain[i] - total[top] / double(n) * sae->w_dec[top * 576 + i];
      EXPECT_NEAR(mean_gated[i], expected, 1e-3 + 1e-5 * std::abs(expected)) << i;
    }
    std::vector<float> out;
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto l = gated_session.logits_at(i);
      out.insert(out.end(), l.begin(), l.end());
    }
    double diff = 0;
    for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, double(std::abs(out[i] - plain[i])));
    EXPECT_GT(diff, 1e-3);
  }
}

TEST(SaeModel, RunAndBenchTakeAnSae) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("sae_cli");
  test::write_test_sae(dir / "sae", {.architecture = "jumprelu", .d_in = 576, .d_sae = 128,
                                     .hook = "blocks.5.hook_resid_post", .seed = 4});
  const std::string cli = test::cli_path().string(), model = test::default_model().string(),
                    sae = (dir / "sae").string();
  auto r = test::run_command({cli, "run", "-m", model, "-p", "Hello", "-n", "3", "--temp", "0", "--sae", sae,
                              "--sae-features", "3,5:-4,7*0.5"},
                             std::chrono::seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("sae: SAE"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("at blocks.5.resid_post, editing 3 features"), std::string::npos) << r.err;
  // Combined with a control vector, at a hook point given on the command line.
  ControlVector cv;
  cv.n_embd = 576;
  cv.directions[3] = std::vector<float>(576, 0.01f);
  write_control_vector(dir / "cv.gguf", cv);
  r = test::run_command({cli, "run", "-m", model, "-p", "Hello", "-n", "2", "--temp", "0", "--control-vector",
                         (dir / "cv.gguf").string(), "--sae", sae, "--sae-features", "1:2", "--sae-hook",
                         "blocks.2.resid_pre", "--sae-clamp-everywhere"},
                        std::chrono::seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("at blocks.2.resid_pre, editing 1 feature (clamped at every token)"), std::string::npos) << r.err;
  r = test::run_command({cli, "bench", "-m", model, "-p", "8", "-n", "2", "-r", "1", "--sae", sae, "--sae-features",
                         "3"},
                        std::chrono::seconds(300));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tg2"), std::string::npos) << r.out;
}

TEST(SaeModel, SaeFlagErrorsNameTheFlag) {
  LATHE_REQUIRE_MODEL();
  test::TempDir dir("sae_cli");
  test::write_test_sae(dir / "sae", {.d_in = 576, .d_sae = 64, .hook = "blocks.5.hook_resid_post"});
  test::write_test_sae(dir / "small", {.d_in = 8, .d_sae = 64, .hook = "blocks.5.hook_resid_post"});
  const std::string cli = test::cli_path().string(), model = test::default_model().string(),
                    sae = (dir / "sae").string();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--sae-features", "3"}, "--sae-features needs --sae"},
      {{"--sae", sae}, "needs --sae-features"},
      {{"--sae", sae, "--sae-features", "3,,4"}, "--sae-features '3,,4': item 2 is empty"},
      {{"--sae", sae, "--sae-features", "64"}, "--sae-features: feature 64 does not exist"},
      {{"--sae", sae, "--sae-features", "1", "--sae-hook", "blocks.99.hook_resid_pre"}, "0..29"},
      {{"--sae", sae, "--sae-features", "1", "--sae-hook", "blocks.1.hook_mlp_out"}, "--sae-hook"},
      {{"--sae", (dir / "small").string(), "--sae-features", "1"}, "d_in is 8"},
      {{"--sae", (dir / "missing").string(), "--sae-features", "1"}, "no such SAE"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> argv = {cli, "run", "-m", model, "-p", "Hello", "-n", "1"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    const auto r = test::run_command(argv, std::chrono::seconds(300));
    EXPECT_NE(r.exit_code, 0) << message;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace lathe::edit
