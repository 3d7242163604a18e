#include "arch/hparams.hpp"

#include <fmt/format.h>

#include <cmath>

#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace lathe {

std::string_view arch_name(Arch arch) noexcept {
  switch (arch) {
    case Arch::Llama: return "llama";
    case Arch::Qwen2: return "qwen2";
    case Arch::Qwen3: return "qwen3";
    case Arch::Phi3: return "phi3";
    case Arch::Qwen2Moe: return "qwen2moe";
    case Arch::Qwen3Moe: return "qwen3moe";
    case Arch::Olmoe: return "olmoe";
  }
  return "?";
}

std::string supported_arch_list() {
  return "llama (also mistral, smollm, mixtral), qwen2, qwen3, phi3, qwen2moe (qwen2_moe), qwen3moe (qwen3_moe), olmoe";
}

Arch arch_from_name(std::string_view name, std::string_view source) {
  if (name == "llama" || name == "mistral" || name == "mixtral") return Arch::Llama;
  if (name == "qwen2") return Arch::Qwen2;
  if (name == "qwen3") return Arch::Qwen3;
  if (name == "phi3") return Arch::Phi3;
  if (name == "qwen2moe" || name == "qwen2_moe") return Arch::Qwen2Moe;
  if (name == "qwen3moe" || name == "qwen3_moe") return Arch::Qwen3Moe;
  if (name == "olmoe") return Arch::Olmoe;
  throw UnsupportedError(fmt::format("{}: architecture '{}' is not supported; supported: {}", source, name,
                                     supported_arch_list()));
}

void refuse_moe(const HParams& hp, std::string_view source, std::string_view what) {
  if (!hp.is_moe()) return;
  throw UnsupportedError(fmt::format("{}: {} does not support mixture-of-experts models yet ({}, {} experts, {} per "
                                     "token); run it with lathe run/chat/bench/serve on the CPU (--device cpu)",
                                     source, what, arch_name(hp.arch), hp.n_expert, hp.n_expert_used));
}

namespace {

uint32_t to_u32(uint64_t v, const std::string& what) {
  if (v > UINT32_MAX) throw FormatError(fmt::format("{}: value {} is too large; the file is corrupt", what, v));
  return static_cast<uint32_t>(v);
}

// Fills derived fields and rejects values no model can have (zero sizes, heads not dividing).
void finish_and_validate(HParams& hp, const std::string& source) {
  if (hp.n_head_kv == 0) hp.n_head_kv = hp.n_head;
  if (hp.head_dim == 0 && hp.n_head != 0) hp.head_dim = hp.n_embd / hp.n_head;
  if (hp.rope_dim == 0) hp.rope_dim = hp.head_dim;
  const auto bad = [&](const char* field, const std::string& why) {
    throw FormatError(fmt::format("{}: {} {}; check that the file describes a complete model", source, field, why));
  };
  if (hp.n_layer == 0) bad("block count", "is 0");
  if (hp.n_embd == 0) bad("embedding length", "is 0");
  if (hp.n_ff == 0) bad("feed-forward length", "is 0");
  if (hp.n_head == 0) bad("head count", "is 0");
  if (hp.n_head % hp.n_head_kv != 0)
    bad("head_count_kv", fmt::format("({}) does not divide head_count ({})", hp.n_head_kv, hp.n_head));
  if (hp.head_dim == 0 || hp.head_dim % 2 != 0) bad("head dimension", fmt::format("({}) must be even and > 0", hp.head_dim));
  if (hp.rope_dim > hp.head_dim) bad("rope dimension", fmt::format("({}) exceeds the head dimension ({})", hp.rope_dim, hp.head_dim));
  if (!(hp.rms_eps > 0.0f)) bad("rms epsilon", "must be > 0");
  if (!(hp.rope_freq_base > 0.0f)) bad("rope frequency base", "must be > 0");
  const bool moe_arch = hp.arch == Arch::Qwen2Moe || hp.arch == Arch::Qwen3Moe || hp.arch == Arch::Olmoe;
  if (moe_arch && hp.n_expert == 0) bad("expert count", fmt::format("is 0 but {} is a mixture of experts", arch_name(hp.arch)));
  if (hp.n_expert > 0) {
    if (hp.n_expert > 4096) bad("expert count", fmt::format("({}) is more than lathe supports (4096)", hp.n_expert));
    if (hp.n_expert_used == 0 || hp.n_expert_used > hp.n_expert)
      bad("experts used per token", fmt::format("({}) must be in 1..expert count ({})", hp.n_expert_used, hp.n_expert));
    if (hp.n_ff_exp == 0) hp.n_ff_exp = hp.n_ff;
    if (!std::isfinite(hp.expert_weights_scale) || hp.expert_weights_scale < 0)
      bad("expert weights scale", fmt::format("({}) must be a finite number >= 0", hp.expert_weights_scale));
  }
}

// The mixture-of-experts fields of a config.json (transformers' names per model_type).
template <class OptionalU32, class RequiredU32>
void read_hf_experts(const nlohmann::json& config, const std::string& model_type, const std::string& source,
                     HParams& hp, const OptionalU32& optional_u32, const RequiredU32& u32_field) {
  const auto boolean = [&](const char* field, bool fallback) {
    const auto it = config.find(field);
    if (it == config.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) throw FormatError(fmt::format("{}: field '{}' must be true or false; fix config.json", source, field));
    return it->get<bool>();
  };
  if (model_type == "mixtral") {
    hp.n_expert = u32_field("num_local_experts");
    hp.n_expert_used = u32_field("num_experts_per_tok");
    hp.n_ff_exp = hp.n_ff;
    hp.expert_weights_norm = true;  // Mixtral always renormalizes its top-2
  } else if (model_type == "qwen2_moe" || model_type == "qwen3_moe" || model_type == "olmoe") {
    // transformers 5 writes num_local_experts for qwen3_moe; the published configs say num_experts.
    hp.n_expert = config.contains("num_experts") ? u32_field("num_experts") : u32_field("num_local_experts");
    hp.n_expert_used = u32_field("num_experts_per_tok");
    hp.n_ff_exp = model_type == "olmoe" ? hp.n_ff : u32_field("moe_intermediate_size");
    if (model_type == "qwen2_moe") hp.n_ff_shexp = u32_field("shared_expert_intermediate_size");
    hp.expert_weights_norm = boolean("norm_topk_prob", false);
    // Qwen's MoE configs may make some layers dense; lathe's MoE layers are all sparse.
    if (optional_u32("decoder_sparse_step", 1) != 1)
      throw UnsupportedError(fmt::format("{}: decoder_sparse_step {} (dense layers between the sparse ones) is not "
                                         "supported; lathe runs models whose every layer is a mixture of experts",
                                         source, config.at("decoder_sparse_step").dump()));
    if (auto it = config.find("mlp_only_layers"); it != config.end() && it->is_array() && !it->empty())
      throw UnsupportedError(fmt::format("{}: mlp_only_layers {} (dense layers) is not supported; lathe runs models "
                                         "whose every layer is a mixture of experts",
                                         source, it->dump()));
    if (auto it = config.find("clip_qkv"); it != config.end() && !it->is_null())
      throw UnsupportedError(fmt::format("{}: clip_qkv {} is not supported", source, it->dump()));
  }
}

}  // namespace

HParams hparams_from_gguf(const gguf::File& file) {
  const std::string source = file.display_name();
  const auto& arch_value = file.get("general.architecture");
  const std::string& arch_str = arch_value.as_string(source + ": general.architecture");
  HParams hp;
  hp.arch = arch_from_name(arch_str, source + ": general.architecture");
  const auto key = [&](std::string_view k) { return fmt::format("{}.{}", arch_str, k); };
  const auto required_u32 = [&](std::string_view k) {
    const std::string full = key(k);
    return to_u32(file.get(full).as_u64(source + ": " + full), source + ": " + full);
  };
  const auto optional_u32 = [&](std::string_view k, uint32_t fallback) {
    const std::string full = key(k);
    const auto* v = file.find(full);
    return v ? to_u32(v->as_u64(source + ": " + full), source + ": " + full) : fallback;
  };
  const auto optional_f32 = [&](std::string_view k, float fallback) {
    const std::string full = key(k);
    const auto* v = file.find(full);
    return v ? static_cast<float>(v->as_f64(source + ": " + full)) : fallback;
  };
  hp.n_layer = required_u32("block_count");
  hp.n_embd = required_u32("embedding_length");
  hp.n_ff = required_u32("feed_forward_length");
  hp.n_head = required_u32("attention.head_count");
  hp.n_head_kv = optional_u32("attention.head_count_kv", hp.n_head);
  hp.head_dim = optional_u32("attention.key_length", 0);
  hp.rope_dim = optional_u32("rope.dimension_count", 0);
  hp.n_ctx_train = optional_u32("context_length", 0);
  hp.rms_eps = optional_f32("attention.layer_norm_rms_epsilon", 1e-5f);
  hp.rope_freq_base = optional_f32("rope.freq_base", 10000.0f);
  hp.n_expert = optional_u32("expert_count", 0);
  hp.n_expert_used = optional_u32("expert_used_count", 0);
  hp.n_ff_exp = optional_u32("expert_feed_forward_length", 0);
  hp.n_ff_shexp = optional_u32("expert_shared_feed_forward_length", 0);
  hp.expert_weights_scale = optional_f32("expert_weights_scale", 0.0f);
  // Whether the chosen experts' probabilities are renormalized: llama.cpp's graphs fix it per
  // architecture (llama with experts, i.e. Mixtral, and qwen3moe do; qwen2moe and olmoe do not);
  // an explicit expert_weights_norm key wins.
  hp.expert_weights_norm = hp.arch == Arch::Llama || hp.arch == Arch::Qwen3Moe;
  if (const auto* norm = file.find(key("expert_weights_norm"))) hp.expert_weights_norm = norm->as_bool(source + ": " + key("expert_weights_norm"));
  if (hp.arch == Arch::Qwen2Moe && hp.n_expert > 0 && hp.n_ff_shexp == 0) hp.n_ff_shexp = hp.n_ff;
  uint32_t vocab = optional_u32("vocab_size", 0);
  if (vocab == 0) {
    if (const auto* tokens = file.find("tokenizer.ggml.tokens"))
      vocab = static_cast<uint32_t>(tokens->as_array(source + ": tokenizer.ggml.tokens").items.size());
  }
  hp.n_vocab = vocab;
  hp.tied_embeddings = file.find_tensor("output.weight") == nullptr;
  if (const auto* type = file.find(key("rope.scaling.type"))) {
    RopeScaling rs;
    rs.type = type->as_string(source + ": " + key("rope.scaling.type"));
    rs.factor = optional_f32("rope.scaling.factor", 1.0f);
    rs.original_context = optional_u32("rope.scaling.original_context_length", 0);
    if (rs.type != "none") hp.rope_scaling = rs;
  } else if (file.find_tensor("rope_freqs.weight") != nullptr) {
    // llama.cpp bakes llama3 scaling into a rope_freqs tensor; parameters are not in metadata.
    hp.rope_scaling = RopeScaling{.type = "llama3 (rope_freqs tensor)"};
  }
  finish_and_validate(hp, source);
  return hp;
}

HParams hparams_from_hf_config(const nlohmann::json& config, const std::string& source) {
  if (!config.is_object()) throw FormatError(fmt::format("{}: config.json is not a JSON object; re-download the model", source));
  const auto require = [&](const char* field) -> const nlohmann::json& {
    const auto it = config.find(field);
    if (it == config.end() || !it->is_number_unsigned())
      throw FormatError(fmt::format("{}: required field '{}' is {} (expected a non-negative integer); "
                                    "re-download the model or fix config.json",
                                    source, field, it == config.end() ? "missing" : "not an unsigned integer"));
    return *it;
  };
  const auto u32_field = [&](const char* field) { return to_u32(require(field).get<uint64_t>(), source + ": " + field); };
  const auto optional_u32 = [&](const char* field, uint32_t fallback) {
    const auto it = config.find(field);
    return (it == config.end() || it->is_null()) ? fallback : u32_field(field);
  };
  const auto optional_f32 = [&](const char* field, float fallback) {
    const auto it = config.find(field);
    if (it == config.end() || it->is_null()) return fallback;
    if (!it->is_number())
      throw FormatError(fmt::format("{}: field '{}' must be a number; fix config.json", source, field));
    return it->get<float>();
  };
  std::string model_type;
  if (auto it = config.find("model_type"); it != config.end() && it->is_string()) {
    model_type = it->get<std::string>();
  } else {
    throw FormatError(fmt::format("{}: required field 'model_type' is missing; re-download the model or add it to "
                                  "config.json (one of: {})",
                                  source, supported_arch_list()));
  }
  HParams hp;
  hp.arch = arch_from_name(model_type, source + ": model_type");
  hp.n_layer = u32_field("num_hidden_layers");
  hp.n_embd = u32_field("hidden_size");
  hp.n_ff = u32_field("intermediate_size");
  hp.n_head = u32_field("num_attention_heads");
  hp.n_head_kv = optional_u32("num_key_value_heads", hp.n_head);
  hp.head_dim = optional_u32("head_dim", 0);
  hp.n_vocab = u32_field("vocab_size");
  hp.n_ctx_train = optional_u32("max_position_embeddings", 0);
  hp.rms_eps = optional_f32("rms_norm_eps", 1e-6f);
  hp.rope_freq_base = optional_f32("rope_theta", 10000.0f);
  // transformers >= 5 writes RoPE settings as one "rope_parameters" object (rope_theta, rope_type
  // and the scaling fields); earlier versions use top-level rope_theta and a "rope_scaling" object.
  const nlohmann::json* rope_parameters = nullptr;
  if (auto it = config.find("rope_parameters"); it != config.end() && it->is_object()) rope_parameters = &*it;
  if (rope_parameters != nullptr) {
    if (auto theta = rope_parameters->find("rope_theta"); theta != rope_parameters->end()) {
      if (!theta->is_number())
        throw FormatError(fmt::format("{}: field 'rope_parameters.rope_theta' must be a number; fix config.json", source));
      hp.rope_freq_base = theta->get<float>();
    }
  }
  if (auto it = config.find("tie_word_embeddings"); it != config.end() && it->is_boolean())
    hp.tied_embeddings = it->get<bool>();
  if (hp.arch == Arch::Phi3) {
    const float partial = optional_f32("partial_rotary_factor", 1.0f);
    const uint32_t head_dim = hp.head_dim ? hp.head_dim : (hp.n_head ? hp.n_embd / hp.n_head : 0);
    hp.rope_dim = static_cast<uint32_t>(static_cast<float>(head_dim) * partial);
  }
  read_hf_experts(config, model_type, source, hp, optional_u32, u32_field);
  const nlohmann::json* scaling = rope_parameters;
  if (auto it = config.find("rope_scaling"); it != config.end() && it->is_object()) scaling = &*it;
  if (scaling != nullptr) {
    RopeScaling rs;
    const auto& s = *scaling;
    rs.type = s.value("rope_type", s.value("type", std::string("unknown")));
    rs.factor = s.value("factor", 1.0f);
    rs.low_freq_factor = s.value("low_freq_factor", 1.0f);
    rs.high_freq_factor = s.value("high_freq_factor", 4.0f);
    rs.original_context = s.value("original_max_position_embeddings", 0u);
    if (rs.type != "default") hp.rope_scaling = rs;
  }
  finish_and_validate(hp, source);
  return hp;
}

nlohmann::json hf_config_from_hparams(const HParams& hp, std::optional<uint32_t> bos_id, std::optional<uint32_t> eos_id) {
  refuse_moe(hp, "config.json", "writing a Hugging Face configuration");
  static constexpr const char* kArchitectures[] = {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                                   "Phi3ForCausalLM"};
  nlohmann::json c;
  c["architectures"] = {kArchitectures[static_cast<int>(hp.arch)]};
  c["model_type"] = std::string(arch_name(hp.arch));
  c["hidden_size"] = hp.n_embd;
  c["intermediate_size"] = hp.n_ff;
  c["num_hidden_layers"] = hp.n_layer;
  c["num_attention_heads"] = hp.n_head;
  c["num_key_value_heads"] = hp.n_head_kv;
  c["head_dim"] = hp.head_dim;
  c["vocab_size"] = hp.n_vocab;
  c["max_position_embeddings"] = hp.n_ctx_train;
  c["rms_norm_eps"] = hp.rms_eps;
  c["rope_theta"] = hp.rope_freq_base;
  c["tie_word_embeddings"] = hp.tied_embeddings;
  c["hidden_act"] = "silu";
  c["torch_dtype"] = "float32";
  if (hp.arch == Arch::Qwen2) c["attention_bias"] = true;
  if (hp.arch == Arch::Phi3 && hp.rope_dim != hp.head_dim)
    c["partial_rotary_factor"] = static_cast<double>(hp.rope_dim) / hp.head_dim;
  if (bos_id) c["bos_token_id"] = *bos_id;
  if (eos_id) c["eos_token_id"] = *eos_id;
  if (hp.rope_scaling && hp.rope_scaling->type == "llama3") {
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", hp.rope_scaling->factor},
                         {"low_freq_factor", hp.rope_scaling->low_freq_factor},
                         {"high_freq_factor", hp.rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", hp.rope_scaling->original_context}};
  }
  return c;
}

}  // namespace lathe
