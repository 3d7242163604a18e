// matmul(): argument checks, choice of kernel level, activation quantization and the split of
// the work across threads. The arithmetic lives in kernels_<level>.cpp.
#include "backend/cpu/matmul.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/kernels.hpp"
#include "lathe/error.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace lathe::cpu {
namespace kernels {

bool cpu_has_avx2() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // clang's __builtin_cpu_supports does not know "f16c": read CPUID leaf 1, ECX bit 29.
  static const bool has = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
    return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

#if !(defined(__x86_64__) || defined(__i386__))
const KernelSet* avx2_kernels() noexcept { return nullptr; }
#endif

Activation activation_for(DType type) noexcept {
  switch (type) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0: return Activation::Q8;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return Activation::Q8K;
    default: return Activation::F32;
  }
}

namespace {

const KernelSet* best_available() noexcept {
  if (cpu_has_avx2() && avx2_kernels() != nullptr) return avx2_kernels();
  return &scalar_kernels();
}

// The level asked for by name, if this CPU can run it.
const KernelSet* kernels_named(std::string_view level) noexcept {
  if (level == "scalar") return &scalar_kernels();
  if (level == "avx2" && cpu_has_avx2()) return avx2_kernels();
  return nullptr;
}

const KernelSet* default_kernels() noexcept {
  // LATHE_CPU_KERNELS can only lower the level; an unknown or unavailable name is ignored.
  static const KernelSet* const chosen = [] {
    const char* forced = std::getenv("LATHE_CPU_KERNELS");
    const KernelSet* named = forced != nullptr ? kernels_named(forced) : nullptr;
    return named != nullptr ? named : best_available();
  }();
  return chosen;
}

std::atomic<const KernelSet*> g_forced{nullptr};

}  // namespace

const KernelSet& active_kernels() noexcept {
  const KernelSet* forced = g_forced.load(std::memory_order_relaxed);
  return forced != nullptr ? *forced : *default_kernels();
}

bool force_kernel_level(std::string_view level) noexcept {
  if (level.empty()) {
    g_forced.store(nullptr);
    return true;
  }
  const KernelSet* named = kernels_named(level);
  if (named == nullptr) return false;
  g_forced.store(named);
  return true;
}

}  // namespace kernels

namespace {

using kernels::Activation;
using kernels::BlockQ8;
using kernels::BlockQ8K;

std::string display_name(const MatrixView& w) { return w.name.empty() ? std::string("<unnamed>") : std::string(w.name); }

std::string supported_names() {
  std::string names;
  for (const auto& info : all_dtypes())
    if (matmul_supports(info.type)) names += (names.empty() ? "" : ", ") + std::string(info.name);
  return names;
}

void check_arguments(const MatrixView& w, const float* x, int64_t n_tokens, const float* y) {
  if (!matmul_supports(w.type))
    throw UnsupportedError(fmt::format("matmul: tensor {} has type {}, which the CPU matmul does not handle "
                                       "(supported: {}); convert the model to one of those types",
                                       display_name(w), dtype_name(w.type), supported_names()));
  const auto& info = dtype_info(w.type);
  if (w.rows < 0 || w.cols < 0 || n_tokens < 0)
    throw InvalidArgumentError(fmt::format("matmul: tensor {}: negative size (rows {}, cols {}, n_tokens {})",
                                           display_name(w), w.rows, w.cols, n_tokens));
  if (w.cols % info.block_size != 0)
    throw InvalidArgumentError(fmt::format(
        "matmul: tensor {} ({}) has {} columns, not a whole number of {}-element blocks; "
        "a {} matrix's rows must be a multiple of {} elements",
        display_name(w), info.name, w.cols, info.block_size, info.name, info.block_size));
  const auto needed = dtype_bytes(w.type, static_cast<uint64_t>(w.cols));
  if (!needed || w.row_bytes < *needed)
    throw InvalidArgumentError(fmt::format("matmul: tensor {} ({}): row_bytes {} is less than the {} bytes a row of {} "
                                           "elements takes; pass the tensor's real row stride",
                                           display_name(w), info.name, w.row_bytes,
                                           needed ? fmt::to_string(*needed) : std::string("2^64+"), w.cols));
  if (w.rows > 0 && w.cols > 0 && n_tokens > 0 && (w.data == nullptr || x == nullptr || y == nullptr))
    throw InvalidArgumentError(
        fmt::format("matmul: tensor {}: null weight, activation or output pointer", display_name(w)));
}

// Activation scratch, reused across calls on the same thread (decode calls matmul ~200 times a
// token; reallocating each time would cost more than small products themselves).
std::vector<uint8_t>& activation_scratch() {
  thread_local std::vector<uint8_t> scratch;
  return scratch;
}

struct PreparedActivations {
  const uint8_t* data;
  size_t stride;  // bytes per token
};

PreparedActivations prepare_activations(const kernels::KernelSet& k, Activation format, const float* x, int64_t cols,
                                        int64_t n_tokens, ThreadPool& pool) {
  if (format == Activation::F32) return {reinterpret_cast<const uint8_t*>(x), static_cast<size_t>(cols) * sizeof(float)};
  const size_t stride = format == Activation::Q8 ? static_cast<size_t>(cols / 32) * sizeof(BlockQ8)
                                                 : static_cast<size_t>(cols / 256) * sizeof(BlockQ8K);
  auto& scratch = activation_scratch();
  if (scratch.size() < stride * static_cast<size_t>(n_tokens)) scratch.resize(stride * static_cast<size_t>(n_tokens));
  uint8_t* base = scratch.data();
  auto quantize_tokens = [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (format == Activation::Q8)
        k.quantize_q8(x + t * cols, cols, reinterpret_cast<BlockQ8*>(base + t * stride));
      else
        k.quantize_q8k(x + t * cols, cols, reinterpret_cast<BlockQ8K*>(base + t * stride));
    }
  };
  if (n_tokens >= 8)
    pool.parallel_for(n_tokens, 4, quantize_tokens);
  else
    quantize_tokens(0, n_tokens);
  return {base, stride};
}

// Rows per block in prefill: about 16 KiB of weights, which stay in L1 while every token tile
// passes over them.
int64_t rows_per_block(size_t row_bytes) {
  return std::clamp<int64_t>(static_cast<int64_t>((16u << 10) / std::max<size_t>(row_bytes, 1)), 1, 64);
}

// Tokens per pass in prefill: activations of about 256 KiB, so they stay in L2 while every row
// block of the thread's share passes over them.
int64_t tokens_per_pass(size_t x_stride) {
  const auto fit = static_cast<int64_t>((256u << 10) / std::max<size_t>(x_stride, 1));
  return std::max<int64_t>(4, fit / 4 * 4);
}

}  // namespace

bool matmul_supports(DType type) noexcept {
  switch (type) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q8_0:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return true;
    default: return false;
  }
}

void matmul(const MatrixView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool) {
  check_arguments(w, x, n_tokens, y);
  if (n_tokens == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n_tokens * w.rows, 0.0f);
    return;
  }
  const kernels::KernelSet& k = kernels::active_kernels();
  const kernels::TileFn tile = k.tile_for(w.type);
  const PreparedActivations act = prepare_activations(k, kernels::activation_for(w.type), x, w.cols, n_tokens, pool);

  if (n_tokens == 1) {
    // Decode: rows split evenly across threads; at least ~32K multiply-adds per chunk so tiny
    // products are not spread thinner than the dispatch costs.
    const int64_t grain = std::max<int64_t>(1, (32 << 10) / w.cols);
    pool.parallel_for(w.rows, grain, [&](int64_t begin, int64_t end) {
      tile(w.data + begin * w.row_bytes, w.row_bytes, end - begin, act.data, act.stride, 1, w.cols, y + begin, w.rows);
    });
    return;
  }

  // Prefill: threads take contiguous row blocks; within a block the kernel walks token tiles,
  // so each weight block decoded serves several tokens and the block's rows stay in L1.
  const int64_t block_rows = rows_per_block(w.row_bytes);
  const int64_t n_row_blocks = (w.rows + block_rows - 1) / block_rows;
  const int64_t pass_tokens = tokens_per_pass(act.stride);
  for (int64_t t0 = 0; t0 < n_tokens; t0 += pass_tokens) {
    const int64_t pass = std::min(pass_tokens, n_tokens - t0);
    const uint8_t* x_pass = act.data + t0 * act.stride;
    float* y_pass = y + t0 * w.rows;
    pool.parallel_for(n_row_blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t rb = begin; rb < end; ++rb) {
        const int64_t r0 = rb * block_rows;
        const int64_t rows = std::min(block_rows, w.rows - r0);
        tile(w.data + r0 * w.row_bytes, w.row_bytes, rows, x_pass, act.stride, pass, w.cols, y_pass + r0, w.rows);
      }
    });
  }
}

std::string_view kernel_level() noexcept { return kernels::active_kernels().level; }

}  // namespace lathe::cpu
