// Dispatch protocol: the caller publishes the task and bumps `generation`; workers notice the new
// generation by spinning (cheap, µs latency) or, after spinning for a while with nothing to do,
// by sleeping on a condition variable (no CPU burnt between bursts of work). Every worker counts
// `pending` down when its call returns; the caller runs index 0 itself, then waits for zero.
#include "backend/cpu/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace lathe::cpu {
namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// How long an idle worker keeps polling before it goes to sleep. Decode issues a matmul every
// few tens of µs, so 200 µs keeps workers awake across a whole token's worth of small loops.
constexpr auto kSpinDuration = std::chrono::microseconds(200);

}  // namespace

struct ThreadPool::State {
  int n_threads = 1;
  std::vector<std::thread> workers;

  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};  // workers still running the current task
  const std::function<void(int, int)>* task = nullptr;
  bool stopping = false;  // guarded by sleep_mutex

  std::mutex sleep_mutex;  // guards sleepers/stopping and orders generation bumps with sleeping
  std::condition_variable wake;
  int sleepers = 0;

  std::mutex error_mutex;
  std::exception_ptr first_error;

  std::mutex run_mutex;  // one dispatch at a time; a nested or concurrent run() executes inline

  void record(std::exception_ptr error) {
    std::lock_guard lock(error_mutex);
    if (!first_error) first_error = std::move(error);
  }

  void call(int index) {
    try {
      (*task)(index, n_threads);
    } catch (...) {
      record(std::current_exception());
    }
  }

  // Returns the next generation to run, or 0 when the pool is shutting down.
  uint64_t wait_for_work(uint64_t seen) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinDuration;
    for (int spins = 0;; ++spins) {
      const uint64_t current = generation.load(std::memory_order_acquire);
      if (current != seen) return current;
      cpu_relax();
      if ((spins & 255) == 255 && std::chrono::steady_clock::now() > spin_until) break;
    }
    std::unique_lock lock(sleep_mutex);
    ++sleepers;
    wake.wait(lock, [&] { return stopping || generation.load(std::memory_order_acquire) != seen; });
    --sleepers;
    if (stopping) return 0;
    return generation.load(std::memory_order_acquire);
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      const uint64_t next = wait_for_work(seen);
      if (next == 0) return;
      seen = next;
      call(index);
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : state_(std::make_unique<State>()) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  state_->n_threads = n_threads;
  state_->workers.reserve(static_cast<size_t>(n_threads - 1));
  for (int i = 1; i < n_threads; ++i) state_->workers.emplace_back([this, i] { state_->worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  // Sleeping workers are woken here; spinning ones find `stopping` set once their spin runs out
  // (no generation is bumped, which would make them run a stale task).
  {
    std::lock_guard lock(state_->sleep_mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  for (auto& worker : state_->workers) worker.join();
}

int ThreadPool::size() const noexcept { return state_->n_threads; }

void ThreadPool::run(const std::function<void(int thread_index, int n_threads)>& task) {
  State& s = *state_;
  std::unique_lock run_lock(s.run_mutex, std::try_to_lock);
  if (s.n_threads == 1 || !run_lock.owns_lock()) {
    // Single thread, or called from inside a task / from a second thread while busy: run every
    // index here, one after another (each index still runs exactly once).
    std::exception_ptr first;
    for (int i = 0; i < s.n_threads; ++i) {
      try {
        task(i, s.n_threads);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
    return;
  }

  s.task = &task;
  s.first_error = nullptr;
  s.pending.store(s.n_threads - 1, std::memory_order_relaxed);
  bool wake_sleepers;
  {
    // Under the mutex so that a worker about to sleep either sees the new generation in its
    // wait predicate or is already counted in `sleepers`.
    std::lock_guard lock(s.sleep_mutex);
    s.generation.fetch_add(1, std::memory_order_acq_rel);
    wake_sleepers = s.sleepers > 0;
  }
  if (wake_sleepers) s.wake.notify_all();

  s.call(0);
  for (int spins = 0; s.pending.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < (1 << 16)) {
      cpu_relax();
    } else {
      std::this_thread::yield();  // a long task on an oversubscribed machine
    }
  }
  s.task = nullptr;
  if (s.first_error) {
    std::exception_ptr error = std::move(s.first_error);
    s.first_error = nullptr;
    std::rethrow_exception(error);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(state_->n_threads, std::max<int64_t>(1, n / grain));
  if (chunks == 1) {
    body(0, n);
    return;
  }
  run([&](int index, int) {
    if (index >= chunks) return;
    const int64_t begin = n * index / chunks;
    const int64_t end = n * (index + 1) / chunks;
    if (begin < end) body(begin, end);
  });
}

}  // namespace lathe::cpu
