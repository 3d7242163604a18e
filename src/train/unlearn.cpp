#include "train/unlearn.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "lathe/error.hpp"
#include "train/ops.hpp"

namespace lathe::train {
namespace {

template <class T>
double sequence_logprob_impl(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, double scale,
                             T* dlogits) {
  std::fill(dlogits, dlogits + n * vocab, T(0));
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (targets[t] < 0) continue;
    const T* z = logits + t * vocab;
    const double log_z = log_sum_exp(z, vocab);
    sum += double(z[targets[t]]) - log_z;
    // d log p(target) / dz = onehot - softmax
    T* d = dlogits + t * vocab;
    for (int64_t i = 0; i < vocab; ++i) d[i] = static_cast<T>(-scale * std::exp(double(z[i]) - log_z));
    d[targets[t]] += static_cast<T>(scale);
  }
  return sum;
}

template <class T>
double kl_to_reference_impl(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                            const std::vector<float>& ref, double scale, T* dlogits) {
  std::fill(dlogits, dlogits + n * vocab, T(0));
  int64_t scored = 0;
  for (int64_t t = 0; t < n; ++t) scored += targets[t] >= 0;
  if (static_cast<int64_t>(ref.size()) != scored * vocab)
    throw InvalidArgumentError(fmt::format("the reference has {} log-probabilities for {} scored rows of {}",
                                           ref.size(), scored, vocab));
  double kl = 0;
  int64_t k = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (targets[t] < 0) continue;
    const T* z = logits + t * vocab;
    const float* lr = ref.data() + k * vocab;
    const double log_z = log_sum_exp(z, vocab);
    T* d = dlogits + t * vocab;
    for (int64_t i = 0; i < vocab; ++i) {
      const double p_ref = std::exp(double(lr[i]));
      const double log_p = double(z[i]) - log_z;
      kl += p_ref * (double(lr[i]) - log_p);
      // d KL / dz_i = softmax_i - p_ref_i (the reference sums to 1)
      d[i] = static_cast<T>(scale * (std::exp(log_p) - p_ref) / static_cast<double>(scored));
    }
    ++k;
  }
  return scored > 0 ? kl / static_cast<double>(scored) : 0.0;
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::abs(x))); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

int64_t scored_count(const Example& e) {
  return std::count_if(e.targets.begin(), e.targets.end(), [](int32_t t) { return t >= 0; });
}

// The reference's log-softmax rows at an example's scored positions (the base model, no adapter).
std::vector<float> reference_logprobs(const ModelWeights& w, const Example& e) {
  LoraSet<float> none;
  none.rank = 1;
  std::vector<float> logits;
  lora_forward_backward(w, none, e.tokens, e.targets, nullptr, &logits);
  const int64_t vocab = w.output.rows;
  std::vector<float> out;
  for (size_t t = 0; t < e.tokens.size(); ++t) {
    if (e.targets[t] < 0) continue;
    const float* z = logits.data() + t * vocab;
    const double log_z = log_sum_exp(z, vocab);
    for (int64_t i = 0; i < vocab; ++i) out.push_back(static_cast<float>(z[i] - log_z));
  }
  return out;
}

void check_set(const std::vector<Example>& set, const char* name) {
  for (size_t i = 0; i < set.size(); ++i)
    if (set[i].tokens.size() != set[i].targets.size() || scored_count(set[i]) == 0)
      throw InvalidArgumentError(fmt::format("{} example {} scores no position or has {} tokens for {} targets", name,
                                             i, set[i].tokens.size(), set[i].targets.size()));
}

}  // namespace

double sequence_logprob(const float* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, double scale,
                        float* dlogits) {
  return sequence_logprob_impl(logits, n, vocab, targets, scale, dlogits);
}
double sequence_logprob(const double* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                        double scale, double* dlogits) {
  return sequence_logprob_impl(logits, n, vocab, targets, scale, dlogits);
}
double kl_to_reference(const float* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                       const std::vector<float>& ref, double scale, float* dlogits) {
  return kl_to_reference_impl(logits, n, vocab, targets, ref, scale, dlogits);
}
double kl_to_reference(const double* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                       const std::vector<float>& ref, double scale, double* dlogits) {
  return kl_to_reference_impl(logits, n, vocab, targets, ref, scale, dlogits);
}

LoraSet<float> unlearn(const ModelWeights& weights, const std::vector<Example>& forget,
                       const std::vector<Example>& retain, const UnlearnOptions& options, const LoraSet<float>* initial,
                       const std::function<void(const UnlearnStep&)>& on_step) {
  const bool uses_retain = options.objective != Objective::GradAscent;
  if (forget.empty()) throw InvalidArgumentError("the forget set is empty");
  if (uses_retain && retain.empty())
    throw InvalidArgumentError("the retain set is empty (every objective but gradient ascent needs one)");
  if (!(options.beta > 0)) throw InvalidArgumentError(fmt::format("beta {} must be > 0", options.beta));
  check_set(forget, "forget");
  check_set(retain, "retain");
  const auto& o = options.train;
  if (o.steps < 1 || o.grad_accumulation < 1)
    throw InvalidArgumentError(fmt::format("{} steps of {} examples: both must be at least 1", o.steps,
                                           o.grad_accumulation));

  // The reference, once per example before any training (the adapters off).
  std::vector<double> forget_ref_logp;
  if (options.objective == Objective::Npo)
    for (const auto& e : forget) {
      const auto rows = reference_logprobs(weights, e);
      double sum = 0;
      size_t k = 0;
      for (size_t t = 0; t < e.targets.size(); ++t)
        if (e.targets[t] >= 0) sum += rows[k++ * static_cast<size_t>(weights.output.rows) + e.targets[t]];
      forget_ref_logp.push_back(sum);
    }
  std::vector<std::vector<float>> retain_ref;
  if (uses_retain && options.retain_loss == RetainLoss::Kl)
    for (const auto& e : retain) retain_ref.push_back(reference_logprobs(weights, e));

  LoraSet<float> lora = initial ? *initial : init_lora(weights, o.targets, o.rank, o.alpha, o.seed);
  std::vector<size_t> sizes;
  for (const auto& p : lora.pairs) sizes.insert(sizes.end(), {p.a.size(), p.b.size()});
  AdamW adamw(o.adamw, sizes);
  ExampleCycle forget_cycle(forget.size(), o.seed ^ 0x5851f42d4c957f2dull),
      retain_cycle(retain.size(), o.seed ^ 0x2545f491ull);
  LoraGrads<float> grads;
  const double per_example = 1.0 / static_cast<double>(o.grad_accumulation);
  for (int64_t step = 0; step < o.steps; ++step) {
    grads.reset(lora);
    double forget_loss = 0, retain_loss = 0;
    for (int64_t k = 0; k < o.grad_accumulation; ++k) {
      const size_t fi = forget_cycle.next();
      const Example& f = forget[fi];
      const double n_scored = static_cast<double>(scored_count(f));
      LossHead<float> forget_head = [&](const float* z, int64_t n, int64_t vocab, float* d) -> double {
        switch (options.objective) {
          case Objective::GradAscent:
          case Objective::GradDiff: {
            // -weight * NLL = weight * sum log p / |f|
            const double weight = options.objective == Objective::GradDiff ? options.gamma : 1.0;
            return weight * sequence_logprob(z, n, vocab, f.targets, weight / n_scored * per_example, d) / n_scored;
          }
          case Objective::Npo:
          case Objective::SimNpo: {
            const double logp = sequence_logprob(z, n, vocab, f.targets, 1.0, d);
            const double x = options.objective == Objective::Npo ? logp - forget_ref_logp[fi]
                                                                 : logp / n_scored - options.delta;
            // L = -(2/beta) log sigmoid(-beta x) = (2/beta) softplus(beta x); dL/dx = 2 sigmoid(beta x)
            double coefficient = 2 * sigmoid(options.beta * x);
            if (options.objective == Objective::SimNpo) coefficient /= n_scored;
            for (int64_t i = 0; i < n * vocab; ++i) d[i] = static_cast<float>(d[i] * coefficient * per_example);
            return 2 / options.beta * softplus(options.beta * x);
          }
        }
        return 0.0;
      };
      forget_loss += lora_forward_backward(weights, lora, f.tokens, f.targets, &grads, nullptr, forget_head);
      if (!uses_retain) continue;
      const size_t ri = retain_cycle.next();
      const Example& r = retain[ri];
      LossHead<float> retain_head = [&](const float* z, int64_t n, int64_t vocab, float* d) -> double {
        const double weight = options.alpha * per_example;
        if (options.retain_loss == RetainLoss::Kl) return kl_to_reference(z, n, vocab, r.targets, retain_ref[ri], weight, d);
        const double nll = cross_entropy(z, n, vocab, r.targets, d);
        for (int64_t i = 0; i < n * vocab; ++i) d[i] = static_cast<float>(d[i] * weight);
        return nll;
      };
      retain_loss += lora_forward_backward(weights, lora, r.tokens, r.targets, &grads, nullptr, retain_head);
    }
    std::vector<float*> params, grad_ptrs;
    for (size_t p = 0; p < lora.pairs.size(); ++p) {
      params.insert(params.end(), {lora.pairs[p].a.data(), lora.pairs[p].b.data()});
      grad_ptrs.insert(grad_ptrs.end(), {grads.da[p].data(), grads.db[p].data()});
    }
    const double norm = clip_grad_norm(grad_ptrs, sizes, o.max_grad_norm);
    const double lr = learning_rate(o.adamw.lr, step, o.warmup_steps, o.steps, o.decay);
    std::vector<const float*> const_grads(grad_ptrs.begin(), grad_ptrs.end());
    adamw.step(lr, params, const_grads);
    if (on_step) on_step({step + 1, forget_loss * per_example, retain_loss * per_example, norm, lr});
  }
  return lora;
}

}  // namespace lathe::train
