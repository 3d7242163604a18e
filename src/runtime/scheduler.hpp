// The scheduler: continuous batching of many sequences over one engine's slots. Each step it
// (1) takes in what other threads submitted or cancelled, (2) admits waiting sequences into free
// slots, (3) forms one batch from everything running — one decode token of every sequence that
// is generating, then prefill chunks of the newly admitted prompts up to the engine's tokens per
// pass (chunked prefill) —, (4) evaluates it, (5) samples each sequence's next token, streams its
// text, checks its stop conditions, and (6) retires finished or cancelled sequences at once,
// freeing their slots for the next step. The per-token loop (greedy shortcut, sampling, end of
// generation, streaming decoder, stops) lives here once; generate(), generate_batch() and the
// server are its users.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "forward/batch.hpp"
#include "lathe/generate.hpp"
#include "lathe/hooks.hpp"
#include "runtime/engine.hpp"
#include "sample/constraint.hpp"
#include "tokenizer/tokenizer.hpp"

namespace lathe::runtime {

// What the scheduler needs of the model's vocabulary.
struct Vocabulary {
  const tokenizer::Tokenizer* tokenizer = nullptr;
  const std::unordered_set<TokenId>* end_of_generation = nullptr;  // EOS and end-of-turn ids
  uint32_t n_samplable = 0;  // logit entries that are tokens (embedding rows may be padded)
};

// A token and its log-probability under the model (log-softmax of the raw logits over the
// samplable vocabulary, before penalties, bias, constraints or temperature).
struct TokenLogprob {
  TokenId token = -1;
  float logprob = 0;
};

// What on_token reports after each generated token.
struct TokenEvent {
  TokenId token = -1;
  std::string_view piece;             // text this token completes (empty while a character is split)
  float logprob = 0;                  // NaN unless the request asked for log-probabilities
  std::span<const TokenLogprob> top;  // the `top_logprobs` most likely tokens, most likely first
};

// One sequence to generate.
struct SequenceRequest {
  std::vector<TokenId> prompt;  // evaluated after what the slot already holds
  GenerateOptions options;      // max_tokens, sampling, stop at end of generation
  std::shared_ptr<ResidualHooks> hooks;  // run on this sequence's rows only (nullptr: none)
  // A slot the caller holds (a Session's), whose first history.size() cache rows hold `history`:
  // the scheduler neither takes nor frees it, and the caller runs one sequence on it at a time.
  // Without one, a free slot of the engine is taken at admission and freed when the sequence ends.
  std::optional<uint32_t> slot;
  std::vector<TokenId> history;
  // Also evaluate the last kept token before finishing, so that the slot ends with the logits
  // that follow it (a session continues from there).
  bool evaluate_last = false;
  // Called on the stepping thread: each new piece of text (false: stop, StopReason::Callback);
  // after each token with all text so far (true: stop); once at the end with the result.
  TextCallback on_text;
  std::function<bool(std::string_view text)> stop_check;
  std::function<void(GenerateResult&&)> on_done;
  // Called on the stepping thread after each generated token, before on_text (false: stop,
  // StopReason::Callback). With top_logprobs >= 0 the event carries the token's log-probability
  // and the top_logprobs most likely tokens (at most 20).
  std::function<bool(const TokenEvent&)> on_token;
  int32_t top_logprobs = -1;
  // Added to the logits of these tokens before sampling (OpenAI's logit_bias; -inf bans a token).
  std::vector<std::pair<TokenId, float>> logit_bias;
  // Which tokens may come next (structured output); called for every generated token.
  std::shared_ptr<TokenConstraint> constraint;
  // Take the free slot whose cache rows already hold the longest start of `prompt` (left by an
  // earlier sequence without hooks) and evaluate only the rest (a conversation's next turn, a
  // shared system prompt). Only for sequences without an own slot and without hooks.
  bool reuse_prefix = false;
};

using SequenceId = uint64_t;

class Scheduler {
 public:
  Scheduler(Engine& engine, const Vocabulary& vocabulary);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a sequence; thread-safe. Throws InvalidArgumentError for bad options, an empty prompt
  // on an empty slot or an id outside the vocabulary, ContextLengthError when history + prompt +
  // max_tokens exceed the engine's n_ctx (nothing is queued then).
  SequenceId submit(SequenceRequest request);
  // Stops a sequence at the next step (StopReason::Cancelled), waiting or running; its slot is
  // free for the step after. Thread-safe; an unknown or finished id is ignored.
  void cancel(SequenceId id);

  // One step (see the top of this file). Returns false when there was nothing to do. Only one
  // thread steps a scheduler.
  bool step();
  // Steps until every submitted sequence has finished.
  void run_until_idle();

  // Sequences running / waiting for a slot (submitted ones included); for the stepping thread.
  size_t n_running() const noexcept { return running_.size(); }
  size_t n_waiting() const;

 private:
  struct Sequence;
  void take_inbox();
  void admit();
  void form_batch();
  void sample_rows();
  void accept(Sequence& seq, uint32_t row, TokenId argmax);
  TokenId sample_row(Sequence& seq, uint32_t row);
  void compute_logprobs(Sequence& seq, std::span<const float> logits);
  bool take_reusable_slot(Sequence& seq);
  TokenEvent token_event(const Sequence& seq, TokenId token, std::string_view piece) const;
  void finish(Sequence& seq, StopReason reason);
  void retire_finished();

  Engine& engine_;
  Vocabulary vocab_;
  mutable std::mutex inbox_mutex_;
  std::vector<std::unique_ptr<Sequence>> inbox_;  // submitted, not yet seen by step()
  std::vector<SequenceId> cancelled_;             // cancel() calls not yet applied
  SequenceId next_id_ = 1;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  Batch batch_;
  std::vector<Sequence*> row_owner_;  // the sequence of each logits row of the batch
  std::vector<TokenId> greedy_;
  std::vector<float> row_;                    // a logits row being biased or masked
  std::vector<TokenLogprob> top_;             // the log-probabilities of the last event
  float logprob_ = 0;                         // the chosen token's log-probability (NaN: not asked)
  double log_norm_ = 0;                       // log of the softmax's normaliser of that row
  // Per slot: the tokens whose K/V rows the slot holds from the last sequence that ran on it
  // without hooks (empty: nothing reusable), for reuse_prefix.
  std::vector<std::vector<TokenId>> slot_tokens_;
  std::vector<uint64_t> slot_used_;  // per slot: when a sequence last left it (0: never)
  uint64_t retired_ = 0;
};

}  // namespace lathe::runtime
