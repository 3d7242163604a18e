// The CUDA engine: a thin adapter from the runtime's Engine to CudaForward.
#include <fmt/format.h>

#include "forward/cuda_forward.hpp"
#include "runtime/device_kv_cache.hpp"
#include "runtime/engine.hpp"

namespace lathe::runtime {
namespace {

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelWeights& weights, const EngineConfig& c)
      : Engine(weights, c),
        kv_(weights.hp, c.compute.device.index, c.n_slots, c.n_ctx, kv_format(c.compute.kv_type)),
        forward_(weights, {.device = c.compute.device.index, .max_batch = max_batch_for(c), .kv = kv_.view(),
                             .batch_invariant = c.compute.batch_invariant, .vram_budget = c.compute.vram_budget}) {}

  const float* logits() const override { return forward_.logits(); }
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const override { forward_.argmax(n_rows, n, out); }
  uint32_t max_batch() const override { return forward_.max_batch(); }
  EngineMemory memory() const override {
    const CudaMemoryUse u = forward_.memory();
    return {.device = fmt::format("cuda:{} ({})", u.device, u.device_name),
            .weights = u.weights,
            .kv = u.kv,
            .scratch = u.scratch,
            .free = u.free,
            .total = u.total,
            .streamed_layers = u.streamed_layers,
            .n_layers = u.n_layers,
            .slots = u.slots,
            .slot_bytes = u.slot_bytes,
            .pinned_host = u.pinned_host,
            .min_budget = u.min_budget,
            .pinning_seconds = u.pinning_seconds};
  }

 private:
  void evaluate(const Batch& batch, std::span<ResidualHooks* const> hooks) override { forward_.forward(batch, hooks); }

  DeviceKvCache kv_;  // before forward_, which reads it
  CudaForward forward_;
};

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelWeights& weights, const EngineConfig& config) {
  return std::make_unique<CudaEngine>(weights, config);
}

}  // namespace lathe::runtime
