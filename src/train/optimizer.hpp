// The optimizer of adapter training, with PyTorch's semantics so that a run can be compared with
// PyTorch + PEFT step by step: AdamW (torch.optim.AdamW: decoupled weight decay, bias-corrected
// moments, eps added to the square root), gradient clipping by the global L2 norm
// (torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1), and a
// learning rate with linear warm-up then linear or cosine decay to zero (transformers'
// get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lathe::train {

struct AdamWOptions {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// The state of one parameter tensor (first and second moments) and the shared step count.
class AdamW {
 public:
  // One moment pair per tensor, of these sizes.
  AdamW(const AdamWOptions& options, std::span<const size_t> sizes);
  // One step at learning rate `lr` over every tensor: params[i] and grads[i] of sizes[i].
  void step(double lr, std::span<float* const> params, std::span<const float* const> grads);
  int64_t steps() const noexcept { return t_; }
  const AdamWOptions& options() const noexcept { return options_; }
  // The moments, for checkpoints (the same order as the sizes).
  std::vector<std::vector<float>>& first_moments() noexcept { return m_; }
  std::vector<std::vector<float>>& second_moments() noexcept { return v_; }
  const std::vector<std::vector<float>>& first_moments() const noexcept { return m_; }
  const std::vector<std::vector<float>>& second_moments() const noexcept { return v_; }
  void set_steps(int64_t t) noexcept { t_ = t; }

 private:
  AdamWOptions options_;
  std::vector<std::vector<float>> m_, v_;
  int64_t t_ = 0;
};

// Scales every gradient by max_norm / (norm + 1e-6) when the global L2 norm exceeds max_norm
// (max_norm <= 0: no clipping). Returns the norm before clipping.
double clip_grad_norm(std::span<float* const> grads, std::span<const size_t> sizes, double max_norm);

enum class LrDecay { Constant, Linear, Cosine };

// The learning rate at step `step` (0-based) of `total` steps: `peak` * step / warmup during the
// warm-up, then the decay from `peak` to 0 at `total` (Constant stays at `peak`).
double learning_rate(double peak, int64_t step, int64_t warmup, int64_t total, LrDecay decay);

}  // namespace lathe::train
