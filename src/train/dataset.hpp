// Training data files for `lathe finetune` and `lathe unlearn`: rows of prompt/answer pairs, chat
// conversations or plain text, turned into examples (token sequences with the positions to score).
//
// Formats, by extension:
//  * .jsonl (or .json holding one array): one object per row, with
//      - "prompt" and "answer" (or "completion" / "response"): the answer's tokens are scored;
//      - "messages" ([{"role", "content"}, ...]): every assistant turn's tokens are scored;
//      - "text": every token is scored.
//  * .csv: a header row naming prompt and answer (or completion / response) columns, or a text
//    column; one row per record (RFC 4180 quoting).
//  * .txt: the whole file is one document, tokenized once and cut into windows of max_tokens + 1
//    tokens (the last window may be shorter), every token scored: plain-text fine-tuning.
//
// Prompt/answer pairs are rendered by the model's chat template (an optional system message, the
// prompt as the user's turn, the answer as the assistant's, end-of-turn included, as the model
// sees a chat at run time) unless raw text is asked for or the model has no template; raw pairs
// are BOS + prompt + answer + EOS, the answer and EOS scored.
//
// Every problem is found before training starts: a missing or empty file, a file with no usable
// row, a row without the fields, a non-string field, an empty answer, a row longer than
// max_tokens: each an error naming the file, the line (or record) and what to do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "lathe/lathe.hpp"
#include "train/finetune.hpp"

namespace lathe::train {

enum class PairFormat { Auto, Chat, Raw };  // Auto: chat when the model has a template

struct DataOptions {
  PairFormat pair_format = PairFormat::Auto;
  std::string system = "You are a helpful assistant.";  // chat pairs' system message; empty: none
  uint32_t max_tokens = 1024;  // the longest example the pass sees (tokens - 1 of a row)
  size_t limit = 0;            // rows to read, 0 = all
};

// Files over this size are refused so that reading one needs bounded memory.
inline constexpr uintmax_t kMaxDataFileBytes = uintmax_t{1} << 30;

struct DataSet {
  std::vector<Example> examples;
  std::vector<std::string> origins;  // per example, "FILE line N" (or "FILE window K"), for messages
  bool chat = false;                 // pairs were rendered by the chat template
  size_t scored_tokens = 0;          // over all examples
  size_t tokens = 0;                 // positions the pass sees, over all examples
};

// NotFoundError for a missing file; InvalidArgumentError for a file with no usable rows, a row
// longer than max_tokens (naming its length and --max-length), an empty answer, or chat asked for
// on a model without a template; FormatError naming the file, line and byte offset for a row that
// is not valid JSON/CSV or lacks the fields.
DataSet read_training_data(const Model& model, const std::filesystem::path& path, const DataOptions& options = {});

// A row of a .jsonl/.json/.csv data file as read, before tokenization: a prompt/answer pair, a
// conversation or a text. `where` is "line 12", "record at line 12" or "array element 3".
struct DataRow {
  DataRow(std::string where_in, uint64_t offset_in) : where(std::move(where_in)), offset(offset_in) {}
  std::string where;
  uint64_t offset = 0;
  std::optional<std::string> prompt, answer, text;
  std::optional<nlohmann::json> messages;
};

// The rows of a data file's text by its extension (".jsonl", ".json", ".csv"; at most `limit`
// rows, 0 = all): FormatError naming the file, the row and the byte offset for malformed rows,
// InvalidArgumentError for another extension. Exposed for tests and the fuzz target.
std::vector<DataRow> parse_data_rows(std::string_view text, const std::string& file, std::string_view extension,
                                     size_t limit = 0);

// One example from a conversation (exposed for tests): every assistant message scored. `where`
// names the row in messages.
Example encode_conversation(const Model& model, const nlohmann::json& messages, const std::string& where);

}  // namespace lathe::train
