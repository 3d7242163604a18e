// One file per subcommand; each registers itself on the CLI11 app and returns the exit code
// through the callback it installs.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace lathe::cli {

using Runner = std::function<int()>;

// Each add_* creates its subcommand on `app` and returns the function main() calls when that
// subcommand was chosen.
Runner add_inspect(CLI::App& app);
Runner add_convert(CLI::App& app);
Runner add_devices(CLI::App& app);
Runner add_template(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_detokenize(CLI::App& app);
Runner add_quantize(CLI::App& app);
Runner add_run(CLI::App& app);
Runner add_chat(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_cvector(CLI::App& app);
Runner add_ablate(CLI::App& app);
Runner add_ablate_eval(CLI::App& app);
Runner add_finetune(CLI::App& app);
Runner add_unlearn(CLI::App& app);
Runner add_score(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_stats(CLI::App& app);
Runner add_study(CLI::App& app);
Runner add_sae_train(CLI::App& app); Runner add_sae_eval(CLI::App& app); Runner add_sae_select(CLI::App& app);

}  // namespace lathe::cli
