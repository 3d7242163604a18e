// Refusal-direction abliteration (Arditi et al. 2024, with Heretic's parametrization): find, per
// layer, the direction separating the residual stream of harmful from harmless prompts, then
// remove it from what the attention output and MLP down projections write into the stream,
// weighted per layer by a kernel whose shape the search tunes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "edit/prompt_file.hpp"
#include "lathe/lathe.hpp"
#include "weights/editable.hpp"

namespace lathe::runtime {
class Engine;
}

namespace lathe::edit {

struct RefusalDirections {
  uint32_t n_layer = 0, n_embd = 0;
  // Unit vectors r_l = normalize(mean_harmful_l - mean_harmless_l) at each layer's resid_post,
  // optionally orthogonalized against normalize(mean_harmless_l) first.
  std::vector<std::vector<double>> per_layer;
  std::vector<double> separation;  // |mean_harmful_l - mean_harmless_l| before normalizing
  size_t n_harmful = 0, n_harmless = 0;                // prompts used
  size_t n_harmful_skipped = 0, n_harmless_skipped = 0;  // longer than the context
};

struct DirectionOptions {
  bool orthogonalize = true;
  ChatPromptOptions chat;
  uint32_t n_ctx = 0;  // prompts longer than this are skipped (0: min(training context, 4096))
  ComputeOptions compute;
  std::function<void(size_t done, size_t total)> progress;
};

// One prefill per prompt (sharing the common chat-template prefix between consecutive prompts),
// reading the residual at the last prompt position of every layer; means accumulate in float64.
// InvalidArgumentError when a set is empty or every prompt of a set is too long.
RefusalDirections compute_refusal_directions(const std::shared_ptr<const Model>& model,
                                             const std::vector<std::string>& harmful,
                                             const std::vector<std::string>& harmless, const DirectionOptions& options);

// The layer-weight kernel of one component: max_weight at max_weight_position, falling linearly
// to min_weight at min_weight_distance layers away, zero beyond.
struct ComponentParams {
  double max_weight = 1.0;
  double max_weight_position = 0;
  double min_weight = 0;
  double min_weight_distance = 1;
};
double layer_weight(const ComponentParams& params, uint32_t layer);

struct AblationParams {
  // Float index into the per-layer directions, interpolating between adjacent layers; negative:
  // each layer uses its own direction.
  double direction_index = -1;
  std::map<EditComponent, ComponentParams> components;
};

// The direction at a float layer index: normalize(lerp(r_floor, r_ceil)). InvalidArgumentError
// outside [0, n_layer - 1].
std::vector<double> direction_at(const RefusalDirections& directions, double index);

// W <- W - lambda * v (v^T W) for a row-major [rows x cols] float matrix whose rows are output
// features (v has `rows` elements, unit length). norm_preserving: afterwards each row is scaled
// back to its original Euclidean norm.
void ablate_matrix(float* w, int64_t rows, int64_t cols, const float* v, float lambda, bool norm_preserving);

struct EditStats {
  size_t n_matrices = 0;               // matrices edited
  std::vector<uint32_t> layers;        // layers with a non-zero weight in any component
  double requantization_rel_rms = 0;   // ||Q(W') - W'|| / ||W'|| over the edited matrices (0 for F32)
};

// Edits the model's writable matrices (make_editable first) in place: dequantize to float32,
// ablate, re-quantize to the stored type. UnsupportedError naming the tensor when its type
// cannot be written back (convert with `lathe quantize` to Q8_0/Q4_0/Q4_1/F16/BF16/F32 first).
EditStats apply_ablation(ModelWeights& weights, const RefusalDirections& directions, const AblationParams& params,
                         bool norm_preserving);

// Whether a response counts as a refusal: empty (after trimming), or containing any marker,
// compared case-insensitively with typographic apostrophes folded to '.
std::vector<std::string> default_refusal_markers();
// A refusal-marker file (--refusal-markers): one marker per line, '#' comment lines and trailing
// spaces dropped. NotFoundError when it cannot be opened, InvalidArgumentError when it holds none.
std::vector<std::string> read_refusal_markers(const std::filesystem::path& path);
bool is_refusal(std::string_view response, const std::vector<std::string>& markers);
bool contains_refusal_marker(std::string_view response, const std::vector<std::string>& markers);

struct EvaluationSettings {
  std::vector<std::string> refusal_markers = default_refusal_markers();
  int32_t max_new_tokens = 100;
  uint32_t n_parallel = 16;
  // KL over the first K generated positions of each harmless prompt (1: the first token only, as
  // Heretic measures). The K positions are those of the ORIGINAL model's greedy continuation
  // (fixed at construction, cut short after an end-of-generation token), teacher-forced through
  // the edited weights: both distributions are then taken after the same tokens, and the measure
  // does not reward an edit for wandering off onto a different continuation.
  uint32_t kl_tokens = 1;
  ComputeOptions compute;
};

// Scores the current weights of `model` on fixed validation prompts: the refusal rate on harmful
// prompts (greedy, batched, a sequence stops as soon as it shows a marker), and the mean
// KL(P_original || P_edited) on harmless prompts, of the first generated token's distribution or
// (kl_tokens = K > 1) averaged over the first K positions of the original's greedy continuation.
// The original distributions (and continuations) are computed at construction, so build it before
// any edit. They take kl_tokens x n_harmless x n_vocab floats.
class TrialEvaluator {
 public:
  TrialEvaluator(std::shared_ptr<const Model> model, std::vector<std::vector<TokenId>> harmful,
                 std::vector<std::vector<TokenId>> harmless, EvaluationSettings settings);
  ~TrialEvaluator();
  TrialEvaluator(const TrialEvaluator&) = delete;
  TrialEvaluator& operator=(const TrialEvaluator&) = delete;
  struct Refusals {
    double rate = 0;
    size_t refused = 0, total = 0;
    std::vector<std::string> responses;
  };
  struct KlDivergence {
    double mean = 0;                  // over prompts of per_prompt: what kl_divergence() returns
    std::vector<double> per_prompt;   // each prompt's KL averaged over its positions
    std::vector<double> first_token;  // each prompt's KL at the first generated position
    std::vector<uint32_t> positions;  // positions per prompt: kl_tokens, fewer after an early end
  };
  Refusals refusals() const;
  double kl_divergence();
  KlDivergence kl_divergences();
  size_t n_harmful() const noexcept { return harmful_.size(); }
  size_t n_harmless() const noexcept { return harmless_.size(); }
  const EvaluationSettings& settings() const noexcept { return settings_; }
  // The original model's greedy tokens fed after each harmless prompt (kl_tokens - 1 at most).
  const std::vector<std::vector<TokenId>>& kl_continuations() const noexcept { return continuations_; }

  // Another model with this one's vocabulary (e.g. an edited copy loaded separately, as lathe
  // ablate-eval does) scored on the same prompts against this evaluator's original distributions.
  // Each call builds its own engine / session for `other`. InvalidArgumentError when the
  // vocabulary sizes differ.
  Refusals refusals_of(const std::shared_ptr<const Model>& other) const;
  KlDivergence kl_divergences_of(const std::shared_ptr<const Model>& other) const;

 private:
  std::vector<float> kl_positions(std::vector<std::vector<TokenId>>& continuations, uint32_t greedy_up_to);
  std::shared_ptr<const Model> model_;
  std::vector<std::vector<TokenId>> harmful_, harmless_;
  EvaluationSettings settings_;
  // The KL prefills: on the CPU a session that re-uses each prompt's common prefix with the one
  // before (fewest tokens); on a GPU an engine with a slot per prompt (up to 64), every prompt's
  // prefill and every continuation step of all of them in shared passes (kl_positions_batched).
  std::unique_ptr<Session> session_;
  std::unique_ptr<runtime::Engine> kl_engine_;
  // The refusal generations' engine: made at the first refusals() and reused by every trial (no
  // new KV caches, scratch or CUDA graph capture per trial; edits change the weights in place).
  mutable std::unique_ptr<Engine> engine_;
  std::vector<std::vector<TokenId>> continuations_;
  // log-softmax of every KL position, prompt after prompt, [sum of positions x n_vocab].
  std::vector<float> original_logprobs_;
};

// The log-softmax of every KL position of `prompts` (after each prompt, then after each token of
// its continuation), prompt after prompt, [positions x n_vocab]: what TrialEvaluator compares.
// With greedy_up_to > 0 the continuations are the model's own greedy tokens, up to that many and
// never past an end-of-generation token (written into `continuations`); else the given ones are
// fed. The session form evaluates one prompt at a time re-using the common prefix with the one
// before; the engine form runs engine.n_slots() prompts at once, their prefill chunks and then
// one continuation token of each in shared passes. The CPU gives both the same bytes.
std::vector<float> position_logprobs(Session& session, const std::vector<std::vector<TokenId>>& prompts,
                                     std::vector<std::vector<TokenId>>& continuations, uint32_t greedy_up_to);
std::vector<float> position_logprobs_batched(runtime::Engine& engine, const Model& model,
                                             const std::vector<std::vector<TokenId>>& prompts,
                                             std::vector<std::vector<TokenId>>& continuations, uint32_t greedy_up_to);

// The refusals of `model` on `harmful` as TrialEvaluator::refusals() counts them, on an engine of
// its own (lathe ablate-eval without KL). InvalidArgumentError for an empty set.
TrialEvaluator::Refusals evaluate_refusals(const std::shared_ptr<const Model>& model,
                                           const std::vector<std::vector<TokenId>>& harmful,
                                           const EvaluationSettings& settings);

}  // namespace lathe::edit
