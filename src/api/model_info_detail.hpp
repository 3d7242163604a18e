// Per-format halves of inspect_model().
#pragma once

#include <filesystem>
#include <string>

#include "arch/hparams.hpp"
#include "lathe/model_info.hpp"

namespace lathe::detail {

void fill_hparams(ModelInfo& info, const HParams& hp);
ModelInfo inspect_gguf(const std::filesystem::path& path);
// A model directory, or a hub id resolved through the Hugging Face cache.
ModelInfo inspect_hf_dir(const std::string& path_or_hub_id);

}  // namespace lathe::detail
