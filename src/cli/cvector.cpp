// `lathe cvector MODEL --positive FILE --negative FILE -o OUT.gguf`: make a control vector from
// paired prompts (llama.cpp's cvector-generator; see edit/control_vector_train.hpp) and write it in
// llama.cpp's format, ready for `lathe run/chat --control-vector OUT.gguf:SCALE` or llama.cpp.
#include <fmt/format.h>
#include <unistd.h>

#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "cli/commands.hpp"
#include "cli/generation.hpp"
#include "edit/control_vector.hpp"
#include "edit/control_vector_train.hpp"
#include "edit/progress.hpp"
#include "edit/prompt_file.hpp"
#include "io/model_dir.hpp"
#include "io/output_path.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

struct CvectorArgs {
  std::string model, positive, negative, out, method = "mean", layers, column = "prompt";
  std::string system = ChatPromptOptions{}.system;
  bool no_template = false, force = false;
  int64_t limit = 0;
  ComputeArgs compute;
};

std::vector<std::string> read_prompt_set(const std::string& path, const CvectorArgs& args) {
  edit::PromptFileOptions options;
  options.column = args.column;
  options.limit = static_cast<size_t>(args.limit);
  return edit::read_prompts(path, options);
}

int cvector(const CvectorArgs& args) {
  require_non_negative("--limit", args.limit);
  edit::ControlVectorTraining training;
  training.method = edit::parse_direction_method(args.method);
  training.chat = {.system = args.system, .use_template = !args.no_template};
  training.compute = resolve_compute(args.compute);
  if (!args.layers.empty()) training.layers = edit::parse_layer_range(args.layers, "--layers");
  // The output is refused (it is an input, exists without --force, its directory is missing or not
  // writable) before the model is loaded or a prompt runs.
  check_output({.flag = "cvector: -o",
                .path = args.out,
                .kind = OutputRequest::Kind::File,
                .force = args.force,
                .inputs = {{"the input model", resolve_model_path(args.model)},
                           {"the input model", args.model},
                           {"the --positive file", args.positive},
                           {"the --negative file", args.negative}},
                .managed = {}});
  const auto positive = read_prompt_set(args.positive, args);
  const auto negative = read_prompt_set(args.negative, args);
  if (positive.size() != negative.size())
    throw InvalidArgumentError(fmt::format("{} has {} prompts but {} has {}; prompts are used in pairs, so give as "
                                           "many of each (or use --limit)",
                                           args.positive, positive.size(), args.negative, negative.size()));

  const auto model = Model::load(args.model);
  std::optional<edit::ProgressBar> bar;
  bar.emplace("cvector", positive.size(), std::cerr, ::isatty(STDERR_FILENO) != 0);
  training.progress = [&](size_t done, size_t total) {
    bar->update(done, fmt::format("prompt pair {}/{}", done, total));
  };
  const edit::ControlVector cv = edit::train_control_vector(model, positive, negative, training);
  bar->finish();
  edit::write_control_vector(args.out, cv);
  fmt::print("wrote {}: {} directions (direction.{}..direction.{}), n_embd {}, method {}, {} prompt pairs\n",
             args.out, cv.directions.size(), cv.directions.begin()->first, cv.directions.rbegin()->first, cv.n_embd,
             args.method, positive.size());
  return 0;
}

}  // namespace

Runner add_cvector(CLI::App& app) {
  auto args = std::make_shared<CvectorArgs>();
  auto* cmd = app.add_subcommand("cvector", "Make a control vector (llama.cpp format) from paired prompt files");
  cmd->add_option("model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  cmd->add_option("--positive", args->positive, "prompts of the behaviour to steer toward (.jsonl, .csv or .txt)")
      ->required();
  cmd->add_option("--negative", args->negative, "the paired prompts to steer away from (same count)")->required();
  cmd->add_option("-o,--output", args->out, "control vector GGUF to write (its directory must exist)")->required();
  cmd->add_flag("--force", args->force, "replace an existing output file");
  cmd->add_option("--method", args->method, "mean (of the paired differences) or pca (their first component)")
      ->capture_default_str();
  cmd->add_option("--system", args->system, "system message of the chat template (empty: none)")
      ->capture_default_str();
  cmd->add_flag("--no-template", args->no_template, "use the raw prompt text with BOS instead of the chat template");
  cmd->add_option("--column", args->column, "JSONL field / CSV column holding the prompt")->capture_default_str();
  cmd->add_option("--limit", args->limit, "use the first N prompts of each file; 0 = all")->capture_default_str();
  add_compute_flags(*cmd, args->compute, "where the prompts run: cpu, cuda or cuda:N");
  cmd->add_option("--layers", args->layers, "write directions for layers A-B only (default: 1..n_layer-1)");
  return [args]() -> int { return cvector(*args); };
}

}  // namespace lathe::cli
