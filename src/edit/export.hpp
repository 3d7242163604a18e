// Writes an edited model back to disk in the format it was loaded from. Every tensor and metadata
// entry of the input is carried over unchanged, except the matrices made editable
// (weights/editable.hpp), whose bytes come from their writable buffers, in the same type (the
// caller re-quantizes first if it wants another one), plus the caller's metadata strings.
//
//  * GGUF file in  -> one GGUF file out: every metadata key and tensor of the input, in order.
//  * Hugging Face directory in -> a directory: the safetensors with the same sharding (shard names,
//    tensor placement, index json rewritten), `__metadata__` carrying the strings, and the side
//    files (config.json, generation_config.json, tokenizer files, ...) copied. Other weight files
//    (*.bin, *.pth, *.gguf...) are not copied: they would hold the unedited weights.
//
// The input is never overwritten: an output equal to the input is refused, as is an existing
// non-empty output unless force is set. A GGUF file is written to "OUT.tmp.PID" and renamed; a
// directory is written into a staging directory and moved into place as one unit
// (StagedDirectory, io/output_path.hpp): with force, an earlier export in it (its safetensors
// weights and index, stale ones included, and the files this export writes) is replaced, other
// files are kept, and no reader ever loads a mix of the two.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "weights/model_weights.hpp"

namespace lathe::edit {

struct ExportOptions {
  bool force = false;  // replace an existing output file / write into a non-empty output directory
  // e.g. {"lathe.ablation.params", json}: GGUF string KVs (replacing a key of the same name) or
  // safetensors __metadata__ entries (in every shard).
  std::vector<std::pair<std::string, std::string>> metadata;
  std::function<void(size_t done, size_t total)> progress;  // tensors written so far, of all
};

struct ExportResult {
  std::vector<std::filesystem::path> files;  // every file written (weights first, side files last)
  uint64_t bytes = 0;                        // their total size
  size_t n_edited_tensors = 0;               // tensors whose bytes came from a writable buffer
};

// Throws InvalidArgumentError (output path refused, naming it and the fix), NotFoundError/FormatError
// (the input changed since loading: an edited tensor is missing or differs in type/size), IoError.
ExportResult export_model(const ModelWeights& w, const std::filesystem::path& out, const ExportOptions& options = {});

}  // namespace lathe::edit
