// The CUDA engine: a thin adapter from the Engine interface to CudaForward.
#include <fmt/format.h>

#include "forward/cuda_forward.hpp"
#include "runtime/engine.hpp"
#include "runtime/kv_cache.hpp"

namespace lathe {
namespace {

class CudaEngine final : public Engine {
 public:
  CudaEngine(const ModelWeights& weights, const EngineOptions& o)
      : forward_((require_kv_format_fits(weights.hp, o.kv_format), weights),
                 {.device = o.cuda_device,
                  .n_slots = o.n_slots,
                  .n_ctx = o.n_ctx,
                  .max_batch = o.max_batch,
                  .kv_format = o.kv_format}) {}

  void run(uint32_t slot, std::span<const int32_t> tokens, uint32_t first_pos, bool all_logits,
           bool last_chunk) override {
    forward_.run(slot, tokens, first_pos, all_logits, last_chunk);
  }
  void run_batch(std::span<const int32_t> tokens, std::span<const uint32_t> slots,
                 std::span<const uint32_t> positions) override {
    forward_.run_batch(tokens, slots, positions);
  }
  const float* logits() const override { return forward_.logits(); }
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const override { forward_.argmax(n_rows, n, out); }
  void set_hooks(ResidualHooks* hooks) override { forward_.set_hooks(hooks); }
  uint32_t max_batch() const override { return forward_.max_batch(); }
  EngineMemory memory() const override {
    const CudaMemoryUse u = forward_.memory();
    return {fmt::format("cuda:{} ({})", u.device, u.device_name), u.weights, u.kv, u.scratch, u.free, u.total};
  }

 private:
  CudaForward forward_;
};

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const ModelWeights& weights, const EngineOptions& options) {
  return std::make_unique<CudaEngine>(weights, options);
}

}  // namespace lathe
