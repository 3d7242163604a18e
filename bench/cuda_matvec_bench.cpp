// lathe_bench_cuda_matvec: device-memory bandwidth of the decode mat-vec (batch 1) on the
// Qwen2.5-0.5B and Llama-3.1-8B shapes, for each weight type and each way of sharing the rows
// among warps (groups of 2 or 4 rows, 1, 2 or 4 warps per group, and the automatic choice, also
// with Q4_0/Q4_1's loads ahead turned off), with and without the fused RMSNorm.
// usage: lathe_bench_cuda_matvec [--json FILE] [--reps N] [--model 0.5B|8B] [--auto-only]
// Each configuration is captured as a CUDA graph of N launches (as the decode step replays them)
// and timed with events after a warm-up; GB/s counts the weight bytes read once per launch. The
// launches cycle through copies of the matrix spanning at least 512 MiB, so that every launch
// reads device memory as the decode step does, not the L2 cache (50 MiB on an H100/H200).
// The ceiling, measured in the same run: a kernel that only reads 1 GiB with 16-byte loads.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/device_layout.hpp"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/memory.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

// cuda_read_kernel.cu: reads `bytes` (a multiple of 16) with 16-byte loads.
void launch_read_kernel(const void* data, size_t bytes, unsigned* sink, int multiprocessors, cudaStream_t stream);

namespace {

using namespace lathe;
using lathe::cuda::DeviceBuffer;

struct Shape {
  const char* model;
  const char* name;
  int64_t rows, cols;
  bool swiglu;      // gate and up (two matrices of this shape) in one launch
  bool after_norm;  // the forward pass fuses an RMSNorm into this product
};
const Shape kShapes[] = {
    {"0.5B", "qkv", 1152, 896, false, true},       {"0.5B", "o", 896, 896, false, false},
    {"0.5B", "gate+up", 4864, 896, true, true},    {"0.5B", "down", 896, 4864, false, false},
    {"0.5B", "lm_head", 151936, 896, false, true}, {"8B", "qkv", 6144, 4096, false, true},
    {"8B", "o", 4096, 4096, false, false},         {"8B", "gate+up", 14336, 4096, true, true},
    {"8B", "down", 4096, 14336, false, false},     {"8B", "lm_head", 128256, 4096, false, true},
};

// `copies` matrices, one after another in qs and scales (views[i] reads copy i).
struct Matrix {
  DeviceBuffer qs, scales;
  std::vector<cuda::DeviceMatrix> views;
  size_t bytes = 0;  // of one copy
};

constexpr size_t kSpan = size_t{512} << 20;

// 64 random rows quantized by the reference quantizer, repeated to fill the matrix (the speed does
// not depend on the values), in the device layout the engine uploads.
Matrix make_matrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  constexpr int64_t kDistinct = 64;
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> values(static_cast<size_t>(kDistinct * cols));
  for (float& v : values) v = normal(rng);
  const auto packed = quantize(type, values);
  const size_t src_row = packed.size() / kDistinct;
  const DType dev = cuda::device_type(type);
  const size_t qs_row = cuda::qs_row_bytes(dev, cols), sc_row = cuda::scales_row_bytes(dev, cols);
  std::vector<uint8_t> qs_small(qs_row * kDistinct), sc_small(sc_row * kDistinct);
  cuda::repack_rows(type, packed.data(), src_row, kDistinct, cols, qs_small.data(), sc_row ? sc_small.data() : nullptr);
  Matrix m;
  m.bytes = (qs_row + sc_row) * rows;
  const int64_t copies = static_cast<int64_t>((kSpan + m.bytes - 1) / m.bytes);
  const int64_t all_rows = copies * rows;
  m.qs = DeviceBuffer(qs_row * all_rows, "bench weights");
  m.scales = DeviceBuffer(std::max<size_t>(sc_row * all_rows, 1), "bench scales");
  for (int64_t r = 0; r < all_rows; r += kDistinct) {
    const int64_t n = std::min(kDistinct, all_rows - r);
    cuda::check(cudaMemcpy(m.qs.as<uint8_t>() + r * qs_row, qs_small.data(), qs_row * n, cudaMemcpyHostToDevice), "w");
    if (sc_row)
      cuda::check(cudaMemcpy(m.scales.as<uint8_t>() + r * sc_row, sc_small.data(), sc_row * n, cudaMemcpyHostToDevice),
                  "s");
  }
  for (int64_t c = 0; c < copies; ++c)
    m.views.push_back({.type = dev,
                       .qs = m.qs.as<uint8_t>() + c * rows * qs_row,
                       .scales = sc_row ? m.scales.as<uint8_t>() + c * rows * sc_row : nullptr,
                       .rows = rows,
                       .cols = cols,
                       .qs_row = qs_row,
                       .sc_row = sc_row});
  return m;
}

// Mean microseconds per launch of `launch(i)`, replayed as a graph of `reps` launches.
template <class Launch>
double time_graph(cudaStream_t stream, int reps, Launch launch) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
  for (int i = 0; i < reps; ++i) launch(i);
  cuda::check(cudaStreamEndCapture(stream, &graph), "capture");
  cuda::check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  cuda::check(cudaGraphLaunch(exec, stream), "warm-up");
  cudaEventRecord(start, stream);
  cuda::check(cudaGraphLaunch(exec, stream), "timed run");
  cudaEventRecord(stop, stream);
  cuda::check(cudaEventSynchronize(stop), "timing");
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return 1000.0 * ms / reps;
}

int run(int argc, char** argv) {
  std::string json_path;
  int reps = 100;
  std::string only_model;  // --model: one shape family
  bool auto_only = false;  // --auto-only: the automatic layouts alone
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--model" && i + 1 < argc) only_model = argv[++i];
    else if (a == "--auto-only") auto_only = true;
    else
      throw InvalidArgumentError(
          "usage: lathe_bench_cuda_matvec [--json FILE] [--reps N] [--model 0.5B|8B] [--auto-only]");
  }
  if (!only_model.empty() && only_model != "0.5B" && only_model != "8B")
    throw InvalidArgumentError("lathe_bench_cuda_matvec: --model takes 0.5B or 8B, not '" + only_model + "'");
  cuda::use_device(0);
  cudaDeviceProp prop{};
  cuda::check(cudaGetDeviceProperties(&prop, 0), "device properties");
  cudaStream_t stream = nullptr;
  cuda::check(cudaStreamCreate(&stream), "stream");

  // The ceiling: reading 1 GiB with 16-byte loads, 8 blocks of 512 threads per multiprocessor.
  const size_t read_bytes = size_t{1} << 30;
  DeviceBuffer src(read_bytes, "read source"), sink(sizeof(unsigned), "sink");
  cuda::check(cudaMemset(src.data(), 1, read_bytes), "filling the read source");
  const double read_us = time_graph(stream, 10, [&](int) {
    launch_read_kernel(src.data(), read_bytes, sink.as<unsigned>(), prop.multiProcessorCount, stream);
  });
  const double copy_gbs = read_bytes / (read_us * 1e3);
  fmt::print("device: {}; read-only kernel {:.0f} GB/s\n", prop.name, copy_gbs);
  fmt::print("| model | matrix | rows x cols | type | norm | warps x rows per group | us | GB/s | % of read |\n");
  fmt::print("|---|---|---|---|---|---|---:|---:|---:|\n");

  std::mt19937 rng(1);
  DeviceBuffer x(sizeof(float) * 14336, "x"), g(sizeof(float) * 14336, "norm"), y(sizeof(float) * 151936, "y");
  DeviceBuffer q8(14336, "q8"), ds(sizeof(float) * 14336 / 16, "ds");
  {
    std::vector<float> ones(14336, 1.0f);
    cuda::check(cudaMemcpy(x.data(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice), "x");
    cuda::check(cudaMemcpy(g.data(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice), "g");
  }
  std::vector<std::string> rows_json;
  for (DType type : {DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1})
    for (const Shape& s : kShapes) {
      if (!only_model.empty() && only_model != s.model) continue;
      const Matrix a = make_matrix(type, s.rows, s.cols, rng);
      const Matrix b = s.swiglu ? make_matrix(type, s.rows, s.cols, rng) : Matrix{};
      const size_t bytes = a.bytes + b.bytes;
      for (bool norm : {false, true}) {
        if (norm && !s.after_norm) continue;
        const cuda::MatvecLayout layouts[] = {{0, 0}, {0, 0, -1}, {1, 2}, {2, 2}, {4, 2}, {1, 4}, {2, 4}, {4, 4}};
        const bool q4 = type == DType::Q4_0 || type == DType::Q4_1;
        for (const cuda::MatvecLayout& layout : layouts) {
          if (auto_only && layout.warps_per_group != 0) continue;
          if (layout.loads_ahead == -1 && !q4) continue;  // the same as "auto" for the other types
          cuda::MatvecInput in;
          in.x = x.as<float>();
          in.ldx = s.cols;
          in.norm = norm ? g.as<float>() : nullptr;
          in.eps = 1e-6f;
          const bool q8_input = cuda::matvec_reads_q8(a.views[0].type);
          in.q8 = q8.as<int8_t>();
          in.ds = ds.as<float>();
          in.ld_q8 = s.cols;
          in.ld_ds = s.cols / 16;
          const auto ep = s.swiglu ? cuda::Epilogue::SwiGLU : cuda::Epilogue::Store;
          // The 8-bit rounding of x (with the norm when fused) is part of the product's cost.
          const double us = time_graph(stream, reps, [&](int i) {
            const size_t c = static_cast<size_t>(i) % a.views.size();
            cuda::MatvecTarget target{a.views[c], s.swiglu ? b.views[c] : cuda::DeviceMatrix{}, y.as<float>(), s.rows};
            if (q8_input)
              cuda::quantize_q8(in.x, s.cols, 1, static_cast<int>(s.cols), q8.as<int8_t>(), ds.as<float>(), stream,
                                in.norm, in.eps);
            cuda::matvec(&target, 1, in, 1, ep, stream, layout);
          });
          const double gbs = bytes / (us * 1e3);
          const std::string layout_name =
              layout.warps_per_group == 0 ? (layout.loads_ahead == -1 ? "auto, loads ahead off" : "auto")
                                          : fmt::format("{}x{}", layout.warps_per_group, layout.rows_per_group);
          fmt::print("| {} | {} | {} x {} | {} | {} | {} | {:.1f} | {:.0f} | {:.0f}% |\n", s.model, s.name,
                     s.rows * (s.swiglu ? 2 : 1), s.cols, dtype_name(type), norm ? "fused" : "-", layout_name, us, gbs,
                     100.0 * gbs / copy_gbs);
          rows_json.push_back(fmt::format(
              R"({{"model":"{}","matrix":"{}","rows":{},"cols":{},"type":"{}","norm":{},"layout":"{}",)"
              R"("us":{:.3f},"gb_s":{:.1f},"copy_gb_s":{:.1f},"device":"{}","reps":{}}})",
              s.model, s.name, s.rows * (s.swiglu ? 2 : 1), s.cols, dtype_name(type), norm ? "true" : "false", layout_name,
              us, gbs, copy_gbs, prop.name, reps));
        }
      }
    }
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "[\n";
    for (size_t i = 0; i < rows_json.size(); ++i)
      out << "  " << rows_json[i] << (i + 1 < rows_json.size() ? ",\n" : "\n");
    out << "]\n";
  }
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const lathe::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
