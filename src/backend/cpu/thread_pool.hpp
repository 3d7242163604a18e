// A fixed set of worker threads for data-parallel loops. Decode runs ~200 small parallel loops per
// token, so dispatch must cost microseconds: workers spin briefly on an atomic generation counter
// before falling back to sleeping on a condition variable. A loop's indices go to whichever threads
// are running, so a thread the OS keeps waiting (a competing load) slows a loop down by its share
// at most instead of stalling it; a pool larger than the CPUs this process may use starts one
// thread per CPU, which run all its indices.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace lathe::cpu {

// CPUs this process may run on (its affinity mask), and the default thread count: one per physical
// core among them.
int available_cpus() noexcept;
int default_threads() noexcept;

class ThreadPool {
 public:
  // n_threads <= 0: default_threads(). The calling thread takes part in every loop, so a pool of
  // N threads starts N-1 workers (at most available_cpus() - 1).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const noexcept;

  // Calls task(thread_index, n_threads) exactly once for every thread_index in [0, n_threads) and
  // returns when all calls have returned: index 0 on the calling thread, the others on whichever
  // thread claims them first (a worker, or the caller when the workers are slow to start), never
  // two indices at once on one thread. An exception thrown by a task is rethrown here (the first
  // one) after every call has finished.
  void run(const std::function<void(int thread_index, int n_threads)>& task);

  // Splits [0, n) into contiguous chunks of at least `grain` items, one per thread, and calls
  // body(begin, end) for each non-empty chunk.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe::cpu
