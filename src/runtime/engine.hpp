// An engine evaluates a model's tokens on one device for a fixed number of sequence slots, each
// with its own KV cache: the CPU engine (forward/forward.hpp, KV caches in host memory, a thread
// pool) or the CUDA engine (forward/cuda_forward.hpp, weights and KV caches on the GPU). Sessions
// (one slot) and batched generation (n_parallel slots) run on either through this interface.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/kv_format.hpp"
#include "lathe/hooks.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct EngineOptions {
  int cuda_device = -1;      // -1: CPU
  uint32_t n_slots = 1;
  uint32_t n_ctx = 0;
  uint32_t max_batch = 512;  // tokens per forward pass
  int n_threads = 0;         // CPU only; 0 = one per hardware thread
  KvFormat kv_format = KvFormat::F16;
};

// What an engine holds, for reports ("weights 942 MiB, KV 96 MiB, scratch 40 MiB; 77.1 GiB free").
struct EngineMemory {
  std::string device;        // "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  uint64_t weights = 0;      // device copy of the weights (0 on the CPU: they stay mapped)
  uint64_t kv = 0, scratch = 0;
  uint64_t free = 0, total = 0;  // device memory (0 on the CPU)
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Tokens of `slot` at positions first_pos.. (at most max_batch); then logits() holds the logits
  // of every token (all_logits) or of the last one. `last_chunk`: these tokens end the caller's
  // eval() (for hooks that capture the last row).
  virtual void run(uint32_t slot, std::span<const int32_t> tokens, uint32_t first_pos, bool all_logits,
                   bool last_chunk) = 0;
  // One token per listed slot at its own position; logits() holds one row per token.
  virtual void run_batch(std::span<const int32_t> tokens, std::span<const uint32_t> slots,
                         std::span<const uint32_t> positions) = 0;
  // The rows written by the last call, n_vocab floats each; valid until the next call. (The CUDA
  // engine copies them from the device on the first call of logits() after a run, so two threads
  // must not call it at once.)
  virtual const float* logits() const = 0;
  // Greedy picks without copying the logits: out[r] = argmax_logit (lathe/sampling.hpp) of the
  // first n entries of row r of the last call's rows, for r < n_rows (-1 where all are NaN or
  // -inf). On a GPU only the ids cross PCIe.
  virtual void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const = 0;
  virtual void set_hooks(ResidualHooks* hooks) = 0;
  virtual uint32_t max_batch() const = 0;
  virtual EngineMemory memory() const = 0;
};

// Throws UnsupportedError when CUDA is asked for and the build has none, DeviceError when the
// device does not exist, OutOfMemoryError when the caches do not fit.
std::unique_ptr<Engine> make_engine(const ModelWeights& weights, const EngineOptions& options);

// The CUDA engine (runtime/cuda_engine_cuda.cpp; in builds without CUDA, cuda_engine_nocuda.cpp
// throws UnsupportedError with the fix).
std::unique_ptr<Engine> make_cuda_engine(const ModelWeights& weights, const EngineOptions& options);

}  // namespace lathe
