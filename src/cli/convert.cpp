// lathe convert MODEL.gguf -o DIR: export to a Hugging Face directory (safetensors, config.json).
#include <fmt/format.h>

#include <memory>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "lathe/convert.hpp"
#include "lathe/error.hpp"

namespace lathe::cli {
namespace {

struct ConvertArgs {
  std::string model;
  ConvertOptions options;
  std::string max_shard = "5GB";
  bool quiet = false;
};

}  // namespace

Runner add_convert(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  auto* cmd = app.add_subcommand("convert", "Export a GGUF model as a Hugging Face safetensors directory");
  cmd->add_option("model", args->model, "GGUF file")->required();
  cmd->add_option("-o,--output", args->options.out_dir,
                  "Output directory (created; its parent must exist; must be empty unless --force)")
      ->required();
  cmd->add_option("--type", args->options.out_type, "Tensor type written: F32 (default), F16 or BF16");
  cmd->add_option("--max-shard-size", args->max_shard, "Largest shard, e.g. 5GB (default) or 500MB");
  cmd->add_flag("--force", args->options.force,
                "Replace the export in a non-empty output directory (its weights, config and tokenizer files; "
                "other files are kept)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress output");
  return [args] {
    args->options.max_shard_bytes = parse_size(args->max_shard, "--max-shard-size", uint64_t{9} << 60);
    if (!args->quiet) {
      args->options.progress = [progress = std::make_shared<ItemProgress>()](size_t done, size_t total,
                                                                            const std::string& name) {
        progress->update(done, total, name);
      };
    }
    const auto result = convert_gguf_to_hf(args->model, args->options);
    fmt::print("wrote {} tensors ({}) to {}:\n", result.n_tensors, human_bytes(result.tensor_bytes), args->options.out_dir);
    for (const auto& f : result.files_written) fmt::print("  {}\n", f);
    if (!result.skipped.empty()) {
      fmt::print("skipped {} tensors with no Hugging Face counterpart:", result.skipped.size());
      for (const auto& s : result.skipped) fmt::print(" {}", s);
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace lathe::cli
