// lathe::Engine: the public face of a long-lived runtime engine (a model on one device with a pool
// of sequence slots), reused by generate_batch() calls and the abliteration evaluator.
#include <fmt/format.h>

#include "api/model_impl.hpp"

namespace lathe {

Engine::Engine(std::shared_ptr<const Model> model, const EngineOptions& options) {
  if (!model) throw InvalidArgumentError("Engine needs a loaded model (got a null pointer)");
  if (options.n_slots == 0 || options.n_slots > 4096)
    throw InvalidArgumentError(
        fmt::format("an engine needs 1..4096 sequence slots (EngineOptions::n_slots is {})", options.n_slots));
  validate(options.compute);
  impl_ = std::make_unique<Impl>();
  impl_->options = options;
  impl_->options.n_ctx = default_context(*model, options.n_ctx);
  impl_->engine = runtime::make_engine(
      internals(*model).weights,
      {.compute = options.compute, .n_slots = options.n_slots, .n_ctx = impl_->options.n_ctx});
  impl_->model = std::move(model);
}

Engine::~Engine() = default;
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;

const Model& Engine::model() const noexcept { return *impl_->model; }
const EngineOptions& Engine::options() const noexcept { return impl_->options; }
MemoryUse Engine::memory_use() const {
  const runtime::EngineMemory m = impl_->engine->memory();
  return {m.device, m.weights, m.kv, m.scratch, m.free, m.total};
}

}  // namespace lathe
