// Small text helpers shared by the CLI's subcommands.
#pragma once

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace lathe::cli {

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
