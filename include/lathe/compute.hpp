// Where and how lathe computes: the device, CPU threads, tokens per forward pass and the KV
// cache's element type. One struct, shared by every option set that runs a model (sessions,
// batched generation, the engine, editing and training), so these settings are declared once.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace lathe {

// KV cache element type: IEEE half (default), float32, or Q8_0 (8-bit blocks of 32 with a half
// scale, as llama.cpp's q8_0 cache: about half of F16's memory; needs head_dim % 32 == 0).
enum class KvType { F16, F32, Q8_0 };

// Where a model computes: the CPU, or a CUDA GPU (weights uploaded once per model and device,
// KV cache on the device).
struct Device {
  enum class Kind { Cpu, Cuda };
  Kind kind = Kind::Cpu;
  int index = 0;  // CUDA device number

  static Device cpu() noexcept { return {}; }
  static Device cuda(int index = 0) noexcept { return {Kind::Cuda, index}; }
  // "cpu", "cuda" (= cuda:0) or "cuda:N"; InvalidArgumentError listing the accepted forms.
  static Device parse(std::string_view text);
  std::string name() const;  // "cpu", "cuda:0"
  bool is_cuda() const noexcept { return kind == Kind::Cuda; }
};

struct ComputeOptions {
  uint32_t n_batch = 512;  // tokens per forward pass (prefill chunk)
  int n_threads = 0;       // CPU threads; 0 = default_cpu_threads()
  KvType kv_type = KvType::F16;
  Device device = Device::cpu();
  // Batch invariance: a sequence's results do not depend on the batch it shares a pass with (its
  // greedy tokens are the same alone or beside 15 others). The CPU backend is always batch
  // invariant; on CUDA the default passes choose kernels by the batch's shape (8-bit mat-vecs up
  // to 8 tokens, cuBLAS on 16-bit activations above, decode and prefill attention), which round
  // differently, so a sequence's logits move by rounding noise and greedy ties can go either way.
  // With this set, CUDA computes every token with the same kernels whatever the batch: mat-vecs in
  // groups of up to 8 tokens and decode attention with a fixed split for every row. Costs prefill
  // speed (docs/PERFORMANCE.md); decode of up to 8 sequences runs as before.
  bool batch_invariant = false;
  // GPU memory the engine may hold for weights + KV cache + scratch (CUDA only; 0: no limit).
  // Layers that do not fit beside the KV cache and scratch stream from host memory as each pass
  // runs (docs/STREAMING.md); kVramBudgetAuto: as much as is free, less 1 GiB.
  uint64_t vram_budget = 0;
};

inline constexpr uint64_t kVramBudgetAuto = UINT64_MAX;

// InvalidArgumentError naming the field when n_batch is 0 or n_threads negative.
void validate(const ComputeOptions& options);

// The CPUs this process may run on (its affinity mask). More threads than this still compute the
// same results, but the extra ones wait for cores, so decode gets slower, not faster.
int available_cpus() noexcept;
// The thread count n_threads = 0 stands for: one per physical core among available_cpus().
int default_cpu_threads() noexcept;

}  // namespace lathe
