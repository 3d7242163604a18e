#include "io/text_records.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "lathe/error.hpp"

namespace lathe {

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char c) { return std::isspace(c) != 0; });
}

bool CsvReader::next(std::vector<std::string>& fields) {
  fields.clear();
  if (position_ >= text_.size()) return false;
  record_start_ = position_;
  record_line_ = line_;
  std::string field;
  for (;;) {
    if (position_ < text_.size() && text_[position_] == '"') {
      read_quoted(field);
    } else {
      read_plain(field);
    }
    fields.push_back(std::move(field));
    field.clear();
    if (position_ >= text_.size()) return true;
    const char c = text_[position_];
    if (c == ',') {
      ++position_;
      continue;
    }
    // End of the record: "\n" or "\r\n".
    position_ += c == '\r' ? 2 : 1;
    ++line_;
    return true;
  }
}

void CsvReader::read_plain(std::string& field) {
  while (position_ < text_.size()) {
    const char c = text_[position_];
    // A CR ends the record before a LF or at the end of the text; elsewhere it is data.
    if (c == ',' || c == '\n' || (c == '\r' && (position_ + 1 == text_.size() || text_[position_ + 1] == '\n')))
      break;
    if (c == '"')
      throw FormatError(file_, fmt::format("line {}", line_), position_, "a quote inside an unquoted field",
                        "quote the whole field and double the quotes inside it (\"say \"\"hi\"\"\")");
    field += c;
    ++position_;
  }
}

void CsvReader::read_quoted(std::string& field) {
  const size_t open = position_, open_line = line_;
  ++position_;
  for (;;) {
    if (position_ >= text_.size())
      throw FormatError(file_, fmt::format("line {}", open_line), open, "a quoted field is never closed",
                        "close the quote, and double the quotes inside the field");
    const char c = text_[position_++];
    if (c == '"') {
      if (position_ < text_.size() && text_[position_] == '"') {
        field += '"';
        ++position_;
        continue;
      }
      break;
    }
    if (c == '\n') ++line_;
    field += c;
  }
  if (position_ >= text_.size()) return;
  const char after = text_[position_];
  const bool crlf = after == '\r' && (position_ + 1 == text_.size() || text_[position_ + 1] == '\n');
  if (after != ',' && after != '\n' && !crlf)
    throw FormatError(file_, fmt::format("line {}", line_), position_, "text after a closing quote",
                      "a quoted field must end at a comma or the end of the line; double quotes inside it");
}

}  // namespace lathe
