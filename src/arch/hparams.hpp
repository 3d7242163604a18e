// Architecture hyper-parameters, read from GGUF metadata or a Hugging Face config.json, in one
// canonical form. Architectures: llama (Llama 2/3/3.1, Mistral, SmolLM; with experts: Mixtral),
// qwen2, qwen3, phi3, and the mixtures of experts qwen2moe, qwen3moe, olmoe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace lathe {
namespace gguf {
class File;
}

enum class Arch { Llama, Qwen2, Qwen3, Phi3, Qwen2Moe, Qwen3Moe, Olmoe };

// Names as GGUF spells them ("llama", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe", "olmoe").
std::string_view arch_name(Arch arch) noexcept;
// "llama, qwen2, qwen3, phi3" for error messages.
std::string supported_arch_list();
// GGUF general.architecture or HF model_type ("mistral" and "mixtral" map to Llama). Throws UnsupportedError
// naming `source` and listing the supported ones.
Arch arch_from_name(std::string_view name, std::string_view source);

struct RopeScaling {
  std::string type;  // "llama3", "linear", "yarn", ...
  float factor = 1.0f;
  float low_freq_factor = 1.0f, high_freq_factor = 4.0f;  // llama3
  uint32_t original_context = 0;
};

struct HParams {
  Arch arch = Arch::Llama;
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;       // hidden size
  uint32_t n_ff = 0;         // MLP intermediate size
  uint32_t n_head = 0;
  uint32_t n_head_kv = 0;
  uint32_t head_dim = 0;     // usually n_embd / n_head; Qwen3 sets it explicitly
  uint32_t rope_dim = 0;     // rotated dimensions per head (phi3 may rotate fewer)
  uint32_t n_vocab = 0;
  uint32_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  bool tied_embeddings = false;  // output projection reuses token embeddings
  std::optional<RopeScaling> rope_scaling;
  // Mixture of experts (0 experts: a dense model). Each layer's MLP is a router over n_expert
  // SwiGLU experts of n_ff_exp, of which the n_expert_used most probable run per token, their
  // outputs weighted by the router's softmax probabilities (renormalized over the chosen ones when
  // expert_weights_norm, then multiplied by expert_weights_scale unless it is 0 or 1); plus, with
  // n_ff_shexp > 0 (qwen2moe), a shared SwiGLU expert gated by sigmoid(w . x).
  uint32_t n_expert = 0;
  uint32_t n_expert_used = 0;
  uint32_t n_ff_exp = 0;
  uint32_t n_ff_shexp = 0;
  bool expert_weights_norm = false;
  float expert_weights_scale = 0.0f;
  bool is_moe() const noexcept { return n_expert > 0; }
};

// UnsupportedError for a mixture-of-experts model (a no-op for dense ones) where `what` cannot
// take one yet ("the CUDA backend", "training", ...); `source` names the model.
void refuse_moe(const HParams& hp, std::string_view source, std::string_view what);

// Reads "<arch>.*" keys. n_vocab falls back to the token list length; tied_embeddings is true
// when the file has no output.weight. Missing keys: FormatError naming the file and key.
HParams hparams_from_gguf(const gguf::File& file);
// Reads a config.json object; `source` (its path) names it in errors.
HParams hparams_from_hf_config(const nlohmann::json& config, const std::string& source);
// The inverse, for export: a config.json Hugging Face transformers can load.
nlohmann::json hf_config_from_hparams(const HParams& hp, std::optional<uint32_t> bos_id, std::optional<uint32_t> eos_id);

}  // namespace lathe
