#include <algorithm>
#include <fmt/format.h>
#include <thread>

#include "api/model_impl.hpp"
#include "runtime/engine.hpp"

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
  uint32_t n_ctx;
  std::unique_ptr<Engine> engine;
  std::vector<TokenId> tokens;
  std::shared_ptr<ResidualHooks> hooks;
  std::vector<float> all_logits;  // [n_rows x n_vocab] from the last eval(all_logits)
  size_t n_logit_rows = 0;
  bool rows_in_engine = false;    // the last eval kept one row, held by the engine
  uint64_t kv_bytes = 0;

  Impl(std::shared_ptr<const Model> m, const SessionOptions& o, uint32_t ctx)
      : model(std::move(m)),
        options(o),
        n_ctx(ctx),
        engine(make_engine(model->impl().weights,
                           {.cuda_device = o.device.is_cuda() ? o.device.index : -1,
                            .n_slots = 1,
                            .n_ctx = ctx,
                            .max_batch = std::min(o.n_batch, ctx),
                            .n_threads = o.n_threads,
                            .kv_format = kv_format(o.kv_type)})),
        kv_bytes(engine->memory().kv) {}
};

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda" || text == "gpu") return cuda(0);
  if (text.starts_with("cuda:") && text.size() > 5 && text.size() <= 9) {
    int index = 0;
    for (char c : text.substr(5)) {
      if (c < '0' || c > '9') index = -1;
      if (index >= 0) index = index * 10 + (c - '0');
    }
    if (index >= 0) return cuda(index);
  }
  throw InvalidArgumentError(fmt::format("device \"{}\" is not one lathe knows: use cpu, cuda or cuda:N (see `lathe "
                                         "devices`)",
                                         text));
}

std::string Device::name() const { return is_cuda() ? fmt::format("cuda:{}", index) : "cpu"; }

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
  if (needed > s.n_ctx) throw ContextLengthError(needed, s.n_ctx);

  if (s.hooks) s.hooks->validate(s.model->impl().weights.hp.n_layer, s.model->impl().weights.hp.n_embd);
  s.n_logit_rows = 0;
  s.rows_in_engine = false;
  if (all_logits) s.all_logits.resize(tokens.size() * n_vocab);
  const size_t batch = s.engine->max_batch();
  for (size_t begin = 0; begin < tokens.size(); begin += batch) {
    const size_t n = std::min(batch, tokens.size() - begin);
    const auto chunk = tokens.subspan(begin, n);
    const auto first_pos = static_cast<uint32_t>(s.tokens.size());
    s.engine->run(0, chunk, first_pos, all_logits, begin + n == tokens.size());
    // Without all_logits the engine keeps the last token's row, which the last chunk leaves.
    if (all_logits)
      std::copy_n(s.engine->logits(), n * n_vocab, s.all_logits.data() + begin * n_vocab);
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
  const auto& model = s.model->impl();
  if (!s.rows_in_engine) return argmax_logit(model.samplable(logits()));
  TokenId id = -1;
  s.engine->argmax(1, model.n_samplable(), &id);
  return id;
}

const std::vector<TokenId>& Session::tokens() const noexcept { return impl_->tokens; }
uint32_t Session::n_past() const noexcept { return static_cast<uint32_t>(impl_->tokens.size()); }
uint32_t Session::n_ctx() const noexcept { return impl_->n_ctx; }
uint64_t Session::kv_bytes() const noexcept { return impl_->kv_bytes; }
const SessionOptions& Session::options() const noexcept { return impl_->options; }

MemoryUse Session::memory_use() const {
  const EngineMemory m = impl_->engine->memory();
  return {m.device, m.weights, m.kv, m.scratch, m.free, m.total};
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
  if (hooks) hooks->validate(s.model->impl().weights.hp.n_layer, s.model->impl().weights.hp.n_embd);
  s.hooks = std::move(hooks);
  s.engine->set_hooks(s.hooks.get());
}

const std::shared_ptr<ResidualHooks>& Session::hooks() const noexcept { return impl_->hooks; }

}  // namespace lathe
