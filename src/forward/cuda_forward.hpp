// The forward pass on a CUDA device: the same steps as forward.hpp (embed, per layer RMSNorm ->
// Q/K/V [+bias] [+per-head norm] -> RoPE -> KV cache -> attention -> output projection ->
// residual -> RMSNorm -> SwiGLU MLP -> residual, final norm, logits), each one kernel (or one
// cuBLAS product) from backend/cuda. The weights are uploaded once per model
// (weights/cuda_weights.hpp); the KV caches of `n_slots` sequences live on the device; per call
// only token ids, positions and logits (or, for greedy steps, the argmax ids) cross PCIe. A
// single-token step without hooks is captured
// once as a CUDA graph and replayed for every later token.
// Header without CUDA types; the implementation exists in CUDA builds only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/kv_format.hpp"
#include "lathe/hooks.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct CudaForwardOptions {
  int device = 0;
  uint32_t n_slots = 1;    // sequences with their own KV cache
  uint32_t n_ctx = 0;      // positions per cache
  uint32_t max_batch = 1;  // tokens per call
  KvFormat kv_format = KvFormat::F16;
};

// Device memory held, by purpose.
struct CudaMemoryUse {
  int device = 0;
  std::string device_name;
  uint64_t weights = 0, kv = 0, scratch = 0;  // scratch: activations, logits, partial sums
  uint64_t free = 0, total = 0;                // of the whole device, after allocation
};

class CudaForward {
 public:
  // Throws OutOfMemoryError (what, how much, what is free, what to do), DeviceError, or
  // UnsupportedError for a model the kernels cannot run (head_dim > 256 or not a multiple of 8).
  CudaForward(const ModelWeights& weights, const CudaForwardOptions& options);
  ~CudaForward();
  CudaForward(const CudaForward&) = delete;
  CudaForward& operator=(const CudaForward&) = delete;

  // Tokens of sequence `slot` at positions first_pos.. (n <= max_batch); logits of every token
  // (all_logits) or of the last one, kept on the device until logits() or argmax() asks.
  void run(uint32_t slot, std::span<const int32_t> tokens, uint32_t first_pos, bool all_logits, bool last_chunk);
  // One token per listed slot, each at its own position; logits of every token.
  void run_batch(std::span<const int32_t> tokens, std::span<const uint32_t> slots,
                 std::span<const uint32_t> positions);
  // Pinned host memory: the rows written by the last call (n_vocab floats each), copied from the
  // device on the first call after a run (a greedy step that asks argmax() instead copies none).
  const float* logits() const;
  // out[r] = the argmax of the first n logits of row r (r < n_rows) of the last call, computed on
  // the device (first on ties, NaN and -inf never taken, -1 if all are): only the ids come back.
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const;

  void set_hooks(ResidualHooks* hooks) noexcept;
  uint32_t max_batch() const noexcept;
  CudaMemoryUse memory() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lathe
