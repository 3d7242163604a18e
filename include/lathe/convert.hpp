// Export a GGUF model as a Hugging Face model directory (safetensors + config.json + tokenizer
// config), dequantized to F32 (or F16/BF16), loadable by transformers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lathe {

struct ConvertOptions {
  std::string out_dir;
  std::string out_type = "F32";              // F32, F16 or BF16
  uint64_t max_shard_bytes = 5'000'000'000;  // like transformers' save_pretrained default
  bool force = false;                        // allow writing into a non-empty directory
  // Called after each tensor: (tensors done, tensors total, name of the tensor just written).
  std::function<void(size_t, size_t, const std::string&)> progress;
};

struct ConvertResult {
  std::vector<std::string> files_written;  // relative to out_dir
  std::vector<std::string> skipped;        // GGUF tensors with no Hugging Face counterpart (e.g. rope_freqs)
  uint64_t n_tensors = 0;
  uint64_t tensor_bytes = 0;
};

// Throws lathe::Error subclasses; never leaves a partially written file behind (each file is
// written to a temporary name and renamed into place).
ConvertResult convert_gguf_to_hf(const std::string& gguf_path, const ConvertOptions& options);

}  // namespace lathe
