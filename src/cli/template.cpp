// lathe template -m MODEL --messages FILE.json: print the prompt a model's chat template makes of
// a conversation, exactly as transformers' apply_chat_template would (docs/CHAT_TEMPLATES.md).
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "chat/chat_template.hpp"
#include "cli/commands.hpp"
#include "io/json_text.hpp"
#include "lathe/error.hpp"

namespace lathe::cli {
namespace {

struct TemplateArgs {
  std::string model;
  std::string messages_file;
  std::string template_file;
  std::string system;
  std::string vars_json;
  bool generation_prompt = true;
};

std::string read_file_text(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open {} for reading; check the path", path, what));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json parse_json(const std::string& text, const std::string& origin) {
  return parse_json_text(text, origin, "fix the JSON");
}

int run_template(const TemplateArgs& args) {
  ChatTemplateSource source = load_chat_template(args.model);
  if (!args.template_file.empty()) {
    source.source = read_file_text(args.template_file, "the template");
    source.origin = args.template_file;
  }
  if (source.source.empty())
    throw NotFoundError(fmt::format("{}: the model has no chat template (no tokenizer.chat_template / chat_template); pass one "
                                    "with --template FILE",
                                    args.model));
  nlohmann::json messages = parse_json(read_file_text(args.messages_file, "the messages"), args.messages_file);
  if (messages.is_object() && messages.contains("messages")) messages = messages["messages"];  // OpenAI request body
  if (!messages.is_array())
    throw InvalidArgumentError(args.messages_file + ": expected a JSON array of {\"role\", \"content\"} objects");
  if (!args.system.empty())
    messages.insert(messages.begin(), nlohmann::json{{"role", "system"}, {"content", args.system}});
  nlohmann::json extra = nlohmann::json::object();
  if (!args.vars_json.empty()) {
    extra = parse_json(args.vars_json, "--vars");
    if (!extra.is_object()) throw InvalidArgumentError("--vars must be a JSON object, e.g. '{\"enable_thinking\": false}'");
  }
  const std::string prompt =
      render_chat(source.source, messages, args.generation_prompt, source.bos_token, source.eos_token, extra, source.origin);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  return 0;
}

}  // namespace

Runner add_template(CLI::App& app) {
  auto args = std::make_shared<TemplateArgs>();
  auto* cmd = app.add_subcommand("template", "Render a conversation with a model's chat template");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory or tokenizer directory (tokenizer_config.json)")
      ->required();
  cmd->add_option("--messages", args->messages_file, "JSON file: an array of {\"role\", \"content\", ...} messages")->required();
  cmd->add_option("--template", args->template_file, "Jinja template file to use instead of the model's");
  cmd->add_option("--system", args->system, "Prepend a system message with this text");
  cmd->add_option("--vars", args->vars_json, "Extra template variables as a JSON object, e.g. '{\"enable_thinking\": false}'");
  cmd->add_flag("--add-generation-prompt,!--no-generation-prompt", args->generation_prompt,
                "End with the assistant turn header (default) or not");
  return [args] { return run_template(*args); };
}

}  // namespace lathe::cli
