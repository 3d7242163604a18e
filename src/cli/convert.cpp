#include "cli/commands.hpp"
#include "lathe/error.hpp"

namespace lathe::cli {
Runner add_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand("convert", "Show a model's architecture, hyper-parameters, tokenizer and tensors");
  auto path = std::make_shared<std::string>();
  cmd->add_option("model", *path, "GGUF file, model directory, or Hugging Face id (org/name)")->required();
  return [path] () -> int { throw UnsupportedError("convert: not implemented yet"); };
}
}  // namespace lathe::cli
