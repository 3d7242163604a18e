// Residual-stream hooks and batched decode on the tiny synthetic model (so the sanitizer run
// covers them): hook names, no-op when empty, capture semantics, add and project-out effects
// checked through identities of the residual stream, and batches that mix sequences (decode
// tokens and prefill chunks in one pass, hooks on one sequence only) against one-sequence runs.
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

// One pass over a chunk of one sequence (slot 0) with `hooks` on it; `last`: the chunk ends the
// sequence's input.
void run_chunk(Forward& f, std::span<const int32_t> tokens, uint32_t first_pos, KvCacheView& kv, bool all_logits,
               float* logits, cpu::ThreadPool& pool, ResidualHooks* hooks = nullptr, bool last = true) {
  Batch batch;
  batch.add_chunk(0, tokens, first_pos, all_logits, true, last);
  KvCacheView* caches[] = {&kv};
  ResidualHooks* by_slot[] = {hooks};
  f.forward(batch, caches, hooks ? std::span<ResidualHooks* const>(by_slot) : std::span<ResidualHooks* const>(),
            logits, pool);
}

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
    std::vector<float> out(kTokens.size() * kVocab);
    for (size_t begin = 0; begin < kTokens.size(); begin += chunk) {
      const size_t n = std::min(chunk, kTokens.size() - begin);
      run_chunk(f, std::span(kTokens).subspan(begin, n), static_cast<uint32_t>(begin), kv.view(), true,
                out.data() + begin * kVocab, pool, hooks, begin + n == kTokens.size());
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

// A transform with a device path, which records what it was asked (no device is touched).
struct DeviceTransform : RowTransform {
  bool has_device_path = true;
  int prepared_for = -1;
  int64_t applied_rows = 0;
  int64_t width() const noexcept override { return kEmbd; }
  std::string describe() const override { return "test transform"; }
  void apply(float*, int64_t, int64_t) override {}
  bool prepare_device(int device, int64_t) override {
    prepared_for = device;
    return has_device_path;
  }
  void apply_on_device(float*, int64_t n_rows, int64_t, void*) override { applied_rows += n_rows; }
};

// The device path is taken only when every hook of the set has one (adds, projections, captures
// and plain transforms run on host copies); the generation changes with every change of the set
// and is never shared by two sets, so a captured decode step knows when to recapture.
TEST(ResidualHooks, DevicePathOnlyWhenEveryHookHasOneAndGenerationsTrackChanges) {
  ResidualHooks hooks, other;
  EXPECT_EQ(hooks.generation(), 0u);
  EXPECT_TRUE(hooks.on_device(0, 16));  // nothing to run
  auto t = std::make_shared<DeviceTransform>();
  hooks.transform({HookPoint::ResidMid, 1}, t);
  const uint64_t g1 = hooks.generation();
  EXPECT_NE(g1, 0u);
  EXPECT_TRUE(hooks.on_device(3, 16));
  EXPECT_EQ(t->prepared_for, 3);
  hooks.apply_on_device({HookPoint::ResidMid, 1}, nullptr, 5, kEmbd, nullptr);
  hooks.apply_on_device({HookPoint::ResidMid, 2}, nullptr, 7, kEmbd, nullptr);  // another site
  EXPECT_EQ(t->applied_rows, 5);
  t->has_device_path = false;
  EXPECT_FALSE(hooks.on_device(3, 16));
  t->has_device_path = true;
  hooks.add({HookPoint::ResidPost, 0}, std::vector<float>(kEmbd, 1.0f));
  EXPECT_FALSE(hooks.on_device(0, 16));  // adds run on the host
  const uint64_t g2 = hooks.generation();
  EXPECT_NE(g2, g1);
  other.transform({HookPoint::ResidMid, 1}, t);
  EXPECT_NE(other.generation(), g1);
  EXPECT_NE(other.generation(), g2);
  hooks.clear();
  EXPECT_EQ(hooks.generation(), 0u);
  hooks.capture({HookPoint::ResidPre, 0});
  EXPECT_FALSE(hooks.on_device(0, 16));
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

// The logits of `tokens` evaluated alone in a fresh cache, last row only.
std::vector<float> alone(TinyRun& run, const std::vector<int32_t>& tokens, ResidualHooks* hooks = nullptr) {
  KvCache kv(run.w.hp, 16, KvFormat::F16);
  Forward single(run.w, 8, 16);
  std::vector<float> out(kVocab);
  run_chunk(single, tokens, 0, kv.view(), false, out.data(), run.pool, hooks);
  return out;
}

TEST(Forward, DecodeBatchMatchesOneSequenceRuns) {
  TinyRun run;
  // Three sequences with different prompt lengths; after their prefill each decodes one token,
  // all three in one pass.
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {7, 8, 9, 10, 11}, {4}};
  const std::vector<int32_t> next = {12, 13, 14};
  std::vector<KvCache> caches;
  Forward f(run.w, 8, 16);
  std::vector<float> scratch(kVocab);
  for (size_t s = 0; s < prompts.size(); ++s) caches.emplace_back(run.w.hp, 16, KvFormat::F16);
  std::vector<KvCacheView*> views;
  for (auto& c : caches) views.push_back(&c.view());
  Batch batch;
  for (uint32_t s = 0; s < prompts.size(); ++s) {
    batch.clear();
    batch.add_chunk(s, prompts[s], 0, false, true, true);
    f.forward(batch, views, {}, scratch.data(), run.pool);
  }
  batch.clear();
  for (uint32_t s = 0; s < prompts.size(); ++s)
    batch.add(next[s], s, static_cast<uint32_t>(prompts[s].size()), Batch::kLogits | Batch::kEndsInput);
  std::vector<float> batched(prompts.size() * kVocab);
  f.forward(batch, views, {}, batched.data(), run.pool);
  for (size_t s = 0; s < prompts.size(); ++s) {
    auto tokens = prompts[s];
    tokens.push_back(next[s]);
    const auto single = alone(run, tokens);
    for (uint32_t v = 0; v < kVocab; ++v) EXPECT_NEAR(batched[s * kVocab + v], single[v], 1e-4) << s << " " << v;
  }
}

// One pass holding a decode token of sequence 0, the whole prompt of sequence 1 (logits for its
// last token only) and a second chunk of sequence 2's prompt, with a steering vector on sequence 1
// alone: each sequence's logits are those of its own run, hooks included, and nothing leaks
// between them.
TEST(Forward, MixedBatchOfPrefillAndDecodeMatchesSeparateRuns) {
  TinyRun run;
  const std::vector<int32_t> seq0 = {1, 2, 3}, seq1 = {7, 8, 9, 10}, seq2 = {20, 21, 22, 23, 24};
  ResidualHooks steer;
  steer.add({HookPoint::ResidPost, 0}, random_vector(5, 0.5f));
  std::vector<KvCache> caches;
  for (int s = 0; s < 3; ++s) caches.emplace_back(run.w.hp, 16, KvFormat::F16);
  std::vector<KvCacheView*> views;
  for (auto& c : caches) views.push_back(&c.view());
  Forward f(run.w, 16, 16);
  std::vector<float> scratch(kVocab);
  Batch batch;
  batch.add_chunk(0, std::span(seq0).first(2), 0, false, true, true);
  batch.add_chunk(2, std::span(seq2).first(2), 0, false, false, false);
  f.forward(batch, views, {}, scratch.data(), run.pool);

  batch.clear();
  batch.add(seq0[2], 0, 2, Batch::kLogits | Batch::kEndsInput);
  batch.add_chunk(1, seq1, 0, false, true, true);
  batch.add_chunk(2, std::span(seq2).subspan(2), 2, false, true, true);
  ASSERT_EQ(batch.n_logits(), 3u);
  ASSERT_EQ(batch.runs().size(), 3u);
  ResidualHooks* hooks[] = {nullptr, &steer, nullptr};
  std::vector<float> mixed(3 * kVocab);
  f.forward(batch, views, hooks, mixed.data(), run.pool);

  const std::vector<float> expected[] = {alone(run, seq0), alone(run, seq1, &steer), alone(run, seq2)};
  for (size_t s = 0; s < 3; ++s)
    for (uint32_t v = 0; v < kVocab; ++v) EXPECT_NEAR(mixed[s * kVocab + v], expected[s][v], 1e-4) << s << " " << v;
  // The steering vector changes sequence 1's logits (so the check above could fail).
  EXPECT_GT(max_abs_diff(alone(run, seq1), expected[1]), 1e-3);
}

}  // namespace
}  // namespace lathe
