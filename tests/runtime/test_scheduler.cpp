// The runtime's scheduler (continuous batching over one engine's slots): a sequence's greedy
// tokens do not depend on the company it keeps (batch invariance), cancelling one sequence frees
// its slot at the next step without disturbing the others, submission and cancellation work from
// other threads, and bad requests are refused before anything runs. The tiny synthetic model keeps
// the unit tests fast (and under the sanitizers); the default model shows it on real weights.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "runtime/scheduler_test_helpers.hpp"

namespace lathe {
namespace {

using namespace test::scheduler;
using runtime::Scheduler;
using runtime::SequenceRequest;


TEST(Scheduler, TinyModelTokensDoNotDependOnTheBatch) {
  test::TempDir dir("scheduler_tiny");
  const auto model = tiny_model(dir);
  const auto prompts = varied_prompts(16, test::kTinyTokens);
  const ComputeOptions compute{.n_threads = 2};
  const auto alone = tokens_alone(model, prompts, 20, 64, compute);
  const auto together = staggered(model, prompts, 20, 64, compute);
  // The sequences differ (a model that ignored its context would pass the check below anyway).
  EXPECT_GE(std::set<std::vector<TokenId>>(alone.begin(), alone.end()).size(), 12u);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(together[i].tokens, alone[i]) << "sequence " << i;
    EXPECT_EQ(together[i].n_prompt, prompts[i].size());
    EXPECT_EQ(together[i].stop, StopReason::MaxTokens);
  }
}

TEST(Scheduler, CancellingOneSequenceFreesItsSlotAtTheNextStepAndLeavesTheOthersAlone) {
  test::TempDir dir("scheduler_cancel");
  const auto model = tiny_model(dir);
  const auto prompts = varied_prompts(4, test::kTinyTokens, 3);
  const ComputeOptions compute{.n_threads = 2};
  const auto alone = tokens_alone(model, prompts, 24, 64, compute);

  Engine engine(model, {.n_slots = 3, .n_ctx = 64, .compute = compute});
  runtime::Engine& core = *internals(engine).engine;
  Scheduler scheduler(core, internals(*model).vocabulary());
  std::vector<GenerateResult> results(prompts.size());
  std::vector<runtime::SequenceId> ids;
  for (size_t i = 0; i < prompts.size(); ++i) ids.push_back(scheduler.submit(greedy_request(prompts[i], 24, results, i)));
  for (int s = 0; s < 5; ++s) ASSERT_TRUE(scheduler.step());
  EXPECT_EQ(core.free_slots(), 0u);
  EXPECT_EQ(scheduler.n_running(), 3u);
  EXPECT_EQ(scheduler.n_waiting(), 1u);  // the fourth waits for a slot
  const size_t generated_before = 5;  // the first step prefills and samples, each later one adds a token
  scheduler.cancel(ids[1]);
  ASSERT_TRUE(scheduler.step());
  // The cancelled sequence ended before the step's pass, and the waiting one took its slot.
  EXPECT_EQ(results[1].stop, StopReason::Cancelled);
  EXPECT_EQ(results[1].tokens.size(), generated_before);
  EXPECT_EQ(scheduler.n_running(), 3u);
  EXPECT_EQ(scheduler.n_waiting(), 0u);
  scheduler.cancel(ids[1]);  // already finished: ignored
  scheduler.cancel(9999);    // unknown: ignored
  scheduler.run_until_idle();
  EXPECT_EQ(core.free_slots(), 3u);
  for (size_t i : {0u, 2u, 3u}) {
    EXPECT_EQ(results[i].tokens, alone[i]) << "sequence " << i;
    EXPECT_EQ(results[i].stop, StopReason::MaxTokens);
  }
  // What the cancelled sequence produced before it stopped is what it would have produced.
  EXPECT_TRUE(std::equal(results[1].tokens.begin(), results[1].tokens.end(), alone[1].begin()));
}

TEST(Scheduler, SubmitAndCancelFromOtherThreads) {
  test::TempDir dir("scheduler_threads");
  const auto model = tiny_model(dir);
  const auto prompts = varied_prompts(12, test::kTinyTokens);
  Engine engine(model, {.n_slots = 4, .n_ctx = 64, .compute = {.n_threads = 1}});
  Scheduler scheduler(*internals(engine).engine, internals(*model).vocabulary());
  std::vector<GenerateResult> results(prompts.size());
  std::atomic<size_t> done{0};
  std::atomic<bool> submitted_all{false};
  std::thread client([&] {
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto r = greedy_request(prompts[i], 40, results, i);
      r.on_done = [&results, &done, i](GenerateResult&& g) {
        results[i] = std::move(g);
        done.fetch_add(1);
      };
      const auto id = scheduler.submit(std::move(r));
      if (i % 3 == 0) scheduler.cancel(id);
      std::this_thread::yield();
    }
    submitted_all = true;
  });
  // The stepping thread runs until every sequence has reported back (bounded: 12 x 41 steps).
  for (int guard = 0; guard < 100000 && (!submitted_all || done.load() < prompts.size()); ++guard) {
    if (!scheduler.step()) std::this_thread::yield();
  }
  client.join();
  ASSERT_EQ(done.load(), prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (i % 3 == 0) {
      EXPECT_EQ(results[i].stop, StopReason::Cancelled) << i;
    } else {
      EXPECT_EQ(results[i].stop, StopReason::MaxTokens) << i;
      EXPECT_EQ(results[i].tokens.size(), 40u) << i;
    }
  }
}

TEST(Scheduler, CallbacksStopOneSequenceAndStreamItsText) {
  test::TempDir dir("scheduler_callbacks");
  const auto model = tiny_model(dir);
  const auto prompts = varied_prompts(3, test::kTinyTokens, 4);
  Engine engine(model, {.n_slots = 3, .n_ctx = 64, .compute = {.n_threads = 1}});
  Scheduler scheduler(*internals(engine).engine, internals(*model).vocabulary());
  std::vector<GenerateResult> results(3);
  std::string streamed;
  auto r0 = greedy_request(prompts[0], 10, results, 0);
  r0.on_text = [&streamed](std::string_view piece) {
    streamed += piece;
    return true;
  };
  auto r1 = greedy_request(prompts[1], 10, results, 1);
  size_t seen = 0;
  r1.on_text = [&seen](std::string_view) { return ++seen < 3; };  // stop after the third piece
  auto r2 = greedy_request(prompts[2], 10, results, 2);
  r2.stop_check = [](std::string_view) { return true; };  // stop after the first token
  scheduler.submit(std::move(r0));
  scheduler.submit(std::move(r1));
  scheduler.submit(std::move(r2));
  scheduler.run_until_idle();
  EXPECT_EQ(results[0].text, streamed);
  EXPECT_EQ(results[0].stop, StopReason::MaxTokens);
  EXPECT_EQ(results[1].stop, StopReason::Callback);
  EXPECT_LT(results[1].tokens.size(), 10u);
  EXPECT_EQ(results[2].stop, StopReason::Callback);
  EXPECT_EQ(results[2].tokens.size(), 1u);
}

TEST(Scheduler, RefusesBadRequestsBeforeRunning) {
  test::TempDir dir("scheduler_errors");
  const auto model = tiny_model(dir);
  Engine engine(model, {.n_slots = 2, .n_ctx = 16, .compute = {.n_threads = 1}});
  Scheduler scheduler(*internals(engine).engine, internals(*model).vocabulary());
  std::vector<GenerateResult> results(1);
  EXPECT_THROW(scheduler.submit(greedy_request({}, 4, results, 0)), InvalidArgumentError);
  EXPECT_THROW(scheduler.submit(greedy_request({1, static_cast<TokenId>(test::kVocab)}, 4, results, 0)),
               InvalidArgumentError);
  EXPECT_THROW(scheduler.submit(greedy_request({1, 2, 3}, 14, results, 0)), ContextLengthError);
  auto negative = greedy_request({1, 2}, -1, results, 0);
  EXPECT_THROW(scheduler.submit(std::move(negative)), InvalidArgumentError);
  auto bad_slot = greedy_request({1, 2}, 2, results, 0);
  bad_slot.slot = 7;
  EXPECT_THROW(scheduler.submit(std::move(bad_slot)), InvalidArgumentError);
  EXPECT_FALSE(scheduler.step());  // nothing was queued
  // generate_batch names the prompt at fault.
  GenerateOptions o;
  o.max_tokens = 4;
  test::expect_error<InvalidArgumentError>([&] { generate_batch(engine, {{1, 2}, {}}, o); }, {"prompt 1", "empty"});
}

}  // namespace
}  // namespace lathe
