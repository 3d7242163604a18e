// generate(): one sequence on a session's slot, through the runtime's scheduler (which holds the
// per-token loop). The session keeps the prompt and every kept token, and ends with the logits
// that follow the last one.
#include <fmt/format.h>

#include "api/model_impl.hpp"

namespace lathe {

GenerateResult generate(Session& session, std::span<const TokenId> prompt, const GenerateOptions& options,
                        const TextCallback& on_text) {
  if (options.max_tokens < 0)
    throw InvalidArgumentError(fmt::format("the number of tokens to generate must be >= 0 (got {})", options.max_tokens));
  validate(options.sampling);
  if (prompt.empty() && session.n_past() == 0)
    throw InvalidArgumentError("the prompt is empty: give at least one token (or text that tokenizes to one)");

  // Context bound: prompt + generated tokens must fit, or the prompt is cut from the front.
  const uint64_t needed = uint64_t{session.n_past()} + prompt.size() + static_cast<uint64_t>(options.max_tokens);
  if (needed > session.n_ctx()) {
    const uint64_t room = session.n_ctx() > session.n_past() + uint64_t(options.max_tokens)
                              ? session.n_ctx() - session.n_past() - options.max_tokens
                              : 0;
    if (!options.truncate_prompt || room == 0) throw ContextLengthError(needed, session.n_ctx());
    prompt = prompt.subspan(prompt.size() - room);
  }

  Session::Impl& s = *session.impl_;
  // The scheduler checks the request (hooks included) before anything runs.
  runtime::Scheduler scheduler(*s.engine, internals(*s.model).vocabulary());
  runtime::SequenceRequest request;
  request.prompt.assign(prompt.begin(), prompt.end());
  request.options = options;
  request.hooks = s.hooks;
  request.slot = s.slot;
  request.history = s.tokens;
  request.evaluate_last = true;  // a later generate() or chat turn continues from the last token
  request.on_text = on_text;
  GenerateResult result;
  request.on_done = [&result](GenerateResult&& done) { result = std::move(done); };
  scheduler.submit(std::move(request));
  // On an exception the session stays as it was (rows written past its tokens are overwritten
  // by later evaluations).
  s.n_logit_rows = 0;
  s.rows_in_engine = false;
  scheduler.run_until_idle();
  if (result.error) std::rethrow_exception(result.error);
  s.tokens.insert(s.tokens.end(), prompt.begin(), prompt.end());
  s.tokens.insert(s.tokens.end(), result.tokens.begin(), result.tokens.end());
  // The scheduler's last pass left this sequence's row (its only one) as the engine's row 0.
  s.n_logit_rows = 1;
  s.rows_in_engine = true;
  return result;
}

}  // namespace lathe
