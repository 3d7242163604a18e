#include "train/optimizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lathe/error.hpp"

namespace lathe::train {

AdamW::AdamW(const AdamWOptions& options, std::span<const size_t> sizes) : options_(options) {
  if (!(options.lr >= 0) || !(options.beta1 >= 0 && options.beta1 < 1) || !(options.beta2 >= 0 && options.beta2 < 1) ||
      !(options.eps > 0) || !(options.weight_decay >= 0))
    throw InvalidArgumentError(fmt::format("AdamW: lr {} >= 0, betas ({}, {}) in [0, 1), eps {} > 0 and weight "
                                           "decay {} >= 0 are required",
                                           options.lr, options.beta1, options.beta2, options.eps,
                                           options.weight_decay));
  for (size_t size : sizes) {
    m_.emplace_back(size, 0.0f);
    v_.emplace_back(size, 0.0f);
  }
}

void AdamW::step(double lr, std::span<float* const> params, std::span<const float* const> grads) {
  if (params.size() != m_.size() || grads.size() != m_.size())
    throw InvalidArgumentError(fmt::format("AdamW: {} parameter and {} gradient tensors for {} moment pairs",
                                           params.size(), grads.size(), m_.size()));
  ++t_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double correction1 = 1 - std::pow(b1, static_cast<double>(t_));
  const double correction2 = 1 - std::pow(b2, static_cast<double>(t_));
  // torch.optim.AdamW (single-tensor path): p *= 1 - lr * wd; m, v updated; then
  // p -= lr / correction1 * m / (sqrt(v) / sqrt(correction2) + eps).
  const double decay = 1 - lr * options_.weight_decay;
  const double step_size = lr / correction1;
  const double sqrt_correction2 = std::sqrt(correction2);
  for (size_t i = 0; i < m_.size(); ++i) {
    float* p = params[i];
    const float* g = grads[i];
    auto& m = m_[i];
    auto& v = v_[i];
    for (size_t k = 0; k < m.size(); ++k) {
      p[k] = static_cast<float>(p[k] * decay);
      m[k] = static_cast<float>(b1 * m[k] + (1 - b1) * g[k]);
      v[k] = static_cast<float>(b2 * v[k] + (1 - b2) * double(g[k]) * g[k]);
      const double denominator = std::sqrt(double(v[k])) / sqrt_correction2 + options_.eps;
      p[k] = static_cast<float>(p[k] - step_size * m[k] / denominator);
    }
  }
}

double clip_grad_norm(std::span<float* const> grads, std::span<const size_t> sizes, double max_norm) {
  double sum = 0;
  for (size_t i = 0; i < grads.size(); ++i)
    for (size_t k = 0; k < sizes[i]; ++k) sum += double(grads[i][k]) * grads[i][k];
  const double norm = std::sqrt(sum);
  if (max_norm > 0) {
    const double coefficient = max_norm / (norm + 1e-6);
    if (coefficient < 1)
      for (size_t i = 0; i < grads.size(); ++i)
        for (size_t k = 0; k < sizes[i]; ++k) grads[i][k] = static_cast<float>(grads[i][k] * coefficient);
  }
  return norm;
}

double learning_rate(double peak, int64_t step, int64_t warmup, int64_t total, LrDecay decay) {
  if (step < warmup) return peak * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  if (decay == LrDecay::Constant) return peak;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  if (progress >= 1) return 0.0;
  if (decay == LrDecay::Linear) return peak * (1 - progress);
  return peak * 0.5 * (1 + std::cos(std::numbers::pi * progress));
}

}  // namespace lathe::train
