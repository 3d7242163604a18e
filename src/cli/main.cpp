// lathe: the command-line front door. Errors from anywhere below surface here as
// "error: <message>" and a non-zero exit code.
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <string>
#include <string_view>
#include <exception>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "lathe/error.hpp"

namespace {

// CLI11 reads integers with strtoll/strtoull in base 0: "-1" wraps into an unsigned option,
// out-of-range numbers saturate and "010" is octal. Every integer option of every command is
// checked first: decimal digits (a sign only where negatives can be stored), within the option's
// type, and rewritten in canonical form ("010" -> "10") for CLI11 to read; the command then checks
// its own range, naming the flag.
std::string check_integer(std::string& text, bool is_unsigned) {
  std::string_view digits = text;
  if (!digits.empty() && digits.front() == '+') digits.remove_prefix(1);
  const char* end = digits.data() + digits.size();
  std::from_chars_result result{};
  std::string canonical;
  if (is_unsigned) {
    if (digits.starts_with('-')) return fmt::format("{} is negative; it must be a whole number >= 0", text);
    uint64_t value = 0;
    result = std::from_chars(digits.data(), end, value, 10);
    canonical = std::to_string(value);
  } else {
    int64_t value = 0;
    result = std::from_chars(digits.data(), end, value, 10);
    canonical = std::to_string(value);
  }
  if (digits.empty() || (result.ec != std::errc() && result.ec != std::errc::result_out_of_range) || result.ptr != end)
    return fmt::format("'{}' is not a whole decimal number", text);
  if (result.ec == std::errc::result_out_of_range) return fmt::format("{} is out of range (far too large)", text);
  text = canonical;
  return {};
}

std::string check_boolean(const std::string& text) {
  std::string lower;
  for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* word : {"true", "false", "1", "0", "yes", "no", "on", "off"})
    if (lower == word) return {};
  return fmt::format("'{}' is not true or false", text);
}

void check_numbers_strictly(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({})) {
    for (CLI::Option* option : sub->get_options()) {
      if (option->get_type_size_max() == 0) continue;  // a flag
      const std::string type = option->get_type_name();
      if (type == "INT" || type == "UINT") {
        const bool is_unsigned = type == "UINT";
        option->transform(CLI::Validator([is_unsigned](std::string& text) { return check_integer(text, is_unsigned); }, ""));
      } else if (type == "BOOLEAN") {
        option->check(CLI::Validator([](std::string& text) { return check_boolean(text); }, ""));
      }
    }
  }
}

}  // namespace

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
  add(lathe::cli::add_ablate_eval);
  add(lathe::cli::add_finetune);
  add(lathe::cli::add_unlearn);
  add(lathe::cli::add_score);
  add(lathe::cli::add_serve);
  add(lathe::cli::add_stats);
  add(lathe::cli::add_study);
  add(lathe::cli::add_sae_train), add(lathe::cli::add_sae_eval);
  add(lathe::cli::add_sae_select);

  // A first word that is not an option names a command: say so when lathe has none of that name
  // (CLI11 would only call it an unexpected argument).
  if (argc > 1 && argv[1][0] != '-') {
    std::string names;
    bool known = false;
    for (const auto& [sub, run] : commands) {
      known = known || sub->check_name(argv[1]);
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      fmt::print(stderr, "error: unknown command '{}'; the commands are {} (see `lathe --help`)\n", argv[1], names);
      return 1;
    }
  }
  check_numbers_strictly(app);
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
  } catch (const std::filesystem::filesystem_error& e) {
    // The file system refused an operation (a link loop, a permission, a vanished file): the
    // user's path and the system's reason, like any other error.
    std::fflush(stdout);
    std::string paths = e.path1().string();
    if (!e.path2().empty()) paths += ", " + e.path2().string();
    fmt::print(stderr, "error: {}{}\n", paths.empty() ? "" : paths + ": ", e.code().message());
    return 1;
  } catch (const std::system_error& e) {
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
