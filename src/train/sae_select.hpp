// Which SAE features a gate should edit to make a model forget one set and keep another
// (docs/STUDIES.md, "Choosing the features"). Two criteria, each computed once, before any
// scoring:
// - activation: the features whose mean activation over the forget set's answer positions most
//   exceeds their mean over the retain set's (a contrast of where features fire);
// - attribution: the features whose edit (the gate's, as given) is predicted to raise the forget
//   set's answer loss the most beyond what it raises the retain set's. Per example, the residual at
//   the SAE's hook and the gradient of the example's mean answer cross-entropy there come from one
//   forward and backward of the training pass (train/lora_pass.hpp); edit/sae.hpp's
//   sae_edit_attribution turns them into every feature's first-order change of that loss
//   (attribution patching), counting the rows from the first answer position on (Rows below).
//   effect(set) = the mean over the set's examples; score = effect(forget) - effect(retain).
// Either way the `count` features of highest positive score, highest first (ties: lower id).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "edit/sae.hpp"
#include "lathe/hooks.hpp"
#include "lathe/lathe.hpp"
#include "train/finetune.hpp"

namespace lathe::train {

enum class FeatureCriterion { Activation, Attribution };
std::string_view feature_criterion_name(FeatureCriterion c) noexcept;  // "activation", "attribution"
// "activation" | "attribution"; InvalidArgumentError naming `where` and the accepted names.
FeatureCriterion parse_feature_criterion(std::string_view name, std::string_view where);

struct FeatureSelectOptions {
  FeatureCriterion by = FeatureCriterion::Attribution;
  int64_t count = 8;
  // The edit the gate will make to each selected feature (attribution predicts its effect; the id
  // is ignored) and the gate's options.
  edit::SaeFeatureEdit edit{.id = 0, .kind = edit::SaeFeatureEdit::Kind::Set, .value = 0};
  edit::SaeGateOptions gate;
  // Attribution: the rows whose edit is counted. Answers (the default): the positions from the
  // first scored one on, the rows that predict the answer, as the activation criterion reads
  // them; an SAE is often trained without the first position's attention-sink row, whose huge
  // activations it encodes badly, and counting the prompt rows ranks features by what they do
  // there. All: every row, the gate's whole first-order effect (what the tests check).
  enum class Rows { Answers, All } rows = Rows::Answers;
  ComputeOptions compute;  // the sessions of the activation criterion; its thread count for both
  // Called after each example of either set (done, total).
  std::function<void(size_t done, size_t total)> on_progress;
};

struct SelectedFeature {
  uint32_t id = 0;
  double score = 0;           // forget - retain
  double forget = 0, retain = 0;  // activation: mean activations; attribution: mean predicted loss changes
};

// InvalidArgumentError when either set is empty, count < 1, or no feature has a positive score
// (naming the SAE); the site's layer must be one of the model's.
std::vector<SelectedFeature> select_sae_features(const std::shared_ptr<const Model>& model,
                                                 const std::shared_ptr<const edit::Sae>& sae, HookSite site,
                                                 const std::vector<Example>& forget, const std::vector<Example>& retain,
                                                 const FeatureSelectOptions& options);

// The mean over `examples` of each feature's predicted change of the example's mean answer
// cross-entropy when the gate edits that feature alone on options.rows (attribution, above).
// Examples without a scored token are skipped. on_example after each example.
std::vector<double> sae_feature_effects(const std::shared_ptr<const Model>& model, const edit::Sae& sae, HookSite site,
                                        const std::vector<Example>& examples, const FeatureSelectOptions& options,
                                        const std::function<void()>& on_example = {});

// Runs each example with `hooks` on the positions that predict an answer token (the prompt before
// the first scored position runs without them), one session for all.
void run_answer_positions(const std::shared_ptr<const Model>& model, const std::vector<Example>& examples,
                          const std::shared_ptr<ResidualHooks>& hooks, const ComputeOptions& compute,
                          const std::function<void()>& on_example = {});

}  // namespace lathe::train
