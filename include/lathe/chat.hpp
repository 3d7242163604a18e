// Prompts as a model sees them in a chat: the model's own chat template (Model::apply_chat_template)
// over a system and a user message, with the assistant's turn opened, tokenized with the template's
// special tokens. Used by `lathe run --chat`, `lathe chat`, the editing tools' prompt sets and the
// server.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/lathe.hpp"

namespace lathe {

struct ChatPromptOptions {
  std::string system = "You are a helpful assistant.";  // empty: no system message (the template's default)
  bool use_template = true;
};

// The prompt as the model sees it in a chat: the system message (when not empty) and `prompt` as
// the user message, rendered by the model's own chat template with the generation prompt and
// tokenized with special tokens parsed (no extra BOS when the template already starts with it).
// use_template = false: the raw text with BOS, as `lathe run` without --chat does. A model without
// a template and use_template = true: NotFoundError advising --no-template.
std::vector<TokenId> chat_prompt_tokens(const Model& model, std::string_view prompt,
                                        const ChatPromptOptions& options = {});

// The pieces chat_prompt_tokens is made of, shared with `lathe run --chat` and `lathe chat`:
// [{"role": "system", ...}?, {"role": "user", "content": prompt}]
nlohmann::json chat_messages(std::string_view prompt, std::string_view system);
// The model's chat template over `messages` with the assistant prompt appended; NotFoundError
// (advising --no-template, or `lathe run` without --chat) when the model has none.
std::string render_chat_prompt(const Model& model, const nlohmann::json& messages);
// Token ids of a chat-template rendering. Templates write special tokens as text, so they are
// parsed as specials and no BOS/EOS is added on top; a BOS is prepended only when the vocabulary
// asks for one and the template did not write it (so it is never doubled).
std::vector<TokenId> tokenize_chat_rendering(const Model& model, std::string_view rendered);

}  // namespace lathe
