// Chat templates: turning a conversation (JSON messages) into the prompt text a model expects, by
// rendering the model's Jinja chat template the way Hugging Face transformers'
// apply_chat_template does (see chat/jinja.hpp and docs/CHAT_TEMPLATES.md).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/gguf.hpp"

namespace lathe {

// Renders `template_source` with the variables transformers passes: messages,
// add_generation_prompt, bos_token, eos_token, tools=None and documents=None, then every key of
// `extra` (a JSON object, may override bos_token/eos_token/tools/documents and add others such as
// enable_thinking). `messages` must be a JSON array (of {"role", "content", ...} objects).
// `template_name` names the template in error messages.
// Throws FormatError/UnsupportedError for the template, InvalidArgumentError for bad arguments or
// when the template raises (raise_exception) or fails while rendering.
std::string render_chat(std::string_view template_source, const nlohmann::json& messages, bool add_generation_prompt,
                        const std::string& bos_token, const std::string& eos_token,
                        const nlohmann::json& extra = nlohmann::json::object(),
                        const std::string& template_name = "chat template");

// A model's chat template and the special tokens the template refers to.
struct ChatTemplateSource {
  std::string source;     // the Jinja text; empty when the model has none
  std::string origin;     // where it came from, e.g. "model.gguf: tokenizer.chat_template"
  std::string bos_token;  // "" when unknown
  std::string eos_token;
};

// Reads the chat template of a GGUF file (tokenizer.chat_template, BOS/EOS from
// tokenizer.ggml.tokens) or of a model/tokenizer directory (tokenizer_config.json's chat_template,
// a string or a list of {"name", "template"} where "default" is used; else chat_template.jinja or
// chat_template.json; bos_token/eos_token as strings or {"content": ...}). A model without a
// template gives an empty `source`; unreadable files throw the io/format errors.
ChatTemplateSource load_chat_template(const std::filesystem::path& model);
// The same from a GGUF file already open (a model's file is parsed once for all its parts).
ChatTemplateSource load_chat_template(const gguf::File& file);

}  // namespace lathe
