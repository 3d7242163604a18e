#include "forward/forward.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/matmul.hpp"
#include "backend/cpu/ops.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"

namespace lathe {
namespace {

void add_bias_rows(float* rows, const std::vector<float>& bias, int64_t n_rows, int64_t width) {
  if (bias.empty()) return;
  for (int64_t t = 0; t < n_rows; ++t) cpu::add_inplace(rows + t * width, bias.data(), width);
}

// Splits row-major [n x (a + b + c)] into three [n x a], [n x b], [n x c] arrays.
void split_columns(const float* src, int64_t n, int64_t a, int64_t b, int64_t c, float* out_a, float* out_b,
                   float* out_c) {
  const int64_t width = a + b + c;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = src + t * width;
    std::memcpy(out_a + t * a, row, sizeof(float) * a);
    std::memcpy(out_b + t * b, row + a, sizeof(float) * b);
    if (out_c != nullptr) std::memcpy(out_c + t * c, row + a + b, sizeof(float) * c);
  }
}

}  // namespace

Forward::Forward(const ModelWeights& weights, uint32_t max_batch, uint32_t n_ctx, LayerSource* layers)
    : w_(weights), resident_(weights.layers), layers_(layers ? layers : &resident_), max_batch_(max_batch), n_ctx_(n_ctx) {
  const auto& hp = w_.hp;
  const size_t n = max_batch;
  const size_t q_width = size_t{hp.n_head} * hp.head_dim, kv_width = size_t{hp.n_head_kv} * hp.head_dim;
  x_.resize(n * hp.n_embd);
  xn_.resize(n * hp.n_embd);
  q_.resize(n * q_width);
  k_.resize(n * kv_width);
  v_.resize(n * kv_width);
  if (!w_.layers.empty() && w_.layers[0].fused_qkv()) qkv_.resize(n * (q_width + 2 * kv_width));
  attn_.resize(n * q_width);
  const size_t widest_ff = std::max({size_t{hp.n_ff}, size_t{hp.n_ff_exp}, size_t{hp.n_ff_shexp}});
  gate_.resize(n * 2 * widest_ff);
  up_.resize(n * widest_ff);
  if (hp.is_moe()) {
    router_logits_.resize(n * hp.n_expert);
    routed_.resize(n * hp.n_embd);
  }
  proj_.resize(n * hp.n_embd);
  pos_.resize(n);
  kv_.resize(n);
}

void Forward::run_hooks(HookSite site, float* rows, std::span<const uint32_t> row_slot,
                        std::span<const uint8_t> row_ends) {
  // Rows come in runs of one sequence; each run gets its sequence's hooks.
  const int64_t n_embd = w_.hp.n_embd;
  for (size_t begin = 0; begin < row_slot.size();) {
    size_t end = begin + 1;
    while (end < row_slot.size() && row_slot[end] == row_slot[begin]) ++end;
    ResidualHooks* hooks = row_slot[begin] < hooks_.size() ? hooks_[row_slot[begin]] : nullptr;
    if (hooks != nullptr && hooks->has(site))
      hooks->apply(site, rows + static_cast<int64_t>(begin) * n_embd, static_cast<int64_t>(end - begin), n_embd,
                   row_ends[end - 1] != 0);
    begin = end;
  }
}

void Forward::forward(const Batch& batch, std::span<KvCacheView* const> caches, std::span<ResidualHooks* const> hooks,
                      float* logits, cpu::ThreadPool& pool) {
  const auto& hp = w_.hp;
  const auto tokens = batch.tokens();
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  const int64_t n_embd = hp.n_embd;
  hooks_ = hooks;
  const bool hooked = std::any_of(hooks.begin(), hooks.end(), [](const ResidualHooks* h) { return h != nullptr; });
  row_slot_.assign(batch.slots().begin(), batch.slots().end());
  row_ends_.resize(tokens.size());
  out_slot_.clear();
  out_ends_.clear();
  for (size_t t = 0; t < tokens.size(); ++t) {
    pos_[t] = batch.positions()[t];
    kv_[t] = caches[batch.slots()[t]];
    row_ends_[t] = batch.ends_input(t) ? 1 : 0;
    if (batch.wants_logits(t)) {
      out_slot_.push_back(batch.slots()[t]);
      out_ends_.push_back(row_ends_[t]);
    }
  }

  // 1. Token embeddings: row `id` of the embedding matrix, decoded from its stored type.
  for (int64_t t = 0; t < n_tokens; ++t) {
    const uint8_t* row = w_.token_embd.data + static_cast<size_t>(tokens[t]) * w_.token_embd.row_bytes;
    dequantize_row(w_.token_embd.type, row, x_.data() + t * n_embd, n_embd);
  }

  // 2. The blocks, each adding to the residual stream x_ (hooks read or change it in between).
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    const LayerWeights& lw = layers_->acquire(il);
    if (hooked) run_hooks({HookPoint::ResidPre, il}, x_.data(), row_slot_, row_ends_);
    attention_block(lw, il, n_tokens, pool);
    if (hooked) run_hooks({HookPoint::ResidMid, il}, x_.data(), row_slot_, row_ends_);
    mlp_block(lw, n_tokens, pool);
    if (hooked) run_hooks({HookPoint::ResidPost, il}, x_.data(), row_slot_, row_ends_);
    layers_->release(il);
  }

  // 3. Final norm and the output projection, for the entries that asked for logits.
  int64_t n_out = 0;
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (!batch.wants_logits(static_cast<size_t>(t))) continue;
    cpu::rms_norm(x_.data() + t * n_embd, w_.output_norm.data(), n_embd, hp.rms_eps, xn_.data() + n_out * n_embd);
    ++n_out;
  }
  if (hooked) run_hooks({HookPoint::FinalNorm, 0}, xn_.data(), out_slot_, out_ends_);
  cpu::matmul(w_.output, xn_.data(), n_out, logits, pool);
}

void Forward::attention_block(const LayerWeights& lw, uint32_t layer, int64_t n_tokens, cpu::ThreadPool& pool) {
  const auto& hp = w_.hp;
  const int64_t n_embd = hp.n_embd, head_dim = hp.head_dim;
  const int64_t n_head = hp.n_head, n_head_kv = hp.n_head_kv;
  const int64_t q_width = n_head * head_dim, kv_width = n_head_kv * head_dim;

  for (int64_t t = 0; t < n_tokens; ++t)
    cpu::rms_norm(x_.data() + t * n_embd, lw.attn_norm.data(), n_embd, hp.rms_eps, xn_.data() + t * n_embd);

  // Q, K, V projections (one fused matrix on Phi-3), biases on Qwen2.
  if (lw.fused_qkv()) {
    cpu::matmul(lw.wqkv, xn_.data(), n_tokens, qkv_.data(), pool);
    split_columns(qkv_.data(), n_tokens, q_width, kv_width, kv_width, q_.data(), k_.data(), v_.data());
  } else {
    cpu::matmul(lw.wq, xn_.data(), n_tokens, q_.data(), pool);
    cpu::matmul(lw.wk, xn_.data(), n_tokens, k_.data(), pool);
    cpu::matmul(lw.wv, xn_.data(), n_tokens, v_.data(), pool);
  }
  add_bias_rows(q_.data(), lw.bq, n_tokens, q_width);
  add_bias_rows(k_.data(), lw.bk, n_tokens, kv_width);
  add_bias_rows(v_.data(), lw.bv, n_tokens, kv_width);

  // Qwen3 normalizes each head of Q and K before RoPE; then rotate and store K/V in the cache.
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* q = q_.data() + t * q_width;
    float* k = k_.data() + t * kv_width;
    // Qwen3 normalizes each head (norm weights of head_dim), OLMoE the whole projection.
    if (!lw.q_norm.empty()) {
      const int64_t width = static_cast<int64_t>(lw.q_norm.size());
      for (int64_t at = 0; at < q_width; at += width) cpu::rms_norm(q + at, lw.q_norm.data(), width, hp.rms_eps, q + at);
    }
    if (!lw.k_norm.empty()) {
      const int64_t width = static_cast<int64_t>(lw.k_norm.size());
      for (int64_t at = 0; at < kv_width; at += width) cpu::rms_norm(k + at, lw.k_norm.data(), width, hp.rms_eps, k + at);
    }
    const int64_t pos = pos_[t];
    KvCacheView& kv = *kv_[t];
    cpu::apply_rope(q, static_cast<int32_t>(n_head), static_cast<int32_t>(head_dim), pos, w_.rope);
    cpu::apply_rope(k, static_cast<int32_t>(n_head_kv), static_cast<int32_t>(head_dim), pos, w_.rope);
    const float* v = v_.data() + t * kv_width;
    cpu::kv_store_row(k, kv.format, kv.keys[layer], kv.n_ctx, kv_width, pos);
    cpu::kv_store_row(v, kv.format, kv.values[layer], kv.n_ctx, kv_width, pos);
  }

  // Causal attention: token t sees positions 0 .. pos_[t] of its cache. Query heads share KV heads
  // in groups of n_head / n_head_kv (grouped-query attention).
  const int64_t group = n_head / n_head_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  pool.parallel_for(n_tokens * n_head, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    scores.resize(n_ctx_);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / n_head, h = item % n_head;
      const KvCacheView& kv = *kv_[t];
      const cpu::KvLayerView layer_kv{.format = kv.format,
                                      .keys = kv.keys[layer],
                                      .values = kv.values[layer],
                                      .n_ctx = kv.n_ctx,
                                      .row_stride = kv_width};
      cpu::attend_one(q_.data() + t * q_width + h * head_dim, layer_kv, pos_[t] + 1, (h / group) * head_dim,
                      static_cast<int32_t>(head_dim), scale, scores.data(), attn_.data() + t * q_width + h * head_dim);
    }
  });

  cpu::matmul(lw.wo, attn_.data(), n_tokens, proj_.data(), pool);
  cpu::add_inplace(x_.data(), proj_.data(), n_tokens * n_embd);
}

void Forward::mlp_block(const LayerWeights& lw, int64_t n_tokens, cpu::ThreadPool& pool) {
  const auto& hp = w_.hp;
  const int64_t n_embd = hp.n_embd, n_ff = hp.n_ff;
  for (int64_t t = 0; t < n_tokens; ++t)
    cpu::rms_norm(x_.data() + t * n_embd, lw.ffn_norm.data(), n_embd, hp.rms_eps, xn_.data() + t * n_embd);
  if (lw.moe()) {
    moe_block(lw, n_tokens, pool);
    return;
  }
  if (lw.fused_gate_up()) {
    // Phi-3: one matrix whose first n_ff rows are the gate and the next n_ff the up projection.
    cpu::matmul(lw.w_gate_up, xn_.data(), n_tokens, gate_.data(), pool);
    // Compact in place, ascending: row t's destination only overlaps rows already moved.
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* row = gate_.data() + t * 2 * n_ff;
      std::memcpy(up_.data() + t * n_ff, row + n_ff, sizeof(float) * n_ff);
      std::memmove(gate_.data() + t * n_ff, row, sizeof(float) * n_ff);
    }
  } else {
    cpu::matmul(lw.w_gate, xn_.data(), n_tokens, gate_.data(), pool);
    cpu::matmul(lw.w_up, xn_.data(), n_tokens, up_.data(), pool);
  }
  cpu::silu_mul(gate_.data(), up_.data(), n_tokens * n_ff, gate_.data());
  cpu::matmul(lw.w_down, gate_.data(), n_tokens, proj_.data(), pool);
  cpu::add_inplace(x_.data(), proj_.data(), n_tokens * n_embd);
}

void Forward::moe_block(const LayerWeights& lw, int64_t n_tokens, cpu::ThreadPool& pool) {
  const auto& hp = w_.hp;
  const int64_t n_embd = hp.n_embd, n_expert = hp.n_expert, ff = hp.n_ff_exp;
  cpu::matmul(lw.router, xn_.data(), n_tokens, router_logits_.data(), pool);
  route_tokens(hp, router_logits_.data(), n_expert, n_tokens, routes_);
  const auto& by_expert = routes_.by_expert;  // (token, weight)
  // Each expert once over the tokens routed to it: gather their rows, SwiGLU, scatter-add.
  std::fill(proj_.begin(), proj_.begin() + n_tokens * n_embd, 0.0f);
  for (int64_t e = 0; e < n_expert; ++e) {
    const auto& routed = by_expert[static_cast<size_t>(e)];
    if (routed.empty()) continue;
    const auto m = static_cast<int64_t>(routed.size());
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(routed_.data() + i * n_embd, xn_.data() + routed[static_cast<size_t>(i)].first * n_embd,
                  sizeof(float) * n_embd);
    cpu::matmul(lw.exp_gate[static_cast<size_t>(e)], routed_.data(), m, gate_.data(), pool);
    cpu::matmul(lw.exp_up[static_cast<size_t>(e)], routed_.data(), m, up_.data(), pool);
    cpu::silu_mul(gate_.data(), up_.data(), m * ff, gate_.data());
    cpu::matmul(lw.exp_down[static_cast<size_t>(e)], gate_.data(), m, routed_.data(), pool);
    for (int64_t i = 0; i < m; ++i) {
      const auto [t, weight] = routed[static_cast<size_t>(i)];
      float* out = proj_.data() + t * n_embd;
      const float* y = routed_.data() + i * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) out[j] += weight * y[j];
    }
  }
  // qwen2moe: the shared expert on every token, scaled by sigmoid(w . x).
  if (lw.shexp_gate.data != nullptr) {
    const int64_t shared_ff = hp.n_ff_shexp;
    cpu::matmul(lw.shexp_gate, xn_.data(), n_tokens, gate_.data(), pool);
    cpu::matmul(lw.shexp_up, xn_.data(), n_tokens, up_.data(), pool);
    cpu::silu_mul(gate_.data(), up_.data(), n_tokens * shared_ff, gate_.data());
    cpu::matmul(lw.shexp_down, gate_.data(), n_tokens, routed_.data(), pool);
    for (int64_t t = 0; t < n_tokens; ++t) {
      double dot = 0;
      for (int64_t j = 0; j < n_embd; ++j) dot += double(lw.shexp_gate_inp[static_cast<size_t>(j)]) * xn_[t * n_embd + j];
      const auto gate = static_cast<float>(1.0 / (1.0 + std::exp(-dot)));
      float* out = proj_.data() + t * n_embd;
      const float* y = routed_.data() + t * n_embd;
      for (int64_t j = 0; j < n_embd; ++j) out[j] += gate * y[j];
    }
  }
  cpu::add_inplace(x_.data(), proj_.data(), n_tokens * n_embd);
}

}  // namespace lathe
