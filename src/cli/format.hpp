// Small text helpers shared by the CLI's subcommands.
#pragma once

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "lathe/error.hpp"

namespace lathe::cli {

// A size flag's value in bytes: a number (fractions allowed) with no unit or B (bytes), K/M/G/T
// or KiB/MiB/GiB/TiB (powers of 1024), KB/MB/GB/TB (powers of 1000, as transformers'
// max_shard_size). Whole bytes from 1 to max_bytes, else InvalidArgumentError naming the flag.
inline uint64_t parse_size(const std::string& text, std::string_view flag, uint64_t max_bytes) {
  const auto refuse = [&] {
    return InvalidArgumentError(fmt::format(
        "{} '{}' is not a size from 1 byte to {} bytes: give bytes, or a number with a unit (K, M, G, T or KiB, MiB, "
        "GiB, TiB = powers of 1024; KB, MB, GB, TB = powers of 1000), e.g. 512M or 2GB",
        flag, text, max_bytes));
  };
  // Digits and at most one point: no sign, exponent, hex or spaces (strtod alone takes all of them).
  size_t end = 0;
  bool point = false;
  while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || (text[end] == '.' && !point))) {
    point = point || text[end] == '.';
    ++end;
  }
  if (end == 0 || (end == 1 && point)) throw refuse();
  const double value = std::strtod(text.substr(0, end).c_str(), nullptr);
  const std::string unit = text.substr(end);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "k" || unit == "KiB") scale = 0x1p10;
  else if (unit == "M" || unit == "m" || unit == "MiB") scale = 0x1p20;
  else if (unit == "G" || unit == "g" || unit == "GiB") scale = 0x1p30;
  else if (unit == "T" || unit == "t" || unit == "TiB") scale = 0x1p40;
  else if (unit == "KB" || unit == "kB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "TB") scale = 1e12;
  const double bytes = std::floor(value * scale);
  if (scale == 0 || !(bytes >= 1) || !(bytes <= static_cast<double>(max_bytes))) throw refuse();
  return static_cast<uint64_t>(bytes);
}

// 98.4 MB, 1.2 GB (decimal units, like `ls -h --si`).
inline std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 4) {
    v /= 1000.0;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

// 134.5M, 8.03B.
inline std::string human_count(uint64_t n) {
  if (n >= 1000000000ull) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1000000ull) return fmt::format("{:.1f}M", n / 1e6);
  if (n >= 1000ull) return fmt::format("{:.1f}K", n / 1e3);
  return std::to_string(n);
}

// Per-item progress on stderr ("[ 12/272] name"). On a terminal one line is redrawn in place;
// elsewhere (files, pipes, CI logs) plain lines, one at each tenth of the items and at the last,
// so that a log holds no carriage returns and stays short.
class ItemProgress {
 public:
  ItemProgress() : tty_(::isatty(STDERR_FILENO) != 0) {}
  void update(size_t done, size_t total, std::string_view text) {
    const std::string line = fmt::format("[{:>4}/{}] {}", done, total, text);
    if (tty_) {
      fmt::print(stderr, "\r{:<{}}", line, width_);
      width_ = std::max(width_, line.size());
      if (done == total) fmt::print(stderr, "\n");
      return;
    }
    const size_t step = total < 10 ? 1 : total / 10;
    if (done == total || done % step == 0) fmt::print(stderr, "{}\n", line);
  }

 private:
  bool tty_;
  size_t width_ = 0;
};

}  // namespace lathe::cli
