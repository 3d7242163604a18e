#include "train/dataset.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <optional>
#include <system_error>

#include "api/model_impl.hpp"
#include "io/json_text.hpp"
#include "io/mapped_file.hpp"
#include "io/text_records.hpp"
#include "lathe/chat.hpp"
#include "lathe/error.hpp"

namespace lathe::train {
namespace {

const char* const kAnswerFields[] = {"answer", "completion", "response"};
const char* kRowRemedy =
    "give each row \"prompt\" and \"answer\" (or \"completion\"/\"response\"), \"messages\", or \"text\"";

using Row = DataRow;

std::string lowercase(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// A string field of a JSON row, or nullopt when absent; FormatError when it is not a string.
std::optional<std::string> string_field(const nlohmann::json& row, const char* name, const std::string& file,
                                        const Row& at) {
  const auto it = row.find(name);
  if (it == row.end()) return std::nullopt;
  if (!it->is_string())
    throw FormatError(file, at.where, at.offset, fmt::format("field \"{}\" is a JSON {}, not a string", name,
                                                             it->type_name()),
                      kRowRemedy);
  return it->get<std::string>();
}

Row row_from_json(const nlohmann::json& value, const std::string& file, Row row) {
  if (!value.is_object())
    throw FormatError(file, row.where, row.offset, fmt::format("a JSON {} is not an object", value.type_name()),
                      kRowRemedy);
  if (const auto it = value.find("messages"); it != value.end()) {
    row.messages = *it;
    return row;
  }
  row.prompt = string_field(value, "prompt", file, row);
  for (const char* name : kAnswerFields)
    if (!row.answer) row.answer = string_field(value, name, file, row);
  if (!row.prompt && !row.answer) row.text = string_field(value, "text", file, row);
  if (!row.text && !(row.prompt && row.answer))
    throw FormatError(file, row.where, row.offset,
                      row.prompt ? "the row has a prompt but no answer"
                                 : (row.answer ? "the row has an answer but no prompt" : "the row has no usable field"),
                      kRowRemedy);
  return row;
}

std::vector<Row> read_json_lines(std::string_view text, const std::string& file, size_t limit) {
  std::vector<Row> rows;
  LineReader lines(text);
  std::string_view line;
  while ((limit == 0 || rows.size() < limit) && lines.next(line)) {
    if (is_blank(line)) continue;
    Row at(fmt::format("line {}", lines.line_number()), lines.line_start());
    const auto value = parse_json_text(line, file, "write one JSON object per line", at.where, at.offset);
    rows.push_back(row_from_json(value, file, std::move(at)));
  }
  return rows;
}

std::vector<Row> read_json_array(std::string_view text, const std::string& file, size_t limit) {
  const auto array = parse_json_text(text, file, "give one JSON array of row objects, or JSON lines (.jsonl)");
  if (!array.is_array())
    throw FormatError(file, "JSON document", 0, fmt::format("a JSON {} is not an array", array.type_name()),
                      "give one JSON array of row objects, or JSON lines (.jsonl)");
  std::vector<Row> rows;
  for (size_t i = 0; i < array.size() && (limit == 0 || rows.size() < limit); ++i)
    rows.push_back(row_from_json(array[i], file, Row(fmt::format("array element {}", i), 0)));
  return rows;
}

std::vector<Row> read_csv(std::string_view text, const std::string& file, size_t limit) {
  CsvReader reader(text, file);
  std::vector<std::string> header, fields;
  auto blank = [](const std::vector<std::string>& f) { return f.size() == 1 && is_blank(f[0]); };
  while (reader.next(header) && blank(header)) {
  }
  if (header.empty()) return {};
  for (auto& name : header) name = lowercase(name);
  auto column = [&](std::initializer_list<const char*> names) -> std::optional<size_t> {
    for (const char* name : names)
      if (const auto it = std::find(header.begin(), header.end(), name); it != header.end())
        return static_cast<size_t>(it - header.begin());
    return std::nullopt;
  };
  const auto prompt = column({"prompt"}), answer = column({"answer", "completion", "response"}),
             text_column = column({"text"});
  if (!(prompt && answer) && !text_column)
    throw FormatError(file, "header row", 0, fmt::format("the header \"{}\" names no prompt and answer columns and no "
                                                         "text column",
                                                         fmt::join(header, ",")),
                      "start the file with a header row such as prompt,answer or text");
  std::vector<Row> rows;
  while ((limit == 0 || rows.size() < limit) && reader.next(fields)) {
    if (blank(fields)) continue;
    Row row(fmt::format("record at line {}", reader.record_line()), reader.record_start());
    if (fields.size() != header.size())
      throw FormatError(file, row.where, row.offset,
                        fmt::format("the record has {} fields but the header has {}", fields.size(), header.size()),
                        "give every record as many fields as the header row (quote fields holding commas)");
    if (prompt && answer) {
      row.prompt = fields[*prompt];
      row.answer = fields[*answer];
    } else {
      row.text = fields[*text_column];
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// The file's text, a view into `map` (which the caller keeps alive), without a UTF-8 BOM.
std::string_view read_file_text(const std::filesystem::path& path, MappedFile& map) {
  const std::string file = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw NotFoundError(fmt::format("{}: no such data file; check the path", file));
  if (!std::filesystem::is_regular_file(status))
    throw InvalidArgumentError(fmt::format("{}: not a regular file; give a .jsonl, .json, .csv or .txt data file", file));
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(fmt::format("{}: cannot read the data file's size ({})", file, ec.message()));
  if (size > kMaxDataFileBytes)
    throw InvalidArgumentError(fmt::format("{} is {} bytes; data files over {} MiB are refused: split it", file, size,
                                           kMaxDataFileBytes >> 20));
  if (size == 0) return {};
  map = MappedFile(path);
  std::string_view text(reinterpret_cast<const char*>(map.data()), map.size());
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte order mark
  return text;
}

std::optional<TokenId> eos_of(const Model& model) { return internals(model).tokenizer.vocab().eos; }

// The example of a token sequence whose positions [from, to) of `scored` are to be predicted:
// the pass sees sequence[0..n-2] and predicts sequence[1..n-1].
Example shifted(const std::vector<TokenId>& sequence, const std::vector<bool>& scored) {
  Example e;
  if (sequence.size() < 2) return e;
  e.tokens.assign(sequence.begin(), sequence.end() - 1);
  e.targets.resize(e.tokens.size());
  for (size_t t = 0; t + 1 < sequence.size(); ++t) e.targets[t] = scored[t + 1] ? sequence[t + 1] : -1;
  return e;
}

void append(std::vector<TokenId>& sequence, std::vector<bool>& scored, const std::vector<TokenId>& ids, bool score) {
  sequence.insert(sequence.end(), ids.begin(), ids.end());
  scored.insert(scored.end(), ids.size(), score);
}

// The part of `full` after `prefix`: the turn the template added. InvalidArgumentError when the
// template renders a conversation's beginning differently once a turn follows (then the turn's
// tokens cannot be told apart).
std::string added_turn(const std::string& prefix, const std::string& full, const std::string& where) {
  if (!full.starts_with(prefix))
    throw InvalidArgumentError(fmt::format("{}: the model's chat template renders the conversation before an assistant "
                                           "turn differently once the turn is added, so the turn's tokens cannot be "
                                           "scored; use --raw pairs or another --chat-template",
                                           where));
  return full.substr(prefix.size());
}

Example encode_pair_chat(const Model& model, const Row& row, const DataOptions& options, const std::string& where) {
  nlohmann::json messages = chat_messages(*row.prompt, options.system);
  const std::string prefix = model.apply_chat_template(messages, /*add_generation_prompt=*/true);
  messages.push_back({{"role", "assistant"}, {"content", *row.answer}});
  const std::string full = model.apply_chat_template(messages, /*add_generation_prompt=*/false);
  std::vector<TokenId> sequence;
  std::vector<bool> scored;
  append(sequence, scored, tokenize_chat_rendering(model, prefix), false);
  append(sequence, scored, model.tokenize(added_turn(prefix, full, where), false, true), true);
  return shifted(sequence, scored);
}

Example encode_pair_raw(const Model& model, const Row& row) {
  std::vector<TokenId> sequence;
  std::vector<bool> scored;
  append(sequence, scored, model.tokenize(*row.prompt, /*add_special=*/true, /*parse_special=*/false), false);
  auto answer = model.tokenize(*row.answer, false, false);
  if (const auto eos = eos_of(model)) answer.push_back(*eos);
  append(sequence, scored, answer, true);
  return shifted(sequence, scored);
}

Example encode_text(const Model& model, const std::string& text) {
  const auto ids = model.tokenize(text, /*add_special=*/true, /*parse_special=*/false);
  return shifted(ids, std::vector<bool>(ids.size(), true));
}

void add_example(DataSet& set, Example e, std::string origin, const DataOptions& options, bool scored_required) {
  if (e.tokens.size() > options.max_tokens)
    throw InvalidArgumentError(fmt::format("{} is {} tokens long, over --max-length {}; shorten the row or raise "
                                           "--max-length",
                                           origin, e.tokens.size() + 1, options.max_tokens + 1));
  const size_t scored = e.scored();
  if (scored == 0) {
    if (scored_required)
      throw InvalidArgumentError(fmt::format("{} has nothing to learn: its answer (or text) is empty; remove the row",
                                             origin));
    return;
  }
  set.scored_tokens += scored;
  set.tokens += e.tokens.size();
  set.examples.push_back(std::move(e));
  set.origins.push_back(std::move(origin));
}

// Plain text: the document tokenized once, cut into windows of max_tokens + 1 tokens.
void read_text_document(const Model& model, std::string_view text, const std::string& file,
                        const DataOptions& options, DataSet& set) {
  const auto ids = model.tokenize(text, /*add_special=*/true, /*parse_special=*/false);
  const size_t window = static_cast<size_t>(options.max_tokens) + 1;
  for (size_t start = 0, k = 1; start + 1 < ids.size(); start += window, ++k) {
    if (options.limit != 0 && set.examples.size() >= options.limit) break;
    const std::vector<TokenId> piece(ids.begin() + static_cast<ptrdiff_t>(start),
                                     ids.begin() + static_cast<ptrdiff_t>(std::min(ids.size(), start + window)));
    add_example(set, shifted(piece, std::vector<bool>(piece.size(), true)), fmt::format("{} window {}", file, k),
                options, false);
  }
}

}  // namespace

std::vector<DataRow> parse_data_rows(std::string_view text, const std::string& file, std::string_view extension,
                                     size_t limit) {
  if (extension == ".jsonl") return read_json_lines(text, file, limit);
  if (extension == ".json") {
    const size_t first = text.find_first_not_of(" \t\r\n");
    return first != std::string_view::npos && text[first] == '[' ? read_json_array(text, file, limit)
                                                                  : read_json_lines(text, file, limit);
  }
  if (extension == ".csv") return read_csv(text, file, limit);
  throw InvalidArgumentError(fmt::format("{}: unknown data file type \"{}\"; give a .jsonl, .json, .csv or .txt file",
                                         file, extension));
}

Example encode_conversation(const Model& model, const nlohmann::json& messages, const std::string& where) {
  if (!messages.is_array() || messages.empty())
    throw InvalidArgumentError(fmt::format("{}: \"messages\" must be a non-empty array of {{\"role\", \"content\"}} "
                                           "objects",
                                           where));
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      throw InvalidArgumentError(fmt::format("{}: message {} is not an object with string \"role\" and \"content\"",
                                             where, i));
  }
  std::vector<TokenId> sequence;
  std::vector<bool> scored;
  std::string rendered;  // the conversation so far as the template renders it
  bool any_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i]["role"] != "assistant") continue;
    any_assistant = true;
    const nlohmann::json before(messages.begin(), messages.begin() + static_cast<ptrdiff_t>(i));
    const nlohmann::json through(messages.begin(), messages.begin() + static_cast<ptrdiff_t>(i) + 1);
    const std::string prefix = model.apply_chat_template(before, /*add_generation_prompt=*/true);
    const std::string full = model.apply_chat_template(through, /*add_generation_prompt=*/false);
    const std::string context = added_turn(rendered, prefix, where);
    append(sequence, scored,
           sequence.empty() ? tokenize_chat_rendering(model, context) : model.tokenize(context, false, true), false);
    append(sequence, scored, model.tokenize(added_turn(prefix, full, where), false, true), true);
    rendered = full;
  }
  if (!any_assistant)
    throw InvalidArgumentError(fmt::format("{}: the conversation has no assistant message to learn", where));
  return shifted(sequence, scored);
}

DataSet read_training_data(const Model& model, const std::filesystem::path& path, const DataOptions& options) {
  if (options.max_tokens < 1) throw InvalidArgumentError("--max-length must be at least 2 tokens");
  const std::string file = path.string();
  MappedFile map;
  const std::string_view text = read_file_text(path, map);
  const std::string extension = lowercase(path.extension().string());
  DataSet set;
  if (extension == ".txt") {
    read_text_document(model, text, file, options, set);
  } else {
    const std::vector<Row> rows = parse_data_rows(text, file, extension, options.limit);
    const bool has_pairs = std::any_of(rows.begin(), rows.end(), [](const Row& r) { return r.prompt.has_value(); });
    set.chat = options.pair_format == PairFormat::Chat ||
               (options.pair_format == PairFormat::Auto && has_pairs && model.has_chat_template());
    if (set.chat && !model.has_chat_template())
      throw InvalidArgumentError(fmt::format("{}: chat-formatted pairs need the model's chat template, and this model "
                                             "has none; give --chat-template FILE or --raw",
                                             file));
    for (const Row& row : rows) {
      const std::string origin = fmt::format("{} {}", file, row.where);
      if (row.messages) {
        add_example(set, encode_conversation(model, *row.messages, origin), origin, options, true);
      } else if (row.text) {
        add_example(set, encode_text(model, *row.text), origin, options, false);
      } else {
        if (row.answer->empty())
          throw InvalidArgumentError(fmt::format("{}: the answer is empty, so there is nothing to learn; remove the "
                                                 "row",
                                                 origin));
        add_example(set, set.chat ? encode_pair_chat(model, row, options, origin) : encode_pair_raw(model, row), origin,
                    options, true);
      }
    }
  }
  if (set.examples.empty())
    throw InvalidArgumentError(fmt::format("{} holds no usable training rows; {}", file, kRowRemedy));
  return set;
}

}  // namespace lathe::train
