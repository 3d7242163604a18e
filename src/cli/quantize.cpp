// lathe quantize IN.gguf OUT.gguf TYPE: re-encode a GGUF model's weight matrices (F32, F16, BF16,
// Q8_0, Q4_0, Q4_1), like llama-quantize.
#include <fmt/format.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "core/dtype.hpp"
#include "lathe/error.hpp"
#include "lathe/quantize.hpp"

namespace lathe::cli {

Runner add_quantize(CLI::App& app) {
  struct Options {
    std::string in, out, type;
    bool force = false, quiet = false;
  };
  auto opts = std::make_shared<Options>();
  auto* cmd = app.add_subcommand("quantize", "Write a copy of a GGUF model with its weight matrices in another type");
  cmd->add_option("input", opts->in, "GGUF file to read")->required();
  cmd->add_option("output", opts->out, "GGUF file to write (its directory must exist; never the input)")->required();
  cmd->add_option("type", opts->type, "Target type: F32, F16, BF16, Q8_0, Q4_0 or Q4_1")->required();
  cmd->add_flag("--force", opts->force, "Replace an existing output file");
  cmd->add_flag("-q,--quiet", opts->quiet, "No progress output");
  return [opts] {
    const auto target = dtype_from_name(opts->type);
    if (!target)
      throw InvalidArgumentError(
          fmt::format("quantize: '{}' is not a tensor type; use F32, F16, BF16, Q8_0, Q4_0 or Q4_1", opts->type));
    std::map<std::string, size_t> written_as;  // type name -> tensor count
    std::vector<std::string> fallbacks;
    QuantizeOptions options;
    options.force = opts->force;
    ItemProgress progress;
    options.progress = [&, quiet = opts->quiet](const QuantizedTensor& t) {
      ++written_as[std::string(dtype_name(t.to))];
      if (t.fallback) fallbacks.push_back(t.name);
      if (!quiet)
        progress.update(t.index, t.total, fmt::format("{:<32} {:>5} -> {:<5}", t.name, dtype_name(t.from), dtype_name(t.to)));
    };
    quantize_gguf(opts->in, opts->out, *target, options);

    std::string counts;
    for (const auto& [name, n] : written_as) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", n, name);
    fmt::print("wrote {} ({}): {}\n", opts->out, human_bytes(std::filesystem::file_size(opts->out)),
               counts.empty() ? "no tensors" : counts);
    if (!fallbacks.empty()) {
      fmt::print("{} tensors kept in F16 (rows not a multiple of the {} block of {}):", fallbacks.size(),
                 dtype_name(*target), dtype_info(*target).block_size);
      for (const auto& name : fallbacks) fmt::print(" {}", name);
      fmt::print("\n");
    }
    return 0;
  };
}

}  // namespace lathe::cli
