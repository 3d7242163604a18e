// Session: one conversation on a slot of its own engine. eval() runs the model over new tokens in
// chunks of the engine's tokens per pass; generate() (generate.cpp) hands the per-token loop to
// the runtime's scheduler.
#include <algorithm>
#include <fmt/format.h>

#include "api/model_impl.hpp"

namespace lathe {

uint32_t default_context(const Model& model, uint32_t requested) {
  if (requested != 0) return requested;
  const uint32_t trained = model.summary().n_ctx_train;
  return trained == 0 ? 4096u : std::min(trained, 4096u);
}

namespace {
uint32_t checked_context(const Model& model, uint32_t requested) {
  const uint32_t n_ctx = default_context(model, requested);
  if (n_ctx > kMaxContextLength)
    throw InvalidArgumentError(fmt::format("context size {} (SessionOptions::n_ctx, -c/--ctx-size) is larger than lathe "
                                           "supports ({})",
                                           n_ctx, kMaxContextLength));
  return n_ctx;
}
}  // namespace

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options) {
  if (!model) throw InvalidArgumentError("Session needs a loaded model (got a null pointer)");
  validate(options.compute);
  impl_ = std::make_unique<Impl>();
  auto& s = *impl_;
  s.options = options;
  s.options.n_ctx = checked_context(*model, options.n_ctx);
  s.engine = runtime::make_engine(internals(*model).weights,
                                  {.compute = options.compute, .n_slots = 1, .n_ctx = s.options.n_ctx});
  s.slot = *s.engine->acquire_slot();
  s.kv_bytes = s.engine->memory().kv;
  s.model = std::move(model);
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

void Session::eval(std::span<const TokenId> tokens, bool all_logits) {
  auto& s = *impl_;
  if (tokens.empty()) throw InvalidArgumentError("eval() needs at least one token (got an empty list)");
  const uint32_t n_vocab = s.model->n_vocab();
  for (TokenId id : tokens) {
    if (id < 0 || static_cast<uint32_t>(id) >= n_vocab)
      throw InvalidArgumentError(fmt::format("token id {} is outside the vocabulary (0..{})", id, n_vocab - 1));
  }
  const uint64_t needed = uint64_t{s.tokens.size()} + tokens.size();
  if (needed > n_ctx()) throw ContextLengthError(needed, n_ctx());

  if (s.hooks) s.hooks->validate(internals(*s.model).weights.hp.n_layer, internals(*s.model).weights.hp.n_embd);
  s.n_logit_rows = 0;
  s.rows_in_engine = false;
  if (all_logits) s.all_logits.resize(tokens.size() * n_vocab);
  const size_t per_pass = s.engine->max_batch();
  for (size_t begin = 0; begin < tokens.size(); begin += per_pass) {
    const size_t n = std::min(per_pass, tokens.size() - begin);
    const auto chunk = tokens.subspan(begin, n);
    const bool last = begin + n == tokens.size();
    s.batch.clear();
    s.batch.add_chunk(s.slot, chunk, static_cast<uint32_t>(s.tokens.size()), all_logits, last, last);
    s.engine->forward(s.batch);
    // Without all_logits the engine keeps the last token's row, which the last chunk leaves.
    if (all_logits) std::copy_n(s.engine->logits(), n * n_vocab, s.all_logits.data() + begin * n_vocab);
    s.tokens.insert(s.tokens.end(), chunk.begin(), chunk.end());
  }
  s.n_logit_rows = all_logits ? tokens.size() : 1;
  s.rows_in_engine = !all_logits;
}

std::span<const float> Session::logits() const {
  const auto& s = *impl_;
  if (s.n_logit_rows == 0) throw InvalidArgumentError("no logits yet: call eval() first");
  return logits_at(s.n_logit_rows - 1);
}

std::span<const float> Session::logits_at(size_t index) const {
  const auto& s = *impl_;
  if (index >= s.n_logit_rows)
    throw InvalidArgumentError(fmt::format("logits_at({}): the last eval() kept {} row(s) of logits", index, s.n_logit_rows));
  const size_t n_vocab = s.model->n_vocab();
  if (s.rows_in_engine) return {s.engine->logits(), n_vocab};
  return {s.all_logits.data() + index * n_vocab, n_vocab};
}

TokenId Session::greedy_token() const {
  const auto& s = *impl_;
  if (s.n_logit_rows == 0) throw InvalidArgumentError("no logits yet: call eval() first");
  const auto& model = internals(*s.model);
  if (!s.rows_in_engine) return argmax_logit(model.samplable(logits()));
  TokenId id = -1;
  s.engine->argmax(1, model.n_samplable(), &id);
  return id;
}

const std::vector<TokenId>& Session::tokens() const noexcept { return impl_->tokens; }
uint32_t Session::n_past() const noexcept { return static_cast<uint32_t>(impl_->tokens.size()); }
uint32_t Session::n_ctx() const noexcept { return impl_->options.n_ctx; }
uint64_t Session::kv_bytes() const noexcept { return impl_->kv_bytes; }
const SessionOptions& Session::options() const noexcept { return impl_->options; }

MemoryUse Session::memory_use() const {
  const runtime::EngineMemory m = impl_->engine->memory();
  return public_memory_use(m);
}
const Model& Session::model() const noexcept { return *impl_->model; }

void Session::truncate(uint32_t n) {
  auto& s = *impl_;
  if (n > s.tokens.size())
    throw InvalidArgumentError(fmt::format("truncate({}): the session holds only {} tokens", n, s.tokens.size()));
  // KV rows past n are simply overwritten by later evaluations.
  s.tokens.resize(n);
  s.n_logit_rows = 0;
}

void Session::reset() { truncate(0); }

void Session::set_hooks(std::shared_ptr<ResidualHooks> hooks) {
  auto& s = *impl_;
  if (hooks) hooks->validate(internals(*s.model).weights.hp.n_layer, internals(*s.model).weights.hp.n_embd);
  s.hooks = std::move(hooks);
  s.engine->set_hooks(s.slot, s.hooks.get());
}

const std::shared_ptr<ResidualHooks>& Session::hooks() const noexcept { return impl_->hooks; }

}  // namespace lathe
