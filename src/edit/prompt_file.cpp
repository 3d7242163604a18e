#include "edit/prompt_file.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <system_error>

#include "io/json_text.hpp"
#include "io/mapped_file.hpp"
#include "io/text_records.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

enum class PromptFormat { JsonLines, JsonArray, Csv, Text };

// The field names tried, in order, for a JSON object: the requested one, then the usual ones.
std::vector<std::string> field_candidates(const std::string& column) {
  std::vector<std::string> names{column};
  for (const char* usual : {"prompt", "text", "instruction"})
    if (column != usual) names.emplace_back(usual);
  return names;
}

std::string lowercase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// --- JSON ---------------------------------------------------------------------------------------

// A prompt from one JSON value: a string, or an object's first present candidate field (a string).
// Returns the problem instead of throwing, so callers can name the line or array element.
std::optional<std::string> prompt_from_json(const nlohmann::json& value, const std::vector<std::string>& fields,
                                            std::string& problem) {
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_object()) {
    problem = fmt::format("a JSON {} is neither an object nor a string", value.type_name());
    return std::nullopt;
  }
  for (const auto& field : fields) {
    const auto it = value.find(field);
    if (it == value.end()) continue;
    if (it->is_string()) return it->get<std::string>();
    problem = fmt::format("field \"{}\" is a JSON {}, not a string", field, it->type_name());
    return std::nullopt;
  }
  problem = fmt::format("the object has none of the fields \"{}\"", fmt::join(fields, "\", \""));
  return std::nullopt;
}

const char* kJsonRemedy = "write one JSON object (with the prompt field) or JSON string per line, or choose the "
                          "field with --column";

std::vector<std::string> read_json_lines(std::string_view text, const std::string& file,
                                         const PromptFileOptions& options) {
  const auto fields = field_candidates(options.column);
  std::vector<std::string> prompts;
  LineReader lines(text);
  std::string_view line;
  while (lines.next(line) && (options.limit == 0 || prompts.size() < options.limit)) {
    if (is_blank(line)) continue;
    const std::string where = fmt::format("line {}", lines.line_number());
    const nlohmann::json value = parse_json_text(line, file, kJsonRemedy, where, lines.line_start());
    std::string problem;
    auto prompt = prompt_from_json(value, fields, problem);
    if (!prompt) throw FormatError(file, where, lines.line_start(), problem, kJsonRemedy);
    prompts.push_back(std::move(*prompt));
  }
  return prompts;
}

std::vector<std::string> read_json_array(std::string_view text, const std::string& file,
                                         const PromptFileOptions& options) {
  const nlohmann::json array =
      parse_json_text(text, file, "give one JSON array of objects or strings, or JSON lines", "JSON array");
  if (!array.is_array())
    throw FormatError(file, "JSON document", 0, fmt::format("a JSON {} is not an array", array.type_name()),
                      "give one JSON array of objects or strings, or JSON lines");
  const auto fields = field_candidates(options.column);
  std::vector<std::string> prompts;
  for (size_t i = 0; i < array.size() && (options.limit == 0 || prompts.size() < options.limit); ++i) {
    std::string problem;
    auto prompt = prompt_from_json(array[i], fields, problem);
    if (!prompt)
      throw FormatError(file, fmt::format("array element {}", i), 0, problem,
                        "give objects with the prompt field (choose it with --column) or strings");
    prompts.push_back(std::move(*prompt));
  }
  return prompts;
}

// --- CSV (RFC 4180) -----------------------------------------------------------------------------

bool blank_record(const std::vector<std::string>& fields) { return fields.size() == 1 && is_blank(fields[0]); }

std::vector<std::string> read_csv(std::string_view text, const std::string& file, const PromptFileOptions& options) {
  CsvReader reader(text, file);
  std::vector<std::string> header;
  while (reader.next(header) && blank_record(header)) {
  }
  if (header.empty()) return {};
  // The requested column, else the first one.
  const auto named = std::find(header.begin(), header.end(), options.column);
  const size_t column = named == header.end() ? 0 : static_cast<size_t>(named - header.begin());
  std::vector<std::string> prompts;
  std::vector<std::string> fields;
  while ((options.limit == 0 || prompts.size() < options.limit) && reader.next(fields)) {
    if (blank_record(fields)) continue;
    if (fields.size() <= column)
      throw FormatError(file, fmt::format("line {}", reader.record_line()), reader.record_start(),
                        fmt::format("the record has {} fields but the prompt is column {} (\"{}\")", fields.size(),
                                    column + 1, header[column]),
                        "give every record as many fields as the header row");
    prompts.push_back(std::move(fields[column]));
  }
  return prompts;
}

// --- text ---------------------------------------------------------------------------------------

std::vector<std::string> read_text_lines(std::string_view text, const PromptFileOptions& options) {
  std::vector<std::string> prompts;
  LineReader lines(text);
  std::string_view line;
  while ((options.limit == 0 || prompts.size() < options.limit) && lines.next(line))
    if (!is_blank(line)) prompts.emplace_back(line);
  return prompts;
}

// --- format choice ------------------------------------------------------------------------------

std::string_view first_non_blank_line(std::string_view text) {
  LineReader lines(text);
  std::string_view line;
  while (lines.next(line))
    if (!is_blank(line)) return line;
  return {};
}

bool looks_like_csv_header(std::string_view text, const PromptFileOptions& options) {
  const std::string_view line = first_non_blank_line(text);
  std::vector<std::string> header;
  try {
    CsvReader reader(line, "");
    if (!reader.next(header)) return false;
  } catch (const FormatError&) {
    return false;
  }
  if (header.size() < 2) return false;
  const auto names = field_candidates(options.column);
  return std::any_of(header.begin(), header.end(),
                     [&](const std::string& h) { return std::find(names.begin(), names.end(), h) != names.end(); });
}

PromptFormat sniff_format(std::string_view text, const PromptFileOptions& options) {
  const std::string_view line = first_non_blank_line(text);
  const size_t first = line.find_first_not_of(" \t");
  if (first != std::string_view::npos && line[first] == '[') return PromptFormat::JsonArray;
  if (first != std::string_view::npos && (line[first] == '{' || line[first] == '"')) {
    const auto value = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (value.is_object() || value.is_string()) return PromptFormat::JsonLines;
  }
  return looks_like_csv_header(text, options) ? PromptFormat::Csv : PromptFormat::Text;
}

PromptFormat choose_format(const std::filesystem::path& path, std::string_view text, const PromptFileOptions& options) {
  const std::string extension = lowercase(path.extension().string());
  if (extension == ".jsonl") return PromptFormat::JsonLines;
  if (extension == ".json") {
    const size_t first = text.find_first_not_of(" \t\r\n");
    return first != std::string_view::npos && text[first] == '[' ? PromptFormat::JsonArray : PromptFormat::JsonLines;
  }
  if (extension == ".csv") return PromptFormat::Csv;
  if (extension == ".txt") return PromptFormat::Text;
  return sniff_format(text, options);
}

}  // namespace

std::vector<std::string> read_prompts(const std::filesystem::path& path, const PromptFileOptions& options) {
  const std::string file = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status))
    throw NotFoundError(fmt::format("{}: no such prompt file; check the path", file));
  if (!std::filesystem::is_regular_file(status))
    throw InvalidArgumentError(fmt::format("{}: not a regular file; give a .jsonl, .csv or .txt prompt file", file));
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) throw IoError(fmt::format("{}: cannot read the prompt file size ({})", file, ec.message()));
  if (size > kMaxPromptFileBytes)
    throw InvalidArgumentError(fmt::format("{} is {} bytes; prompt files over {} MiB are refused, split it or use "
                                           "--limit on a shorter file",
                                           file, size, kMaxPromptFileBytes >> 20));
  std::vector<std::string> prompts;
  if (size > 0) {
    const MappedFile map(path);
    std::string_view text(reinterpret_cast<const char*>(map.data()), map.size());
    if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte order mark
    switch (choose_format(path, text, options)) {
      case PromptFormat::JsonLines: prompts = read_json_lines(text, file, options); break;
      case PromptFormat::JsonArray: prompts = read_json_array(text, file, options); break;
      case PromptFormat::Csv: prompts = read_csv(text, file, options); break;
      case PromptFormat::Text: prompts = read_text_lines(text, options); break;
    }
  }
  if (prompts.empty())
    throw InvalidArgumentError(fmt::format("{} contains no prompts; give a file with one prompt per line (or record)",
                                           file));
  return prompts;
}

}  // namespace lathe::edit
