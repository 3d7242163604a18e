#include "runtime/scheduler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "lathe/error.hpp"
#include "lathe/sampling.hpp"

namespace lathe::runtime {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

constexpr int32_t kMaxTopLogprobs = 20;

size_t common_prefix(std::span<const TokenId> a, std::span<const TokenId> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

struct Scheduler::Sequence {
  enum class Phase {
    Waiting,   // queued, no slot yet
    Prefill,   // evaluating its input in chunks
    Decode,    // `next` is sampled and goes into the next batch
    Draining,  // finished, but `next` is evaluated once more (evaluate_last)
    Done,
  };
  SequenceId id = 0;
  SequenceRequest request;
  Phase phase = Phase::Waiting;
  uint32_t slot = 0;
  bool owns_slot = false;
  std::vector<TokenId> input;  // tokens to prefill, from position `n_past` at admission
  size_t n_input_done = 0;
  uint32_t n_past = 0;              // cache rows written
  std::vector<TokenId> history;     // every token of the context (penalties look back over it)
  std::optional<Sampler> sampler;
  std::optional<tokenizer::StreamDecoder> decoder;
  bool greedy = false;              // picks_argmax: take the engine's argmax
  TokenId next = -1;
  StopReason stop_after_drain = StopReason::MaxTokens;
  GenerateResult result;
  Clock::time_point submitted, admitted, first_token;
  bool sampled_any = false;
};

Scheduler::Scheduler(Engine& engine, const Vocabulary& vocabulary) : engine_(engine), vocab_(vocabulary) {
  if (vocab_.tokenizer == nullptr || vocab_.end_of_generation == nullptr || vocab_.n_samplable == 0)
    throw InternalError("Scheduler: the vocabulary is incomplete");
  slot_tokens_.resize(engine_.n_slots());
  slot_used_.resize(engine_.n_slots(), 0);
}

Scheduler::~Scheduler() {
  // Slots taken for sequences that never finished (an exception left the loop) go back.
  for (auto& seq : running_)
    if (seq->owns_slot) engine_.release_slot(seq->slot);
}

SequenceId Scheduler::submit(SequenceRequest request) {
  const GenerateOptions& o = request.options;
  if (o.max_tokens < 0)
    throw InvalidArgumentError(fmt::format("the number of tokens to generate must be >= 0 (got {})", o.max_tokens));
  validate(o.sampling);
  if (request.prompt.empty() && request.history.empty())
    throw InvalidArgumentError("the prompt is empty: give at least one token (or text that tokenizes to one)");
  const uint32_t n_vocab = engine_.n_vocab();
  for (TokenId id : request.prompt)
    if (id < 0 || static_cast<uint32_t>(id) >= n_vocab)
      throw InvalidArgumentError(fmt::format("token id {} is outside the vocabulary (0..{})", id, n_vocab - 1));
  if (request.slot && *request.slot >= engine_.n_slots())
    throw InvalidArgumentError(fmt::format("slot {} does not exist (the engine has {})", *request.slot, engine_.n_slots()));
  const uint64_t needed =
      uint64_t{request.history.size()} + request.prompt.size() + static_cast<uint64_t>(o.max_tokens);
  if (needed > engine_.n_ctx()) throw ContextLengthError(needed, engine_.n_ctx());
  if (request.hooks) request.hooks->validate(engine_.weights().hp.n_layer, engine_.weights().hp.n_embd);
  if (request.top_logprobs > kMaxTopLogprobs)
    throw InvalidArgumentError(fmt::format("at most {} most likely tokens per position can be reported (asked for {})",
                                           kMaxTopLogprobs, request.top_logprobs));
  for (const auto& [id, bias] : request.logit_bias) {
    if (id < 0 || static_cast<uint32_t>(id) >= n_vocab)
      throw InvalidArgumentError(fmt::format("logit bias for token id {}: outside the vocabulary (0..{})", id, n_vocab - 1));
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
      throw InvalidArgumentError(fmt::format("logit bias for token id {} is {}: give a finite number or -inf", id, bias));
  }
  if (request.reuse_prefix && (request.slot || request.hooks))
    throw InvalidArgumentError("prefix reuse is only for sequences without an own slot and without hooks");

  auto seq = std::make_unique<Sequence>();
  seq->request = std::move(request);
  seq->submitted = Clock::now();
  std::lock_guard lock(inbox_mutex_);
  seq->id = next_id_++;
  const SequenceId id = seq->id;
  inbox_.push_back(std::move(seq));
  return id;
}

void Scheduler::cancel(SequenceId id) {
  std::lock_guard lock(inbox_mutex_);
  cancelled_.push_back(id);
}

size_t Scheduler::n_waiting() const {
  std::lock_guard lock(inbox_mutex_);
  return inbox_.size() + waiting_.size();
}

// New submissions join the queue; cancellations finish their sequences, waiting or running.
void Scheduler::take_inbox() {
  std::vector<SequenceId> cancelled;
  {
    std::lock_guard lock(inbox_mutex_);
    for (auto& seq : inbox_) waiting_.push_back(std::move(seq));
    inbox_.clear();
    cancelled.swap(cancelled_);
  }
  for (SequenceId id : cancelled) {
    const auto waiting = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& s) { return s->id == id; });
    if (waiting != waiting_.end()) {
      auto seq = std::move(*waiting);
      waiting_.erase(waiting);
      seq->result.stop = StopReason::Cancelled;
      seq->result.queue_seconds = seconds_between(seq->submitted, Clock::now());
      if (seq->request.on_done) seq->request.on_done(std::move(seq->result));
      continue;
    }
    for (auto& seq : running_)
      if (seq->id == id && seq->phase != Sequence::Phase::Done) finish(*seq, StopReason::Cancelled);
  }
}

// Waiting sequences take free slots in submission order.
void Scheduler::admit() {
  while (!waiting_.empty()) {
    Sequence& seq = *waiting_.front();
    SequenceRequest& r = seq.request;
    size_t reused = 0;
    if (r.slot) {
      seq.slot = *r.slot;
      slot_tokens_[seq.slot].clear();  // the caller writes its rows: nothing of ours stays reusable
    } else if (r.reuse_prefix) {
      if (!take_reusable_slot(seq)) break;
      // At least the prompt's last token is evaluated again, for the logits that follow it.
      reused = std::min(common_prefix(slot_tokens_[seq.slot], r.prompt), r.prompt.size() - 1);
    } else {
      const auto slot = engine_.acquire_slot();
      if (!slot) break;
      seq.slot = *slot;
      seq.owns_slot = true;
    }
    engine_.set_hooks(seq.slot, r.hooks.get());
    seq.history = r.history;
    seq.history.insert(seq.history.end(), r.prompt.begin(), r.prompt.end());
    if (r.prompt.empty()) {
      // Nothing new to evaluate: the last token already in the cache is evaluated again (the same
      // K/V row) to get the logits that follow it.
      seq.input = {r.history.back()};
      seq.n_past = static_cast<uint32_t>(r.history.size() - 1);
    } else {
      seq.input.assign(r.prompt.begin() + static_cast<std::ptrdiff_t>(reused), r.prompt.end());
      seq.n_past = static_cast<uint32_t>(r.history.size() + reused);
    }
    seq.result.n_prompt = static_cast<uint32_t>(r.prompt.size() - reused);
    seq.result.n_cached = static_cast<uint32_t>(reused);
    seq.sampler.emplace(r.options.sampling);
    seq.decoder.emplace(*vocab_.tokenizer);
    // The engine's argmax serves only plain greedy picks: a bias, a constraint or reported
    // log-probabilities need the logits row on the host.
    seq.greedy = picks_argmax(r.options.sampling) && r.logit_bias.empty() && !r.constraint && r.top_logprobs < 0;
    seq.admitted = Clock::now();
    seq.result.queue_seconds = seconds_between(seq.submitted, seq.admitted);
    seq.phase = Sequence::Phase::Prefill;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

// The free slot whose cached tokens share the longest start with the prompt (ties: the lowest
// slot); with nothing in common anywhere, the free slot used longest ago. False when none is free.
bool Scheduler::take_reusable_slot(Sequence& seq) {
  const std::vector<TokenId>& prompt = seq.request.prompt;
  std::vector<std::pair<size_t, uint32_t>> candidates;  // (shared tokens, slot)
  for (uint32_t s = 0; s < slot_tokens_.size(); ++s) {
    const size_t shared = common_prefix(slot_tokens_[s], prompt);
    if (shared > 0) candidates.emplace_back(shared, s);
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [shared, slot] : candidates) {
    if (engine_.try_acquire_slot(slot)) {
      seq.slot = slot;
      seq.owns_slot = true;
      return true;
    }
  }
  // Nothing shared: the free slot used longest ago, so that recent conversations keep their rows.
  std::vector<uint32_t> by_age(slot_tokens_.size());
  for (uint32_t s = 0; s < by_age.size(); ++s) by_age[s] = s;
  std::stable_sort(by_age.begin(), by_age.end(), [&](uint32_t a, uint32_t b) { return slot_used_[a] < slot_used_[b]; });
  for (uint32_t slot : by_age) {
    if (engine_.try_acquire_slot(slot)) {
      seq.slot = slot;
      seq.owns_slot = true;
      return true;
    }
  }
  return false;
}

// One decode token of every generating sequence first (their latency matters most), then prefill
// chunks in admission order while the pass has room.
void Scheduler::form_batch() {
  batch_.clear();
  row_owner_.clear();
  size_t room = engine_.max_batch();
  for (auto& seq : running_) {
    if (seq->phase != Sequence::Phase::Decode && seq->phase != Sequence::Phase::Draining) continue;
    batch_.add(seq->next, seq->slot, seq->n_past, Batch::kLogits | Batch::kEndsInput);
    row_owner_.push_back(seq.get());
    seq->n_past += 1;
    room -= 1;
  }
  for (auto& seq : running_) {
    if (seq->phase != Sequence::Phase::Prefill || room == 0) continue;
    const size_t n = std::min(room, seq->input.size() - seq->n_input_done);
    const bool completes = seq->n_input_done + n == seq->input.size();
    batch_.add_chunk(seq->slot, std::span<const TokenId>(seq->input).subspan(seq->n_input_done, n), seq->n_past,
                     false, completes, completes);
    if (completes) row_owner_.push_back(seq.get());
    seq->n_input_done += n;
    seq->n_past += static_cast<uint32_t>(n);
    room -= n;
  }
}

// Each logits row goes to its sequence: a first token after the prompt, the next token, or the
// end of a drained sequence.
void Scheduler::sample_rows() {
  const auto n_rows = static_cast<uint32_t>(row_owner_.size());
  const bool any_greedy = std::any_of(row_owner_.begin(), row_owner_.end(), [](const Sequence* s) { return s->greedy; });
  greedy_.assign(n_rows, -1);
  if (any_greedy && n_rows > 0) engine_.argmax(n_rows, vocab_.n_samplable, greedy_.data());
  for (uint32_t row = 0; row < n_rows; ++row) {
    Sequence& seq = *row_owner_[row];
    if (seq.phase == Sequence::Phase::Done) continue;  // cancelled by a callback of this step
    if (seq.phase == Sequence::Phase::Draining) {
      finish(seq, seq.stop_after_drain);
      continue;
    }
    if (seq.phase == Sequence::Phase::Prefill) {
      seq.first_token = Clock::now();
      seq.result.prompt_seconds = seconds_between(seq.admitted, seq.first_token);
      seq.sampled_any = true;
      seq.phase = Sequence::Phase::Decode;
    }
    try {
      accept(seq, row, seq.greedy ? greedy_[row] : -1);
    } catch (...) {  // this sequence fails; the others go on
      seq.result.error = std::current_exception();
      finish(seq, StopReason::Failed);
    }
  }
}

// Takes the sequence's next token: `argmax` when there is one, else drawn by its sampler from
// row `row` (which also names the problem when every logit is NaN or -inf).
void Scheduler::accept(Sequence& seq, uint32_t row, TokenId argmax) {
  const GenerateOptions& o = seq.request.options;
  GenerateResult& result = seq.result;
  if (static_cast<int32_t>(result.tokens.size()) >= o.max_tokens) return finish(seq, StopReason::MaxTokens);
  const TokenId token = argmax >= 0 ? argmax : sample_row(seq, row);
  if (seq.request.top_logprobs >= 0)
    logprob_ = static_cast<float>(engine_.logits()[size_t{row} * engine_.n_vocab() + static_cast<size_t>(token)] - log_norm_);
  if (o.stop_at_end_of_generation && vocab_.end_of_generation->contains(token))
    return finish(seq, StopReason::EndOfGeneration);
  if (seq.request.constraint) seq.request.constraint->accept(token);
  result.tokens.push_back(token);
  seq.history.push_back(token);
  seq.next = token;
  const std::string piece = seq.decoder->push(token);
  result.text += piece;
  std::optional<StopReason> stop;
  if (seq.request.on_token && !seq.request.on_token(token_event(seq, token, piece))) stop = StopReason::Callback;
  else if (!piece.empty() && seq.request.on_text && !seq.request.on_text(piece)) stop = StopReason::Callback;
  else if (seq.request.stop_check && seq.request.stop_check(result.text)) stop = StopReason::Callback;
  else if (seq.request.constraint && seq.request.constraint->must_end()) stop = StopReason::EndOfGeneration;
  else if (static_cast<int32_t>(result.tokens.size()) >= o.max_tokens) stop = StopReason::MaxTokens;
  if (!stop) return;
  if (seq.request.evaluate_last) {
    seq.phase = Sequence::Phase::Draining;
    seq.stop_after_drain = *stop;
    return;
  }
  finish(seq, *stop);
}

// What on_token reports: the log-probabilities only where the sequence asked for them (the
// scheduler's buffers hold another sequence's otherwise).
TokenEvent Scheduler::token_event(const Sequence& seq, TokenId token, std::string_view piece) const {
  if (seq.request.top_logprobs < 0) return {token, piece, std::numeric_limits<float>::quiet_NaN(), {}};
  return {token, piece, logprob_, std::span<const TokenLogprob>(top_)};
}

// Draws the sequence's next token from logits row `row` after its bias and constraint, and
// computes the log-probabilities it asked for (of the raw row).
TokenId Scheduler::sample_row(Sequence& seq, uint32_t row) {
  const SequenceRequest& r = seq.request;
  const std::span<const float> raw(engine_.logits() + size_t{row} * engine_.n_vocab(), vocab_.n_samplable);
  if (r.top_logprobs >= 0) compute_logprobs(seq, raw);
  if (r.logit_bias.empty() && !r.constraint) return seq.sampler->sample(raw, seq.history);
  row_.assign(raw.begin(), raw.end());
  for (const auto& [id, bias] : r.logit_bias)
    if (static_cast<uint32_t>(id) < row_.size()) row_[static_cast<size_t>(id)] += bias;
  if (r.constraint) r.constraint->mask(row_);
  return seq.sampler->sample(row_, seq.history);
}

// log_softmax of the raw row: the logprob of every token is x - max - log(sum exp(x - max)); the
// top_logprobs largest are kept (most likely first, lower id first on ties).
void Scheduler::compute_logprobs(Sequence& seq, std::span<const float> logits) {
  float max = -std::numeric_limits<float>::infinity();
  for (float x : logits)
    if (x > max) max = x;
  double sum = 0;
  for (float x : logits)
    if (x > -std::numeric_limits<float>::infinity()) sum += std::exp(static_cast<double>(x) - max);
  const double log_norm = static_cast<double>(max) + std::log(sum);
  log_norm_ = log_norm;
  const auto n_top = static_cast<size_t>(seq.request.top_logprobs);
  top_.clear();
  if (n_top == 0) return;
  auto better = [](const TokenLogprob& a, const TokenLogprob& b) {
    return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
  };
  for (uint32_t id = 0; id < logits.size(); ++id) {
    const float x = logits[id];
    if (std::isnan(x)) continue;
    const TokenLogprob cand{static_cast<TokenId>(id), static_cast<float>(x - log_norm)};
    if (top_.size() < n_top) {
      top_.push_back(cand);
      std::push_heap(top_.begin(), top_.end(), better);
    } else if (better(cand, top_.front())) {
      std::pop_heap(top_.begin(), top_.end(), better);
      top_.back() = cand;
      std::push_heap(top_.begin(), top_.end(), better);
    }
  }
  std::sort_heap(top_.begin(), top_.end(), better);
}

void Scheduler::finish(Sequence& seq, StopReason reason) {
  GenerateResult& result = seq.result;
  const std::string rest = seq.decoder ? seq.decoder->finish() : std::string();
  result.text += rest;
  if (!rest.empty() && seq.request.on_text && reason != StopReason::Cancelled && reason != StopReason::Failed)
    seq.request.on_text(rest);
  result.stop = reason;
  const auto now = Clock::now();
  if (seq.sampled_any) result.generate_seconds = seconds_between(seq.first_token, now);
  else if (seq.phase != Sequence::Phase::Waiting) result.prompt_seconds = seconds_between(seq.admitted, now);
  seq.phase = Sequence::Phase::Done;
}

// Finished sequences leave at once: their slots are free for the next step.
void Scheduler::retire_finished() {
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->phase != Sequence::Phase::Done) {
      ++i;
      continue;
    }
    std::unique_ptr<Sequence> seq = std::move(running_[i]);
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
    if (seq->owns_slot) {
      // What its rows hold stays reusable until another sequence takes the slot (not with hooks:
      // they changed the rows).
      if (seq->request.hooks) slot_tokens_[seq->slot].clear();
      else slot_tokens_[seq->slot].assign(seq->history.begin(), seq->history.begin() + seq->n_past);
      slot_used_[seq->slot] = ++retired_;
      engine_.release_slot(seq->slot);
    }
    if (seq->request.on_done) seq->request.on_done(std::move(seq->result));
  }
}

bool Scheduler::step() {
  take_inbox();
  retire_finished();
  admit();
  if (running_.empty()) return false;
  form_batch();
  if (batch_.empty()) throw InternalError("Scheduler::step: sequences are running but none has a token to evaluate");
  engine_.forward(batch_);
  sample_rows();
  retire_finished();
  return true;
}

void Scheduler::run_until_idle() {
  while (step()) {
  }
  if (n_waiting() > 0)
    throw InvalidArgumentError(fmt::format("{} sequence(s) wait for a slot, but all {} slots of the engine are held "
                                           "elsewhere (by sessions); free one or use an engine with more slots",
                                           n_waiting(), engine_.n_slots()));
}

}  // namespace lathe::runtime
