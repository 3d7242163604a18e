// The runtime's engine evaluates a model's tokens on one device for a fixed pool of sequence
// slots, each with its own KV cache: the CPU engine (forward/forward.hpp, KV caches in host
// memory, a thread pool) or the CUDA engine (forward/cuda_forward.hpp, weights and KV caches on
// the GPU). One entry point, forward(Batch), takes any mix of prefill chunks and decode tokens of
// many sequences; each backend picks its fast path from the batch's shape. Sessions hold one slot;
// the scheduler (scheduler.hpp) runs many sequences over the slots of one long-lived engine.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/kv_format.hpp"
#include "forward/batch.hpp"
#include "lathe/compute.hpp"
#include "lathe/hooks.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

// The engines' name for a public KV cache type.
constexpr KvFormat kv_format(KvType type) noexcept {
  return type == KvType::F32 ? KvFormat::F32 : type == KvType::Q8_0 ? KvFormat::Q8_0 : KvFormat::F16;
}

namespace runtime {

struct EngineConfig {
  ComputeOptions compute;  // device, threads, tokens per pass (n_batch), KV cache type
  uint32_t n_slots = 1;
  uint32_t n_ctx = 0;      // positions per slot
};

// What an engine holds, for reports ("weights 942 MiB, KV 96 MiB, scratch 40 MiB; 77.1 GiB free").
struct EngineMemory {
  std::string device;        // "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  uint64_t weights = 0;      // device copy of the weights (0 on the CPU: they stay mapped)
  uint64_t kv = 0, scratch = 0;
  uint64_t free = 0, total = 0;  // device memory (0 on the CPU)
  // Streaming (CUDA, docs/STREAMING.md; see CudaMemoryUse).
  uint32_t streamed_layers = 0, n_layers = 0, slots = 0;
  uint64_t slot_bytes = 0, pinned_host = 0, min_budget = 0;
  double pinning_seconds = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Evaluates every entry of the batch (see forward/batch.hpp); then logits() holds one row per
  // entry that asked for logits, in batch order. Throws InvalidArgumentError (nothing evaluated)
  // for an empty batch, more than max_batch() entries, or an entry whose slot, position or token
  // is out of range.
  void forward(const Batch& batch);
  // The rows written by the last forward(), n_vocab floats each; valid until the next call. (The
  // CUDA engine copies them from the device on the first call after a pass, so two threads must
  // not call it at once.)
  virtual const float* logits() const = 0;
  // Greedy picks without copying the logits: out[r] = argmax_logit (lathe/sampling.hpp) of the
  // first n entries of row r of the last pass's rows, for r < n_rows (-1 where all are NaN or
  // -inf). On a GPU only the ids cross PCIe.
  virtual void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const = 0;
  virtual uint32_t max_batch() const = 0;
  virtual EngineMemory memory() const = 0;

  // Residual hooks run on slot `slot`'s rows in every later pass (nullptr: none). Not owned.
  void set_hooks(uint32_t slot, ResidualHooks* hooks);
  ResidualHooks* hooks(uint32_t slot) const { return hooks_.at(slot); }

  // The slot pool (thread-safe): a free slot, or nothing when all are taken; release_slot()
  // returns it (and drops its hooks). Its KV rows are simply overwritten by the next user.
  std::optional<uint32_t> acquire_slot();
  // Takes slot `slot` if it is free (the scheduler picks the free slot whose cache rows already
  // hold the start of a prompt); false when it is taken or does not exist.
  bool try_acquire_slot(uint32_t slot);
  void release_slot(uint32_t slot);
  uint32_t free_slots() const;

  uint32_t n_slots() const noexcept { return config_.n_slots; }
  uint32_t n_ctx() const noexcept { return config_.n_ctx; }
  uint32_t n_vocab() const noexcept { return weights_.hp.n_vocab; }
  const EngineConfig& config() const noexcept { return config_; }
  const ModelWeights& weights() const noexcept { return weights_; }

 protected:
  Engine(const ModelWeights& weights, const EngineConfig& config);
  // The backend's pass over a checked batch; hooks[s] for slot s (empty span: none at all).
  virtual void evaluate(const Batch& batch, std::span<ResidualHooks* const> hooks) = 0;

 private:
  const ModelWeights& weights_;
  EngineConfig config_;
  std::vector<ResidualHooks*> hooks_;
  uint32_t n_hooked_ = 0;  // slots with hooks
  mutable std::mutex pool_mutex_;
  std::vector<uint8_t> slot_taken_;
};

// Tokens per pass for a config: n_batch, but at least one per slot (a decode step of every slot
// fits one pass) and no more than every slot's whole context.
uint32_t max_batch_for(const EngineConfig& config);

// Throws UnsupportedError when CUDA is asked for and the build has none, DeviceError when the
// device does not exist, OutOfMemoryError when the caches do not fit, InvalidArgumentError for
// zero slots, context or batch.
std::unique_ptr<Engine> make_engine(const ModelWeights& weights, const EngineConfig& config);

// The CUDA engine (runtime/cuda_engine_cuda.cpp; in builds without CUDA, cuda_engine_nocuda.cpp
// throws UnsupportedError with the fix).
std::unique_ptr<Engine> make_cuda_engine(const ModelWeights& weights, const EngineConfig& config);

}  // namespace runtime
}  // namespace lathe
