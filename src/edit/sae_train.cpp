#include "edit/sae_train.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/matmul.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "core/matrix.hpp"
#include "core/splitmix.hpp"
#include "io/output_path.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using nlohmann::json;

// splitmix64 (core/splitmix.hpp): the same draws on every standard library.
uint64_t next_random(uint64_t& state) { return splitmix64_next(state); }

double uniform01(uint64_t& state) { return (static_cast<double>(next_random(state) >> 11) + 0.5) * 0x1.0p-53; }

// Box-Muller on two portable uniforms.
double normal(uint64_t& state) {
  const double u = uniform01(state), v = uniform01(state);
  return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
}

// One sum in index order (the trainer's results are pinned to it; edit/sae.cpp's dot for the gate
// sums four chains).
float dot_in_order(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Indices of the `kk` largest values of v[0..n) among those allowed (ties: lower index first), in
// index order, into out; returns how many (min(kk, allowed)).
int64_t top_indices(const float* v, int64_t n, int64_t kk, const std::vector<char>* allowed, std::vector<uint32_t>& scratch,
                    uint32_t* out) {
  scratch.clear();
  for (int64_t j = 0; j < n; ++j)
    if (allowed == nullptr || (*allowed)[static_cast<size_t>(j)]) scratch.push_back(static_cast<uint32_t>(j));
  const int64_t m = std::min<int64_t>(kk, static_cast<int64_t>(scratch.size()));
  if (m <= 0) return 0;
  auto better = [&](uint32_t a, uint32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  if (m < static_cast<int64_t>(scratch.size())) std::nth_element(scratch.begin(), scratch.begin() + (m - 1), scratch.end(), better);
  std::sort(scratch.begin(), scratch.begin() + m);
  std::copy(scratch.begin(), scratch.begin() + m, out);
  return m;
}

}  // namespace

// Named, not anonymous: SaeTrainer::State (declared in the header) holds Params, and a class with
// external linkage must not have fields of a type with internal linkage (-Wsubobject-linkage).
namespace sae_train_detail {
struct Param {
  std::vector<float> w, g, m, v;
  explicit Param(size_t n = 0) : w(n), g(n), m(n), v(n) {}
};
}  // namespace sae_train_detail
using sae_train_detail::Param;

// --- collection --------------------------------------------------------------------------------

RowCollector::RowCollector(int64_t width, int64_t max_rows) : width_(width), max_rows_(max_rows) {
  if (width < 1 || max_rows < 1) throw InvalidArgumentError("row collector: the width and the row count must be >= 1");
}

void RowCollector::apply(float* rows, int64_t n_rows, int64_t width) {
  if (width != width_)
    throw InvalidArgumentError(fmt::format("{}: rows of {} elements, expected {}", describe(), width, width_));
  const int64_t n = std::min(n_rows, max_rows_ - n_rows_);
  if (n <= 0) return;
  rows_.insert(rows_.end(), rows, rows + n * width);
  n_rows_ += n;
}

std::vector<float> collect_rows(std::shared_ptr<const Model> model, const std::vector<std::vector<TokenId>>& sequences,
                                HookSite site, int64_t max_rows, const ComputeOptions& compute,
                                const std::function<void(int64_t, int64_t)>& on_progress, int64_t skip_first) {
  size_t longest = 1;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  const auto width = static_cast<int64_t>(model->summary().n_embd);
  auto collector = std::make_shared<RowCollector>(width, max_rows);
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->transform(site, collector);
  Session session(model, {.n_ctx = static_cast<uint32_t>(longest), .compute = compute});
  const auto skip = static_cast<size_t>(std::max<int64_t>(0, skip_first));
  for (const auto& s : sequences) {
    if (collector->full()) break;
    if (s.size() <= skip) continue;
    session.reset();
    // The first `skip` positions run without the collector (their rows are not kept).
    session.set_hooks(nullptr);
    if (skip > 0) session.eval(std::span<const TokenId>(s.data(), skip), /*all_logits=*/false);
    session.set_hooks(hooks);
    session.eval(std::span<const TokenId>(s.data() + skip, s.size() - skip), /*all_logits=*/false);
    if (on_progress) on_progress(collector->n_rows(), max_rows);
  }
  return collector->take();
}

// --- training ----------------------------------------------------------------------------------

struct SaeTrainer::State {
  const float* rows = nullptr;
  int64_t n_rows = 0, d_in = 0, d_sae = 0, k = 0, batch = 0;
  Param w_enc_t, b_enc, w_dec, b_dec;  // w_enc_t: [d_sae][d_in] (W_enc transposed), w_dec: [d_sae][d_in]
  std::vector<int64_t> since_fired;    // per latent, training rows since it last fired
  std::vector<uint32_t> order;         // the row order of the current pass
  size_t at = 0;
  uint64_t rng = 0;
  cpu::ThreadPool pool;
  // Scratch of one step.
  std::vector<float> x, sae_in, pre, x_hat, gy, h, e_hat, g_aux;
  std::vector<uint32_t> idx, aux_idx;
  std::vector<float> val, aux_val;
  std::vector<int64_t> aux_n;
  explicit State(int n_threads) : pool(n_threads) {}

  void next_rows() {
    for (int64_t b = 0; b < batch; ++b) {
      if (at == order.size()) {  // a new pass: Fisher-Yates on the generator's draws
        for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[next_random(rng) % (i + 1)]);
        at = 0;
      }
      const float* r = rows + static_cast<size_t>(order[at++]) * static_cast<size_t>(d_in);
      std::copy(r, r + d_in, x.data() + b * d_in);
    }
  }
};

SaeTrainer::SaeTrainer(const float* rows, int64_t n_rows, int64_t d_in, const SaeTrainOptions& options)
    : options_(options) {
  const auto& o = options;
  if (d_in < 1 || n_rows < 1) throw InvalidArgumentError("SAE training: there are no rows to train on");
  if (o.d_sae < 1 || o.d_sae > (1 << 24))
    throw InvalidArgumentError(fmt::format("--d-sae {} is out of range: it must be in 1..16777216", o.d_sae));
  if (o.k < 1 || o.k > o.d_sae)
    throw InvalidArgumentError(fmt::format("--k {} is out of range: it must be in 1..d_sae ({})", o.k, o.d_sae));
  if (o.batch < 1 || o.batch > n_rows)
    throw InvalidArgumentError(fmt::format("--batch {} is out of range: it must be in 1..{} (the rows collected); lower "
                                           "--batch or give more data",
                                           o.batch, n_rows));
  if (o.steps < 1) throw InvalidArgumentError(fmt::format("--steps {} must be >= 1", o.steps));
  if (!(o.lr > 0 && o.lr < 1)) throw InvalidArgumentError(fmt::format("--lr {} is outside (0, 1)", o.lr));
  if (!(o.auxk_alpha >= 0)) throw InvalidArgumentError(fmt::format("--auxk-alpha {} must be >= 0", o.auxk_alpha));
  if (o.dead_rows < 1) throw InvalidArgumentError(fmt::format("--dead-tokens {} must be >= 1", o.dead_rows));
  s_ = std::make_unique<State>(o.n_threads);
  State& s = *s_;
  s.rows = rows;
  s.n_rows = n_rows;
  s.d_in = d_in;
  s.d_sae = o.d_sae;
  s.k = o.k;
  s.batch = o.batch;
  const auto n_w = static_cast<size_t>(o.d_sae * d_in);
  s.w_enc_t = Param(n_w);
  s.w_dec = Param(n_w);
  s.b_enc = Param(static_cast<size_t>(o.d_sae));
  s.b_dec = Param(static_cast<size_t>(d_in));
  // b_dec: the data mean (float64 sums); every row must be finite.
  std::vector<double> mean(static_cast<size_t>(d_in), 0.0);
  for (int64_t r = 0; r < n_rows; ++r)
    for (int64_t i = 0; i < d_in; ++i) {
      const float v = rows[r * d_in + i];
      if (!std::isfinite(v))
        throw InvalidArgumentError(fmt::format("SAE training: row {} of the collected activations is not finite", r));
      mean[static_cast<size_t>(i)] += v;
    }
  for (int64_t i = 0; i < d_in; ++i) s.b_dec.w[static_cast<size_t>(i)] = static_cast<float>(mean[static_cast<size_t>(i)] / double(n_rows));
  // W_dec: random unit rows; W_enc = W_dec^T.
  uint64_t init = o.seed ^ 0x5ae5ae5ae5ae5ae5ull;
  for (int64_t j = 0; j < o.d_sae; ++j) {
    float* w = s.w_dec.w.data() + j * d_in;
    double norm = 0;
    for (int64_t i = 0; i < d_in; ++i) {
      w[i] = static_cast<float>(normal(init));
      norm += double(w[i]) * w[i];
    }
    const double scale = 1.0 / std::sqrt(std::max(norm, 1e-30));
    for (int64_t i = 0; i < d_in; ++i) w[i] = static_cast<float>(w[i] * scale);
  }
  s.w_enc_t.w = s.w_dec.w;
  s.since_fired.assign(static_cast<size_t>(o.d_sae), 0);
  s.order.resize(static_cast<size_t>(n_rows));
  std::iota(s.order.begin(), s.order.end(), 0u);
  s.at = s.order.size();
  s.rng = o.seed;
  const auto B = static_cast<size_t>(o.batch), D = static_cast<size_t>(d_in);
  s.x.resize(B * D);
  s.sae_in.resize(B * D);
  s.x_hat.resize(B * D);
  s.gy.resize(B * D);
  s.h.resize(B * D);
  s.e_hat.resize(B * D);
  s.g_aux.resize(B * D);
  s.pre.resize(B * static_cast<size_t>(o.d_sae));
  s.idx.resize(B * static_cast<size_t>(o.k));
  s.val.resize(B * static_cast<size_t>(o.k));
  s.aux_n.resize(B);
}

SaeTrainer::~SaeTrainer() = default;

SaeStepReport SaeTrainer::step() {
  State& s = *s_;
  const int64_t B = s.batch, D = s.d_in, N = s.d_sae, K = s.k;
  s.next_rows();
  // Forward: sae_in = x - b_dec; pre = W_enc^T sae_in + b_enc (the dense product); TopK.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < D; ++i) s.sae_in[b * D + i] = s.x[b * D + i] - s.b_dec.w[i];
  const MatrixView w_enc{DType::F32, reinterpret_cast<const uint8_t*>(s.w_enc_t.w.data()), N, D,
                         static_cast<size_t>(D) * sizeof(float), "W_enc"};
  cpu::matmul(w_enc, s.sae_in.data(), B, s.pre.data(), s.pool);
  // Dead latents (before this step's firing), for AuxK and the report.
  std::vector<char> dead(static_cast<size_t>(N), 0);
  int64_t n_dead = 0;
  for (int64_t j = 0; j < N; ++j)
    if (s.since_fired[j] >= options_.dead_rows) dead[j] = 1, ++n_dead;
  const bool auxk = options_.auxk_alpha > 0 && n_dead > 0;
  const int64_t k_aux_full = std::max<int64_t>(1, D / 2), k_aux = std::min(k_aux_full, n_dead);
  if (auxk) {
    s.aux_idx.resize(static_cast<size_t>(B * k_aux));
    s.aux_val.resize(static_cast<size_t>(B * k_aux));
  }
  s.pool.parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<uint32_t> scratch;
    for (int64_t b = b0; b < b1; ++b) {
      float* pre = s.pre.data() + b * N;
      for (int64_t j = 0; j < N; ++j) pre[j] += s.b_enc.w[j];
      uint32_t* idx = s.idx.data() + b * K;
      top_indices(pre, N, K, nullptr, scratch, idx);
      for (int64_t t = 0; t < K; ++t) s.val[b * K + t] = std::max(pre[idx[t]], 0.0f);
      // x_hat = b_dec + sum f_j W_dec[j]
      float* xh = s.x_hat.data() + b * D;
      std::copy(s.b_dec.w.begin(), s.b_dec.w.end(), xh);
      for (int64_t t = 0; t < K; ++t)
        if (s.val[b * K + t] > 0) axpy(s.val[b * K + t], s.w_dec.w.data() + idx[t] * D, xh, D);
      if (auxk) {
        uint32_t* ai = s.aux_idx.data() + b * k_aux;
        s.aux_n[b] = top_indices(pre, N, k_aux, &dead, scratch, ai);
        float* eh = s.e_hat.data() + b * D;
        std::fill(eh, eh + D, 0.0f);
        for (int64_t t = 0; t < s.aux_n[b]; ++t) {
          const float v = std::max(pre[ai[t]], 0.0f);
          s.aux_val[b * k_aux + t] = v;
          if (v > 0) axpy(v, s.w_dec.w.data() + ai[t] * D, eh, D);
        }
      }
    }
  });
  // The loss: FVU over the batch (float64 sums).
  std::vector<double> mean(static_cast<size_t>(D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < D; ++i) mean[i] += s.x[b * D + i];
  for (auto& m : mean) m /= double(B);
  double total_var = 0, sse = 0, aux_sse = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < D; ++i) {
      const double c = s.x[b * D + i] - mean[i], e = double(s.x_hat[b * D + i]) - s.x[b * D + i];
      total_var += c * c;
      sse += e * e;
    }
  total_var = std::max(total_var, 1e-30);
  const double aux_scale = std::min(1.0, double(n_dead) / double(k_aux_full));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < D; ++i) {
      const float e = s.x_hat[b * D + i] - s.x[b * D + i];
      s.gy[b * D + i] = static_cast<float>(2.0 * e / total_var);
      if (auxk) {
        // AuxK's target is the error x - x_hat (a constant): d/d e_hat |e_hat - (x - x_hat)|^2.
        const double d = double(s.e_hat[b * D + i]) + e;
        aux_sse += d * d;
        s.g_aux[b * D + i] = static_cast<float>(options_.auxk_alpha * aux_scale * 2.0 * d / total_var);
      }
    }
  // Backward. Each thread owns a range of latents and walks every (row, slot) in row order, so
  // the gradient sums do not depend on the number of threads.
  for (Param* p : {&s.w_enc_t, &s.w_dec, &s.b_enc, &s.b_dec}) std::fill(p->g.begin(), p->g.end(), 0.0f);
  std::fill(s.h.begin(), s.h.end(), 0.0f);
  // g_f per (row, slot) = gy_row . W_dec[j] (aux: g_aux_row . W_dec[j]); computed per row first.
  std::vector<float> gf(static_cast<size_t>(B * K), 0.0f), gf_aux(auxk ? static_cast<size_t>(B * k_aux) : 0, 0.0f);
  s.pool.parallel_for(B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t t = 0; t < K; ++t)
        if (s.val[b * K + t] > 0) gf[b * K + t] = dot_in_order(s.gy.data() + b * D, s.w_dec.w.data() + s.idx[b * K + t] * D, D);
      if (auxk)
        for (int64_t t = 0; t < s.aux_n[b]; ++t)
          if (s.aux_val[b * k_aux + t] > 0)
            gf_aux[b * k_aux + t] = dot_in_order(s.g_aux.data() + b * D, s.w_dec.w.data() + s.aux_idx[b * k_aux + t] * D, D);
      // h_b = sum over the row's active latents of g_pre W_enc[:, j] (b_dec's encoder-side gradient).
      float* h = s.h.data() + b * D;
      for (int64_t t = 0; t < K; ++t)
        if (gf[b * K + t] != 0) axpy(gf[b * K + t], s.w_enc_t.w.data() + s.idx[b * K + t] * D, h, D);
      if (auxk)
        for (int64_t t = 0; t < s.aux_n[b]; ++t)
          if (gf_aux[b * k_aux + t] != 0) axpy(gf_aux[b * k_aux + t], s.w_enc_t.w.data() + s.aux_idx[b * k_aux + t] * D, h, D);
    }
  });
  s.pool.run([&](int thread, int n_threads) {
    const int64_t j0 = N * thread / n_threads, j1 = N * (thread + 1) / n_threads;
    auto visit = [&](uint32_t j, float v, float g, const float* g_out, const float* in) {
      if (j < j0 || j >= j1 || v <= 0) return;
      axpy(v, g_out, s.w_dec.g.data() + static_cast<int64_t>(j) * D, D);
      s.b_enc.g[j] += g;
      axpy(g, in, s.w_enc_t.g.data() + static_cast<int64_t>(j) * D, D);
    };
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < K; ++t)
        visit(s.idx[b * K + t], s.val[b * K + t], gf[b * K + t], s.gy.data() + b * D, s.sae_in.data() + b * D);
      if (auxk)
        for (int64_t t = 0; t < s.aux_n[b]; ++t)
          visit(s.aux_idx[b * k_aux + t], s.aux_val[b * k_aux + t], gf_aux[b * k_aux + t], s.g_aux.data() + b * D,
                s.sae_in.data() + b * D);
    }
  });
  // b_dec: the decoder's bias (gy) minus the encoder side (sae_in = x - b_dec); AuxK's e_hat has no b_dec.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < D; ++i) s.b_dec.g[i] += s.gy[b * D + i] - s.h[b * D + i];
  // Remove the gradient component parallel to each (unit) decoder row.
  s.pool.parallel_for(N, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      const float* w = s.w_dec.w.data() + j * D;
      float* g = s.w_dec.g.data() + j * D;
      axpy(-dot_in_order(g, w, D), w, g, D);
    }
  });
  // Adam (torch.optim.Adam, no weight decay), then W_dec rows back to unit norm.
  ++step_;
  const double bc1 = 1 - std::pow(options_.beta1, double(step_)), bc2 = 1 - std::pow(options_.beta2, double(step_));
  const auto b1 = static_cast<float>(options_.beta1), b2 = static_cast<float>(options_.beta2);
  const auto step_size = static_cast<float>(options_.lr / bc1), sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  const auto eps = static_cast<float>(options_.eps);
  for (Param* p : {&s.w_enc_t, &s.w_dec, &s.b_enc, &s.b_dec}) {
    s.pool.parallel_for(static_cast<int64_t>(p->w.size()), 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const float g = p->g[i];
        p->m[i] = b1 * p->m[i] + (1 - b1) * g;
        p->v[i] = b2 * p->v[i] + (1 - b2) * g * g;
        p->w[i] -= step_size * p->m[i] / (std::sqrt(p->v[i]) / sqrt_bc2 + eps);
      }
    });
  }
  s.pool.parallel_for(N, 64, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      float* w = s.w_dec.w.data() + j * D;
      double norm = 0;
      for (int64_t i = 0; i < D; ++i) norm += double(w[i]) * w[i];
      const auto scale = static_cast<float>(1.0 / std::max(std::sqrt(norm), 1e-12));
      for (int64_t i = 0; i < D; ++i) w[i] *= scale;
    }
  });
  // Firing statistics.
  SaeStepReport r;
  int64_t active = 0;
  for (auto& c : s.since_fired) c += B;
  for (int64_t t = 0; t < B * K; ++t)
    if (s.val[t] > 0) {
      s.since_fired[s.idx[t]] = 0;
      ++active;
    }
  r.step = step_;
  r.fvu = sse / total_var;
  r.auxk = auxk ? aux_scale * aux_sse / total_var : 0.0;
  r.l0 = double(active) / double(B);
  for (auto c : s.since_fired) r.dead += c >= options_.dead_rows;
  return r;
}

Sae SaeTrainer::sae(const std::string& hook_name) const {
  Sae out;
  out.architecture = SaeArchitecture::TopK;
  out.normalization = SaeNormalization::None;
  out.apply_b_dec_to_input = true;
  out.d_in = s_->d_in;
  out.d_sae = s_->d_sae;
  out.k = s_->k;
  out.hook_name = hook_name;
  out.w_enc_t = s_->w_enc_t.w;
  out.b_enc = s_->b_enc.w;
  out.w_dec = s_->w_dec.w;
  out.b_dec = s_->b_dec.w;
  return out;
}

// --- SAELens files ---------------------------------------------------------------------------

bool is_sae_file_name(std::string_view name) { return name == kSaeConfigFileName || name == kSaeWeightsFileName; }

void write_sae(const Sae& sae, const std::filesystem::path& dir, const json& metadata) {
  json cfg = {{"architecture", std::string(sae_architecture_name(sae.architecture))},
              {"d_in", sae.d_in},
              {"d_sae", sae.d_sae},
              {"dtype", "float32"},
              {"device", "cpu"},
              {"apply_b_dec_to_input", sae.apply_b_dec_to_input},
              {"normalize_activations", std::string(sae_normalization_name(sae.normalization))},
              {"reshape_activations", "none"}};
  if (sae.architecture == SaeArchitecture::TopK) cfg["k"] = sae.k;
  json meta = {{"hook_name", sae.hook_name}};
  for (const auto& [key, value] : metadata.items()) meta[key] = value;
  cfg["metadata"] = meta;
  const auto d_in = static_cast<size_t>(sae.d_in), d_sae = static_cast<size_t>(sae.d_sae);
  std::vector<float> w_enc(d_in * d_sae);  // [d_in, d_sae]
  for (size_t j = 0; j < d_sae; ++j)
    for (size_t i = 0; i < d_in; ++i) w_enc[i * d_sae + j] = sae.w_enc_t[j * d_in + i];
  auto bytes = [](const std::vector<float>& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float));
  };
  safetensors::Writer writer;
  writer.add_tensor("W_enc", DType::F32, {d_in, d_sae}, bytes(w_enc));
  writer.add_tensor("b_enc", DType::F32, {d_sae}, bytes(sae.b_enc));
  writer.add_tensor("W_dec", DType::F32, {d_sae, d_in}, bytes(sae.w_dec));
  writer.add_tensor("b_dec", DType::F32, {d_in}, bytes(sae.b_dec));
  StagedDirectory staged(dir);
  writer.write(staged.staging() / kSaeWeightsFileName);
  const std::string text = cfg.dump(2) + "\n";
  AtomicFileWriter file(staged.staging() / kSaeConfigFileName);
  file.write(text.data(), text.size());
  file.commit();
  staged.commit([](std::string_view name) { return is_sae_file_name(name); });
}

// --- evaluation --------------------------------------------------------------------------------

SaeSplice::SaeSplice(std::shared_ptr<const Sae> sae, Mode mode, int n_threads)
    : sae_(std::move(sae)), mode_(mode), pool_(std::make_unique<cpu::ThreadPool>(n_threads)) {
  if (!sae_) throw InvalidArgumentError("SAE splice: no SAE given");
  stats_.sum.assign(static_cast<size_t>(sae_->d_in), 0.0);
  stats_.fired.assign(static_cast<size_t>(sae_->d_sae), 0);
}

SaeSplice::~SaeSplice() = default;

std::string SaeSplice::describe() const {
  return (mode_ == Mode::Zero ? "the zero ablation at " : "the reconstruction by ") + sae_->describe();
}

void SaeSplice::apply(float* rows, int64_t n_rows, int64_t width) {
  if (width != sae_->d_in)
    throw InvalidArgumentError(fmt::format("{}: rows of {} elements, expected {}", describe(), width, sae_->d_in));
  const auto d_in = static_cast<size_t>(width);
  if (mode_ == Mode::Zero) {
    std::fill(rows, rows + static_cast<size_t>(n_rows) * d_in, 0.0f);
    return;
  }
  const auto f = sae_encode(*sae_, rows, n_rows, pool_.get());
  const auto x_hat = sae_decode(*sae_, f.data(), rows, n_rows);
  const auto d_sae = static_cast<size_t>(sae_->d_sae);
  for (size_t r = 0; r < static_cast<size_t>(n_rows); ++r) {
    const float* x = rows + r * d_in;
    const float* y = x_hat.data() + r * d_in;
    double xx = 0, yy = 0, xy = 0;
    for (size_t i = 0; i < d_in; ++i) {
      const double e = double(x[i]) - y[i];
      stats_.sum_sq_error += e * e;
      stats_.sum[i] += x[i];
      xx += double(x[i]) * x[i];
      yy += double(y[i]) * y[i];
      xy += double(x[i]) * y[i];
    }
    stats_.sum_sq += xx;
    stats_.cos_sum += xx > 0 && yy > 0 ? xy / std::sqrt(xx * yy) : 0.0;
    const float* fr = f.data() + r * d_sae;
    for (size_t j = 0; j < d_sae; ++j)
      if (fr[j] > 0) {
        stats_.active += 1;
        ++stats_.fired[j];
      }
    ++stats_.rows;
  }
  std::copy(x_hat.begin(), x_hat.end(), rows);
}

namespace {

// log_softmax of a row, float64.
void log_softmax(std::span<const float> logits, std::vector<double>& out) {
  out.resize(logits.size());
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) out[i] = double(logits[i]) - lse;
}

}  // namespace

SaeEvalResult evaluate_sae(std::shared_ptr<const Model> model, std::shared_ptr<const Sae> sae, HookSite site,
                           const std::vector<std::vector<TokenId>>& sequences, const ComputeOptions& compute,
                           const std::function<void(size_t, size_t)>& on_progress, int64_t skip_first) {
  if (sequences.empty()) throw InvalidArgumentError("SAE evaluation: there are no sequences to evaluate");
  size_t longest = 1;
  for (const auto& s : sequences) longest = std::max(longest, s.size());
  Session session(model, {.n_ctx = static_cast<uint32_t>(longest), .compute = compute});
  auto recon = std::make_shared<SaeSplice>(sae, SaeSplice::Mode::Reconstruct, compute.n_threads);
  auto zero = std::make_shared<SaeSplice>(sae, SaeSplice::Mode::Zero, 1);
  auto recon_hooks = std::make_shared<ResidualHooks>(), zero_hooks = std::make_shared<ResidualHooks>();
  recon_hooks->transform(site, recon);
  zero_hooks->transform(site, zero);
  SaeEvalResult r;
  r.d_sae = sae->d_sae;
  std::vector<std::vector<float>> clean;  // per position, the clean logits
  std::vector<double> lp, lq;
  double ce[3] = {0, 0, 0}, kl[2] = {0, 0};
  const auto skip = static_cast<size_t>(std::max<int64_t>(0, skip_first));
  for (size_t n = 0; n < sequences.size(); ++n) {
    const auto& ids = sequences[n];
    if (ids.size() <= skip) continue;
    session.set_hooks(nullptr);
    session.reset();
    session.eval(ids, /*all_logits=*/true);
    clean.resize(ids.size());
    for (size_t t = skip; t < ids.size(); ++t) {
      const auto logits = session.logits_at(t);
      clean[t].assign(logits.begin(), logits.end());
      log_softmax(logits, lp);
      if (t + 1 < ids.size()) ce[0] -= lp[static_cast<size_t>(ids[t + 1])];
    }
    // The first `skip` positions run clean (they are neither spliced nor measured).
    const std::span<const TokenId> prefix(ids.data(), skip), rest(ids.data() + skip, ids.size() - skip);
    for (int pass = 0; pass < 2; ++pass) {
      session.set_hooks(nullptr);
      session.reset();
      if (skip > 0) session.eval(prefix, /*all_logits=*/false);
      session.set_hooks(pass == 0 ? recon_hooks : zero_hooks);
      session.eval(rest, /*all_logits=*/true);
      for (size_t t = skip; t < ids.size(); ++t) {
        log_softmax(session.logits_at(t - skip), lq);
        log_softmax(clean[t], lp);
        double d = 0;
        for (size_t v = 0; v < lq.size(); ++v) d += std::exp(lp[v]) * (lp[v] - lq[v]);
        kl[pass] += d;
        if (t + 1 < ids.size()) ce[pass + 1] -= lq[static_cast<size_t>(ids[t + 1])];
      }
    }
    ++r.sequences;
    r.tokens += ids.size() - skip;
    r.predictions += ids.size() - skip - 1;
    if (on_progress) on_progress(n + 1, sequences.size());
  }
  const auto& st = recon->stats();
  if (st.rows == 0)
    throw InvalidArgumentError("SAE evaluation: no position to measure (every sequence is empty, or no longer than "
                               "--skip-first)");
  const double rows = double(st.rows);
  double mean_sq = 0;
  for (double v : st.sum) mean_sq += v * v;
  const double total = st.sum_sq - mean_sq / rows;  // sum |x - mean|^2
  r.l0 = st.active / rows;
  r.explained_variance = total > 0 ? 1 - st.sum_sq_error / total : 0.0;
  r.mse = st.sum_sq_error / (rows * double(sae->d_in));
  r.cossim = st.cos_sum / rows;
  const double preds = std::max<double>(1, double(r.predictions));
  r.ce_clean = ce[0] / preds;
  r.ce_sae = ce[1] / preds;
  r.ce_zero = ce[2] / preds;
  r.ce_loss_score = (r.ce_zero - r.ce_sae) / (r.ce_zero - r.ce_clean);
  r.kl_sae = kl[0] / double(r.tokens);
  r.kl_zero = kl[1] / double(r.tokens);
  r.kl_div_score = (r.kl_zero - r.kl_sae) / r.kl_zero;
  for (auto c : st.fired) r.dead += c == 0;
  return r;
}

}  // namespace lathe::edit
