// lathe_bench_tokenize: encode throughput of lathe's tokenizer, one line at a time.
// usage: lathe_bench_tokenize TOKENIZER CORPUS [REPEATS]
//   TOKENIZER: GGUF file, model directory or tokenizer.json; CORPUS: UTF-8 text file.
// Prints one JSON object: {"bytes":..., "tokens":..., "seconds":..., "mb_per_s":...} (best of REPEATS).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lathe/error.hpp"
#include "tokenizer/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    fmt::print(stderr, "usage: {} TOKENIZER CORPUS [REPEATS]\n", argv[0]);
    return 2;
  }
  try {
    const auto tok = lathe::tokenizer::Tokenizer::from_path(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) throw lathe::IoError(std::string(argv[2]) + ": cannot open corpus");
    std::vector<std::string> lines;
    size_t bytes = 0;
    for (std::string line; std::getline(in, line);) {
      line.push_back('\n');
      bytes += line.size();
      lines.push_back(std::move(line));
    }
    const int repeats = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeats; ++r) {
      tokens = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const std::string& line : lines) tokens += tok.encode(line, {.add_special = false, .parse_special = true}).size();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      best = std::min(best, seconds);
    }
    fmt::print("{{\"bytes\": {}, \"tokens\": {}, \"seconds\": {:.4f}, \"mb_per_s\": {:.3f}}}\n", bytes, tokens, best,
               static_cast<double>(bytes) / 1e6 / best);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
