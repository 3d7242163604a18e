// The server's one engine: a model on one device with a pool of sequence slots, one scheduler
// (continuous batching of every client's requests, chunked prefill, prefix reuse) and the thread
// that steps it. HTTP threads submit jobs and read their text as it comes; a job whose client is
// gone is cancelled and its slot is free at the next step.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lathe/compute.hpp"
#include "lathe/lathe.hpp"
#include "runtime/scheduler.hpp"
#include "server/metrics.hpp"
#include "server/request.hpp"
#include "server/response.hpp"

namespace lathe::server {

struct ServiceOptions {
  uint32_t n_slots = 4;       // sequences generated at once (--parallel)
  uint32_t n_ctx = 0;         // per sequence; 0: the model's training context, at most 4096
  uint64_t vram_budget = 0;   // EngineOptions::vram_budget
  ComputeOptions compute;
  size_t max_queue = 64;      // requests waiting for a slot beyond the running ones (--max-queue)
  // Residual hooks every request runs (--control-vector, --sae), or nullptr. Shared by all
  // sequences (hooks run on the one stepping thread); requests then do not reuse cached prompt
  // prefixes, which the scheduler keeps only for sequences without hooks.
  std::shared_ptr<ResidualHooks> hooks;
};

// One request's generation, shared by the HTTP thread that reads it and the stepping thread that
// writes it.
class Job {
 public:
  // What arrived since the last take(): released text (stop strings held back), log-probability
  // entries, and whether the job ended.
  struct Update {
    std::string text;
    std::vector<LogprobEntry> logprobs;
    bool done = false;
  };
  // Waits up to `timeout` for something new (returns at once if there is).
  Update take(std::chrono::milliseconds timeout);
  // Valid once an Update said done.
  const GenerateResult& result() const { return result_; }
  const std::string& error() const { return error_; }

  runtime::SequenceId id = 0;
  uint32_t n_prompt = 0;  // prompt tokens (evaluated + reused from the cache)
  bool want_logprobs = false;

 private:
  friend class InferenceService;
  std::mutex mutex_;
  std::condition_variable changed_;
  Update pending_;
  bool done_ = false;
  GenerateResult result_;
  std::string error_;
  std::optional<StopStrings> stops_;
  std::vector<LogprobEntry> unsent_logprobs_;  // stepping thread only: tokens whose text is not complete yet
};

class InferenceService {
 public:
  InferenceService(std::shared_ptr<const Model> model, const ServiceOptions& options);
  ~InferenceService();
  InferenceService(const InferenceService&) = delete;
  InferenceService& operator=(const InferenceService&) = delete;

  // Checks the request against the model (chat template, vocabulary, context), queues it and
  // returns its job. ApiError 400 (context_length_exceeded, a bad token id, a template error),
  // 503 when the queue is full or the service is shutting down or failed.
  std::shared_ptr<Job> submit(const CompletionRequest& request);
  void cancel(const Job& job);

  // Stops taking requests; waits up to `grace` for the running ones to finish, then cancels the
  // rest and stops the stepping thread.
  void shutdown(std::chrono::milliseconds grace);

  const Model& model() const noexcept { return *model_; }
  uint32_t n_ctx() const noexcept { return n_ctx_; }
  uint32_t n_slots() const noexcept { return options_.n_slots; }
  Metrics& metrics() noexcept { return metrics_; }
  bool healthy() const noexcept { return !failed_.load(); }
  size_t in_flight() const noexcept { return in_flight_.load(); }

  // The prompt's tokens: the chat messages rendered with the model's template, or the text or
  // token prompt of a completion.
  std::vector<TokenId> prompt_tokens(const CompletionRequest& request) const;

 private:
  void loop();
  void finished(Job& job, GenerateResult&& result);
  void fail_all(const std::string& message);

  std::shared_ptr<const Model> model_;
  ServiceOptions options_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<runtime::Scheduler> scheduler_;
  uint32_t n_ctx_ = 0;
  Metrics metrics_;

  std::mutex mutex_;  // guards jobs_, work_, stopping_
  std::condition_variable wake_;
  uint64_t work_ = 0;  // bumped by every submit/cancel
  bool stopping_ = false;
  std::atomic<bool> accepting_{true}, failed_{false};
  std::atomic<size_t> in_flight_{0};
  std::unordered_map<runtime::SequenceId, std::weak_ptr<Job>> jobs_;
  std::thread stepper_;
};

}  // namespace lathe::server
