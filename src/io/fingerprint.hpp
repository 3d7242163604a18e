// Content fingerprints, to tell whether an input is still the one a result was computed from (the
// ablation journal identifies its model and prompt files this way).
#pragma once

#include <filesystem>
#include <string>

namespace lathe {

// "sha256:<hex>" over a model's identity, cheap for any size (a few MB read whatever the model's
// size): for each weight file (a GGUF file; the safetensors files of a Hugging Face directory, by
// name) its size, its whole header (GGUF: metadata and tensor table; safetensors: the JSON header)
// and three samples of up to 1 KiB (start, middle, end) of every tensor's data; for a directory also
// config.json, generation_config.json, tokenizer.json and tokenizer_config.json. Another model, a
// re-quantized or edited export (lathe's exports carry their edit in the metadata), a changed
// configuration all give another fingerprint; an edit of tensor bytes outside the samples that
// leaves the header alone does not. Throws the loaders' errors for a path that is not a model.
std::string model_fingerprint(const std::filesystem::path& model);

// "sha256:<hex>" of a whole file (the hex part equals `sha256sum FILE`). NotFoundError/IoError.
std::string file_fingerprint(const std::filesystem::path& file);

}  // namespace lathe
