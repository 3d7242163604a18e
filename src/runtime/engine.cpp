#include "runtime/engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "forward/forward.hpp"
#include "lathe/error.hpp"
#include "lathe/generate.hpp"
#include "lathe/sampling.hpp"
#include "runtime/kv_cache.hpp"

namespace lathe::runtime {

Engine::Engine(const ModelWeights& weights, const EngineConfig& config)
    : weights_(weights), config_(config), hooks_(config.n_slots, nullptr), slot_taken_(config.n_slots, 0) {}

void Engine::forward(const Batch& batch) {
  if (batch.empty()) throw InvalidArgumentError("Engine::forward: the batch is empty");
  if (batch.size() > max_batch())
    throw InvalidArgumentError(
        fmt::format("Engine::forward: {} tokens in one pass exceed the engine's {}", batch.size(), max_batch()));
  const uint32_t vocab = n_vocab();
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t token = batch.tokens()[i];
    if (token < 0 || static_cast<uint32_t>(token) >= vocab)
      throw InvalidArgumentError(fmt::format("token id {} is outside the vocabulary (0..{})", token, vocab - 1));
    if (batch.slots()[i] >= n_slots())
      throw InvalidArgumentError(
          fmt::format("Engine::forward: slot {} does not exist (the engine has {})", batch.slots()[i], n_slots()));
    if (batch.positions()[i] >= n_ctx()) throw ContextLengthError(uint64_t{batch.positions()[i]} + 1, n_ctx());
  }
  evaluate(batch, n_hooked_ > 0 ? std::span<ResidualHooks* const>(hooks_) : std::span<ResidualHooks* const>());
}

void Engine::set_hooks(uint32_t slot, ResidualHooks* hooks) {
  if (slot >= n_slots())
    throw InvalidArgumentError(fmt::format("set_hooks: slot {} does not exist (the engine has {})", slot, n_slots()));
  const bool had = hooks_[slot] != nullptr, has = hooks != nullptr;
  hooks_[slot] = hooks;
  n_hooked_ = n_hooked_ - (had ? 1 : 0) + (has ? 1 : 0);
}

std::optional<uint32_t> Engine::acquire_slot() {
  std::lock_guard lock(pool_mutex_);
  for (uint32_t s = 0; s < slot_taken_.size(); ++s) {
    if (slot_taken_[s] == 0) {
      slot_taken_[s] = 1;
      return s;
    }
  }
  return std::nullopt;
}

bool Engine::try_acquire_slot(uint32_t slot) {
  std::lock_guard lock(pool_mutex_);
  if (slot >= slot_taken_.size() || slot_taken_[slot] != 0) return false;
  slot_taken_[slot] = 1;
  return true;
}

void Engine::release_slot(uint32_t slot) {
  {
    std::lock_guard lock(pool_mutex_);
    if (slot >= slot_taken_.size() || slot_taken_[slot] == 0)
      throw InternalError(fmt::format("Engine::release_slot: slot {} is not taken", slot));
    slot_taken_[slot] = 0;
  }
  set_hooks(slot, nullptr);
}

uint32_t Engine::free_slots() const {
  std::lock_guard lock(pool_mutex_);
  return static_cast<uint32_t>(std::count(slot_taken_.begin(), slot_taken_.end(), 0));
}

uint32_t max_batch_for(const EngineConfig& config) {
  const uint64_t whole = uint64_t{config.n_ctx} * config.n_slots;
  const uint64_t tokens = std::min<uint64_t>(config.compute.n_batch, whole);
  return static_cast<uint32_t>(std::max<uint64_t>(tokens, config.n_slots));
}

namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(const ModelWeights& weights, const EngineConfig& c)
      : Engine(weights, c), pool_(c.compute.n_threads), forward_(weights, max_batch_for(c), c.n_ctx) {
    caches_.reserve(c.n_slots);
    for (uint32_t s = 0; s < c.n_slots; ++s) caches_.emplace_back(weights.hp, c.n_ctx, kv_format(c.compute.kv_type));
    for (auto& cache : caches_) views_.push_back(&cache.view());
  }

  const float* logits() const override { return logits_.data(); }
  void argmax(uint32_t n_rows, uint32_t n, int32_t* out) const override {
    for (uint32_t r = 0; r < n_rows; ++r) out[r] = argmax_logit({logits_.data() + size_t{r} * n_vocab(), n});
  }
  uint32_t max_batch() const override { return forward_.max_batch(); }

  EngineMemory memory() const override {
    EngineMemory m;
    m.device = "cpu";
    for (const auto& c : caches_) m.kv += c.bytes();
    m.scratch = logits_.size() * sizeof(float);
    return m;
  }

 private:
  void evaluate(const Batch& batch, std::span<ResidualHooks* const> hooks) override {
    // Logits are kept only for the rows asked for (one per decode step, a vocabulary of 150k
    // floats is 600 KB; 512 prefill rows would be 300 MB).
    const size_t floats = size_t{batch.n_logits()} * n_vocab();
    if (logits_.size() < floats) logits_.resize(floats);
    forward_.forward(batch, views_, hooks, logits_.data(), pool_);
  }

  cpu::ThreadPool pool_;
  Forward forward_;
  std::vector<KvCache> caches_;
  std::vector<KvCacheView*> views_;
  std::vector<float> logits_;
};

}  // namespace

std::unique_ptr<Engine> make_engine(const ModelWeights& weights, const EngineConfig& config) {
  validate(config.compute);
  if (config.n_slots == 0 || config.n_ctx == 0)
    throw InvalidArgumentError(fmt::format("an engine needs at least one slot and one position (got {} slots of {})",
                                           config.n_slots, config.n_ctx));
  require_kv_format_fits(weights.hp, kv_format(config.compute.kv_type));
  if (config.compute.device.is_cuda()) return make_cuda_engine(weights, config);
  return std::make_unique<CpuEngine>(weights, config);
}

}  // namespace lathe::runtime
