// A constraint on which tokens may come next (structured output: a JSON schema compiled to a
// grammar, src/grammar/). The scheduler asks it, for each token of a constrained sequence, to mask
// the logits before sampling, then tells it the token that was taken. One object per sequence;
// only the scheduler's stepping thread calls it.
#pragma once

#include <cstdint>
#include <span>

namespace lathe {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // Sets to -infinity the logit of every token that may not come next. `logits` holds one entry
  // per samplable token id. End-of-generation tokens are allowed exactly when the constrained
  // text is complete (done_possible()).
  virtual void mask(std::span<float> logits) = 0;
  // The token taken (one that mask() left allowed). Throws InternalError for a token the mask
  // forbade.
  virtual void accept(int32_t token) = 0;
  // The text so far is a complete value (ending here is allowed).
  virtual bool done_possible() const = 0;
  // The text so far is complete and nothing else may follow but an end-of-generation token: the
  // scheduler ends the sequence here (StopReason::EndOfGeneration) without sampling again.
  virtual bool must_end() const = 0;
};

}  // namespace lathe
