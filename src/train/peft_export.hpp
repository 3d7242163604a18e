// Adapters in PEFT's format (what `PeftModel.from_pretrained(base, DIR)` loads): DIR holds
// adapter_config.json (peft_type LORA, r, lora_alpha, target_modules, ...) and
// adapter_model.safetensors with "base_model.model.<Hugging Face module>.lora_A.weight" [r x in]
// and ".lora_B.weight" [out x r] in float32. Q/K rows are written in Hugging Face's order (a model
// loaded from GGUF keeps llama.cpp's permuted order; its B rows are put back).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "train/lora_pass.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {

// Writes the two files into `dir` (created when missing; the caller checks it with check_output),
// each atomically. `base_model` goes to base_model_name_or_path, `lora_dropout` (the training's) to
// lora_dropout. UnsupportedError naming the matrix when a target has no Hugging Face module name.
// Returns the files written.
std::vector<std::filesystem::path> write_peft_adapter(const LoraSet<float>& lora, const ModelWeights& weights,
                                                      const std::filesystem::path& dir, const std::string& base_model,
                                                      double lora_dropout = 0);

}  // namespace lathe::train
