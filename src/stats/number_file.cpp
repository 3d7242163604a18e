#include "stats/number_file.hpp"

#include <charconv>
#include <cmath>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <system_error>

#include "lathe/error.hpp"

namespace lathe::stats {
namespace {

std::string_view trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

// A printable excerpt of a bad line for the message (long lines cut, control bytes escaped).
std::string excerpt(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7f) ? fmt::format("\\x{:02x}", u) : std::string(1, c);
  }
  return s.size() > 40 ? out + "..." : out;
}

double parse_one(std::string_view field, const std::string& source, size_t line) {
  std::string_view digits = field;
  if (digits.starts_with('+')) digits.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size() ||
      digits.starts_with('-') != field.starts_with('-') || digits.starts_with('+'))
    throw FormatError(fmt::format("{}: line {}: '{}' is not a number; put one number on each line (blank lines and "
                                  "# comments are skipped)",
                                  source, line, excerpt(field)));
  if (ec == std::errc::result_out_of_range || !std::isfinite(value))
    throw FormatError(fmt::format("{}: line {}: '{}' is not a finite number (NaN, infinite or out of the double "
                                  "range); fix or drop that line",
                                  source, line, excerpt(field)));
  return value;
}

}  // namespace

NumberColumn parse_numbers(std::string_view text, const std::string& source) {
  NumberColumn out{.source = source, .values = {}, .lines = {}};
  size_t line = 0;
  while (!text.empty()) {
    ++line;
    const size_t newline = text.find('\n');
    std::string_view row = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    if (const size_t hash = row.find('#'); hash != std::string_view::npos) row = row.substr(0, hash);
    row = trim(row);
    if (row.empty()) continue;
    out.values.push_back(parse_one(row, source, line));
    out.lines.push_back(line);
  }
  if (out.values.empty())
    throw FormatError(fmt::format("{}: no number in the file; put one number on each line", source));
  return out;
}

NumberColumn read_numbers(const std::filesystem::path& path) {
  constexpr uintmax_t kMaxBytes = uintmax_t{1} << 30;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw IoError(fmt::format("{}: is a directory; give a file of numbers, one per line", path.string()));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(fmt::format("{}: cannot open it (no such file, or no permission to read)", path.string()));
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxBytes)
    throw IoError(fmt::format("{}: {} bytes is above the 1 GiB limit for a file of numbers", path.string(), size));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw IoError(fmt::format("{}: read failed", path.string()));
  return parse_numbers(text.str(), path.string());
}

}  // namespace lathe::stats
