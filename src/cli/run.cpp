// `lathe run`: complete a prompt, streaming the generated text to stdout as it comes; timings go
// to stderr so that stdout holds only text.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "lathe/chat.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

struct RunArgs {
  std::string model, prompt, prompt_file, system, template_file;
  int64_t n_predict = 128;
  SamplingArgs sampling;
  SessionArgs session;
  ControlVectorArgs control_vectors;
  SaeArgs sae;
  std::string requantize;
  std::vector<std::string> loras;
  bool truncate = false, chat = false, check_tensors = false, no_display_prompt = false, verbose = false;
};

std::string read_prompt(const RunArgs& args) {
  std::string prompt = args.prompt;
  if (!args.prompt_file.empty()) {
    std::FILE* file = std::fopen(args.prompt_file.c_str(), "rb");
    if (file == nullptr) throw IoError(fmt::format("{}: cannot open the prompt file", args.prompt_file));
    char buffer[65536];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) prompt.append(buffer, n);
    const bool failed = std::ferror(file) != 0;
    std::fclose(file);
    if (failed) throw IoError(fmt::format("{}: cannot read the prompt file", args.prompt_file));
  }
  if (prompt.empty())
    throw InvalidArgumentError(args.prompt_file.empty() ? "the prompt is empty; give text with -p or a file with -f"
                                                        : fmt::format("the prompt file {} is empty", args.prompt_file));
  return prompt;
}

double per_second(uint64_t count, double seconds) { return seconds > 0 ? static_cast<double>(count) / seconds : 0.0; }

const char* stop_name(StopReason stop) {
  switch (stop) {
    case StopReason::MaxTokens: return "max tokens";
    case StopReason::EndOfGeneration: return "end of generation";
    case StopReason::Callback: return "stopped";
    case StopReason::Cancelled: return "cancelled";
    case StopReason::Failed: return "failed";
  }
  return "?";
}

// Where the prompt and the generated tokens go in the context: -n is "at most", so generation
// stops when the context is full; --truncate drops the start of a prompt to leave room for -n.
struct ContextPlan {
  size_t dropped = 0;        // prompt tokens dropped by --truncate
  int32_t max_tokens = 0;    // tokens to generate at most (-n, or less where the context is full)
};

ContextPlan plan_context(std::vector<TokenId>& ids, int64_t n_predict, uint32_t n_ctx, bool truncate) {
  ContextPlan plan;
  const size_t n_prompt = ids.size();
  if (truncate && n_prompt + static_cast<uint64_t>(n_predict) > n_ctx) {
    // Keep the end of the prompt that leaves room for -n tokens, and at least one prompt token.
    const uint64_t keep = n_ctx - std::min<uint64_t>(static_cast<uint64_t>(n_predict), n_ctx - 1);
    if (keep < n_prompt) {
      plan.dropped = n_prompt - keep;
      ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(plan.dropped));
    }
  }
  const uint64_t room_needed = n_predict > 0 ? 1 : 0;  // -n 0 only evaluates the prompt
  if (ids.size() + room_needed > n_ctx)
    throw InvalidArgumentError(fmt::format("the prompt is {} tokens, which {} the context (-c/--ctx-size {}) "
                                           "and leaves no room to generate; raise -c/--ctx-size, shorten the prompt, or "
                                           "pass --truncate to keep the end of the prompt",
                                           ids.size(), ids.size() > n_ctx ? "exceeds" : "fills", n_ctx));
  plan.max_tokens = static_cast<int32_t>(std::min<uint64_t>(static_cast<uint64_t>(n_predict), n_ctx - ids.size()));
  return plan;
}

int run(const RunArgs& args) {
  if (args.n_predict < 0 || args.n_predict > INT32_MAX)
    throw InvalidArgumentError(fmt::format("-n/--n-predict {} is out of range: it must be in 0..{}", args.n_predict,
                                           INT32_MAX));
  if (!args.system.empty() && !args.chat)
    throw InvalidArgumentError("--system needs --chat (it is the system message of the chat template)");
  if (!args.template_file.empty() && !args.chat)
    throw InvalidArgumentError("--template needs --chat (it replaces the model's chat template)");
  const std::string prompt = read_prompt(args);
  const SessionOptions session_options = resolve_session(args.session);
  GenerateOptions generate_options;
  generate_options.sampling = resolve_sampling(args.sampling);
  check_sae_flags(args.sae);

  const auto model = Model::load(args.model, LoadOptions{.check_tensors = args.check_tensors,
                                                         .requantize = args.requantize,
                                                         .chat_template_file = args.template_file,
                                                         .loras = resolve_loras(args.loras)});
  report_loras(*model);
  check_context_size(session_options, *model);
  std::string text = prompt;
  std::vector<TokenId> ids;
  if (args.chat) {
    if (!model->has_chat_template())
      throw NotFoundError(fmt::format("{} has no chat template, so --chat cannot format the prompt; give one with "
                                      "--template FILE, or leave out --chat to complete the raw text",
                                      model->summary().path));
    // The same rendering as chat_prompt_tokens, kept in pieces to display the text.
    text = render_chat_prompt(*model, chat_messages(prompt, args.system));
    ids = tokenize_chat_rendering(*model, text);
  } else {
    ids = chat_prompt_tokens(*model, prompt, {.system = "", .use_template = false});
  }
  Session session(model, session_options);
  session.set_hooks(resolve_hooks(args.control_vectors, args.sae, *model));
  const size_t n_prompt = ids.size();
  const ContextPlan plan = plan_context(ids, args.n_predict, session.n_ctx(), args.truncate);
  generate_options.max_tokens = plan.max_tokens;
  // Every check has passed: from here on, output.
  report_device_memory(session);
  if (args.verbose) {
    const ModelSummary& s = model->summary();
    fmt::print(stderr, "model: {} ({} {}, {} params, {}), context {} tokens, KV cache {}\n", s.path, s.architecture,
               s.weight_type, human_count(s.n_params), human_bytes(s.weight_bytes), session.n_ctx(),
               human_bytes(session.kv_bytes()));
    fmt::print(stderr, "prompt: {} tokens\n", n_prompt);
  }
  if (plan.dropped > 0)
    fmt::print(stderr,
               "--truncate: dropped the first {} of the prompt's {} tokens (kept the last {}) to leave room for "
               "-n/--n-predict {} in the context (-c/--ctx-size {})\n",
               plan.dropped, n_prompt, ids.size(), args.n_predict, session.n_ctx());
  announce_seed(args.sampling, generate_options.sampling);
  if (!args.no_display_prompt) {
    // A truncated prompt is shown as the model sees it.
    if (plan.dropped > 0) text = model->detokenize(ids);
    fmt::print("{}", text);
    std::fflush(stdout);
  }
  const GenerateResult result = generate(session, ids, generate_options, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  fmt::print("\n");
  std::fflush(stdout);
  fmt::print(stderr, "prompt: {} tokens, {:.2f} tok/s | generated: {} tokens, {:.2f} tok/s\n", result.n_prompt,
             per_second(result.n_prompt, result.prompt_seconds), result.tokens.size(),
             per_second(result.tokens.size(), result.generate_seconds));
  if (result.stop == StopReason::MaxTokens && plan.max_tokens < args.n_predict)
    fmt::print(stderr,
               "stopped: the context (-c/--ctx-size {}) is full after {} generated tokens, fewer than -n/--n-predict "
               "{}; raise -c/--ctx-size for longer output\n",
               session.n_ctx(), result.tokens.size(), args.n_predict);
  if (args.verbose) fmt::print(stderr, "stop: {}\n", stop_name(result.stop));
  return 0;
}

}  // namespace

Runner add_run(CLI::App& app) {
  auto args = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "Complete a prompt, streaming the generated text to stdout");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "prompt text");
  cmd->add_option("-f,--file", args->prompt_file, "read the prompt from this file")->excludes(prompt);
  cmd->add_option("-n,--n-predict", args->n_predict, "tokens to generate at most (fewer when the context fills up)")
      ->capture_default_str();
  add_sampling_flags(*cmd, args->sampling);
  add_session_flags(*cmd, args->session, /*with_kv_type=*/true);
  add_control_vector_flags(*cmd, args->control_vectors);
  add_sae_flags(*cmd, args->sae);
  cmd->add_flag("--truncate", args->truncate,
                "when prompt + -n exceed the context, drop the start of the prompt to leave room for -n tokens "
                "(without it, generation stops when the context is full, and a prompt that fills it is refused)");
  cmd->add_flag("--chat", args->chat, "wrap the prompt in the model's chat template as one user message");
  cmd->add_option("--system", args->system, "system message for --chat");
  cmd->add_option("--template", args->template_file, "Jinja chat template file to use with --chat instead of the model's");
  cmd->add_flag("--check-tensors", args->check_tensors, "scan every weight for NaN/Inf while loading");
  cmd->add_option("--requantize", args->requantize,
                  "convert the weights to this type after loading (Q8_0, Q4_0, Q4_1, F16, BF16, F32)");
  add_lora_flags(*cmd, args->loras);
  cmd->add_flag("--no-display-prompt", args->no_display_prompt, "print only the generated text");
  cmd->add_flag("--verbose", args->verbose, "print model, context and stop details to stderr");
  return [args]() -> int { return run(*args); };
}

}  // namespace lathe::cli
