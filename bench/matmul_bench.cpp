// lathe_bench_matmul: throughput of the CPU matmul kernels on SmolLM2-135M shapes.
// usage: lathe_bench_matmul [--json FILE] [--types Q4_1,Q8_0,...] [--seconds S]
// For each type, shape (cols -> rows), n_tokens in {1, 512} and threads in {1, 2}: GFLOP/s
// (2 * rows * cols * n_tokens per product) and GB/s of weight bytes read per product (best of
// repeated runs for about S seconds, default 0.3). The kernel level is kernel_level() (set
// LATHE_CPU_KERNELS=scalar to measure the fallback).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/matmul.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace {

using lathe::DType;

struct Shape {
  int64_t cols, rows;
};
const Shape kShapes[] = {{576, 576}, {576, 192}, {576, 1536}, {1536, 576}, {576, 49152}};

// Random but valid weights: quantized from N(0, 1) where possible, else random bytes with the
// f16 scale fields (offsets below) set to small numbers.
std::vector<uint8_t> make_weights(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t row_bytes = *lathe::dtype_bytes(type, static_cast<uint64_t>(cols));
  std::vector<uint8_t> data(row_bytes * static_cast<size_t>(rows));
  if (lathe::can_quantize(type)) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (float& v : values) v = normal(rng);
      lathe::quantize_row(type, values.data(), data.data() + r * row_bytes, cols);
    }
    return data;
  }
  std::vector<size_t> scales;
  switch (type) {
    case DType::Q5_0: scales = {0}; break;
    case DType::Q5_1: scales = {0, 2}; break;
    case DType::Q2_K: scales = {80, 82}; break;
    case DType::Q3_K: scales = {108}; break;
    case DType::Q6_K: scales = {208}; break;
    default: scales = {0, 2}; break;  // Q4_K, Q5_K
  }
  for (auto& byte : data) byte = static_cast<uint8_t>(rng());
  const auto& info = lathe::dtype_info(type);
  const uint16_t small = lathe::f32_to_f16(0.01f);
  for (size_t b = 0; b < data.size() / info.block_bytes; ++b)
    for (size_t offset : scales) std::memcpy(data.data() + b * info.block_bytes + offset, &small, 2);
  return data;
}

struct Result {
  std::string type;
  int64_t cols, rows, tokens;
  int threads;
  double seconds, gflops, gbps;
};

double time_matmul(const lathe::MatrixView& w, const float* x, int64_t tokens, float* y,
                   lathe::cpu::ThreadPool& pool, double budget) {
  lathe::cpu::matmul(w, x, tokens, y, pool);  // warm-up
  double best = 1e30, spent = 0;
  int runs = 0;
  while (spent < budget || runs < 3) {
    const auto start = std::chrono::steady_clock::now();
    lathe::cpu::matmul(w, x, tokens, y, pool);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, s);
    spent += s;
    ++runs;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  double budget = 0.3;
  std::vector<DType> types = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                              DType::Q8_0, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--seconds" && i + 1 < argc) {
      budget = std::atof(argv[++i]);
    } else if (arg == "--types" && i + 1 < argc) {
      types.clear();
      std::string list = argv[++i];
      for (size_t start = 0; start <= list.size();) {
        const size_t comma = std::min(list.find(',', start), list.size());
        const auto type = lathe::dtype_from_name(list.substr(start, comma - start));
        if (!type || !lathe::cpu::matmul_supports(*type)) {
          fmt::print(stderr, "unknown or unsupported type '{}'\n", list.substr(start, comma - start));
          return 2;
        }
        types.push_back(*type);
        start = comma + 1;
      }
    } else {
      fmt::print(stderr, "usage: {} [--json FILE] [--types T1,T2] [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::mt19937 rng(7);
    std::vector<Result> results;
    lathe::cpu::ThreadPool pool1(1), pool2(2);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    fmt::print("kernel level: {}\n", lathe::cpu::kernel_level());
    fmt::print("{:<5} {:>6} {:>6} {:>6} {:>3} {:>10} {:>9} {:>8}\n", "type", "cols", "rows", "tokens", "thr", "time_us",
               "GFLOP/s", "GB/s");
    for (DType type : types) {
      for (const Shape& shape : kShapes) {
        const auto weights = make_weights(type, shape.rows, shape.cols, rng);
        const lathe::MatrixView w{type, weights.data(), shape.rows, shape.cols,
                                       weights.size() / static_cast<size_t>(shape.rows), "bench"};
        for (int64_t tokens : {int64_t{1}, int64_t{512}}) {
          // The lm-head shape at 512 tokens is not run in practice (only the last token's
          // logits are needed) and would take 100 MB of output: skip it.
          if (shape.rows == 49152 && tokens > 1) continue;
          std::vector<float> x(static_cast<size_t>(shape.cols * tokens));
          for (float& v : x) v = normal(rng);
          std::vector<float> y(static_cast<size_t>(shape.rows * tokens));
          for (int threads : {1, 2}) {
            const double s = time_matmul(w, x.data(), tokens, y.data(), threads == 1 ? pool1 : pool2, budget);
            const double flops = 2.0 * static_cast<double>(shape.rows * shape.cols * tokens);
            Result r{std::string(lathe::dtype_name(type)), shape.cols, shape.rows, tokens, threads, s, flops / s / 1e9,
                     static_cast<double>(weights.size()) / s / 1e9};
            fmt::print("{:<5} {:>6} {:>6} {:>6} {:>3} {:>10.1f} {:>9.2f} {:>8.2f}\n", r.type, r.cols, r.rows, r.tokens,
                       r.threads, r.seconds * 1e6, r.gflops, r.gbps);
            std::fflush(stdout);
            results.push_back(r);
          }
        }
      }
    }
    if (!json_path.empty()) {
      std::string out = fmt::format("{{\"kernel_level\": \"{}\", \"results\": [\n", lathe::cpu::kernel_level());
      for (size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        out += fmt::format(
            "  {{\"type\": \"{}\", \"cols\": {}, \"rows\": {}, \"n_tokens\": {}, \"threads\": {}, \"seconds\": {:.9f}, "
            "\"gflops\": {:.3f}, \"gbps\": {:.3f}}}{}\n",
            r.type, r.cols, r.rows, r.tokens, r.threads, r.seconds, r.gflops, r.gbps, i + 1 < results.size() ? "," : "");
      }
      out += "]}\n";
      std::FILE* f = std::fopen(json_path.c_str(), "wb");
      if (f == nullptr) throw lathe::IoError(json_path + ": cannot open for writing");
      std::fwrite(out.data(), 1, out.size(), f);
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
