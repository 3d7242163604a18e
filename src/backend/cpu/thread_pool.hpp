// A fixed set of worker threads for data-parallel loops. Decode runs ~200 small parallel loops per
// token, so dispatch must cost microseconds: workers spin briefly on an atomic generation counter
// before falling back to sleeping on a condition variable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

namespace lathe::cpu {

class ThreadPool {
 public:
  // n_threads <= 0: one per hardware thread. The calling thread takes part in every loop, so a
  // pool of N threads starts N-1 workers.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const noexcept;

  // Calls task(thread_index, n_threads) once on every thread (thread_index in [0, n_threads))
  // and returns when all calls have returned. An exception thrown by a task is rethrown here
  // (the first one) after every thread has finished.
  void run(const std::function<void(int thread_index, int n_threads)>& task);

  // Splits [0, n) into contiguous chunks of at least `grain` items, one per thread, and calls
  // body(begin, end) for each non-empty chunk.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe::cpu
