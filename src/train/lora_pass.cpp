#include "train/lora_pass.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <utility>

#include "core/quant.hpp"
#include "core/splitmix.hpp"
#include "lathe/error.hpp"
#include "train/ops.hpp"

namespace lathe::train {
namespace {

// The matrices of a layer by GGUF name (absent ones skipped).
std::vector<std::pair<std::string_view, const MatrixView*>> layer_matrices(const LayerWeights& lw) {
  std::vector<std::pair<std::string_view, const MatrixView*>> out;
  const std::pair<std::string_view, const MatrixView*> all[] = {
      {"attn_q", &lw.wq},     {"attn_k", &lw.wk},        {"attn_v", &lw.wv},     {"attn_qkv", &lw.wqkv},
      {"attn_output", &lw.wo}, {"ffn_gate", &lw.w_gate}, {"ffn_up", &lw.w_up},   {"ffn_up", &lw.w_gate_up},
      {"ffn_down", &lw.w_down}};
  for (const auto& entry : all)
    if (entry.second->data != nullptr) out.push_back(entry);
  return out;
}

// A linear layer of the pass: the frozen matrix and, when trained, its adapter pair.
template <class T>
struct Linear {
  const MatrixView* w = nullptr;
  int pair = -1;  // index into LoraSet::pairs, -1 without an adapter
};

template <class T>
class Pass {
 public:
  Pass(const ModelWeights& w, const LoraSet<T>& lora, int64_t n, cpu::ThreadPool* pool, LoraDropout dropout)
      : lora_(lora), n_(n), own_pool_(pool ? nullptr : std::make_unique<cpu::ThreadPool>()),
        pool_(pool ? *pool : *own_pool_), xa_(lora.pairs.size()), dropout_(dropout) {
    for (size_t p = 0; p < lora.pairs.size(); ++p) {
      const auto& pair = lora.pairs[p];
      const MatrixView& m = target_matrix(w, pair.layer, pair.target);
      if (pair.in != m.cols || pair.out != m.rows || static_cast<int64_t>(pair.a.size()) != lora.rank * pair.in ||
          static_cast<int64_t>(pair.b.size()) != pair.out * lora.rank)
        throw InvalidArgumentError(fmt::format("the adapter of blk.{}.{} is {} x {} (rank {}) but the matrix is {} x {}",
                                               pair.layer, pair.target, pair.out, pair.in, lora.rank, m.rows, m.cols));
      pair_of_[&m] = static_cast<int>(p);
    }
  }

  Linear<T> linear(const MatrixView& m) const {
    const auto it = pair_of_.find(&m);
    return {&m, it == pair_of_.end() ? -1 : it->second};
  }

  cpu::ThreadPool& pool() noexcept { return pool_; }

  // y = x W^T (+ the adapter); the adapter's x A^T goes to xa[pair].
  void forward(const Linear<T>& l, const T* x, T* y) {
    frozen_linear_forward(*l.w, x, n_, y, &pool_);
    adapter_forward(l, x, y);
  }

  // Several linears on one input x (Q, K, V; gate, up): y[i] = x W_i^T (+ adapters), the frozen
  // products in one call that reads x once.
  void forward(std::initializer_list<Linear<T>> ls, const T* x, std::initializer_list<T*> ys) {
    std::vector<const MatrixView*> ws;
    for (const auto& l : ls) ws.push_back(l.w);
    frozen_linear_forward<T>(ws, x, n_, std::span<T* const>(ys.begin(), ys.size()), &pool_);
    for (size_t i = 0; i < ls.size(); ++i) adapter_forward(ls.begin()[i], x, ys.begin()[i]);
  }

  // dx += dy W (+ the adapter's part); the adapter's gradients accumulate into grads. Each pair
  // belongs to one matrix of one layer, so its x A^T from the forward is still the one kept.
  void backward(const Linear<T>& l, const T* x, const T* dy, T* dx, LoraGrads<T>& grads) {
    frozen_linear_backward(*l.w, dy, n_, dx, &pool_);
    adapter_backward(l, x, dy, dx, grads);
  }

  // The backward of forward(ls, x, ys): dx += sum_i dy[i] W_i, then the adapters' parts.
  void backward(std::initializer_list<Linear<T>> ls, const T* x, std::initializer_list<const T*> dys, T* dx,
                LoraGrads<T>& grads) {
    std::vector<const MatrixView*> ws;
    for (const auto& l : ls) ws.push_back(l.w);
    frozen_linear_backward<T>(ws, std::span<const T* const>(dys.begin(), dys.size()), n_, dx, &pool_);
    for (size_t i = 0; i < ls.size(); ++i) adapter_backward(ls.begin()[i], x, dys.begin()[i], dx, grads);
  }

 private:
  void adapter_forward(const Linear<T>& l, const T* x, T* y) {
    if (l.pair < 0) return;
    const auto i = static_cast<size_t>(l.pair);
    const auto& p = lora_.pairs[i];
    auto& xa = xa_[i];
    xa.assign(static_cast<size_t>(n_ * lora_.rank), T(0));
    lora_forward(p.a.data(), p.b.data(), lora_.rank, p.in, p.out, lora_.factor(), dropped(i, p.in, x), n_, y,
                 xa.data());
  }

  // With dropout the adapter's input is the masked x, made again in the backward from the x the
  // layer keeps (the mask is a function of the seed): nothing more is kept per adapter, and the
  // input's gradient through the adapter takes the same mask.
  void adapter_backward(const Linear<T>& l, const T* x, const T* dy, T* dx, LoraGrads<T>& grads) {
    if (l.pair < 0) return;
    const auto i = static_cast<size_t>(l.pair);
    const auto& p = lora_.pairs[i];
    if (dropout_.p <= 0) {
      lora_backward(p.a.data(), p.b.data(), lora_.rank, p.in, p.out, lora_.factor(), x, xa_[i].data(), dy, n_,
                    grads.da[i].data(), grads.db[i].data(), dx);
      return;
    }
    const T* x_masked = dropped(i, p.in, x);
    dx_adapter_.assign(static_cast<size_t>(n_ * p.in), T(0));
    lora_backward(p.a.data(), p.b.data(), lora_.rank, p.in, p.out, lora_.factor(), x_masked, xa_[i].data(), dy, n_,
                  grads.da[i].data(), grads.db[i].data(), dx_adapter_.data());
    // The mask dropped() just drew for this x (kept_), not drawn again.
    const T keep_scale = static_cast<T>(1.0 / (1.0 - dropout_.p));
    for (size_t j = 0; j < kept_.size(); ++j)
      if (kept_[j]) dx[j] += keep_scale * dx_adapter_[j];
  }

  // x itself without dropout; else x with adapter i's mask applied, in a buffer reused by every
  // adapter (valid until the next call), the mask itself in kept_.
  const T* dropped(size_t i, int64_t in, const T* x) {
    if (dropout_.p <= 0) return x;
    const T keep_scale = static_cast<T>(1.0 / (1.0 - dropout_.p));
    x_masked_.resize(static_cast<size_t>(n_ * in));
    kept_.resize(x_masked_.size());
    for (int64_t t = 0; t < n_; ++t)
      for (int64_t c = 0; c < in; ++c) {
        const auto j = static_cast<size_t>(t * in + c);
        kept_[j] = dropout_.keeps(i, t, c) ? 1 : 0;
        x_masked_[j] = kept_[j] ? keep_scale * x[t * in + c] : T(0);
      }
    return x_masked_.data();
  }

  const LoraSet<T>& lora_;
  int64_t n_;
  std::map<const MatrixView*, int> pair_of_;
  // The frozen products' threads (they dominate the pass): the caller's, else one per physical core.
  std::unique_ptr<cpu::ThreadPool> own_pool_;
  cpu::ThreadPool& pool_;
  std::vector<std::vector<T>> xa_;
  LoraDropout dropout_;
  std::vector<T> x_masked_, dx_adapter_;  // dropout's scratch
  std::vector<uint8_t> kept_;             // ... and the mask of the last dropped()
};

// What one layer's backward needs from its forward.
template <class T>
struct Saved {
  std::vector<T> x_in, xn1, rstd1, qkv, q_raw, k_raw, q_rstd, k_rstd, q, k, v, probs, attn;
  std::vector<T> x_mid, xn2, rstd2, gate_up, g, u, h;
};

void add_bias(auto* rows, const std::vector<float>& bias, int64_t n, int64_t width) {
  if (bias.empty()) return;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < width; ++i) rows[t * width + i] += bias[static_cast<size_t>(i)];
}

}  // namespace

bool LoraDropout::keeps(size_t pair, int64_t token, int64_t col) const noexcept {
  uint64_t h = splitmix64_mix(seed + kSplitmixGamma * (static_cast<uint64_t>(pair) + 1));
  h = splitmix64_mix(h ^ (kSplitmixGamma * (static_cast<uint64_t>(token) + 1)));
  h = splitmix64_mix(h ^ static_cast<uint64_t>(col));
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return u >= p;
}

uint64_t dropout_seed(uint64_t run_seed, int64_t step, int64_t example, int64_t stream) noexcept {
  uint64_t h = splitmix64_mix(run_seed ^ 0x6c6f7261dull);  // "lora" + d: not the adapters' init stream
  h = splitmix64_mix(h ^ (kSplitmixGamma * static_cast<uint64_t>(step + 1)));
  h = splitmix64_mix(h ^ (kSplitmixGamma * static_cast<uint64_t>(example + 1)));
  return splitmix64_mix(h ^ static_cast<uint64_t>(stream));
}

template <class T>
void LoraGrads<T>::reset(const LoraSet<T>& lora) {
  da.assign(lora.pairs.size(), {});
  db.assign(lora.pairs.size(), {});
  for (size_t p = 0; p < lora.pairs.size(); ++p) {
    da[p].assign(lora.pairs[p].a.size(), T(0));
    db[p].assign(lora.pairs[p].b.size(), T(0));
  }
}

const MatrixView& target_matrix(const ModelWeights& w, uint32_t layer, std::string_view target) {
  if (layer >= w.layers.size())
    throw InvalidArgumentError(fmt::format("{}: layer {} does not exist (the model has {} layers)", w.source, layer,
                                           w.layers.size()));
  std::string names;
  for (const auto& [name, view] : layer_matrices(w.layers[layer])) {
    if (name == target) return *view;
    names += fmt::format("{}{}", names.empty() ? "" : ", ", name);
  }
  throw InvalidArgumentError(fmt::format("{}: layer {} has no matrix {} (it has {})", w.source, layer, target, names));
}

LoraSet<float> init_lora(const ModelWeights& w, std::span<const std::string> targets, int64_t rank, double alpha,
                         uint64_t seed) {
  refuse_moe(w.hp, w.source, "training");
  if (rank < 1) throw InvalidArgumentError(fmt::format("the LoRA rank {} must be at least 1", rank));
  LoraSet<float> lora;
  lora.rank = rank;
  lora.alpha = alpha;
  std::mt19937_64 rng(seed);
  for (uint32_t layer = 0; layer < w.layers.size(); ++layer) {
    for (const auto& target : targets) {
      const MatrixView& m = target_matrix(w, layer, target);
      LoraSet<float>::Pair pair{layer, target, m.cols, m.rows, {}, {}};
      const double bound = 1.0 / std::sqrt(static_cast<double>(m.cols));
      pair.a.resize(static_cast<size_t>(rank * m.cols));
      // Uniform from the top 53 bits: the same values on every standard library.
      for (float& x : pair.a) x = static_cast<float>((static_cast<double>(rng() >> 11) * 0x1.0p-53 * 2 - 1) * bound);
      pair.b.assign(static_cast<size_t>(m.rows * rank), 0.0f);
      lora.pairs.push_back(std::move(pair));
    }
  }
  return lora;
}

template <class T>
double lora_forward_backward(const ModelWeights& w, const LoraSet<T>& lora, std::span<const int32_t> tokens,
                             std::span<const int32_t> targets, std::type_identity_t<LoraGrads<T>>* grads,
                             std::type_identity_t<std::vector<T>>* logits_out, const std::type_identity_t<LossHead<T>>& head,
                             cpu::ThreadPool* pool, std::type_identity_t<ResidualProbe<T>>* probe,
                             LoraDropout dropout, const std::type_identity_t<ReftSet<T>>* reft,
                             std::type_identity_t<ReftGrads<T>>* reft_grads) {
  const auto& hp = w.hp;
  refuse_moe(hp, w.source, "training (and gradient attribution)");
  if (!(dropout.p >= 0 && dropout.p < 1))
    throw InvalidArgumentError(fmt::format("LoRA dropout {} is outside [0, 1)", dropout.p));
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) throw InvalidArgumentError("a training sequence has no tokens");
  if (targets.size() != tokens.size())
    throw InvalidArgumentError(fmt::format("{} targets for {} tokens", targets.size(), tokens.size()));
  const int64_t d = hp.n_embd, hd = hp.head_dim, heads = hp.n_head, kv_heads = hp.n_head_kv, ff = hp.n_ff;
  const int64_t qw = heads * hd, kvw = kv_heads * hd, vocab = w.output.rows;
  const AttentionShape shape{.n = n, .heads = heads, .kv_heads = kv_heads, .head_dim = hd};
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) positions[t] = static_cast<int32_t>(t);
  Pass<T> pass(w, lora, n, pool, dropout);
  if (grads && (grads->da.size() != lora.pairs.size() || grads->db.size() != lora.pairs.size()))
    throw InvalidArgumentError("the gradients were not reset for these adapters (LoraGrads::reset)");
  if (probe && probe->site.point != HookPoint::FinalNorm && probe->site.layer >= w.layers.size())
    throw InvalidArgumentError(fmt::format("hook site {} is past the model's last layer ({})", probe->site.name(),
                                           w.layers.size() - 1));
  // The probe's rows are recorded on the way forward, its gradient on the way back; record_grad
  // says whether the backward may stop there (no adapter gradients wanted).
  auto probed = [&](HookPoint point, size_t layer) {
    return probe && probe->site.point == point && (point == HookPoint::FinalNorm || probe->site.layer == layer);
  };
  auto record_grad = [&](const std::vector<T>& dx) {
    probe->grad = dx;
    return grads == nullptr && reft_grads == nullptr;
  };
  // ReFT: the site of each layer (-1: none), the prompt's positions, each site's saved rows.
  std::vector<int> reft_site(w.layers.size(), -1);
  std::vector<int64_t> reft_at;
  std::vector<std::vector<T>> reft_saved;
  if (reft) {
    if (reft->width != d)
      throw InvalidArgumentError(fmt::format("ReFT interventions of width {} on a model of width {}", reft->width, d));
    for (size_t i = 0; i < reft->sites.size(); ++i) {
      const auto layer = reft->sites[i].layer;
      if (layer >= w.layers.size())
        throw InvalidArgumentError(fmt::format("ReFT intervention at layer {}: the model has layers 0..{}", layer,
                                               w.layers.size() - 1));
      reft_site[layer] = static_cast<int>(i);
    }
    int64_t prompt_len = n;
    for (int64_t t = 0; t < n; ++t)
      if (targets[t] >= 0) {
        prompt_len = t + 1;
        break;
      }
    reft_at = reft_positions(reft->first, reft->last, prompt_len);
    reft_saved.resize(reft->sites.size());
    if (reft_grads && (reft_grads->dr.size() != reft->sites.size()))
      throw InvalidArgumentError("the ReFT gradients were not reset for these interventions (ReftGrads::reset)");
  }

  // Embeddings (frozen: no gradient).
  std::vector<T> x(static_cast<size_t>(n * d));
  {
    std::vector<float> row(static_cast<size_t>(d));
    for (int64_t t = 0; t < n; ++t) {
      if (tokens[t] < 0 || tokens[t] >= w.token_embd.rows)
        throw InvalidArgumentError(fmt::format("token {} at position {} is outside the vocabulary (0..{})", tokens[t],
                                               t, w.token_embd.rows - 1));
      dequantize_row(w.token_embd.type, w.token_embd.data + static_cast<size_t>(tokens[t]) * w.token_embd.row_bytes,
                     row.data(), d);
      std::copy(row.begin(), row.end(), x.begin() + t * d);
    }
  }

  std::vector<Saved<T>> saved(w.layers.size());
  for (size_t il = 0; il < w.layers.size(); ++il) {
    const LayerWeights& lw = w.layers[il];
    Saved<T>& s = saved[il];
    if (probed(HookPoint::ResidPre, il)) probe->rows = x;
    s.x_in = x;
    s.xn1.resize(x.size());
    s.rstd1.resize(static_cast<size_t>(n));
    rms_norm_forward(x.data(), lw.attn_norm.data(), n, d, hp.rms_eps, s.xn1.data(), s.rstd1.data());
    s.q_raw.resize(static_cast<size_t>(n * qw));
    s.k_raw.resize(static_cast<size_t>(n * kvw));
    s.v.resize(static_cast<size_t>(n * kvw));
    if (lw.fused_qkv()) {
      s.qkv.resize(static_cast<size_t>(n * (qw + 2 * kvw)));
      pass.forward(pass.linear(lw.wqkv), s.xn1.data(), s.qkv.data());
      for (int64_t t = 0; t < n; ++t) {
        const T* row = s.qkv.data() + t * (qw + 2 * kvw);
        std::copy(row, row + qw, s.q_raw.begin() + t * qw);
        std::copy(row + qw, row + qw + kvw, s.k_raw.begin() + t * kvw);
        std::copy(row + qw + kvw, row + qw + 2 * kvw, s.v.begin() + t * kvw);
      }
    } else {
      pass.forward({pass.linear(lw.wq), pass.linear(lw.wk), pass.linear(lw.wv)}, s.xn1.data(),
                   {s.q_raw.data(), s.k_raw.data(), s.v.data()});
    }
    add_bias(s.q_raw.data(), lw.bq, n, qw);
    add_bias(s.k_raw.data(), lw.bk, n, kvw);
    add_bias(s.v.data(), lw.bv, n, kvw);
    s.q = s.q_raw;
    s.k = s.k_raw;
    if (!lw.q_norm.empty()) {
      s.q_rstd.resize(static_cast<size_t>(n * heads));
      rms_norm_forward(s.q_raw.data(), lw.q_norm.data(), n * heads, hd, hp.rms_eps, s.q.data(), s.q_rstd.data());
    }
    if (!lw.k_norm.empty()) {
      s.k_rstd.resize(static_cast<size_t>(n * kv_heads));
      rms_norm_forward(s.k_raw.data(), lw.k_norm.data(), n * kv_heads, hd, hp.rms_eps, s.k.data(), s.k_rstd.data());
    }
    rope_forward(w.rope, s.q.data(), n, heads, hd, positions);
    rope_forward(w.rope, s.k.data(), n, kv_heads, hd, positions);
    s.attn.resize(static_cast<size_t>(n * qw));
    s.probs.resize(static_cast<size_t>(heads * n * n));
    attention_forward(shape, s.q.data(), s.k.data(), s.v.data(), s.attn.data(), s.probs.data(), &pass.pool());
    std::vector<T> proj(static_cast<size_t>(n * d));
    pass.forward(pass.linear(lw.wo), s.attn.data(), proj.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];

    s.x_mid = x;
    if (probed(HookPoint::ResidMid, il)) probe->rows = x;
    s.xn2.resize(x.size());
    s.rstd2.resize(static_cast<size_t>(n));
    rms_norm_forward(x.data(), lw.ffn_norm.data(), n, d, hp.rms_eps, s.xn2.data(), s.rstd2.data());
    s.g.resize(static_cast<size_t>(n * ff));
    s.u.resize(static_cast<size_t>(n * ff));
    if (lw.fused_gate_up()) {
      s.gate_up.resize(static_cast<size_t>(n * 2 * ff));
      pass.forward(pass.linear(lw.w_gate_up), s.xn2.data(), s.gate_up.data());
      for (int64_t t = 0; t < n; ++t) {
        const T* row = s.gate_up.data() + t * 2 * ff;
        std::copy(row, row + ff, s.g.begin() + t * ff);
        std::copy(row + ff, row + 2 * ff, s.u.begin() + t * ff);
      }
    } else {
      pass.forward({pass.linear(lw.w_gate), pass.linear(lw.w_up)}, s.xn2.data(), {s.g.data(), s.u.data()});
    }
    s.h.resize(static_cast<size_t>(n * ff));
    swiglu_forward(s.g.data(), s.u.data(), n * ff, s.h.data(), &pass.pool());
    pass.forward(pass.linear(lw.w_down), s.h.data(), proj.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += proj[i];
    if (reft_site[il] >= 0) {
      const auto i = static_cast<size_t>(reft_site[il]);
      reft_forward<T>(reft->sites[i], reft->rank, d, reft_at, x.data(), reft_saved[i]);
    }
    if (probed(HookPoint::ResidPost, il)) probe->rows = x;
  }

  std::vector<T> xf(x.size()), rstd_f(static_cast<size_t>(n)), logits(static_cast<size_t>(n * vocab));
  rms_norm_forward(x.data(), w.output_norm.data(), n, d, hp.rms_eps, xf.data(), rstd_f.data());
  frozen_linear_forward(w.output, xf.data(), n, logits.data(), &pass.pool());
  std::vector<T> dlogits(logits.size());
  const double loss = head ? head(logits.data(), n, vocab, dlogits.data())
                           : cross_entropy(logits.data(), n, vocab, targets, dlogits.data(), &pass.pool());
  if (logits_out) *logits_out = logits;
  if (probed(HookPoint::FinalNorm, 0)) probe->rows = xf;
  if (!grads && !probe && !reft_grads) return loss;
  LoraGrads<T> no_grads;  // a probe without adapter gradients: the backward's sums go here
  if (!grads) {
    no_grads.reset(lora);
    grads = &no_grads;
  }

  // Backward: dx is the residual stream's gradient, flowing from the last layer to the first.
  std::vector<T> dxf(x.size(), T(0)), dx(x.size(), T(0));
  frozen_linear_backward(w.output, dlogits.data(), n, dxf.data(), &pass.pool());
  if (probed(HookPoint::FinalNorm, 0) && record_grad(dxf)) return loss;
  rms_norm_backward(dxf.data(), x.data(), w.output_norm.data(), rstd_f.data(), n, d, dx.data());
  for (size_t il = w.layers.size(); il-- > 0;) {
    const LayerWeights& lw = w.layers[il];
    const Saved<T>& s = saved[il];
    if (probed(HookPoint::ResidPost, il) && record_grad(dx)) return loss;
    if (reft_site[il] >= 0) {  // the gradient crosses the intervention even when its own is not wanted
      const auto i = static_cast<size_t>(reft_site[il]);
      reft_backward<T>(reft->sites[i], reft->rank, d, reft_at, reft_saved[i], dx.data(),
                       reft_grads ? reft_grads->dr[i].data() : nullptr, reft_grads ? reft_grads->dw[i].data() : nullptr,
                       reft_grads ? reft_grads->db[i].data() : nullptr);
    }
    // MLP: x_out = x_mid + down(swiglu(gate(xn2), up(xn2))).
    std::vector<T> dh(static_cast<size_t>(n * ff), T(0)), dg(dh.size()), du(dh.size());
    pass.backward(pass.linear(lw.w_down), s.h.data(), dx.data(), dh.data(), *grads);
    swiglu_backward(dh.data(), s.g.data(), s.u.data(), n * ff, dg.data(), du.data(), &pass.pool());
    std::vector<T> dxn(x.size(), T(0));
    if (lw.fused_gate_up()) {
      std::vector<T> dgu(static_cast<size_t>(n * 2 * ff));
      for (int64_t t = 0; t < n; ++t) {
        std::copy(dg.begin() + t * ff, dg.begin() + (t + 1) * ff, dgu.begin() + t * 2 * ff);
        std::copy(du.begin() + t * ff, du.begin() + (t + 1) * ff, dgu.begin() + t * 2 * ff + ff);
      }
      pass.backward(pass.linear(lw.w_gate_up), s.xn2.data(), dgu.data(), dxn.data(), *grads);
    } else {
      pass.backward({pass.linear(lw.w_gate), pass.linear(lw.w_up)}, s.xn2.data(), {dg.data(), du.data()}, dxn.data(),
                    *grads);
    }
    rms_norm_backward(dxn.data(), s.x_mid.data(), lw.ffn_norm.data(), s.rstd2.data(), n, d, dx.data());
    if (probed(HookPoint::ResidMid, il) && record_grad(dx)) return loss;

    // Attention: x_mid = x_in + o(attention(rope(norm(q)), rope(norm(k)), v)).
    std::vector<T> dattn(static_cast<size_t>(n * qw), T(0));
    pass.backward(pass.linear(lw.wo), s.attn.data(), dx.data(), dattn.data(), *grads);
    std::vector<T> dq(static_cast<size_t>(n * qw)), dk(static_cast<size_t>(n * kvw), T(0)),
        dv(static_cast<size_t>(n * kvw), T(0));
    attention_backward(shape, s.q.data(), s.k.data(), s.v.data(), s.probs.data(), dattn.data(), dq.data(), dk.data(),
                       dv.data(), &pass.pool());
    rope_backward(w.rope, dq.data(), n, heads, hd, positions);
    rope_backward(w.rope, dk.data(), n, kv_heads, hd, positions);
    if (!lw.q_norm.empty()) {
      std::vector<T> dq_raw(dq.size(), T(0));
      rms_norm_backward(dq.data(), s.q_raw.data(), lw.q_norm.data(), s.q_rstd.data(), n * heads, hd, dq_raw.data());
      dq = std::move(dq_raw);
    }
    if (!lw.k_norm.empty()) {
      std::vector<T> dk_raw(dk.size(), T(0));
      rms_norm_backward(dk.data(), s.k_raw.data(), lw.k_norm.data(), s.k_rstd.data(), n * kv_heads, hd, dk_raw.data());
      dk = std::move(dk_raw);
    }
    std::fill(dxn.begin(), dxn.end(), T(0));
    if (lw.fused_qkv()) {
      std::vector<T> dqkv(static_cast<size_t>(n * (qw + 2 * kvw)));
      for (int64_t t = 0; t < n; ++t) {
        T* row = dqkv.data() + t * (qw + 2 * kvw);
        std::copy(dq.begin() + t * qw, dq.begin() + (t + 1) * qw, row);
        std::copy(dk.begin() + t * kvw, dk.begin() + (t + 1) * kvw, row + qw);
        std::copy(dv.begin() + t * kvw, dv.begin() + (t + 1) * kvw, row + qw + kvw);
      }
      pass.backward(pass.linear(lw.wqkv), s.xn1.data(), dqkv.data(), dxn.data(), *grads);
    } else {
      pass.backward({pass.linear(lw.wq), pass.linear(lw.wk), pass.linear(lw.wv)}, s.xn1.data(),
                    {dq.data(), dk.data(), dv.data()}, dxn.data(), *grads);
    }
    rms_norm_backward(dxn.data(), s.x_in.data(), lw.attn_norm.data(), s.rstd1.data(), n, d, dx.data());
    if (probed(HookPoint::ResidPre, il) && record_grad(dx)) return loss;
  }
  return loss;
}

template struct LoraGrads<float>;
template struct LoraGrads<double>;
template double lora_forward_backward<float>(const ModelWeights&, const LoraSet<float>&, std::span<const int32_t>,
                                             std::span<const int32_t>, LoraGrads<float>*, std::vector<float>*,
                                             const LossHead<float>&, cpu::ThreadPool*, ResidualProbe<float>*, LoraDropout,
                                             const ReftSet<float>*, ReftGrads<float>*);
template double lora_forward_backward<double>(const ModelWeights&, const LoraSet<double>&, std::span<const int32_t>,
                                              std::span<const int32_t>, LoraGrads<double>*, std::vector<double>*,
                                              const LossHead<double>&, cpu::ThreadPool*, ResidualProbe<double>*, LoraDropout,
                                              const ReftSet<double>*, ReftGrads<double>*);

}  // namespace lathe::train
