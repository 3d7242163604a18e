// Small text helpers shared by the CLI's subcommands.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>

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

}  // namespace lathe::cli
