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

// The reference's log-softmax rows at an example's scored positions (the base model, no adapter).
std::vector<float> reference_logprobs(const ModelWeights& w, const Example& e, cpu::ThreadPool* pool) {
  LoraSet<float> none;
  none.rank = 1;
  std::vector<float> logits;
  lora_forward_backward(w, none, e.tokens, e.targets, nullptr, &logits, {}, pool);
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
    if (set[i].tokens.size() != set[i].targets.size() || set[i].scored() == 0)
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

namespace {

void check_unlearn(const std::vector<Example>& forget, const std::vector<Example>& retain,
                   const UnlearnOptions& options) {
  const bool uses_retain = options.objective != Objective::GradAscent;
  if (forget.empty()) throw InvalidArgumentError("the forget set is empty");
  if (uses_retain && retain.empty())
    throw InvalidArgumentError("the retain set is empty (every objective but gradient ascent needs one)");
  if (!(options.beta > 0)) throw InvalidArgumentError(fmt::format("beta {} must be > 0", options.beta));
  if (options.train.n_threads < 0 || options.train.n_threads > 4096)
    throw InvalidArgumentError(fmt::format("{} threads is outside 0..4096 (0: one per physical core)",
                                           options.train.n_threads));
  check_set(forget, "forget");
  check_set(retain, "retain");
  const auto& o = options.train;
  if (o.steps < 1 || o.grad_accumulation < 1)
    throw InvalidArgumentError(fmt::format("{} steps of {} examples: both must be at least 1", o.steps,
                                           o.grad_accumulation));
}

}  // namespace

UnlearnRun::UnlearnRun(const ModelWeights& weights, const std::vector<Example>& forget,
                       const std::vector<Example>& retain, const UnlearnOptions& options, const LoraSet<float>* initial)
    : weights_(weights),
      forget_(forget),
      retain_(retain),
      options_((check_unlearn(forget, retain, options), options)),
      optimizer_(initial ? *initial
                         : init_lora(weights, options.train.targets, options.train.rank, options.train.alpha,
                                     options.train.seed),
                 options.train),
      forget_cycle_(forget.size(), options.train.seed ^ kExampleOrderSeedMix),
      retain_cycle_(retain.size(), options.train.seed ^ 0x2545f491ull),
      pool_(std::make_unique<cpu::ThreadPool>(options.train.n_threads)) {
  // The reference, once per example before any training (the adapters off).
  if (options.objective == Objective::Npo)
    for (const auto& e : forget) {
      const auto rows = reference_logprobs(weights, e, pool_.get());
      double sum = 0;
      size_t k = 0;
      for (size_t t = 0; t < e.targets.size(); ++t)
        if (e.targets[t] >= 0) sum += rows[k++ * static_cast<size_t>(weights.output.rows) + e.targets[t]];
      forget_ref_logp_.push_back(sum);
    }
  if (options.objective != Objective::GradAscent && options.retain_loss == RetainLoss::Kl)
    for (const auto& e : retain) retain_ref_.push_back(reference_logprobs(weights, e, pool_.get()));
}

double UnlearnRun::forget_term(const Example& f, size_t fi, LoraGrads<float>& grads, LoraDropout dropout) {
  const double per_example = 1.0 / static_cast<double>(options_.train.grad_accumulation);
  const double n_scored = static_cast<double>(f.scored());
  LossHead<float> head = [&](const float* z, int64_t n, int64_t vocab, float* d) -> double {
    switch (options_.objective) {
      case Objective::GradAscent:
      case Objective::GradDiff: {
        // -weight * NLL = weight * sum log p / |f|
        const double weight = options_.objective == Objective::GradDiff ? options_.gamma : 1.0;
        return weight * sequence_logprob(z, n, vocab, f.targets, weight / n_scored * per_example, d) / n_scored;
      }
      case Objective::Npo:
      case Objective::SimNpo: {
        const double logp = sequence_logprob(z, n, vocab, f.targets, 1.0, d);
        const double x = options_.objective == Objective::Npo ? logp - forget_ref_logp_[fi]
                                                               : logp / n_scored - options_.delta;
        // L = -(2/beta) log sigmoid(-beta x) = (2/beta) softplus(beta x); dL/dx = 2 sigmoid(beta x)
        double coefficient = 2 * sigmoid(options_.beta * x);
        if (options_.objective == Objective::SimNpo) coefficient /= n_scored;
        for (int64_t i = 0; i < n * vocab; ++i) d[i] = static_cast<float>(d[i] * coefficient * per_example);
        return 2 / options_.beta * softplus(options_.beta * x);
      }
    }
    return 0.0;
  };
  return lora_forward_backward(weights_, optimizer_.lora(), f.tokens, f.targets, &grads, nullptr, head, pool_.get(),
                               nullptr, dropout);
}

double UnlearnRun::retain_term(const Example& r, size_t ri, LoraGrads<float>& grads, LoraDropout dropout) {
  const double weight = options_.alpha / static_cast<double>(options_.train.grad_accumulation);
  LossHead<float> head = [&](const float* z, int64_t n, int64_t vocab, float* d) -> double {
    if (options_.retain_loss == RetainLoss::Kl) return kl_to_reference(z, n, vocab, r.targets, retain_ref_[ri], weight, d);
    const double nll = cross_entropy(z, n, vocab, r.targets, d);
    for (int64_t i = 0; i < n * vocab; ++i) d[i] = static_cast<float>(d[i] * weight);
    return nll;
  };
  return lora_forward_backward(weights_, optimizer_.lora(), r.tokens, r.targets, &grads, nullptr, head, pool_.get(),
                               nullptr, dropout);
}

UnlearnStep UnlearnRun::step() {
  if (done()) throw InvalidArgumentError(fmt::format("the run has done all its {} steps", options_.train.steps));
  grads_.reset(optimizer_.lora());
  double forget_loss = 0, retain_loss = 0;
  for (int64_t k = 0; k < options_.train.grad_accumulation; ++k) {
    // LoRA dropout: a mask per pass, drawn from the seed and the pass's place in the run.
    const auto dropout = [&](int64_t stream) {
      return LoraDropout{options_.train.lora_dropout,
                         dropout_seed(options_.train.seed, optimizer_.steps_done(), k, stream)};
    };
    const size_t fi = forget_cycle_.next();
    forget_loss += forget_term(forget_[fi], fi, grads_, dropout(0));
    if (options_.objective == Objective::GradAscent) continue;
    const size_t ri = retain_cycle_.next();
    retain_loss += retain_term(retain_[ri], ri, grads_, dropout(1));
  }
  const auto applied = optimizer_.apply(grads_);
  const double per_example = 1.0 / static_cast<double>(options_.train.grad_accumulation);
  return {optimizer_.steps_done(), forget_loss * per_example, retain_loss * per_example, applied.grad_norm, applied.lr};
}

TrainState UnlearnRun::state() const {
  TrainState s = optimizer_.state();
  s.cycles = {forget_cycle_.state(), retain_cycle_.state()};
  return s;
}

void UnlearnRun::restore(const TrainState& state) {
  if (state.cycles.size() != 2)
    throw InvalidArgumentError(fmt::format("the saved state has {} example orders; unlearning has two (forget, retain): "
                                           "is it a fine-tuning checkpoint?",
                                           state.cycles.size()));
  forget_cycle_.restore(state.cycles[0]);
  retain_cycle_.restore(state.cycles[1]);
  optimizer_.restore(state);
}

LoraSet<float> unlearn(const ModelWeights& weights, const std::vector<Example>& forget,
                       const std::vector<Example>& retain, const UnlearnOptions& options, const LoraSet<float>* initial,
                       const std::function<void(const UnlearnStep&)>& on_step) {
  UnlearnRun run(weights, forget, retain, options, initial);
  while (!run.done()) {
    const UnlearnStep report = run.step();
    if (on_step) on_step(report);
  }
  return run.lora();
}

}  // namespace lathe::train
