#include <algorithm>
#include <fmt/format.h>
#include <thread>

#include "api/model_impl.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "forward/forward.hpp"
#include "runtime/kv_cache.hpp"

namespace lathe {

ContextLengthError::ContextLengthError(uint64_t needed, uint64_t n_ctx)
    : InvalidArgumentError(fmt::format("context length exceeded: {} > {} (tokens needed > context size); start a "
                                       "new session, shorten the prompt, raise -c, or ask for truncation",
                                       needed, n_ctx)),
      needed_(needed),
      n_ctx_(n_ctx) {}

struct Session::Impl {
  std::shared_ptr<const Model> model;
  SessionOptions options;
  cpu::ThreadPool pool;
  KvCache kv;
  Forward forward;
  std::vector<TokenId> tokens;
  std::shared_ptr<ResidualHooks> hooks;
  std::vector<float> logits;   // [n_rows x n_vocab] from the last eval
  size_t n_logit_rows = 0;

  Impl(std::shared_ptr<const Model> m, const SessionOptions& o, uint32_t n_ctx)
      : model(std::move(m)),
        options(o),
        pool(o.n_threads),
        kv(model->impl().weights.hp, n_ctx, o.kv_type == KvType::F16),
        forward(model->impl().weights, std::min(o.n_batch, n_ctx), n_ctx) {}
};

namespace {
uint32_t choose_context(const Model& model, uint32_t requested) {
  if (requested != 0) return requested;
  const uint32_t trained = model.summary().n_ctx_train;
  return trained == 0 ? 4096u : std::min(trained, 4096u);
}
}  // namespace

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options) {
  if (!model) throw InvalidArgumentError("Session needs a loaded model (got a null pointer)");
  if (options.n_batch == 0) throw InvalidArgumentError("n_batch must be at least 1");
  if (options.n_threads < 0) throw InvalidArgumentError(fmt::format("threads must be >= 0 (got {})", options.n_threads));
  const uint32_t n_ctx = choose_context(*model, options.n_ctx);
  constexpr uint32_t kMaxContext = 1u << 22;
  if (n_ctx > kMaxContext)
    throw InvalidArgumentError(fmt::format("context size {} is larger than lathe supports ({})", n_ctx, kMaxContext));
  impl_ = std::make_unique<Impl>(std::move(model), options, n_ctx);
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
  if (needed > s.kv.n_ctx()) throw ContextLengthError(needed, s.kv.n_ctx());

  if (s.hooks) s.hooks->validate(s.model->impl().weights.hp.n_layer, s.model->impl().weights.hp.n_embd);
  const size_t n_rows = all_logits ? tokens.size() : 1;
  s.logits.resize(n_rows * n_vocab);
  s.n_logit_rows = n_rows;
  const size_t batch = s.forward.max_batch();
  for (size_t begin = 0; begin < tokens.size(); begin += batch) {
    const size_t n = std::min(batch, tokens.size() - begin);
    const auto chunk = tokens.subspan(begin, n);
    const auto first_pos = static_cast<uint32_t>(s.tokens.size());
    // Without all_logits every chunk writes the same row; only the last chunk's survives, which
    // is the last token's.
    float* out = all_logits ? s.logits.data() + begin * n_vocab : s.logits.data();
    s.forward.run(chunk, first_pos, s.kv.view(), all_logits, out, s.pool, begin + n == tokens.size());
    s.tokens.insert(s.tokens.end(), chunk.begin(), chunk.end());
  }
}

std::span<const float> Session::logits() const {
  const auto& s = *impl_;
  if (s.n_logit_rows == 0) throw InvalidArgumentError("no logits yet: call eval() first");
  const size_t n_vocab = s.model->n_vocab();
  return {s.logits.data() + (s.n_logit_rows - 1) * n_vocab, n_vocab};
}

std::span<const float> Session::logits_at(size_t index) const {
  const auto& s = *impl_;
  if (index >= s.n_logit_rows)
    throw InvalidArgumentError(fmt::format("logits_at({}): the last eval() kept {} row(s) of logits", index, s.n_logit_rows));
  const size_t n_vocab = s.model->n_vocab();
  return {s.logits.data() + index * n_vocab, n_vocab};
}

const std::vector<TokenId>& Session::tokens() const noexcept { return impl_->tokens; }
uint32_t Session::n_past() const noexcept { return static_cast<uint32_t>(impl_->tokens.size()); }
uint32_t Session::n_ctx() const noexcept { return impl_->kv.n_ctx(); }
uint64_t Session::kv_bytes() const noexcept { return impl_->kv.bytes(); }
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
  if (hooks) hooks->validate(s.model->impl().weights.hp.n_layer, s.model->impl().weights.hp.n_embd);
  s.hooks = std::move(hooks);
  s.forward.set_hooks(s.hooks.get());
}

const std::shared_ptr<ResidualHooks>& Session::hooks() const noexcept { return impl_->hooks; }

}  // namespace lathe
