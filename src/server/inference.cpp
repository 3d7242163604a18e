#include "server/inference.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <random>

#include "api/model_impl.hpp"
#include "lathe/chat.hpp"
#include "server/api_error.hpp"
#include "server/structured_output.hpp"

namespace lathe::server {
namespace {

ApiError unavailable(const std::string& message) { return ApiError(503, "server_error", message, "", "unavailable"); }

uint64_t random_seed() {
  static std::mutex mutex;
  static std::random_device device;
  std::lock_guard lock(mutex);
  return (uint64_t{device()} << 32) | device();
}

}  // namespace

Job::Update Job::take(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return done_ || !pending_.text.empty() || !pending_.logprobs.empty(); });
  Update out = std::move(pending_);
  pending_ = {};
  out.done = done_;
  return out;
}

InferenceService::InferenceService(std::shared_ptr<const Model> model, const ServiceOptions& options)
    : model_(std::move(model)), options_(options) {
  engine_ = std::make_unique<Engine>(model_, EngineOptions{.n_slots = options.n_slots, .n_ctx = options.n_ctx,
                                                           .compute = options.compute,
                                                           .vram_budget = options.vram_budget});
  n_ctx_ = engine_->options().n_ctx;
  scheduler_ = std::make_unique<runtime::Scheduler>(*internals(*engine_).engine, internals(*model_).vocabulary());
  stepper_ = std::thread([this] { loop(); });
}

InferenceService::~InferenceService() { shutdown(std::chrono::milliseconds(0)); }

std::vector<TokenId> InferenceService::prompt_tokens(const CompletionRequest& request) const {
  if (!request.chat) {
    if (!request.prompt_tokens.empty()) {
      for (size_t i = 0; i < request.prompt_tokens.size(); ++i)
        if (static_cast<uint32_t>(request.prompt_tokens[i]) >= model_->n_vocab())
          throw bad_request(fmt::format("prompt[{}]", i),
                            fmt::format("token id {} is outside the vocabulary (0..{})", request.prompt_tokens[i],
                                        model_->n_vocab() - 1));
      return request.prompt_tokens;
    }
    return model_->tokenize(request.prompt_text, /*add_special=*/true, /*parse_special=*/true);
  }
  if (!model_->has_chat_template())
    throw ApiError(400, "invalid_request_error",
                   "the model has no chat template: use /v1/completions, or restart lathe serve with --template FILE",
                   "messages", "no_chat_template");
  std::string rendered;
  try {
    rendered = render_chat_prompt(*model_, request.messages);
  } catch (const Error& e) {  // the template itself refused these messages (roles out of order, ...)
    throw bad_request("messages", fmt::format("the model's chat template refused them: {}", e.what()), "template_error");
  }
  return tokenize_chat_rendering(*model_, rendered);
}

std::shared_ptr<Job> InferenceService::submit(const CompletionRequest& request) {
  if (failed_) throw unavailable("the server's engine failed; see its log and restart it");
  if (!accepting_) throw unavailable("the server is shutting down");
  const std::vector<TokenId> prompt = prompt_tokens(request);
  if (prompt.empty()) throw bad_request(request.chat ? "messages" : "prompt", "gives no tokens");
  if (prompt.size() >= n_ctx_ || (request.max_tokens && prompt.size() + uint64_t(*request.max_tokens) > n_ctx_))
    throw ApiError(400, "invalid_request_error",
                   request.max_tokens
                       ? fmt::format("this model's context is {} tokens; the prompt has {} and max_tokens asks for {} "
                                     "more: shorten the prompt or lower max_tokens",
                                     n_ctx_, prompt.size(), *request.max_tokens)
                       : fmt::format("this model's context is {} tokens; the prompt has {}: shorten it", n_ctx_,
                                     prompt.size()),
                   request.chat ? "messages" : "prompt", "context_length_exceeded");

  auto job = std::make_shared<Job>();
  job->n_prompt = static_cast<uint32_t>(prompt.size());
  job->want_logprobs = request.top_logprobs >= 0;
  job->stops_.emplace(request.stop);

  runtime::SequenceRequest seq;
  seq.prompt = prompt;
  seq.options.max_tokens = request.max_tokens.value_or(static_cast<int32_t>(n_ctx_ - prompt.size()));
  seq.options.sampling = request.sampling;
  seq.options.stop_at_end_of_generation = !request.ignore_eos;
  if (!request.seed_given) seq.options.sampling.seed = random_seed();
  seq.top_logprobs = request.top_logprobs;
  seq.logit_bias = request.logit_bias;
  seq.hooks = options_.hooks;
  seq.reuse_prefix = !options_.hooks;
  if (request.format != ResponseFormat::Text) seq.constraint = make_constraint(model_, request);
  const tokenizer::Tokenizer& tok = internals(*model_).tokenizer;
  Job* raw = job.get();
  seq.on_token = [raw, &tok](const runtime::TokenEvent& event) {
    if (!raw->want_logprobs) return true;
    LogprobEntry entry{tok.token_bytes(event.token), event.logprob, {}};
    for (const auto& alt : event.top) entry.top.emplace_back(tok.token_bytes(alt.token), alt.logprob);
    raw->unsent_logprobs_.push_back(std::move(entry));  // sent with the text the token completes
    return true;
  };
  seq.on_text = [raw](std::string_view piece) {
    std::string released = raw->stops_->push(piece);
    std::lock_guard lock(raw->mutex_);
    raw->pending_.text += released;
    for (auto& entry : raw->unsent_logprobs_) raw->pending_.logprobs.push_back(std::move(entry));
    raw->unsent_logprobs_.clear();
    raw->changed_.notify_all();
    return !raw->stops_->stopped();
  };
  seq.on_done = [this, job](GenerateResult&& result) { finished(*job, std::move(result)); };

  {
    std::lock_guard lock(mutex_);
    if (in_flight_ >= options_.n_slots + options_.max_queue) {
      metrics_.requests_rejected += 1;
      throw ApiError(503, "server_error",
                     fmt::format("the server is busy: {} requests are running or queued (--parallel {} + --max-queue "
                                 "{}); retry shortly",
                                 in_flight_.load(), options_.n_slots, options_.max_queue),
                     "", "queue_full");
    }
    job->id = scheduler_->submit(std::move(seq));  // throws for what the checks above missed
    jobs_[job->id] = job;
    in_flight_ += 1;
    work_ += 1;
  }
  wake_.notify_all();
  return job;
}

void InferenceService::cancel(const Job& job) {
  scheduler_->cancel(job.id);
  {
    std::lock_guard lock(mutex_);
    work_ += 1;
  }
  wake_.notify_all();
}

// On the stepping thread, when a sequence ends (finished, stopped, cancelled or failed).
void InferenceService::finished(Job& job, GenerateResult&& result) {
  const bool cancelled = result.stop == StopReason::Cancelled;
  const bool failed = result.stop == StopReason::Failed;
  std::string error;
  if (failed) {
    try {
      std::rethrow_exception(result.error);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (cancelled) metrics_.requests_cancelled += 1;
  else if (failed) metrics_.requests_failed += 1;
  else metrics_.requests_ok += 1;
  metrics_.prompt_tokens += result.n_prompt;
  metrics_.cached_prompt_tokens += result.n_cached;
  metrics_.generated_tokens += result.tokens.size();
  if (!result.tokens.empty()) {
    metrics_.time_to_first_token.observe(result.queue_seconds + result.prompt_seconds);
    if (result.tokens.size() > 1)
      metrics_.time_per_output_token.observe(result.generate_seconds / static_cast<double>(result.tokens.size() - 1));
  }
  {
    std::lock_guard lock(job.mutex_);
    if (!cancelled && !failed) job.pending_.text += job.stops_->flush();
    for (auto& entry : job.unsent_logprobs_) job.pending_.logprobs.push_back(std::move(entry));
    job.unsent_logprobs_.clear();
    job.result_ = std::move(result);
    job.error_ = std::move(error);
    job.done_ = true;
    job.changed_.notify_all();
  }
  std::lock_guard lock(mutex_);
  jobs_.erase(job.id);
  in_flight_ -= 1;
}

void InferenceService::fail_all(const std::string& message) {
  std::lock_guard lock(mutex_);
  for (auto& [id, weak] : jobs_) {
    if (auto job = weak.lock()) {
      std::lock_guard job_lock(job->mutex_);
      job->result_.stop = StopReason::Failed;
      job->error_ = message;
      job->done_ = true;
      job->changed_.notify_all();
    }
  }
  jobs_.clear();
  in_flight_ = 0;
}

void InferenceService::loop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || work_ != seen; });
      if (stopping_ && in_flight_ == 0) return;
      seen = work_;
    }
    try {
      while (scheduler_->step()) {
        metrics_.running = static_cast<int64_t>(scheduler_->n_running());
        metrics_.waiting = static_cast<int64_t>(scheduler_->n_waiting());
      }
    } catch (const std::exception& e) {
      // A pass failed (device error, out of memory): every request gets the error, new ones 503.
      std::fprintf(stderr, "lathe serve: error: the engine failed: %s\n", e.what());
      failed_ = true;
      fail_all(fmt::format("the engine failed: {}", e.what()));
    }
    metrics_.running = static_cast<int64_t>(scheduler_->n_running());
    metrics_.waiting = static_cast<int64_t>(scheduler_->n_waiting());
    if (failed_) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_; });
      return;
    }
  }
}

void InferenceService::shutdown(std::chrono::milliseconds grace) {
  accepting_ = false;
  if (!stepper_.joinable()) return;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (in_flight_ > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::vector<runtime::SequenceId> left;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, job] : jobs_) left.push_back(id);
  }
  for (runtime::SequenceId id : left) scheduler_->cancel(id);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    work_ += 1;
  }
  wake_.notify_all();
  stepper_.join();
}

}  // namespace lathe::server
