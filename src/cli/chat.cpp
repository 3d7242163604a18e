// `lathe chat`: an interactive multi-turn conversation on stdin/stdout (a pipe works too).
// Each turn renders the whole conversation with the model's chat template and evaluates only the
// tokens after the longest prefix the session already holds, so the KV cache carries over.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/generation.hpp"
#include "lathe/chat.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

struct ChatArgs {
  std::string model, system;
  int64_t n_predict = 512;
  SamplingArgs sampling;
  SessionArgs session;
  ControlVectorArgs control_vectors;
  bool verbose = false;
};

size_t common_prefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  const auto [left, right] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return static_cast<size_t>(left - a.begin());
}

class Conversation {
 public:
  Conversation(std::shared_ptr<const Model> model, const ChatArgs& args, const SessionOptions& session_options,
               const SamplingOptions& sampling)
      : model_(model), session_(model, session_options), args_(args), sampling_(sampling) {
    session_.set_hooks(resolve_control_vectors(args.control_vectors, *model));
    reset();
  }

  void report_memory() const { report_device_memory(session_); }

  void reset() {
    messages_ = nlohmann::json::array();
    if (!args_.system.empty()) messages_.push_back({{"role", "system"}, {"content", args_.system}});
    session_.reset();
  }

  // One user turn: streams the reply to stdout. A conversation too long for the context is
  // reported on stderr and the turn is dropped, so the user can /reset and go on.
  void turn(const std::string& user_text) {
    messages_.push_back({{"role", "user"}, {"content", user_text}});
    const std::vector<TokenId> ids =
        tokenize_chat_rendering(*model_, render_chat_prompt(*model_, messages_));
    const uint32_t n_ctx = session_.n_ctx();
    if (ids.size() >= n_ctx) {
      messages_.erase(messages_.size() - 1);
      fmt::print(stderr, "error: the conversation ({} tokens) no longer fits the context ({} tokens); type /reset to "
                         "start over (or restart with a larger -c)\n",
                 ids.size(), n_ctx);
      return;
    }
    // Keep what the session already evaluated up to the first differing token; at least one token
    // is evaluated anew so that the logits belong to the end of this prompt.
    const size_t reused = std::min(common_prefix(ids, session_.tokens()), ids.size() - 1);
    if (reused < session_.n_past()) session_.truncate(static_cast<uint32_t>(reused));
    const std::span<const TokenId> suffix(ids.data() + reused, ids.size() - reused);

    GenerateOptions options;
    options.sampling = sampling_;
    options.sampling.seed = sampling_.seed + n_turns_;  // each turn its own, repeatable, random stream
    const auto room = static_cast<int64_t>(n_ctx) - static_cast<int64_t>(ids.size());
    options.max_tokens = static_cast<int32_t>(std::min(args_.n_predict, room));
    const GenerateResult result = generate(session_, suffix, options, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    fmt::print("\n");
    std::fflush(stdout);
    ++n_turns_;
    messages_.push_back({{"role", "assistant"}, {"content", result.text}});
    if (args_.verbose)
      fmt::print(stderr, "[turn {}: {} prompt tokens reused, {} evaluated, {} generated, context {}/{}]\n", n_turns_,
                 reused, suffix.size(), result.tokens.size(), session_.n_past(), n_ctx);
    if (result.stop == StopReason::MaxTokens && options.max_tokens < args_.n_predict)
      fmt::print(stderr, "error: the reply was cut because the context ({} tokens) is full; type /reset to start over\n",
                 n_ctx);
  }

 private:
  std::shared_ptr<const Model> model_;
  Session session_;
  const ChatArgs& args_;
  SamplingOptions sampling_;
  nlohmann::json messages_;
  uint64_t n_turns_ = 0;
};

int chat(const ChatArgs& args) {
  require_non_negative("-n/--n-predict", args.n_predict);
  if (args.n_predict > INT32_MAX) throw InvalidArgumentError(fmt::format("-n/--n-predict {} is too large", args.n_predict));
  const SessionOptions session_options = resolve_session(args.session);
  const SamplingOptions sampling = resolve_sampling(args.sampling);
  const auto model = Model::load(args.model);
  if (!model->has_chat_template())
    throw NotFoundError(fmt::format("{} has no chat template, so `lathe chat` cannot format a conversation; use "
                                    "`lathe run` for plain text completion",
                                    model->summary().path));
  Conversation conversation(model, args, session_options, sampling);
  conversation.report_memory();
  announce_seed(args.sampling, sampling);

  const bool interactive = ::isatty(STDIN_FILENO) != 0;
  if (interactive) fmt::print(stderr, "chatting with {}; /reset starts over, /exit (or Ctrl-D) quits\n", args.model);
  std::string line;
  for (;;) {
    if (interactive) {
      fmt::print("> ");
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit") break;
    if (line == "/reset") {
      conversation.reset();
      if (interactive) fmt::print(stderr, "(conversation cleared)\n");
      continue;
    }
    conversation.turn(line);
  }
  return 0;
}

}  // namespace

Runner add_chat(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  auto* cmd = app.add_subcommand("chat", "Chat with a model: one user message per line on stdin, /reset, /exit");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  cmd->add_option("--system", args->system, "system message at the start of the conversation");
  cmd->add_option("-n,--n-predict", args->n_predict, "tokens per reply at most")->capture_default_str();
  add_sampling_flags(*cmd, args->sampling);
  add_session_flags(*cmd, args->session, /*with_kv_type=*/false);
  add_control_vector_flags(*cmd, args->control_vectors);
  cmd->add_flag("--verbose", args->verbose, "print per-turn cache reuse and context use to stderr");
  return [args]() -> int { return chat(*args); };
}

}  // namespace lathe::cli
