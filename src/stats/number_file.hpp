// The input of `lathe stats`: a text file of numbers, one per line. Blank lines and comments
// (from '#' to the end of the line) are skipped; surrounding spaces and a CR before the newline
// are allowed. Each number is a finite decimal double (e.g. 0.25, -3, 1e-5) as std::from_chars
// reads it, with an optional leading '+'.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lathe::stats {

struct NumberColumn {
  std::string source;           // the file name, for messages
  std::vector<double> values;   // in file order
  std::vector<size_t> lines;    // the 1-based line of each value
};

// Parses `text` as if read from `source`. FormatError naming the source, the line and the text
// for anything that is not one finite number; a file with no number at all is an error too.
NumberColumn parse_numbers(std::string_view text, const std::string& source);

// Reads and parses a file: IoError naming the file when it cannot be read, FormatError as above.
// Refuses files above 1 GiB (a column of numbers that large is a mistake, not an evaluation).
NumberColumn read_numbers(const std::filesystem::path& path);

}  // namespace lathe::stats
