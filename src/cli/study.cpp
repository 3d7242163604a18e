// lathe study CONFIG.toml: an unlearning study, arms x seeds, trained, evaluated and reported with
// intervals and adjusted tests (study/). The journal in the output directory makes it resumable:
// run the same command again after Ctrl-C or a crash and only the missing runs are done.
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "lathe/error.hpp"
#include "study/config.hpp"
#include "study/report.hpp"
#include "study/runner.hpp"

namespace lathe::cli {
namespace {

namespace fs = std::filesystem;

struct StudyArgs {
  std::string config, out;
  bool restart = false;
  int64_t threads = 0;
};

std::atomic<bool> g_stop_study{false};
extern "C" void on_study_sigint(int) { g_stop_study.store(true); }

// The output directory: OUT, or CONFIG's name without extension + ".study" beside it. It must
// be new, empty or a study's own (it holds journal.jsonl): nothing else in it is ever touched,
// but a directory of other files is most likely a mistyped path.
fs::path output_directory(const StudyArgs& a) {
  const fs::path config(a.config);
  const fs::path out = a.out.empty() ? config.parent_path() / (config.stem().string() + ".study") : fs::path(a.out);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec))
      throw InvalidArgumentError(fmt::format("--out {}: exists and is not a directory; give a directory", out.string()));
    if (!fs::is_empty(out, ec) && !fs::exists(out / "journal.jsonl", ec))
      throw InvalidArgumentError(fmt::format("--out {}: a directory of other files (no journal.jsonl); give a new or "
                                             "empty directory, or the one a study wrote",
                                             out.string()));
  }
  return out;
}

int study(const StudyArgs& a) {
  if (a.threads < 0 || a.threads > 4096)
    throw InvalidArgumentError(fmt::format("-t/--threads {} must be in 0..4096 (0: one per physical core)", a.threads));
  const auto config = study::read_study_config(a.config);
  const fs::path out = output_directory(a);
  fmt::print(stderr, "study {}: {} arms x {} seeds, {} eval sets; output in {}\n", a.config, config.arms.size(),
             config.seeds.size(), config.evals.size(), out.string());
  g_stop_study.store(false);
  struct sigaction action {}, previous {};
  action.sa_handler = on_study_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and writes go on; the flag is checked between runs and steps
  ::sigaction(SIGINT, &action, &previous);
  std::vector<study::RunResult> results;
  try {
    results = study::run_study(config, {.out = out,
                                        .restart = a.restart,
                                        .n_threads = static_cast<int>(a.threads),
                                        .log = [](const std::string& line) { fmt::print(stderr, "{}\n", line); },
                                        .stop = &g_stop_study});
  } catch (...) {
    ::sigaction(SIGINT, &previous, nullptr);
    throw;
  }
  ::sigaction(SIGINT, &previous, nullptr);
  const auto report = study::build_report(config, results);
  study::write_report(report, out);
  fmt::print("{}", report.markdown);
  size_t failed = 0;
  for (const auto& r : results) failed += !r.ok;
  fmt::print(stderr, "wrote {}/report.md, report.json{}{}\n", out.string(), report.svg.empty() ? "" : ", plot.svg",
             failed ? fmt::format("; {} run(s) failed (see the report); run again to retry them", failed) : "");
  return failed ? 2 : 0;
}

}  // namespace

Runner add_study(CLI::App& app) {
  auto args = std::make_shared<StudyArgs>();
  auto* cmd = app.add_subcommand(
      "study",
      "Run an unlearning study: arms x seeds on forget/retain sets, evaluated on held-out sets, reported with BCa "
      "intervals across seeds and BH-adjusted paired tests (docs/STUDIES.md)");
  cmd->add_option("config", args->config, "the study's configuration (.toml or .json; see docs/STUDIES.md)")->required();
  cmd->add_option("-o,--out", args->out, "output directory (default: CONFIG's name + .study beside it)");
  cmd->add_flag("--restart", args->restart, "discard the directory's journal and run everything again");
  cmd->add_option("-t,--threads", args->threads, "CPU threads (0: one per physical core)")->capture_default_str();
  cmd->footer(
      "Exit status: 0 when every run succeeded, 2 when some failed (each is in the report with its error), 1 on an "
      "error.\nExample:\n  lathe study bench/study/tofu.toml");
  return [args]() -> int { return study(*args); };
}

}  // namespace lathe::cli
