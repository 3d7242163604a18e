// Prompt files (the prompt sets of `lathe cvector` and the abliteration tools) and prompts as a
// model sees them in a chat.
//
// Formats, chosen by extension (.jsonl / .json, .csv, .txt), otherwise sniffed from the content:
//  * JSON lines: one JSON value per line, an object (its `column` field, else "prompt", "text" or
//    "instruction") or a bare string. A .json file (or sniffed content) starting with '[' is read
//    as one JSON array of such values instead.
//  * CSV (RFC 4180: quoted fields may hold commas, doubled quotes and line breaks): a header row,
//    then one prompt per record from the `column` column, else the first column.
//  * Text: one prompt per non-empty line (trailing CR removed).
// Sniffing: a first non-blank line that parses as a JSON object or string means JSON lines, a '['
// means a JSON array; a header row of two or more fields naming `column` (or prompt/text/
// instruction) means CSV; anything else is text.
#pragma once

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/lathe.hpp"

namespace lathe::edit {

struct PromptFileOptions {
  std::string column = "prompt";
  size_t limit = 0;  // 0 = all
};

// Files over this size are refused so that reading one needs bounded memory.
inline constexpr uintmax_t kMaxPromptFileBytes = uintmax_t{256} << 20;

// NotFoundError for a missing file; InvalidArgumentError "FILE contains no prompts" for a file with
// none (and for one over kMaxPromptFileBytes); FormatError naming file, line and byte offset for a
// bad line (invalid JSON, a missing or non-string field, a broken CSV quote).
std::vector<std::string> read_prompts(const std::filesystem::path& path, const PromptFileOptions& options = {});

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

}  // namespace lathe::edit
