// Dispatch protocol: the caller publishes the task and bumps `generation`; workers notice the new
// generation by spinning (cheap, µs latency) or, after spinning for a while with nothing to do,
// by sleeping on a condition variable (no CPU burnt between bursts of work). The indices of a run
// are not tied to threads: the caller runs index 0, then every thread (the caller included) claims
// the next unclaimed index until none is left, and the caller waits until all are finished. So a
// worker that the OS has not scheduled yet (more threads than cores, or a competing load) delays
// nothing: the threads that do run take its share. A claim is tagged with its run's generation,
// so a worker waking late for a finished run cannot claim an index of the next one. A pool of more
// threads than the CPUs this process may use starts only one worker per CPU (less the caller):
// threads beyond that could only take cores from the ones with work.
#include "backend/cpu/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>

#include <fstream>
#include <set>
#include <string>
#endif

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
// How long the caller polls for the last indices before it yields its core to the threads
// running them (which, on a busy machine, may be waiting for exactly that core).
constexpr int kCallerSpins = 4096;

constexpr uint64_t kIndexMask = 0xffffffffull;
uint64_t claim_word(uint64_t generation, uint64_t index) { return (generation & kIndexMask) << 32 | index; }

}  // namespace

int available_cpus() noexcept {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

int default_threads() noexcept {
#if defined(__linux__)
  // One thread per physical core this process may run on: decode is bound by memory bandwidth,
  // and a second thread on a core's sibling adds contention, not bandwidth (llama.cpp's default
  // too). The siblings of each allowed CPU name its core.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::string> cores;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      std::ifstream siblings("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
      std::string list;
      if (!std::getline(siblings, list)) return available_cpus();  // no topology: count CPUs
      cores.insert(list);
    }
    if (!cores.empty()) return static_cast<int>(cores.size());
  }
#endif
  return available_cpus();
}

struct ThreadPool::State {
  int n_threads = 1;  // indices of a run (the pool's size)
  std::vector<std::thread> workers;

  std::atomic<uint64_t> generation{0};  // bumped by every run (only the caller writes it)
  std::atomic<uint64_t> claim{0};       // claim_word(run's generation, next unclaimed index)
  std::atomic<int> done{0};             // indices of the current run that have returned
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
    done.fetch_add(1, std::memory_order_acq_rel);
  }

  // Claims and runs indices of run `gen` until none is left (or that run is over).
  void work_on(uint64_t gen) {
    for (;;) {
      uint64_t word = claim.load(std::memory_order_acquire);
      do {
        if ((word >> 32) != (gen & kIndexMask) || (word & kIndexMask) >= static_cast<uint64_t>(n_threads)) return;
      } while (!claim.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_acquire));
      call(static_cast<int>(word & kIndexMask));
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

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      const uint64_t next = wait_for_work(seen);
      if (next == 0) return;
      seen = next;
      work_on(next);
    }
  }
};

ThreadPool::ThreadPool(int n_threads) : state_(std::make_unique<State>()) {
  if (n_threads <= 0) n_threads = default_threads();
  state_->n_threads = n_threads;
  const int n_workers = std::min(n_threads, available_cpus()) - 1;
  state_->workers.reserve(static_cast<size_t>(n_workers));
  for (int i = 0; i < n_workers; ++i) state_->workers.emplace_back([this] { state_->worker_loop(); });
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
  s.done.store(0, std::memory_order_relaxed);
  const uint64_t gen = s.generation.load(std::memory_order_relaxed) + 1;
  s.claim.store(claim_word(gen, 1), std::memory_order_release);  // index 0 is the caller's
  bool wake_sleepers;
  {
    // Under the mutex so that a worker about to sleep either sees the new generation in its
    // wait predicate or is already counted in `sleepers`.
    std::lock_guard lock(s.sleep_mutex);
    s.generation.store(gen, std::memory_order_release);
    wake_sleepers = s.sleepers > 0;
  }
  if (wake_sleepers) s.wake.notify_all();

  s.call(0);
  s.work_on(gen);  // the indices no worker has claimed yet
  for (int spins = 0; s.done.load(std::memory_order_acquire) != s.n_threads; ++spins) {
    if (spins < kCallerSpins) cpu_relax();
    else std::this_thread::yield();  // a claimed index runs on a thread waiting for a core
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
