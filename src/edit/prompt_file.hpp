// Prompt files: the prompt sets of `lathe cvector` and the abliteration tools.
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

#include "lathe/chat.hpp"
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

// Chat-formatted prompts (ChatPromptOptions, chat_prompt_tokens, ...) are in lathe/chat.hpp.

}  // namespace lathe::edit
