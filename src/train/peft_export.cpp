#include "train/peft_export.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <set>

#include "arch/tensor_names.hpp"
#include "io/mapped_file.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace lathe::train {
namespace {

constexpr std::string_view kWeightSuffix = ".weight";

// "model.layers.3.self_attn.q_proj" for blk.3.attn_q (the module PEFT wraps).
std::string hf_module(const ModelWeights& w, uint32_t layer, const std::string& target) {
  const std::string canonical = fmt::format("blk.{}.{}.weight", layer, target);
  const auto hf = canonical_to_hf_name(w.hp.arch, canonical);
  if (!hf || !hf->ends_with(kWeightSuffix))
    throw UnsupportedError(fmt::format("{} has no Hugging Face module name for this architecture, so the adapter "
                                       "cannot be written for PEFT; write the GGUF adapter only",
                                       canonical));
  return hf->substr(0, hf->size() - kWeightSuffix.size());
}

std::span<const uint8_t> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

}  // namespace

std::vector<std::filesystem::path> write_peft_adapter(const LoraSet<float>& lora, const ModelWeights& weights,
                                                      const std::filesystem::path& dir, const std::string& base_model,
                                                      double lora_dropout) {
  std::vector<std::vector<float>> b_hf;  // B in Hugging Face row order, alive until the write
  b_hf.reserve(lora.pairs.size());
  std::set<std::string> modules;
  safetensors::Writer writer;
  for (const auto& p : lora.pairs) {
    const std::string module = hf_module(weights, p.layer, p.target);
    modules.insert(module.substr(module.rfind('.') + 1));
    b_hf.push_back(p.b);
    const std::string canonical = fmt::format("blk.{}.{}.weight", p.layer, p.target);
    if (const auto heads = qk_permute_heads(weights.hp, canonical); heads && weights.format == "gguf")
      permute_qk_rows_hf_from_gguf(b_hf.back(), static_cast<uint64_t>(p.out), static_cast<uint64_t>(lora.rank), *heads);
    const std::string prefix = "base_model.model." + module;
    writer.add_tensor(prefix + ".lora_A.weight", DType::F32,
                      {static_cast<uint64_t>(lora.rank), static_cast<uint64_t>(p.in)}, bytes_of(p.a));
    writer.add_tensor(prefix + ".lora_B.weight", DType::F32,
                      {static_cast<uint64_t>(p.out), static_cast<uint64_t>(lora.rank)}, bytes_of(b_hf.back()));
  }
  writer.set_metadata("format", "pt");
  const nlohmann::json config = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", base_model},
      {"r", lora.rank},
      {"lora_alpha", lora.alpha},
      {"lora_dropout", lora_dropout},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
  };
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError(fmt::format("{}: cannot create the PEFT adapter directory ({})", dir.string(), ec.message()));
  const auto weights_path = dir / "adapter_model.safetensors", config_path = dir / "adapter_config.json";
  writer.write(weights_path);
  const std::string text = config.dump(2) + "\n";
  AtomicFileWriter out(config_path);
  out.write(text.data(), text.size());
  out.commit();
  return {weights_path, config_path};
}

}  // namespace lathe::train
