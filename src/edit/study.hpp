// An abliteration study: everything `lathe ablate` does between loading the model and writing
// the result. prepare() computes the refusal directions, caches the matrices the edit touches
// and scores the unedited model; run_trial() resets, edits and evaluates one parameter point;
// the search (TPE over the space below, journaled) drives run_trial().
#pragma once

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "edit/ablation.hpp"
#include "edit/export.hpp"
#include "edit/journal.hpp"
#include "edit/tpe.hpp"
#include "weights/weight_cache.hpp"

namespace lathe::edit {

// The search space (Heretic's parametrization), n_layer = L:
//   direction_index                 [0.4 (L-1), 0.9 (L-1)]   (absent with per-layer directions)
//   <component>.max_weight          [0.8, 1.5]
//   <component>.max_weight_position [0.6 (L-1), L-1]
//   <component>.min_weight_frac     [0, 1]     min_weight = frac * max_weight
//   <component>.min_weight_distance [1, 0.6 (L-1)]
std::vector<ParamSpec> ablation_space(uint32_t n_layer, bool per_layer_directions,
                                      const std::vector<EditComponent>& components);
AblationParams params_from_point(const std::map<std::string, double>& point, bool per_layer_directions,
                                 const std::vector<EditComponent>& components);

struct StudyOptions {
  std::filesystem::path harmful_train, harmless_train, harmful_val, harmless_val;
  size_t train_limit = 0;      // prompts per training set (0 = all)
  size_t harmful_val_limit = 0;
  size_t harmless_val_limit = 100;
  ChatPromptOptions chat;
  bool orthogonalize = true;
  bool norm_preserving = false;
  bool per_layer_directions = false;
  std::vector<EditComponent> components{EditComponent::AttnOutput, EditComponent::MlpDown};
  bool cache_weights = true;   // false: each trial re-reads the original matrices from the model file
  EvaluationSettings evaluation;
  ComputeOptions compute;  // directions and evaluation; edits run on the host and are copied over
};

struct TrialTiming {
  double reset = 0, edit = 0, refusals = 0, kl = 0;
};

struct TrialOutcome {
  TrialEvaluator::Refusals refusals;
  double kl = 0;
  EditStats edit;
  TrialTiming timing;
};

struct SearchOptions {
  int n_trials = 200;  // trials the journal holds at the end (a resumed study runs the missing ones)
  uint64_t seed = 0;
  int n_startup = 20;  // random trials before TPE
};

class AblationStudy {
 public:
  // `log` receives progress and summaries (stderr in the CLI).
  AblationStudy(std::shared_ptr<Model> model, StudyOptions options, std::ostream& log, bool log_is_tty);
  ~AblationStudy();

  // Reads the prompt files, computes the directions, builds the weight cache and the evaluator
  // (which scores the unedited model). InvalidArgumentError/NotFoundError for bad prompt files,
  // UnsupportedError when the model cannot be edited.
  void prepare();

  const RefusalDirections& directions() const;
  const TrialEvaluator::Refusals& baseline_refusals() const { return baseline_; }
  std::vector<ParamSpec> space() const;
  const StudyOptions& options() const noexcept { return options_; }

  // Restores the original matrices (only the layers the previous edit touched), applies
  // `params`, and (evaluate = true) scores the result.
  TrialOutcome run_trial(const AblationParams& params, bool evaluate = true);
  // Puts the original weights back (all layers the last edit touched).
  void reset_weights();

  // Seconds to restore every cached matrix from the cache, and to re-read them from the model
  // file, each the mean of `repeats` runs (the benchmark of the cache).
  std::pair<double, double> measure_restore(int repeats);

  // The search: multi-objective TPE over space() (refusal rate, KL divergence), continuing the
  // trials `journal` holds until it has options.n_trials; each trial is appended to the journal
  // as soon as it is scored, then reported to on_trial (progress output). Returns every trial.
  std::vector<Trial> search(Journal& journal, const SearchOptions& options,
                            const std::function<void(const Trial&, const TrialOutcome&)>& on_trial = {});
  // Applies the trial's parameters (without scoring) and writes the edited model to `out` in the
  // input's format, with options.metadata and the edit's lathe.ablation.requantization_rel_rms.
  struct TrialExport {
    ExportResult written;
    size_t changed_matrices = 0;  // the matrices this trial's edit changed (its journal's edited_matrices)
  };
  TrialExport export_trial(const Trial& trial, const std::filesystem::path& out, const ExportOptions& options);
  // Writes the trial's edit as a LoRA adapter on the original model (edit/ablation_adapter.hpp):
  // rank 1 for the plain edit, `rank` for the norm-preserving one; `metadata` as strings. The
  // weights are left unedited.
  struct AdapterExport {
    size_t matrices = 0;
    int rank = 1;
    double max_rel_error = 0;  // of the low-rank approximation (0: exact)
  };
  AdapterExport export_trial_adapter(const Trial& trial, const std::filesystem::path& out, int rank,
                                     const std::vector<std::pair<std::string, std::string>>& metadata);

  const Model& model() const noexcept { return *model_; }

 private:
  void restore(const std::vector<uint32_t>& layers);
  void reload_from_file(const std::vector<uint32_t>& layers);

  std::shared_ptr<Model> model_;
  StudyOptions options_;
  std::ostream& log_;
  bool log_is_tty_;
  std::optional<RefusalDirections> directions_;
  std::optional<WeightCache> cache_;
  std::unique_ptr<TrialEvaluator> evaluator_;
  TrialEvaluator::Refusals baseline_;
  std::vector<uint32_t> dirty_layers_;
};

}  // namespace lathe::edit
