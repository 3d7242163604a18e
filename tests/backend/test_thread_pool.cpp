#include "backend/cpu/thread_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

namespace lathe::cpu {
namespace {

TEST(ThreadPool, SizeCountsTheCaller) {
  EXPECT_EQ(ThreadPool(1).size(), 1);
  EXPECT_EQ(ThreadPool(3).size(), 3);
  EXPECT_GE(ThreadPool(0).size(), 1);
  EXPECT_GE(ThreadPool(-2).size(), 1);
}

TEST(ThreadPool, RunCallsEveryIndexOnce) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> calls(static_cast<size_t>(n));
    std::atomic<int> wrong_count{0};
    pool.run([&](int index, int n_threads) {
      if (n_threads != n) wrong_count.fetch_add(1);
      calls[static_cast<size_t>(index)].fetch_add(1);
    });
    EXPECT_EQ(wrong_count.load(), 0);
    for (int i = 0; i < n; ++i) EXPECT_EQ(calls[static_cast<size_t>(i)].load(), 1) << "index " << i << " of " << n;
  }
}

TEST(ThreadPool, CallerRunsIndexZero) {
  ThreadPool pool(3);
  std::vector<std::thread::id> ids(3);
  pool.run([&](int index, int) { ids[static_cast<size_t>(index)] = std::this_thread::get_id(); });
  EXPECT_EQ(ids[0], std::this_thread::get_id());  // the caller is thread 0
  // Indices 1 and 2 go to whichever thread claims them first (the caller too, when a worker is
  // slow to start): every index ran once, on some thread.
  EXPECT_NE(ids[1], std::thread::id());
  EXPECT_NE(ids[2], std::thread::id());
}

// More threads than CPUs (the workers sleep between loops and start late): every index still runs
// exactly once per run, whoever claims it, over many rapid runs whose stragglers wake up late.
TEST(ThreadPool, OversubscribedPoolRunsEveryIndexOncePerRun) {
  const int n = 4 * available_cpus() + 3;
  ThreadPool pool(n);
  std::vector<std::atomic<int>> calls(static_cast<size_t>(n));
  constexpr int kRounds = 500;
  for (int round = 0; round < kRounds; ++round) {
    pool.run([&](int index, int n_threads) {
      ASSERT_EQ(n_threads, n);
      calls[static_cast<size_t>(index)].fetch_add(1);
      if ((index * 7 + round) % 13 == 0) std::this_thread::yield();  // a straggler
    });
    for (int i = 0; i < n; ++i) ASSERT_EQ(calls[static_cast<size_t>(i)].load(), round + 1) << "index " << i;
  }
}

TEST(ThreadPool, DefaultThreadsIsOnePerPhysicalCoreAmongTheAvailableCpus) {
  EXPECT_GE(default_threads(), 1);
  EXPECT_LE(default_threads(), available_cpus());
  EXPECT_EQ(ThreadPool(0).size(), default_threads());
}

TEST(ThreadPool, ExceptionsPropagateAfterAllThreadsFinish) {
  ThreadPool pool(3);
  for (int thrower : {0, 1, 2}) {
    std::atomic<int> finished{0};
    try {
      pool.run([&](int index, int) {
        if (index == thrower) throw std::runtime_error("task " + std::to_string(index) + " failed");
        finished.fetch_add(1);
      });
      FAIL() << "no exception from thread " << thrower;
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "task " + std::to_string(thrower) + " failed");
    }
    EXPECT_EQ(finished.load(), 2);
  }
  // The pool still works after an exception.
  std::atomic<int> calls{0};
  pool.run([&](int, int) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 3);
}

TEST(ThreadPool, SingleThreadPoolPropagatesExceptions) {
  ThreadPool pool(1);
  EXPECT_THROW(pool.run([](int, int) { throw std::logic_error("x"); }), std::logic_error);
}

TEST(ThreadPool, ManyRapidDispatches) {
  ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  constexpr int kRounds = 20000;
  for (int round = 0; round < kRounds; ++round) pool.run([&](int index, int) { total.fetch_add(index + 1); });
  EXPECT_EQ(total.load(), int64_t{kRounds} * 3);
}

TEST(ThreadPool, DispatchAfterWorkersFellAsleep) {
  ThreadPool pool(3);
  for (int round = 0; round < 3; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // well past the spin period
    std::atomic<int> calls{0};
    pool.run([&](int, int) { calls.fetch_add(1); });
    EXPECT_EQ(calls.load(), 3);
  }
}

TEST(ThreadPool, NestedRunExecutesInline) {
  ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run([&](int, int) { pool.run([&](int, int) { inner.fetch_add(1); }); });
  EXPECT_EQ(inner.load(), 4);  // each of the 2 outer calls runs both inner indices
}

// Every item of [0, n) is covered exactly once, by chunks of at least `grain` (except when n is
// smaller than grain, where one chunk takes everything).
void check_parallel_for(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  std::atomic<int> chunks{0};
  std::atomic<int> short_chunks{0};
  pool.parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    chunks.fetch_add(1);
    if (end - begin < grain && end - begin < n) short_chunks.fetch_add(1);
    for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  });
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "item " << i << " of " << n;
  EXPECT_EQ(short_chunks.load(), 0) << "n " << n << " grain " << grain;
  EXPECT_LE(chunks.load(), pool.size());
  if (n > 0) {
    EXPECT_GE(chunks.load(), 1);
  }
}

TEST(ThreadPool, ParallelForCoversRangesExactly) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 7, 10, 100, 1001})
      for (int64_t grain : {0, 1, 3, 4, 64, 5000}) check_parallel_for(pool, n, grain);
  }
}

TEST(ThreadPool, ParallelForUsesAllThreadsWhenThereIsEnoughWork) {
  ThreadPool pool(3);
  std::atomic<int> chunks{0};
  pool.parallel_for(300, 10, [&](int64_t, int64_t) { chunks.fetch_add(1); });
  EXPECT_EQ(chunks.load(), 3);
  chunks = 0;
  pool.parallel_for(25, 10, [&](int64_t, int64_t) { chunks.fetch_add(1); });  // 2 chunks of >= 10
  EXPECT_EQ(chunks.load(), 2);
}

TEST(ThreadPool, ParallelForPropagatesExceptions) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100, 1,
                                 [](int64_t begin, int64_t) {
                                   if (begin > 0) throw std::out_of_range("second chunk");
                                 }),
               std::out_of_range);
}

}  // namespace
}  // namespace lathe::cpu
