#include <chrono>
#include <fmt/format.h>

#include "api/model_impl.hpp"

namespace lathe {
namespace {
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

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

  GenerateResult result;
  const auto& model = session.model();
  Sampler sampler(options.sampling);
  const auto prompt_start = std::chrono::steady_clock::now();
  if (!prompt.empty()) session.eval(prompt);
  result.n_prompt = static_cast<uint32_t>(prompt.size());
  result.prompt_seconds = seconds_since(prompt_start);

  const auto gen_start = std::chrono::steady_clock::now();
  tokenizer::StreamDecoder decoder(model.impl().tokenizer);
  auto emit = [&](const std::string& piece) {
    result.text += piece;
    return piece.empty() || !on_text || on_text(piece);
  };
  // Greedy without penalties: the argmax where the logits are (on a GPU only the id comes back);
  // a step whose logits are all NaN or -inf goes to the sampler, which names the problem.
  const bool argmax_only = picks_argmax(options.sampling);
  for (int32_t i = 0; i < options.max_tokens; ++i) {
    TokenId next = argmax_only ? session.greedy_token() : -1;
    if (next < 0) next = sampler.sample(model.impl().samplable(session.logits()), session.tokens());
    if (options.stop_at_end_of_generation && model.is_end_of_generation(next)) {
      result.stop = StopReason::EndOfGeneration;
      break;
    }
    result.tokens.push_back(next);
    if (!emit(decoder.push(next))) {
      result.stop = StopReason::Callback;
      break;
    }
    // Every kept token is evaluated, so the session always ends with the logits that follow its
    // last token and a later generate() (or chat turn) can continue from it.
    session.eval(std::span<const TokenId>(&next, 1));
  }
  emit(decoder.finish());
  result.generate_seconds = seconds_since(gen_start);
  return result;
}

}  // namespace lathe
