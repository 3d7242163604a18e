// What a generation asks for and what it returns, shared by Session-based generate(), batched
// generation and the runtime's scheduler (which runs every sequence's per-token loop: sampling,
// end of generation, streaming text, stop checks).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/error.hpp"
#include "lathe/sampling.hpp"

namespace lathe {

using TokenId = int32_t;

struct GenerateOptions {
  int32_t max_tokens = 128;  // >= 0
  SamplingOptions sampling;
  bool stop_at_end_of_generation = true;
  // When prompt + max_tokens exceed the context: false -> ContextLengthError before any work;
  // true -> keep the last tokens of the prompt that leave room for max_tokens (generate() only).
  bool truncate_prompt = false;
};

// Callback: the caller's callback asked to stop; Cancelled: cancelled from another thread (the
// sequence's slot is freed at the next step); Failed: choosing its next token failed (every logit
// NaN, a callback threw): GenerateResult::error holds the exception, the other sequences go on.
enum class StopReason { MaxTokens, EndOfGeneration, Callback, Cancelled, Failed };

struct GenerateResult {
  std::vector<TokenId> tokens;  // generated ids (without the prompt)
  std::string text;             // their text
  uint32_t n_prompt = 0;        // prompt tokens evaluated by this call
  // Prompt tokens whose cache rows a slot already held from an earlier sequence (prefix reuse,
  // runtime::SequenceRequest::reuse_prefix); they are part of the prompt but not of n_prompt.
  uint32_t n_cached = 0;
  // Seconds waiting for a free slot (from submission to admission), from admission to the first
  // sampled token (prefill, sharing passes with other sequences), and from then to the end. The
  // time to first token is queue_seconds + prompt_seconds.
  double queue_seconds = 0, prompt_seconds = 0, generate_seconds = 0;
  StopReason stop = StopReason::MaxTokens;
  std::exception_ptr error;  // set with StopReason::Failed
};

// Called with each new piece of text as soon as it is complete UTF-8; return false to stop.
using TextCallback = std::function<bool(std::string_view piece)>;

class ContextLengthError : public InvalidArgumentError {
 public:
  ContextLengthError(uint64_t needed, uint64_t n_ctx);
  uint64_t needed() const noexcept { return needed_; }
  uint64_t n_ctx() const noexcept { return n_ctx_; }

 private:
  uint64_t needed_, n_ctx_;
};

}  // namespace lathe
