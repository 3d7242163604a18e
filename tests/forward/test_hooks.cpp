// Residual-stream hooks and batched decode on the tiny synthetic model (so the sanitizer run
// covers them): hook names, no-op when empty, capture semantics, add and project-out effects
// checked through identities of the residual stream, and run_batch against one-sequence runs.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "backend/cpu/thread_pool.hpp"
#include "common/tiny_model.hpp"
#include "forward/forward.hpp"
#include "lathe/error.hpp"
#include "lathe/hooks.hpp"
#include "runtime/kv_cache.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

using test::kEmbd;
using test::kVocab;

const std::vector<int32_t> kTokens = {1, 5, 9, 3, 39, 0, 17};

struct TinyRun {
  test::TempDir dir{"hooks"};
  ModelWeights w;
  cpu::ThreadPool pool{2};
  TinyRun() {
    test::TinyModel tiny;
    w = load_model_weights(tiny.write(dir, "tiny.gguf"));
  }
  // Logits of every token of kTokens with `hooks` attached (in chunks of `chunk` tokens).
  std::vector<float> logits(ResidualHooks* hooks, size_t chunk = kTokens.size()) {
    KvCache kv(w.hp, 16, KvFormat::F32);
    Forward f(w, 8, 16);
    f.set_hooks(hooks);
    std::vector<float> out(kTokens.size() * kVocab);
    for (size_t begin = 0; begin < kTokens.size(); begin += chunk) {
      const size_t n = std::min(chunk, kTokens.size() - begin);
      f.run(std::span(kTokens).subspan(begin, n), static_cast<uint32_t>(begin), kv.view(), true,
            out.data() + begin * kVocab, pool, begin + n == kTokens.size());
    }
    return out;
  }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

std::vector<float> random_vector(uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(kEmbd);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(HookSite, ParsesAndNamesEveryPoint) {
  for (const char* name : {"blocks.0.resid_pre", "blocks.12.resid_mid", "blocks.3.resid_post", "final_norm"})
    EXPECT_EQ(HookSite::parse(name).name(), name);
  EXPECT_EQ(HookSite::parse("blocks.7.resid_mid").layer, 7u);
  for (const char* bad : {"", "blocks", "blocks.x.resid_pre", "blocks.1.resid", "blocks..resid_pre", "block.1.resid_pre",
                          "blocks.1x.resid_pre", "blocks.99999999999.resid_pre"})
    EXPECT_THROW(HookSite::parse(bad), InvalidArgumentError) << bad;
}

TEST(ResidualHooks, RejectsBadVectorsAndSites) {
  ResidualHooks hooks;
  EXPECT_THROW(hooks.project_out({HookPoint::ResidPost, 0}, std::vector<float>(kEmbd, 0.0f)), InvalidArgumentError);
  EXPECT_THROW(hooks.add({HookPoint::ResidPost, 0}, {1.0f, NAN}), InvalidArgumentError);
  hooks.add({HookPoint::ResidPost, 0}, std::vector<float>(kEmbd - 1, 1.0f));
  EXPECT_THROW(hooks.validate(test::kLayers, kEmbd), InvalidArgumentError);
  hooks.clear();
  hooks.capture({HookPoint::ResidPre, test::kLayers});
  EXPECT_THROW(hooks.validate(test::kLayers, kEmbd), InvalidArgumentError);
  hooks.clear();
  EXPECT_TRUE(hooks.empty());
  const auto id = hooks.capture({HookPoint::ResidPre, 0});
  EXPECT_THROW(hooks.captured(id).mean(), InvalidArgumentError);
  EXPECT_THROW(hooks.captured(id + 1), InvalidArgumentError);
}

TEST(ResidualHooks, EmptyHooksAndCapturesLeaveLogitsUnchanged) {
  TinyRun run;
  const auto plain = run.logits(nullptr);
  ResidualHooks hooks;
  EXPECT_EQ(max_abs_diff(plain, run.logits(&hooks)), 0.0);
  hooks.capture({HookPoint::ResidMid, 1}, CaptureRows::All);
  hooks.capture({HookPoint::FinalNorm, 0});
  EXPECT_EQ(max_abs_diff(plain, run.logits(&hooks)), 0.0);
}

TEST(ResidualHooks, ResidPostOfOneBlockIsResidPreOfTheNext) {
  TinyRun run;
  ResidualHooks hooks;
  const auto post0 = hooks.capture({HookPoint::ResidPost, 0}, CaptureRows::All);
  const auto pre1 = hooks.capture({HookPoint::ResidPre, 1}, CaptureRows::All);
  const auto mid1 = hooks.capture({HookPoint::ResidMid, 1}, CaptureRows::All);
  run.logits(&hooks, 3);
  EXPECT_EQ(hooks.captured(post0).count, kTokens.size());
  EXPECT_EQ(hooks.captured(post0).sum, hooks.captured(pre1).sum);
  EXPECT_NE(hooks.captured(mid1).sum, hooks.captured(pre1).sum);  // attention changed the stream
}

TEST(ResidualHooks, LastRowCaptureTakesOnlyTheEndOfTheCall) {
  TinyRun run;
  ResidualHooks all_rows, last_row;
  const auto a = all_rows.capture({HookPoint::ResidPost, 1}, CaptureRows::All);
  const auto l = last_row.capture({HookPoint::ResidPost, 1}, CaptureRows::Last);
  run.logits(&all_rows, 3);
  run.logits(&last_row, 3);  // chunks 3 + 3 + 1: only the final chunk's last row counts
  EXPECT_EQ(last_row.captured(l).count, 1u);
  // The mean over all rows differs from the last row (rows are not all equal).
  EXPECT_NE(all_rows.captured(a).mean(), last_row.captured(l).mean());
  last_row.reset_captures();
  EXPECT_EQ(last_row.captured(l).count, 0u);
}

TEST(ResidualHooks, AddingAtResidPostEqualsAddingAtTheNextResidPre) {
  TinyRun run;
  const auto v = random_vector(3, 0.5f);
  ResidualHooks at_post, at_pre;
  at_post.add({HookPoint::ResidPost, 0}, v, 2.0f);
  at_pre.add({HookPoint::ResidPre, 1}, v, 2.0f);
  const auto a = run.logits(&at_post), b = run.logits(&at_pre);
  EXPECT_EQ(max_abs_diff(a, b), 0.0);
  EXPECT_GT(max_abs_diff(a, run.logits(nullptr)), 1e-3);  // and it does change the output
}

TEST(ResidualHooks, ProjectOutLeavesNoComponentAlongTheDirection) {
  TinyRun run;
  const auto d = random_vector(5);
  double norm = 0;
  for (float x : d) norm += double(x) * x;
  norm = std::sqrt(norm);
  ResidualHooks before, after;
  const auto cb = before.capture({HookPoint::ResidMid, 1}, CaptureRows::All);
  after.project_out({HookPoint::ResidMid, 1}, d);
  const auto ca = after.capture({HookPoint::ResidMid, 1}, CaptureRows::All);
  run.logits(&before);
  run.logits(&after);
  auto along = [&](const std::vector<double>& v) {
    double dot = 0;
    for (size_t i = 0; i < v.size(); ++i) dot += v[i] * d[i] / norm;
    return dot;
  };
  EXPECT_GT(std::abs(along(before.captured(cb).sum)), 1e-2);
  EXPECT_LT(std::abs(along(after.captured(ca).sum)), 1e-4);
}

TEST(Forward, RunBatchMatchesOneSequenceRuns) {
  TinyRun run;
  // Three sequences with different prompt lengths; after their prefill each decodes one token,
  // all three in one run_batch call.
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7, 8, 9, 10, 11}, {4}};
  const std::vector<int32_t> next = {12, 13, 14};
  std::vector<KvCache> caches;
  Forward f(run.w, 8, 16);
  std::vector<float> scratch(kVocab);
  std::vector<KvCacheView*> views;
  std::vector<uint32_t> positions;
  for (size_t s = 0; s < prompts.size(); ++s) caches.emplace_back(run.w.hp, 16, KvFormat::F16);
  for (size_t s = 0; s < prompts.size(); ++s) {
    f.run(prompts[s], 0, caches[s].view(), false, scratch.data(), run.pool);
    views.push_back(&caches[s].view());
    positions.push_back(static_cast<uint32_t>(prompts[s].size()));
  }
  std::vector<float> batched(prompts.size() * kVocab);
  f.run_batch(next, positions, views, batched.data(), run.pool);
  for (size_t s = 0; s < prompts.size(); ++s) {
    KvCache kv(run.w.hp, 16, KvFormat::F16);
    auto tokens = prompts[s];
    tokens.push_back(next[s]);
    Forward single(run.w, 8, 16);
    single.run(tokens, 0, kv.view(), false, scratch.data(), run.pool);
    for (uint32_t v = 0; v < kVocab; ++v) EXPECT_NEAR(batched[s * kVocab + v], scratch[v], 1e-4) << s << " " << v;
  }
}

}  // namespace
}  // namespace lathe
