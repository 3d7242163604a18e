// Training TopK sparse autoencoders on residual-stream rows, writing them in SAELens's format,
// and SAELens's quality metrics of an SAE on a model (docs/EDITING.md, "Training an SAE" and
// "SAE quality").
//
// The SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; EleutherAI sparsify):
//   f = TopK(ReLU(W_enc^T (x - b_dec) + b_enc)),   x_hat = W_dec^T f + b_dec
// trained with Adam on the batch's fraction of variance unexplained
//   FVU = sum_b |x_b - x_hat_b|^2 / sum_b |x_b - mean_batch(x)|^2
// plus alpha * AuxK (the error e = x - x_hat reconstructed from the k_aux = d_in / 2 largest
// pre-activations of the dead latents, e_hat = W_dec^T z_aux without b_dec, |e - e_hat|^2 over the
// same variance, scaled by min(1, dead / k_aux); e is a constant). After every step each row of
// W_dec is put back to unit norm; before it the gradient component parallel to the row is
// removed (sparsify's remove_gradient_parallel_to_decoder_directions). Init: W_dec rows random
// unit vectors, W_enc = W_dec^T, b_enc = 0, b_dec = the mean of the training rows.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "edit/sae.hpp"
#include "lathe/hooks.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {

// A RowTransform that copies the rows it sees (unchanged) until it holds max_rows of them.
class RowCollector : public RowTransform {
 public:
  RowCollector(int64_t width, int64_t max_rows);
  int64_t width() const noexcept override { return width_; }
  std::string describe() const override { return "the SAE training row collector"; }
  void apply(float* rows, int64_t n_rows, int64_t width) override;
  bool full() const noexcept { return n_rows_ >= max_rows_; }
  int64_t n_rows() const noexcept { return n_rows_; }
  std::vector<float> take() { return std::move(rows_); }  // [n_rows x width]

 private:
  int64_t width_, max_rows_, n_rows_ = 0;
  std::vector<float> rows_;
};

// The rows at `site` of every position of the token sequences (in order, until max_rows), one
// forward pass per sequence, except each sequence's first `skip_first` positions (the first
// token's row often carries a few huge "attention sink" dimensions that would dominate the
// reconstruction loss). on_progress(rows so far, max_rows) after each sequence. (edit/ sits below
// train/: the CLI reads data files with train/dataset.hpp and passes their tokens.)
std::vector<float> collect_rows(std::shared_ptr<const Model> model, const std::vector<std::vector<TokenId>>& sequences,
                                HookSite site, int64_t max_rows, const ComputeOptions& compute,
                                const std::function<void(int64_t, int64_t)>& on_progress = {},
                                int64_t skip_first = 0);

struct SaeTrainOptions {
  int64_t d_sae = 4096, k = 32, batch = 256, steps = 256;
  double lr = 2e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double auxk_alpha = 1.0 / 32;  // 0: no AuxK loss
  // A latent is dead once it has not fired for this many training rows (sparsify: 10M tokens).
  int64_t dead_rows = 10'000'000;
  uint64_t seed = 0;
  int n_threads = 0;  // 0: one per physical core
};

struct SaeStepReport {
  int64_t step = 0;    // 1-based
  double fvu = 0;      // the batch's fraction of variance unexplained (before the update)
  double auxk = 0;     // the AuxK loss (0 when no latent is dead)
  double l0 = 0;       // mean active latents per row
  int64_t dead = 0;    // latents that have not fired in the last dead_rows rows
};

class SaeTrainer {
 public:
  // rows: [n_rows x d_in], kept by reference (must outlive the trainer). InvalidArgumentError for
  // k > d_sae, a batch larger than n_rows, non-positive sizes, or rows that are not finite.
  SaeTrainer(const float* rows, int64_t n_rows, int64_t d_in, const SaeTrainOptions& options);
  ~SaeTrainer();
  SaeStepReport step();
  bool done() const noexcept { return step_ >= options_.steps; }
  int64_t steps_done() const noexcept { return step_; }
  // The SAE as lathe's loader would read it (topk, no normalization, apply_b_dec_to_input).
  Sae sae(const std::string& hook_name) const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  SaeTrainOptions options_;
  int64_t step_ = 0;
};

// Writes `sae` (topk, float32) as SAELens's cfg.json + sae_weights.safetensors into dir through a
// StagedDirectory (no partial output). `metadata` is merged into cfg.json's "metadata" object.
void write_sae(const Sae& sae, const std::filesystem::path& dir, const nlohmann::json& metadata);

// The names of files an SAE export owns (for check_output / StagedDirectory::commit).
bool is_sae_file_name(std::string_view name);

// A RowTransform for the spliced passes of the evaluation: replaces each row by the SAE's
// reconstruction (and accumulates the reconstruction statistics), or by zeros.
class SaeSplice : public RowTransform {
 public:
  enum class Mode { Reconstruct, Zero };
  SaeSplice(std::shared_ptr<const Sae> sae, Mode mode, int n_threads = 0);
  ~SaeSplice() override;
  int64_t width() const noexcept override { return sae_->d_in; }
  std::string describe() const override;
  void apply(float* rows, int64_t n_rows, int64_t width) override;

  struct Stats {
    uint64_t rows = 0;
    double sum_sq_error = 0;           // sum |x - x_hat|^2
    double sum_sq = 0;                 // sum |x|^2
    std::vector<double> sum;           // per dimension, sum x
    double active = 0;                 // sum over rows of |{j : f_j > 0}|
    double cos_sum = 0;                // sum over rows of cos(x, x_hat)
    std::vector<uint64_t> fired;       // per feature, rows where f_j > 0
  };
  const Stats& stats() const noexcept { return stats_; }

 private:
  std::shared_ptr<const Sae> sae_;
  Mode mode_;
  std::unique_ptr<cpu::ThreadPool> pool_;
  Stats stats_;
};

struct SaeEvalResult {
  uint64_t sequences = 0, tokens = 0, predictions = 0;  // rows spliced; next-token losses averaged
  double l0 = 0;                   // mean active features per token
  double explained_variance = 0;   // 1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2
  double mse = 0;                  // mean over tokens and dimensions of (x - x_hat)^2
  double cossim = 0;               // mean cos(x, x_hat)
  double ce_clean = 0, ce_sae = 0, ce_zero = 0, ce_loss_score = 0;
  double kl_sae = 0, kl_zero = 0, kl_div_score = 0;
  int64_t dead = 0;                // features that never fired on the data
  int64_t d_sae = 0;
};

// SAELens's run_evals metrics (sae_lens/evals.py, SAELens 6.x) over every position of the
// sequences: three passes per sequence (clean, the rows at `site` replaced by the reconstruction,
// and by zeros); cross-entropy of tokens[t + 1] at every t < n - 1, KL at every position.
// on_progress(done, total) after each sequence.
// skip_first: each sequence's first positions are neither spliced nor measured (as sae-train's
// --skip-first leaves them out of training).
SaeEvalResult evaluate_sae(std::shared_ptr<const Model> model, std::shared_ptr<const Sae> sae, HookSite site,
                           const std::vector<std::vector<TokenId>>& sequences, const ComputeOptions& compute,
                           const std::function<void(size_t, size_t)>& on_progress = {}, int64_t skip_first = 0);

}  // namespace lathe::edit
