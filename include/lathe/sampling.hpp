// Turning a logit vector into the next token: a chain of penalties, filters and a seeded draw,
// applied in llama.cpp's default order: penalties (repetition, frequency, presence over the last
// `penalty_last_n` tokens) -> top-k -> top-p -> min-p -> temperature -> draw. Temperature 0 is
// greedy (argmax, lowest id on ties) and ignores the filters. The same seed and the same inputs
// give the same tokens on every run and every machine (the random numbers come from a fixed
// generator, std::mt19937_64, and a uniform draw computed without library distributions).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

namespace lathe {

struct SamplingOptions {
  float temperature = 0.8f;      // >= 0; 0 = greedy
  int32_t top_k = 40;            // <= 0: off
  float top_p = 0.95f;           // (0, 1]; 1 = off
  float min_p = 0.05f;           // [0, 1]; 0 = off
  float repeat_penalty = 1.0f;   // > 0; 1 = off (llama.cpp: divide positive logits, multiply negative)
  float frequency_penalty = 0.0f;  // subtracted count * value
  float presence_penalty = 0.0f;   // subtracted once if the token appeared
  int32_t penalty_last_n = 64;   // window of past tokens the penalties see; 0 = off, -1 = all
  uint64_t seed = 0;
};

// Throws InvalidArgumentError naming the option and the allowed range (temperature < 0, top_p
// outside (0, 1], min_p outside [0, 1], repeat_penalty <= 0, penalty_last_n < -1, NaN anywhere).
void validate(const SamplingOptions& options);

// Whether these options make sampling the plain argmax of the logits: temperature 0 and no
// penalty, so the history does not matter. Callers may then take the argmax where the logits are
// (Session::greedy_token: on a GPU only the id crosses PCIe).
bool picks_argmax(const SamplingOptions& options) noexcept;

// The index of the largest logit, the first on ties, NaN and -inf never taken; -1 when every logit
// is NaN or -inf. The token a Sampler with picks_argmax() options draws (it throws where this
// gives -1).
int32_t argmax_logit(std::span<const float> logits) noexcept;

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);  // validates
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;

  // Picks a token id from `logits` (one per vocabulary entry). `history` is every token of the
  // context so far (prompt and generated), oldest first; the penalties look at its tail. NaN
  // logits count as -inf; if every logit is -inf or NaN, InvalidArgumentError.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

  // Restarts the random sequence from the seed.
  void reset();
  const SamplingOptions& options() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lathe
