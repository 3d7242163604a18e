// Line and CSV record readers over a file's text, for the data files lathe reads (prompt sets,
// training data): 1-based line numbers and byte offsets for error messages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace lathe {

// Walks the text line by line ('\n' ends a line; a trailing '\r' is dropped), with 1-based line
// numbers and the byte offset of each line's start, for error messages.
class LineReader {
 public:
  explicit LineReader(std::string_view text) : text_(text) {}
  bool next(std::string_view& line) {
    if (position_ >= text_.size()) return false;
    line_start_ = position_;
    const size_t end = std::min(text_.find('\n', position_), text_.size());
    line = text_.substr(position_, end - position_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    position_ = end + 1;
    ++line_number_;
    return true;
  }
  size_t line_number() const { return line_number_; }
  size_t line_start() const { return line_start_; }

 private:
  std::string_view text_;
  size_t position_ = 0, line_start_ = 0, line_number_ = 0;
};

// RFC 4180 records: quoted fields may hold commas, doubled quotes and line breaks. FormatError
// naming the file, line and byte offset for a quote inside an unquoted field, a quote never closed
// or text after a closing quote.
class CsvReader {
 public:
  CsvReader(std::string_view text, const std::string& file) : text_(text), file_(file) {}

  // The next record's fields; false at the end of the text. Blank records (an empty line) come
  // back as one empty field.
  bool next(std::vector<std::string>& fields);
  size_t record_line() const { return record_line_; }
  size_t record_start() const { return record_start_; }

 private:
  void read_plain(std::string& field);
  void read_quoted(std::string& field);

  std::string_view text_;
  std::string file_;  // a copy: callers may pass a temporary (the format sniffer passes "")
  size_t position_ = 0, line_ = 1, record_start_ = 0, record_line_ = 1;
};

// Whether a line holds only white space.
bool is_blank(std::string_view line);

}  // namespace lathe
