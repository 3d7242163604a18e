// The configuration of an unlearning study (`lathe study CONFIG.toml`): a model (optionally with
// adapters merged at load, e.g. the fine-tuned model that is to forget), the sets the arms train
// on, the held-out sets every arm is evaluated on, the seeds, and the arms. TOML (toml++) or JSON
// with the same keys; every unknown key, missing key or value out of range is an error naming the
// file and the key (`arm[2].lr`), because a typo silently ignored would run another study.
//
//   model   = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
//   lora    = ["ft.gguf"]            # optional: merged at load; the model every arm starts from
//   seeds   = [1, 2, 3]
//   raw     = false                  # prompt/answer pairs without the chat template
//   system  = "You are a helpful assistant."
//   max_length = 512
//   [train]                          # what the training arms see
//   forget = "forget.jsonl"
//   retain = "retain.jsonl"
//   [[eval]]                         # held-out sets, each scored for every arm and seed
//   name = "forget-en"; file = "..."; kind = "forget"   # forget | retain | general
//   language = "en"                  # optional: the report's breakdown per language
//   [[arm]]
//   name = "base"; method = "none"
//   [[arm]]
//   name = "npo"; method = "unlearn"; objective = "npo"; lr = 1e-4; epochs = 5
//   [[arm]]
//   name = "proj"; method = "projection"; layer = 15    # the direction mean(forget) - mean(retain)
//   [[arm]]
//   name = "gate"; method = "sae"; sae = "sae-dir"; features = "123:-4,77"   # an SAE feature gate
//   (or select = 8; value = -4: the 8 features most specific to the forget set, clamped to -4;
//   select_by = "attribution": those whose clamp most raises the forget loss beyond the retain loss)
//
// Relative paths are relative to the configuration file's directory.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "train/sae_select.hpp"

namespace lathe::study {

enum class ArmMethod { None, Unlearn, Projection, SaeGate };
enum class EvalKind { Forget, Retain, General };

const char* arm_method_name(ArmMethod method);
const char* eval_kind_name(EvalKind kind);

struct ArmConfig {
  std::string name;
  ArmMethod method = ArmMethod::None;
  // unlearn (train/ options; defaults as `lathe unlearn`)
  std::string objective = "npo", retain_loss = "nll";
  double beta = 0.1, gamma = 1.0, alpha_retain = 1.0, delta = 0.0;
  int64_t rank = 8;
  double lora_alpha = 16, lr = 1e-4, weight_decay = 0.01, max_grad_norm = 1.0;
  int64_t steps = 0, warmup = 0;
  double epochs = 0;  // steps = ceil(epochs * forget examples) when steps is 0
  std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  // projection: the direction measured at blocks.{layer}.resid_post over the answer tokens
  int64_t layer = -1;      // -1: the middle layer
  // sae: an SAELens-format SAE and the features its gate edits (as `lathe run --sae`)
  std::filesystem::path sae;
  std::string sae_features, sae_hook;  // sae_hook: "" = the SAE's own hook_name
  bool sae_clamp_everywhere = false;
  // Instead of `features`: the `select` features whose mean activation over the forget set's
  // answer positions most exceeds the retain set's, each set to `value` (0: ablated).
  int64_t sae_select = 0;
  // How: activation (mean activation on forget minus retain) or attribution (the clamp's predicted
  // effect on the forget loss minus the retain loss); train/sae_select.hpp.
  train::FeatureCriterion sae_select_by = train::FeatureCriterion::Activation;
  double sae_value = 0;
  nlohmann::json source;   // the arm's table as given (for the journal's fingerprint)
};

struct EvalSet {
  std::string name;
  std::filesystem::path file;
  EvalKind kind = EvalKind::General;
  std::string language;  // empty: not given
};

struct StudyConfig {
  std::filesystem::path file;  // the configuration file itself
  std::filesystem::path model;
  std::vector<std::filesystem::path> loras;
  std::vector<uint64_t> seeds;
  bool raw = false;
  std::string system = "You are a helpful assistant.";
  int64_t max_length = 512;
  std::filesystem::path train_forget, train_retain;
  std::vector<EvalSet> evals;
  std::vector<ArmConfig> arms;
  std::string baseline;  // the arm every other is compared with (default: the first method "none")
  size_t resamples = 9999;  // bootstrap resamples of the report's intervals
  double confidence = 0.95, alpha = 0.05;
};

// Reads a .toml or .json configuration. NotFoundError for a missing file; FormatError naming the
// file, line and column for bad TOML/JSON; InvalidArgumentError naming the key for everything else.
StudyConfig read_study_config(const std::filesystem::path& file);

// The same from a configuration's text (`toml`: TOML, else JSON); `file` names it in messages and
// anchors relative paths (the fuzz target's entry).
StudyConfig parse_study_config(std::string_view text, bool toml, const std::filesystem::path& file);

// The same from an already parsed document (TOML is converted to this JSON first); `file` names
// the source in messages and anchors relative paths.
StudyConfig study_config_from_json(const nlohmann::json& doc, const std::filesystem::path& file);

}  // namespace lathe::study
