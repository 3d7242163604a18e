#include "chat/chat_template.hpp"
#include "io/json_text.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "chat/jinja.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace lathe {

std::string render_chat(std::string_view template_source, const nlohmann::json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token, const nlohmann::json& extra,
                        const std::string& template_name) {
  if (!messages.is_array())
    throw InvalidArgumentError(fmt::format("chat messages must be a JSON array of {{\"role\", \"content\"}} objects, got {}",
                                           messages.type_name()));
  if (!extra.is_object() && !extra.is_null())
    throw InvalidArgumentError(fmt::format("extra chat template variables must be a JSON object, got {}", extra.type_name()));
  // The variables transformers' apply_chat_template passes (tools and documents default to None).
  nlohmann::json context = {{"bos_token", bos_token}, {"eos_token", eos_token}, {"tools", nullptr}, {"documents", nullptr}};
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it) context[it.key()] = it.value();
  context["messages"] = messages;
  context["add_generation_prompt"] = add_generation_prompt;
  return jinja::Template::parse(template_source, template_name).render(context);
}

namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open for reading; check the path and permissions");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const std::filesystem::path& path) {
  const std::string text = read_text(path);
  return parse_json_text(text, path.string(), "fix or re-download the file");
}

// bos_token/eos_token in tokenizer_config.json: a string, {"content": "..."} (AddedToken), or null.
std::string special_token(const nlohmann::json& config, const char* key, const std::filesystem::path& path) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) return (*it)["content"].get<std::string>();
  throw FormatError(path.string(), key, 0, "expected a string or an object with a string \"content\"",
                    "fix the tokenizer_config.json");
}

// tokenizer_config.json's chat_template: a string, or a list of {"name", "template"} of which
// transformers uses "default".
std::string config_template(const nlohmann::json& value, const std::filesystem::path& path) {
  if (value.is_null()) return {};
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    for (const auto& entry : value)
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string())
        return entry["template"].get<std::string>();
    throw UnsupportedError(path.string() + ": chat_template is a list without a \"default\" entry; pass the one you want with --template FILE (`lathe run`, `lathe chat` and `lathe template` take one)");
  }
  throw FormatError(path.string(), "chat_template", 0, std::string("expected a string or a list, got ") + value.type_name(),
                    "fix the tokenizer_config.json or pass --template FILE (`lathe run`, `lathe chat` and `lathe template` take one)");
}

ChatTemplateSource from_directory(const std::filesystem::path& dir) {
  ChatTemplateSource result;
  const auto config_path = dir / "tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    const nlohmann::json config = read_json(config_path);
    if (!config.is_object()) throw FormatError(config_path.string(), "(root)", 0, "expected a JSON object", "fix the file");
    result.bos_token = special_token(config, "bos_token", config_path);
    result.eos_token = special_token(config, "eos_token", config_path);
    if (auto it = config.find("chat_template"); it != config.end()) {
      result.source = config_template(*it, config_path);
      result.origin = config_path.string() + ": chat_template";
    }
  }
  if (result.source.empty() && std::filesystem::exists(dir / "chat_template.jinja")) {
    result.source = read_text(dir / "chat_template.jinja");
    result.origin = (dir / "chat_template.jinja").string();
  }
  if (result.source.empty() && std::filesystem::exists(dir / "chat_template.json")) {
    const nlohmann::json j = read_json(dir / "chat_template.json");
    if (j.is_object() && j.contains("chat_template")) result.source = config_template(j["chat_template"], dir / "chat_template.json");
    result.origin = (dir / "chat_template.json").string() + ": chat_template";
  }
  if (!std::filesystem::exists(config_path) && result.source.empty()) {
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.is_regular_file() && entry.path().extension() == ".gguf") return load_chat_template(entry.path());
  }
  return result;
}

std::string gguf_token_text(const gguf::File& file, const char* id_key) {
  const gguf::Value* id = file.find(id_key);
  const gguf::Value* tokens = file.find("tokenizer.ggml.tokens");
  if (!id || !tokens || tokens->type != gguf::ValueType::ARRAY) return {};
  const uint64_t index = id->as_u64(file.display_name() + ": " + id_key);
  const auto& items = tokens->as_array(file.display_name() + ": tokenizer.ggml.tokens").items;
  if (index >= items.size())
    throw FormatError(file.display_name(), id_key, 0, fmt::format("token id {} is outside the vocabulary of {}", index, items.size()),
                      "fix the GGUF metadata");
  return items[index].as_string(fmt::format("{}: tokenizer.ggml.tokens[{}]", file.display_name(), index));
}

}  // namespace

ChatTemplateSource load_chat_template(const std::filesystem::path& model) {
  if (!std::filesystem::exists(model))
    throw NotFoundError(model.string() + ": no such file or directory; give a GGUF file, a model directory or a tokenizer directory");
  if (std::filesystem::is_directory(model)) return from_directory(model);
  return load_chat_template(gguf::File::open(model));
}

ChatTemplateSource load_chat_template(const gguf::File& file) {
  ChatTemplateSource result;
  if (const gguf::Value* t = file.find("tokenizer.chat_template")) {
    result.source = t->as_string(file.display_name() + ": tokenizer.chat_template");
    result.origin = file.display_name() + ": tokenizer.chat_template";
  }
  result.bos_token = gguf_token_text(file, "tokenizer.ggml.bos_token_id");
  result.eos_token = gguf_token_text(file, "tokenizer.ggml.eos_token_id");
  return result;
}

}  // namespace lathe
