// The forward pass on a CUDA device: the same steps as forward.hpp (embed, per layer RMSNorm ->
// Q/K/V [+bias] [+per-head norm] -> RoPE -> KV cache -> attention -> output projection ->
// residual -> RMSNorm -> SwiGLU MLP -> residual, final norm, logits), each one kernel (or one
// cuBLAS product) from backend/cuda. The weights are uploaded once per model
// (weights/cuda_weights.hpp) and reached through the weights seam (weights/layer_source.hpp); the
// KV caches of the engine's slots live on the device, owned by the runtime (DeviceKvView); per
// call only token ids, positions, slots and logits (or, for greedy steps, the argmax ids) cross
// PCIe. A single-token step without hooks is captured once as a CUDA graph and replayed for every
// later token.
// Header without CUDA types; the implementation exists in CUDA builds only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/kv_format.hpp"
#include "forward/batch.hpp"
#include "lathe/hooks.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

// The slots' KV caches on the device, owned by the runtime (runtime/device_kv_cache.hpp): device
// tables of the addresses of each layer's and slot's n_ctx rows, indexed [layer * n_slots + slot].
struct DeviceKvView {
  void** k_tables = nullptr;
  void** v_tables = nullptr;
  uint32_t n_slots = 0;  // sequences with their own cache
  uint32_t n_ctx = 0;    // positions per cache
  KvFormat format = KvFormat::F16;
  uint64_t bytes = 0;        // the rows (reported as the KV cache)
  uint64_t table_bytes = 0;  // the address tables (reported with the scratch)
};

struct CudaForwardOptions {
  int device = 0;
  uint32_t max_batch = 1;  // tokens per call
  DeviceKvView kv;
  bool batch_invariant = false;  // ComputeOptions::batch_invariant
  // GPU memory for weights + KV cache + scratch (ComputeOptions::vram_budget; 0: no limit, every
  // layer resident; kVramBudgetAuto: what is free). Layers that do not fit stream
  // (docs/STREAMING.md).
  uint64_t vram_budget = 0;
};

// Device memory held, by purpose.
struct CudaMemoryUse {
  int device = 0;
  std::string device_name;
  uint64_t weights = 0, kv = 0, scratch = 0;  // scratch: activations, logits, partial sums
  uint64_t free = 0, total = 0;                // of the whole device, after allocation
  // Streaming (docs/STREAMING.md): layers streamed of all, the slots they take turns in (counted in
  // `weights`), their pinned host copies and the time making those took, and the least budget
  // that would run this engine streamed (every layer streamed through two slots).
  uint32_t streamed_layers = 0, n_layers = 0, slots = 0;
  uint64_t slot_bytes = 0, pinned_host = 0, min_budget = 0;
  double pinning_seconds = 0;
};

class CudaForward {
 public:
  // Throws OutOfMemoryError (what, how much, what is free, what to do), DeviceError, or
  // UnsupportedError for a model the kernels cannot run (head_dim > 256 or not a multiple of 8).
  CudaForward(const ModelWeights& weights, const CudaForwardOptions& options);
  ~CudaForward();
  CudaForward(const CudaForward&) = delete;
  CudaForward& operator=(const CudaForward&) = delete;

  // Evaluates every entry of the batch (forward/batch.hpp; at most max_batch, checked by the
  // engine). Logits of the entries that ask for them stay on the device until logits() or
  // argmax() asks. hooks[s] runs on slot s's rows (through host memory); empty span: no hooks.
  // Fast paths by shape: a single decode token without hooks replays the captured graph; a batch
  // of one token per slot runs decode attention with RoPE folded in; runs of several tokens of one
  // sequence use the tiled (tensor-core) prefill attention.
  void forward(const Batch& batch, std::span<ResidualHooks* const> hooks);
  // Pinned host memory: the rows written by the last call (n_vocab floats each), copied from the
  // device on the first call after a run (a greedy step that asks argmax() instead copies none).
  const float* logits() const;
  // out[r] = the argmax of the first n logits of row r (r < n_rows) of the last call, computed on
  // the device (first on ties, NaN and -inf never taken, -1 if all are): only the ids come back.
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const;

  uint32_t max_batch() const noexcept;
  CudaMemoryUse memory() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lathe
