// Sparse autoencoders (SAEs) in SAELens's format, and the feature gate that edits chosen SAE
// features in the residual stream (docs/EDITING.md, "SAE feature gates").
//
// The format: a directory with cfg.json and sae_weights.safetensors holding
//   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
//   and, for JumpReLU, threshold [d_sae]; F32, F16 or BF16.
// cfg.json fields read (SAELens 6 and the older layout it still loads): d_in, d_sae,
// architecture ("standard" | "jumprelu" | "topk"; default "standard"), k (topk; older files:
// activation_fn_kwargs.k with activation_fn[_str] "topk"), apply_b_dec_to_input (default true),
// normalize_activations ("none" | "constant_norm_rescale" | "layer_norm"; false/null = "none"),
// hook_name (top level, older "hook_point", or metadata.hook_name / meta.hook_name).
// Refused with UnsupportedError naming the field: other architectures (gated, batchtopk, ...),
// normalize_activations "expected_average_only_in" (its factor lives outside the SAE file),
// finetuning_scaling_factor, hook_head_index, reshape_activations "hook_z", activation
// functions other than relu / topk.
//
// Encoding, as SAELens computes it (float32 here, whatever the stored type):
//   sae_in = norm_in(x) - b_dec * apply_b_dec_to_input
//   pre    = sae_in @ W_enc + b_enc
//   standard: f = relu(pre); jumprelu: f = relu(pre) * (pre > threshold);
//   topk: the k largest pre (ties: lower index first), each through relu; 0 elsewhere
//   decode(f) = norm_out(f @ W_dec + b_dec)
// norm_in/out: none: identity. constant_norm_rescale: c = sqrt(d_in) / |x|, x * c and y / c.
// layer_norm: mu = mean(x), s = std(x) (n - 1), (x - mu) / (s + 1e-5) and y * s + mu.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/hooks.hpp"

namespace lathe::cpu {
class ThreadPool;
}

namespace lathe::edit {

class SaeGateDevice;

// The two files of an SAE directory (SAELens's names).
inline constexpr std::string_view kSaeConfigFileName = "cfg.json";
inline constexpr std::string_view kSaeWeightsFileName = "sae_weights.safetensors";

enum class SaeArchitecture { Standard, JumpRelu, TopK };
enum class SaeNormalization { None, ConstantNormRescale, LayerNorm };

std::string_view sae_architecture_name(SaeArchitecture a) noexcept;       // "standard", "jumprelu", "topk"
std::string_view sae_normalization_name(SaeNormalization n) noexcept;     // "none", ...

struct Sae {
  std::filesystem::path cfg_path;      // cfg.json
  std::filesystem::path weights_path;  // sae_weights.safetensors
  SaeArchitecture architecture = SaeArchitecture::Standard;
  SaeNormalization normalization = SaeNormalization::None;
  bool apply_b_dec_to_input = true;
  int64_t d_in = 0, d_sae = 0;
  int64_t k = 0;          // topk only
  std::string hook_name;  // as cfg.json gives it ("" when it has none)
  std::vector<float> w_enc_t;    // [d_sae][d_in]: feature j's encoder column W_enc[:, j], contiguous
  std::vector<float> b_enc;      // [d_sae]
  std::vector<float> w_dec;      // [d_sae][d_in]
  std::vector<float> b_dec;      // [d_in]
  std::vector<float> threshold;  // [d_sae], jumprelu only

  std::string describe() const;  // "SAE <dir> (jumprelu, 576 -> 16384)"
};

// Reads an SAE from its directory, its cfg.json or its sae_weights.safetensors (the other file
// is taken from the same directory). NotFoundError for missing files; FormatError (file, field or
// tensor, what to do) for malformed JSON, missing fields or tensors, shapes that disagree with
// d_in / d_sae, non-finite values; UnsupportedError for what lathe does not implement (above).
Sae load_sae(const std::filesystem::path& path);
// The same from the two files' contents in memory (fuzzing); the paths name them in errors.
Sae parse_sae(std::string_view cfg_text, std::span<const uint8_t> weights, const std::filesystem::path& cfg_path,
              const std::filesystem::path& weights_path);

// SAELens / TransformerLens hook names blocks.{i}.hook_resid_pre|hook_resid_mid|hook_resid_post,
// and lathe's own (blocks.{i}.resid_pre|resid_mid|resid_post, final_norm). UnsupportedError for
// other TransformerLens points (hook_mlp_out, attn.hook_z, hook_embed, ...), InvalidArgumentError
// for names that are neither. `where` names the source in messages (a flag or the cfg field).
HookSite sae_hook_site(std::string_view name, std::string_view where);

// InvalidArgumentError naming the SAE when its d_in is not n_embd or its hook's layer is not one
// of the model's.
void check_sae_fits(const Sae& sae, HookSite site, uint32_t n_layer, uint32_t n_embd);

// Full encode / decode of n_rows rows (reference paths; the gate computes only what it needs).
// f: [n_rows][d_sae]. A row whose norm the normalization cannot take (|x| = 0 for
// constant_norm_rescale) encodes to NaN, as SAELens's does.
std::vector<float> sae_encode(const Sae& sae, const float* x, int64_t n_rows, cpu::ThreadPool* pool = nullptr);
// decode needs x for normalize_activations other than none (the norm of each input row).
std::vector<float> sae_decode(const Sae& sae, const float* f, const float* x, int64_t n_rows);

// One edit of the feature spec: "ID" (= ID:0), "ID:VALUE" (clamp), "ID*SCALE" (scale).
struct SaeFeatureEdit {
  enum class Kind { Set, Scale };
  uint32_t id = 0;
  Kind kind = Kind::Set;
  float value = 0;  // Set: the value; Scale: the factor
};

// "12,57:-4,90*0.5" (items separated by commas, spaces around items allowed). Syntax only:
// InvalidArgumentError naming `flag`, the spec and the bad item for an empty spec or item, an id
// that is not a decimal number, a value that is not a finite number, or an id given twice.
std::vector<SaeFeatureEdit> parse_sae_features(std::string_view spec, std::string_view flag);
// InvalidArgumentError naming `flag` and the id when one is >= d_sae.
void check_sae_features(const std::vector<SaeFeatureEdit>& edits, int64_t d_sae, std::string_view flag);

struct SaeGateOptions {
  // ID:VALUE applies only where the feature is active (f > 0) unless this is set; then at every
  // token. ID (ablation) and ID*SCALE change nothing where f = 0 either way.
  bool clamp_everywhere = false;
};

// Attribution of gate edits to a scalar loss L (attribution patching, first order): for every
// feature j, the change of L predicted when the gate edits j alone as `edit` says (its id ignored),
//   sum over rows r of  s(x_r) * (edited(f_rj) - f_rj) * (W_dec[j] . dL/dx_r)
// with f the SAE's features of x_r and s(x_r) the normalization's output scale: the gate's own
// change of the row, dotted with the gradient. rows and grads: [n_rows][d_in] (the residual at the
// SAE's hook and L's gradient there, e.g. from train/lora_pass.hpp's ResidualProbe). Returns
// [d_sae]. Rows the SAE cannot encode (a zero row under constant_norm_rescale) add nothing.
std::vector<double> sae_edit_attribution(const Sae& sae, const float* rows, const float* grads, int64_t n_rows,
                                         const SaeFeatureEdit& edit, const SaeGateOptions& options,
                                         cpu::ThreadPool* pool = nullptr);

// The gate: x' = x + decode(f') - decode(f) = x + s(x) * (f' - f) @ W_dec with f the SAE's
// features of x, f' the edited ones and s(x) the normalization's output scale (1, 1/c or std).
// The reconstruction error stays in the stream, so only the edited features change it; a
// feature whose edit leaves it equal (f' == f) adds nothing, so such a row is left bit for bit.
// Standard and JumpReLU features are independent: only the edited features are encoded
// (O(d_in x edits) per row). TopK needs every pre-activation to know which are in the top k.
class SaeGate : public RowTransform {
 public:
  SaeGate(std::shared_ptr<const Sae> sae, std::vector<SaeFeatureEdit> edits, SaeGateOptions options);
  ~SaeGate() override;
  int64_t width() const noexcept override;
  std::string describe() const override;
  void apply(float* rows, int64_t n_rows, int64_t width) override;
  // The device path (CUDA builds): the edited features' encoder and decoder rows (topk: the
  // whole encoder) go to the device once; the gate then runs as kernels on the device rows.
  bool prepare_device(int device, int64_t max_rows) override;
  void apply_on_device(float* rows, int64_t n_rows, int64_t width, void* stream) override;

  const Sae& sae() const noexcept { return *sae_; }
  // Rows the gate has changed so far (for tests and logs), on the host and on the device (that
  // count is read from the device: it waits for the device's work).
  uint64_t rows_changed() const { return rows_changed_ + rows_changed_on_device(); }
  uint64_t rows_changed_on_host() const noexcept { return rows_changed_; }
  uint64_t rows_changed_on_device() const;

 private:
  void check_width(int64_t width) const;  // InvalidArgumentError unless width == d_in
  void apply_row(float* x);
  void add_decoded_deltas(float* x, double scale) const;
  std::shared_ptr<const Sae> sae_;
  std::vector<SaeFeatureEdit> edits_;
  SaeGateOptions options_;
  std::vector<float> sae_in_, pre_, delta_;
  std::unique_ptr<cpu::ThreadPool> pool_;  // topk's full encode only
  uint64_t rows_changed_ = 0;
  std::unique_ptr<SaeGateDevice> device_;  // the device form, once prepare_device() made it
  int refused_device_ = -1;                // a device that has no device form for this gate
};

}  // namespace lathe::edit
