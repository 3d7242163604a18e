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

// "2GB", "500MB", "123" (bytes). Decimal units like transformers' max_shard_size.
uint64_t parse_size(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  const std::string unit = text.substr(pos);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB" || unit == "kB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  const double bytes = value * scale;
  if (pos == 0 || scale == 0 || !(bytes >= 1) || !(bytes < 9e18))
    throw InvalidArgumentError(fmt::format("--max-shard-size '{}' is not a size from 1 byte to 9EB; use e.g. 2GB, 500MB "
                                           "or a byte count", text));
  return static_cast<uint64_t>(bytes);
}

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
    args->options.max_shard_bytes = parse_size(args->max_shard);
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
