// lathe: the command-line front door. Errors from anywhere below surface here as
// "error: <message>" and a non-zero exit code.
#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <exception>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "lathe/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"lathe: run, stream and edit open-weight LLMs"};
  app.set_version_flag("--version", std::string("lathe ") + LATHE_VERSION);
  app.require_subcommand(1);

  std::vector<std::pair<CLI::App*, lathe::cli::Runner>> commands;
  auto add = [&](lathe::cli::Runner (*adder)(CLI::App&)) {
    const size_t before = app.get_subcommands({}).size();
    auto runner = adder(app);
    commands.emplace_back(app.get_subcommands({}).at(before), std::move(runner));
  };
  add(lathe::cli::add_inspect);
  add(lathe::cli::add_convert);
  add(lathe::cli::add_devices);
  add(lathe::cli::add_template);
  add(lathe::cli::add_tokenize);
  add(lathe::cli::add_detokenize);
  add(lathe::cli::add_quantize);
  add(lathe::cli::add_run);
  add(lathe::cli::add_chat);
  add(lathe::cli::add_bench);
  add(lathe::cli::add_cvector);
  add(lathe::cli::add_ablate);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Bad command lines get the same "error: ..." form as every other failure, and exit 1.
    fmt::print(stderr, "error: {}; see `{} --help`\n", e.what(), argc > 1 ? "lathe " + std::string(argv[1]) : "lathe");
    return 1;
  }
  try {
    for (auto& [sub, run] : commands)
      if (sub->parsed()) return run();
  } catch (const lathe::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: internal: {} (please report this)\n", e.what());
    return 1;
  }
  return 0;
}
