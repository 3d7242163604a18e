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
  // Allow a non-empty directory: the export in it is replaced (see convert_gguf_to_hf).
  bool force = false;
  // Called after each tensor: (tensors done, tensors total, name of the tensor just written).
  std::function<void(size_t, size_t, const std::string&)> progress;
};

struct ConvertResult {
  std::vector<std::string> files_written;  // relative to out_dir
  std::vector<std::string> skipped;        // GGUF tensors with no Hugging Face counterpart (e.g. rope_freqs)
  uint64_t n_tensors = 0;
  uint64_t tensor_bytes = 0;
};

// The output directory is checked before any tensor is converted (not the input file or a file
// inside it, not an existing non-empty directory without force, its parent or itself writable).
// The export is written into a staging directory and moved into place at the end, so that a
// reader of out_dir never sees a partial export or a mix of two: a new directory appears complete;
// in an existing one (force) the previous export's weight files (model.safetensors,
// model-*-of-*.safetensors, model.safetensors.index.json) and the other files convert writes
// (config.json, generation_config.json, tokenizer.json, tokenizer_config.json) are replaced by
// exactly the new export's, other files are left alone (see StagedDirectory in io/output_path.hpp).
// Throws lathe::Error subclasses; never leaves a partial file or the staging directory behind,
// also when SIGINT/SIGTERM end the process.
ConvertResult convert_gguf_to_hf(const std::string& gguf_path, const ConvertOptions& options);

}  // namespace lathe
