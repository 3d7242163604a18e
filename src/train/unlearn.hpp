// Unlearning with LoRA adapters on a frozen model (the objectives of the open-unlearning framework):
// make the model forget the answers of a forget set while keeping a retain set. The reference
// model is the same frozen base with the adapters switched off, evaluated once per example before
// training (never a second copy of the weights, so memory does not grow with runs).
//
// Per step, one forget example f and one retain example r (each cycled in a seeded order):
//   GradAscent  L = -NLL(f)
//   GradDiff    L = -gamma NLL(f) + alpha R(r)
//   Npo         L = -(2 / beta) log sigmoid(-beta (log p(f) - log p_ref(f))) + alpha R(r)
//   SimNpo      L = -(2 / beta) log sigmoid(-beta (log p(f) / |f| - delta)) + alpha R(r)
// where NLL is the mean negative log-likelihood of the scored (answer) tokens, log p the SUM of
// their log-probabilities (NPO's sequence likelihood; SimNPO's is the mean, with margin delta), and
// the retain term R is NLL(r) or KL(p_ref || p) averaged over r's scored positions.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "train/finetune.hpp"

namespace lathe::train {

enum class Objective { GradAscent, GradDiff, Npo, SimNpo };
enum class RetainLoss { Nll, Kl };

struct UnlearnOptions {
  FinetuneOptions train;  // adapters, optimizer, steps, seed (grad_accumulation: forget examples per step)
  Objective objective = Objective::Npo;
  RetainLoss retain_loss = RetainLoss::Nll;
  double beta = 0.1;     // NPO / SimNPO temperature
  double delta = 0.0;    // SimNPO margin
  double gamma = 1.0;    // GradDiff's forget weight
  double alpha = 1.0;    // retain weight (not used by GradAscent)
};

struct UnlearnStep {
  int64_t step = 0;
  double forget_loss = 0;  // the objective's forget term
  double retain_loss = 0;  // R(r), 0 for GradAscent
  double grad_norm = 0, lr = 0;
};

// Unlearning one optimizer step at a time (progress, checkpoints, stopping between steps);
// unlearn() below runs it to the end. The reference quantities are computed by the constructor.
// The example sets must outlive the run.
class UnlearnRun {
 public:
  // Checks as unlearn() does, before any work.
  UnlearnRun(const ModelWeights& weights, const std::vector<Example>& forget, const std::vector<Example>& retain,
             const UnlearnOptions& options, const LoraSet<float>* initial = nullptr);
  UnlearnStep step();
  bool done() const noexcept { return optimizer_.steps_done() >= options_.train.steps; }
  int64_t steps_done() const noexcept { return optimizer_.steps_done(); }
  const LoraSet<float>& lora() const noexcept { return optimizer_.lora(); }
  TrainState state() const;  // cycles: forget, then retain
  void restore(const TrainState& state);

 private:
  double forget_term(const Example& f, size_t fi, LoraGrads<float>& grads, LoraDropout dropout);
  double retain_term(const Example& r, size_t ri, LoraGrads<float>& grads, LoraDropout dropout);

  const ModelWeights& weights_;
  const std::vector<Example>& forget_;
  const std::vector<Example>& retain_;
  UnlearnOptions options_;
  std::vector<double> forget_ref_logp_;          // NPO: log p_ref(f) per forget example
  std::vector<std::vector<float>> retain_ref_;   // KL retain: reference log-softmax rows
  AdapterOptimizer optimizer_;
  ExampleCycle forget_cycle_, retain_cycle_;
  LoraGrads<float> grads_;
  std::unique_ptr<cpu::ThreadPool> pool_;  // kept across the passes
};

// Adapters trained with the objective, starting from `initial` when given (e.g. a fine-tuned
// adapter; then trained further in place of a fresh one) or from PEFT's initialization.
// InvalidArgumentError before any work for an empty forget set, an empty retain set where the
// objective needs one, examples that score nothing, or beta <= 0.
LoraSet<float> unlearn(const ModelWeights& weights, const std::vector<Example>& forget,
                       const std::vector<Example>& retain, const UnlearnOptions& options,
                       const LoraSet<float>* initial = nullptr,
                       const std::function<void(const UnlearnStep&)>& on_step = {});

// The loss heads behind the objectives, for one sequence's logits (exposed for tests). Each returns
// its loss and writes dlogits; `scored` are the targets (-1: not scored).
// sum of log p(target) over scored rows; dlogits of that sum times `scale`.
double sequence_logprob(const float* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, double scale,
                        float* dlogits);
double sequence_logprob(const double* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                        double scale, double* dlogits);
// mean over scored rows of KL(p_ref || p), `ref_logprobs` the reference's log-softmax rows of the
// scored positions in order; dlogits times `scale`.
double kl_to_reference(const float* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                       const std::vector<float>& ref_logprobs, double scale, float* dlogits);
double kl_to_reference(const double* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets,
                       const std::vector<float>& ref_logprobs, double scale, double* dlogits);

}  // namespace lathe::train
