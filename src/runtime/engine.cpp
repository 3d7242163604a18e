#include "runtime/engine.hpp"

#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "forward/forward.hpp"
#include "lathe/error.hpp"
#include "lathe/sampling.hpp"
#include "runtime/kv_cache.hpp"

namespace lathe {
namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelWeights& weights, const EngineOptions& o)
      : pool_(o.n_threads), forward_(weights, o.max_batch, o.n_ctx), n_vocab_(weights.hp.n_vocab) {
    caches_.reserve(o.n_slots);
    for (uint32_t s = 0; s < o.n_slots; ++s) caches_.emplace_back(weights.hp, o.n_ctx, o.kv_format);
  }

  void run(uint32_t slot, std::span<const int32_t> tokens, uint32_t first_pos, bool all_logits,
           bool last_chunk) override {
    reserve_rows(all_logits ? tokens.size() : 1);
    forward_.run(tokens, first_pos, caches_.at(slot).view(), all_logits, logits_.data(), pool_, last_chunk);
  }

  void run_batch(std::span<const int32_t> tokens, std::span<const uint32_t> slots,
                 std::span<const uint32_t> positions) override {
    views_.clear();
    for (uint32_t s : slots) views_.push_back(&caches_.at(s).view());
    reserve_rows(tokens.size());
    forward_.run_batch(tokens, positions, views_, logits_.data(), pool_);
  }

  const float* logits() const override { return logits_.data(); }
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const override {
    for (uint32_t r = 0; r < n_rows; ++r) out[r] = argmax_logit({logits_.data() + size_t{r} * n_vocab_, n});
  }

  // Logits are kept only for the rows asked for (one per decode step, a vocabulary of 150k
  // floats is 600 KB; 512 prefill rows would be 300 MB).
  void reserve_rows(size_t rows) {
    if (logits_.size() < rows * n_vocab_) logits_.resize(rows * n_vocab_);
  }
  void set_hooks(ResidualHooks* hooks) override { forward_.set_hooks(hooks); }
  uint32_t max_batch() const override { return forward_.max_batch(); }

  EngineMemory memory() const override {
    EngineMemory m;
    m.device = "cpu";
    for (const auto& c : caches_) m.kv += c.bytes();
    m.scratch = logits_.size() * sizeof(float);
    return m;
  }

 private:
  cpu::ThreadPool pool_;
  Forward forward_;
  std::vector<KvCache> caches_;
  std::vector<KvCacheView*> views_;
  size_t n_vocab_;
  std::vector<float> logits_;
};

}  // namespace

std::unique_ptr<Engine> make_engine(const ModelWeights& weights, const EngineOptions& options) {
  if (options.n_slots == 0 || options.n_ctx == 0 || options.max_batch == 0)
    throw InvalidArgumentError("an engine needs at least one slot, one position and one token per batch");
  if (options.cuda_device >= 0) return make_cuda_engine(weights, options);
  return std::make_unique<CpuEngine>(weights, options);
}

}  // namespace lathe
