// `lathe chat`: an interactive multi-turn conversation on stdin/stdout (a pipe works too). Lines
// starting with / are lathe's commands (/help lists them); Ctrl-C stops the reply being written.
// Each turn renders the whole conversation with the model's chat template and evaluates only the
// tokens after the longest prefix the session already holds, so the KV cache carries over.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/generation.hpp"
#include "lathe/chat.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

struct ChatArgs {
  std::string model, system, template_file;
  int64_t n_predict = 512;
  SamplingArgs sampling;
  SessionArgs session;
  ControlVectorArgs control_vectors;
  SaeArgs sae;
  std::vector<std::string> loras;
  bool verbose = false;
};

constexpr const char* kHelp =
    "commands: /help (this list), /reset (start the conversation over), /exit or /quit (end the session, as Ctrl-D "
    "does); Ctrl-C stops a reply, and at the prompt ends the session; a line starting with // is sent as a message "
    "starting with /";

// Ctrl-C: while a reply streams, the first one stops the reply (the text callback reads the flag)
// and a second one ends the process; at the prompt, it ends the session (the read is interrupted).
volatile std::sig_atomic_t g_replying = 0;
volatile std::sig_atomic_t g_stop_reply = 0;
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  if (g_replying != 0) {
    if (g_stop_reply != 0) ::_exit(130);  // a reply that does not stop (e.g. a long prompt evaluating)
    g_stop_reply = 1;
  } else {
    g_interrupted = 1;
  }
}

// Installs on_sigint: with SA_RESTART while replying (so that writes and waits of the reply are not
// cut short), without it at the prompt (so that the blocked read returns).
void handle_sigint(bool replying) {
  g_replying = replying ? 1 : 0;
  struct sigaction action {};
  action.sa_handler = on_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = replying ? SA_RESTART : 0;
  ::sigaction(SIGINT, &action, nullptr);
}

// Lines from a file descriptor with read(2), so that Ctrl-C interrupts a blocked read.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  // The next line without its end of line; nullopt at the end of input, on Ctrl-C, or on an error.
  std::optional<std::string> next() {
    for (;;) {
      if (const size_t eol = buffer_.find('\n'); eol != std::string::npos) {
        std::string line = buffer_.substr(0, eol);
        buffer_.erase(0, eol + 1);
        return line;
      }
      if (eof_ || g_interrupted != 0) break;
      char chunk[4096];
      const ssize_t n = ::read(fd_, chunk, sizeof(chunk));
      if (n > 0) buffer_.append(chunk, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR) eof_ = true;
    }
    if (g_interrupted != 0 || buffer_.empty()) return std::nullopt;
    std::string last = std::move(buffer_);  // a last line without an end of line
    buffer_.clear();
    return last;
  }

 private:
  int fd_;
  std::string buffer_;
  bool eof_ = false;
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
    session_.set_hooks(resolve_hooks(args.control_vectors, args.sae, *model));
    reset();
  }

  void report_memory() const { report_device_memory(session_); }

  void reset() {
    messages_ = nlohmann::json::array();
    if (!args_.system.empty()) messages_.push_back({{"role", "system"}, {"content", args_.system}});
    session_.reset();
  }

  // One user turn: streams the reply to stdout; false when the turn failed (reported on stderr).
  // A conversation too long for the context is refused and the turn dropped, so the user can
  // /reset and go on. Ctrl-C stops the reply; what was generated stays in the conversation.
  bool turn(const std::string& user_text) {
    messages_.push_back({{"role", "user"}, {"content", user_text}});
    try {
      return reply();
    } catch (const Error& e) {
      // The turn is dropped; the session keeps only what it had evaluated before it.
      messages_.erase(messages_.size() - 1);
      std::fflush(stdout);
      fmt::print(stderr, "error: {}\n", e.what());
      return false;
    }
  }

 private:
  bool reply() {
    const std::vector<TokenId> ids = tokenize_chat_rendering(*model_, render_chat_prompt(*model_, messages_));
    const uint32_t n_ctx = session_.n_ctx();
    if (ids.size() >= n_ctx) {
      messages_.erase(messages_.size() - 1);
      fmt::print(stderr, "error: the conversation ({} tokens) no longer fits the context (-c/--ctx-size {}); type "
                         "/reset to start over (or restart with a larger -c/--ctx-size)\n",
                 ids.size(), n_ctx);
      return false;
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
    g_stop_reply = 0;
    handle_sigint(/*replying=*/true);
    GenerateResult result;
    try {
      result = generate(session_, suffix, options, [](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return g_stop_reply == 0;
      });
    } catch (...) {
      handle_sigint(/*replying=*/false);
      throw;
    }
    handle_sigint(/*replying=*/false);
    fmt::print("\n");
    std::fflush(stdout);
    ++n_turns_;
    messages_.push_back({{"role", "assistant"}, {"content", result.text}});
    if (result.stop == StopReason::Callback) fmt::print(stderr, "(reply stopped; Ctrl-C again at the prompt ends the session)\n");
    if (args_.verbose)
      fmt::print(stderr, "[turn {}: {} prompt tokens reused, {} evaluated, {} generated, context {}/{}]\n", n_turns_,
                 reused, suffix.size(), result.tokens.size(), session_.n_past(), n_ctx);
    if (result.stop == StopReason::MaxTokens && options.max_tokens < args_.n_predict) {
      fmt::print(stderr, "error: the reply was cut because the context (-c/--ctx-size {}) is full; type /reset to start "
                         "over\n",
                 n_ctx);
      return false;
    }
    return true;
  }

  std::shared_ptr<const Model> model_;
  Session session_;
  const ChatArgs& args_;
  SamplingOptions sampling_;
  nlohmann::json messages_;
  uint64_t n_turns_ = 0;
};

int chat(const ChatArgs& args) {
  // 0 would make every reply empty.
  if (args.n_predict < 1 || args.n_predict > INT32_MAX)
    throw InvalidArgumentError(fmt::format("-n/--n-predict {} is out of range: it must be in 1..{}", args.n_predict,
                                           INT32_MAX));
  const SessionOptions session_options = resolve_session(args.session);
  const SamplingOptions sampling = resolve_sampling(args.sampling);
  check_sae_flags(args.sae);
  const auto model =
      Model::load(args.model, LoadOptions{.chat_template_file = args.template_file, .loras = resolve_loras(args.loras)});
  report_loras(*model);
  check_context_size(session_options, *model);
  if (!model->has_chat_template())
    throw NotFoundError(fmt::format("{} has no chat template, so `lathe chat` cannot format a conversation; give one "
                                    "with --template FILE, or use `lathe run` for plain text completion",
                                    model->summary().path));
  // A template that cannot render fails here, not at every turn.
  (void)render_chat_prompt(*model, chat_messages("Hello", args.system));
  Conversation conversation(model, args, session_options, sampling);
  conversation.report_memory();
  announce_seed(args.sampling, sampling);

  const bool interactive = ::isatty(STDIN_FILENO) != 0;
  if (interactive)
    fmt::print(stderr, "chatting with {}; /help lists the commands, /exit (or Ctrl-D) quits, Ctrl-C stops a reply\n",
               args.model);
  handle_sigint(/*replying=*/false);
  LineReader reader(STDIN_FILENO);
  bool failed = false;
  for (;;) {
    if (interactive) {
      fmt::print("> ");
      std::fflush(stdout);
    }
    std::optional<std::string> line = reader.next();
    if (!line) {
      if (interactive) fmt::print("\n");
      break;
    }
    if (!line->empty() && line->back() == '\r') line->pop_back();
    if (line->empty()) continue;
    if ((*line)[0] == '/') {
      const std::string command = line->substr(0, line->find(' '));
      if (command.starts_with("//")) {
        line->erase(0, 1);  // "//text" sends "/text"
      } else {
        if (command == "/exit" || command == "/quit") break;
        if (command == "/reset") {
          conversation.reset();
          if (interactive) fmt::print(stderr, "(conversation cleared)\n");
        } else if (command == "/help") {
          fmt::print(stderr, "{}\n", kHelp);
        } else {
          fmt::print(stderr, "error: {} is not a command of lathe chat; {}\n", command, kHelp);
          failed = true;
        }
        continue;
      }
    }
    if (!conversation.turn(*line)) failed = true;
  }
  std::signal(SIGINT, SIG_DFL);
  // A piped session reports a failed turn in its exit status (an interactive user saw it).
  return failed && !interactive ? 1 : 0;
}

}  // namespace

Runner add_chat(CLI::App& app) {
  auto args = std::make_shared<ChatArgs>();
  auto* cmd = app.add_subcommand("chat", "Chat with a model: one user message per line on stdin; /help lists the "
                                         "commands (/reset, /exit)");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  cmd->add_option("--system", args->system, "system message at the start of the conversation");
  cmd->add_option("--template", args->template_file, "Jinja chat template file to use instead of the model's");
  add_lora_flags(*cmd, args->loras);
  cmd->add_option("-n,--n-predict", args->n_predict, "tokens per reply at most")->capture_default_str();
  add_sampling_flags(*cmd, args->sampling);
  add_session_flags(*cmd, args->session, /*with_kv_type=*/true);
  add_control_vector_flags(*cmd, args->control_vectors);
  add_sae_flags(*cmd, args->sae);
  cmd->add_flag("--verbose", args->verbose, "print per-turn cache reuse and context use to stderr");
  return [args]() -> int { return chat(*args); };
}

}  // namespace lathe::cli
