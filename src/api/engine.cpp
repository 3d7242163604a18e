// lathe::Engine: the public face of a long-lived runtime engine (a model on one device with a pool
// of sequence slots), reused by generate_batch() calls and the abliteration evaluator.
#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "api/model_impl.hpp"

namespace lathe {

namespace {

std::string gib(uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30)); }

uint64_t engine_bytes(const runtime::EngineMemory& m) { return m.weights + m.kv + m.scratch; }

// The engine within EngineOptions::vram_budget: as asked, or (n_ctx left to lathe) with the
// context shortened, 256 tokens at a time, to the longest that fits; weights larger than the
// budget stream instead. The KV cache grows linearly with the context; the scratch hardly depends
// on it, so the first estimate is nearly exact and the loop only corrects a rounding.
std::unique_ptr<runtime::Engine> engine_within_budget(const Model& model, EngineOptions& options, bool context_given) {
  const auto make = [&] {
    return runtime::make_engine(internals(model).weights,
                                {.compute = options.compute, .n_slots = options.n_slots, .n_ctx = options.n_ctx});
  };
  const uint64_t budget = options.vram_budget;
  if (budget == 0) return make();
  if (!options.compute.device.is_cuda())
    throw InvalidArgumentError(fmt::format("a GPU memory budget (EngineOptions::vram_budget, --vram-budget) applies to a "
                                           "CUDA device; this engine runs on {}",
                                           options.compute.device.name()));
  // Weights larger than the budget stream (docs/STREAMING.md) at the context asked: the forward
  // pass keeps what fits of them beside the KV cache and says the least budget when that is
  // nothing.
  if (model.summary().weight_bytes > budget) {
    options.compute.vram_budget = budget;
    return make();
  }
  constexpr uint32_t kStep = 256;
  for (;;) {
    auto engine = make();
    const runtime::EngineMemory m = engine->memory();
    const uint64_t used = engine_bytes(m);
    if (used <= budget) return engine;
    const uint64_t per_token = std::max<uint64_t>(1, m.kv / (uint64_t{options.n_slots} * options.n_ctx));
    const uint64_t fixed = used - m.kv;
    const uint64_t fit = budget > fixed ? (budget - fixed) / (per_token * options.n_slots) / kStep * kStep : 0;
    const uint32_t below = (options.n_ctx - 1) / kStep * kStep;  // the largest multiple of kStep under n_ctx
    const uint32_t next = static_cast<uint32_t>(std::min<uint64_t>(fit, below));
    if (context_given || next < kStep)
      throw InvalidArgumentError(fmt::format(
          "the GPU memory budget (--vram-budget) of {} does not hold this engine: weights {} + KV cache {} ({} "
          "slots x {} tokens) + scratch {} = {}; {}",
          gib(budget), gib(m.weights), gib(m.kv), options.n_slots, options.n_ctx, gib(m.scratch), gib(used),
          next >= kStep ? fmt::format("a context of at most {} tokens per slot (-c {}) fits, or raise the budget", next, next)
                        : "fewer slots (--parallel) or a larger budget would"));
    engine.reset();  // its KV cache goes before the smaller one is allocated
    options.n_ctx = next;
  }
}

}  // namespace

Engine::Engine(std::shared_ptr<const Model> model, const EngineOptions& options) {
  if (!model) throw InvalidArgumentError("Engine needs a loaded model (got a null pointer)");
  if (options.n_slots == 0 || options.n_slots > 4096)
    throw InvalidArgumentError(
        fmt::format("an engine needs 1..4096 sequence slots (EngineOptions::n_slots is {})", options.n_slots));
  validate(options.compute);
  impl_ = std::make_unique<Impl>();
  impl_->options = options;
  impl_->options.n_ctx = default_context(*model, options.n_ctx);
  impl_->engine = engine_within_budget(*model, impl_->options, options.n_ctx != 0);
  impl_->model = std::move(model);
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const Model& Engine::model() const noexcept { return *impl_->model; }
const EngineOptions& Engine::options() const noexcept { return impl_->options; }
MemoryUse Engine::memory_use() const {
  const runtime::EngineMemory m = impl_->engine->memory();
  return public_memory_use(m);
}

}  // namespace lathe
