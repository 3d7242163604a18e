// lathe ablate MODEL: remove a model's refusal direction with the least damage, found by a
// multi-objective TPE search over the ablation parameters (refusal rate vs KL divergence), with a
// resumable journal, a Pareto table and plot, and export of the chosen trial.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "edit/export.hpp"
#include "edit/journal.hpp"
#include "edit/pareto_plot.hpp"
#include "edit/progress.hpp"
#include "edit/prompt_file.hpp"
#include "edit/study.hpp"
#include "io/fingerprint.hpp"
#include "io/model_dir.hpp"
#include "io/output_path.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

namespace fs = std::filesystem;

fs::path data_dir() {
  if (const char* env = std::getenv("LATHE_DATA_DIR"); env != nullptr && *env != '\0') return env;
  return LATHE_DEFAULT_DATA_DIR;
}

struct AblateOptions {
  std::string model;
  std::string harmful_train, harmless_train, harmful_val, harmless_val;
  size_t train_limit = 256, harmful_val_limit = 0, harmless_val_limit = 100;
  std::string system = "You are a helpful assistant.";
  bool no_template = false, no_orthogonalize = false, norm_preserving = false, per_layer = false;
  std::vector<std::string> components{"attn_output", "mlp_down"};
  int trials = 200, startup = 60;
  uint64_t seed = 0;
  std::string journal, plot, out, refusal_markers;
  int export_trial = -1;
  uint32_t kl_tokens = 1;  // --kl-tokens: KL over the first K positions of the original's continuation
  std::string lora_out;  // --lora-out: the chosen trial as a LoRA adapter
  int lora_rank = 3;     // --lora-rank: the norm-preserving edit's adapter rank
  double max_kl = 0.5;
  int32_t max_new_tokens = 100;
  uint32_t n_parallel = 16;
  bool cache_weights = true, force = false, restart = false, bench_restore = false;
  ComputeArgs compute;
};

std::string params_text(const std::map<std::string, double>& params) {
  std::string s;
  for (const auto& [k, v] : params) s += fmt::format("{}{}={:.3f}", s.empty() ? "" : " ", k, v);
  return s;
}

// The trial to export: the given number, or the front point with the fewest refusals whose KL
// is at most max_kl (the lowest-KL point when none qualifies).
const edit::Trial& choose_trial(const std::vector<edit::Trial>& trials, const std::vector<size_t>& front, int number,
                                double max_kl) {
  if (number >= 0) {
    for (const auto& t : trials)
      if (t.number == number && t.completed()) return t;
    throw NotFoundError(fmt::format("trial {} is not a completed trial of this study", number));
  }
  if (front.empty()) throw InvalidArgumentError("no completed trial to export");
  const edit::Trial* best = nullptr;
  for (size_t i : front) {
    const auto& t = trials[i];
    if (t.values[1] > max_kl) continue;
    if (best == nullptr || t.values[0] < best->values[0] || (t.values[0] == best->values[0] && t.values[1] < best->values[1]))
      best = &t;
  }
  if (best != nullptr) return *best;
  best = &trials[front.front()];
  for (size_t i : front)
    if (trials[i].values[1] < best->values[1]) best = &trials[i];
  return *best;
}

void print_front(const std::vector<edit::Trial>& trials, const std::vector<size_t>& front, size_t n_harmful) {
  fmt::print("\nPareto front ({} of {} trials):\n", front.size(), trials.size());
  fmt::print("{:>6}  {:>9}  {:>8}  {:>10}\n", "trial", "refusals", "rate", "KL");
  for (size_t i : front) {
    const auto& t = trials[i];
    fmt::print("{:>6}  {:>5}/{:<3}  {:>7.1f}%  {:>10.4f}\n", t.number,
               static_cast<size_t>(std::lround(t.values[0] * n_harmful)), n_harmful, 100 * t.values[0], t.values[1]);
  }
}

// Every option's range, before anything is read.
void check_options(const AblateOptions& o) {
  if (o.trials < 0) throw InvalidArgumentError(fmt::format("--trials must be >= 0 (got {})", o.trials));
  if (o.startup < 0) throw InvalidArgumentError(fmt::format("--startup must be >= 0 (got {})", o.startup));
  if (o.max_new_tokens < 1) throw InvalidArgumentError("--max-new-tokens must be at least 1");
  if (o.n_parallel < 1 || o.n_parallel > 4096)
    throw InvalidArgumentError(fmt::format("--n-parallel {} is out of range: it must be in 1..4096", o.n_parallel));
  if (!std::isfinite(o.max_kl) || o.max_kl < 0)
    throw InvalidArgumentError(fmt::format("--max-kl must be a number >= 0 (got {})", o.max_kl));
  if (o.export_trial < -1)
    throw InvalidArgumentError(fmt::format("--export-trial must be a trial number >= 0 (got {})", o.export_trial));
  if (o.export_trial >= 0 && o.out.empty() && o.lora_out.empty())
    throw InvalidArgumentError(fmt::format("--export-trial {} needs --out PATH (the edited model) or --lora-out FILE "
                                           "(the edit as a LoRA adapter) to write the trial to",
                                           o.export_trial));
  if (o.kl_tokens < 1 || o.kl_tokens > 1024)
    throw InvalidArgumentError(fmt::format("--kl-tokens {} is out of range: it must be in 1..1024", o.kl_tokens));
  if (o.lora_rank < 1 || o.lora_rank > 64)
    throw InvalidArgumentError(fmt::format("--lora-rank {} is out of range: it must be in 1..64", o.lora_rank));
  if (o.components.empty()) throw InvalidArgumentError("--components is empty; give attn_output, mlp_down or both");
}

[[noreturn]] void throw_no_such_trial(int trial, int n_trials) {
  throw InvalidArgumentError(fmt::format("--export-trial {} cannot exist: this study will have {}; choose one of them or "
                                         "raise --trials",
                                         trial, n_trials == 0 ? std::string("no trials")
                                                              : fmt::format("trials 0 to {}", n_trials - 1)));
}

// "models/x.gguf" -> "x.gguf", also for a directory given with a trailing separator.
std::string base_name(const fs::path& path) {
  fs::path p = path.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

int run_ablate(const AblateOptions& o) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  check_options(o);
  const auto dir = data_dir() / "prompts";
  auto pick = [&](const std::string& given, const char* name) { return given.empty() ? dir / name : fs::path(given); };

  edit::StudyOptions so;
  so.harmful_train = pick(o.harmful_train, "harmful_train.jsonl");
  so.harmless_train = pick(o.harmless_train, "harmless_train.jsonl");
  so.harmful_val = pick(o.harmful_val, "harmful_val.jsonl");
  so.harmless_val = pick(o.harmless_val, "harmless_val.jsonl");
  so.train_limit = o.train_limit;
  so.harmful_val_limit = o.harmful_val_limit;
  so.harmless_val_limit = o.harmless_val_limit;
  so.chat = {.system = o.system, .use_template = !o.no_template};
  so.orthogonalize = !o.no_orthogonalize;
  so.norm_preserving = o.norm_preserving;
  so.per_layer_directions = o.per_layer;
  so.components.clear();
  for (const auto& c : o.components) so.components.push_back(parse_component(c));
  so.cache_weights = o.cache_weights;
  so.evaluation.max_new_tokens = o.max_new_tokens;
  so.evaluation.n_parallel = o.n_parallel;
  so.evaluation.kl_tokens = o.kl_tokens;
  so.compute = resolve_compute(o.compute);
  so.evaluation.compute = so.compute;
  if (!o.refusal_markers.empty()) so.evaluation.refusal_markers = edit::read_refusal_markers(o.refusal_markers);

  // Every path is checked before the model is loaded: the journal, the plot and the export are
  // never an input or one another, their directories exist and are writable, the plot (of a new
  // study) and the export are not replaced without --force.
  const fs::path model_path = resolve_model_path(o.model);
  const bool model_is_dir = fs::is_directory(model_path);
  const fs::path journal_path = o.journal.empty() ? fs::path(base_name(model_path) + ".ablate.jsonl") : fs::path(o.journal);
  const fs::path plot_path = o.plot.empty() ? fs::path(journal_path.string() + ".svg") : fs::path(o.plot);
  const bool journal_exists = fs::exists(journal_path);
  std::vector<std::pair<std::string, fs::path>> inputs = {
      {"the input model", model_path},           {"the --harmful-train file", so.harmful_train},
      {"the --harmless-train file", so.harmless_train}, {"the --harmful-val file", so.harmful_val},
      {"the --harmless-val file", so.harmless_val}};
  if (!o.refusal_markers.empty()) inputs.emplace_back("the --refusal-markers file", o.refusal_markers);
  auto with = [&](std::initializer_list<std::pair<std::string, fs::path>> more) {
    auto all = inputs;
    all.insert(all.end(), more);
    return all;
  };
  check_output({.flag = "--journal", .path = journal_path, .kind = OutputRequest::Kind::File, .force = true,
                .inputs = with({{"the --plot file", plot_path},
                                {"the --out path", o.out},
                                {"the --lora-out file", o.lora_out}}),
                .managed = {}});
  // A plot beside an existing journal is that study's own and is redrawn; a new study needs --force
  // to replace an existing file.
  check_output({.flag = "--plot", .path = plot_path, .kind = OutputRequest::Kind::File,
                .force = o.force || journal_exists,
                .inputs = with({{"the --journal file", journal_path}, {"the --out path", o.out},
                                {"the --lora-out file", o.lora_out}}),
                .managed = {}});
  if (!o.out.empty())
    check_output({.flag = "--out", .path = o.out,
                  .kind = model_is_dir ? OutputRequest::Kind::Directory : OutputRequest::Kind::File, .force = o.force,
                  .inputs = with({{"the --journal file", journal_path}, {"the --plot file", plot_path},
                                  {"the --lora-out file", o.lora_out}}),
                  .managed = {}});
  if (!o.lora_out.empty())
    check_output({.flag = "--lora-out", .path = o.lora_out, .kind = OutputRequest::Kind::File, .force = o.force,
                  .inputs = with({{"the --journal file", journal_path}, {"the --plot file", plot_path},
                                  {"the --out path", o.out}}),
                  .managed = {}});

  if (!journal_exists && o.export_trial >= o.trials) throw_no_such_trial(o.export_trial, o.trials);

  // Bad prompt files fail here, before a journal is created for a study that cannot run.
  for (const auto& file : {so.harmful_train, so.harmless_train, so.harmful_val, so.harmless_val})
    edit::read_prompts(file, {.limit = 1});

  // The journal names its inputs by content: a different model or prompt file at the same path
  // does not resume (and mix trials of) another study.
  nlohmann::json study_inputs = {{"model", {{"path", fs::absolute(model_path).string()},
                                            {"fingerprint", model_fingerprint(model_path)}}}};
  for (const auto& [name, file] : {std::pair<const char*, fs::path>{"harmful_train", so.harmful_train},
                                   {"harmless_train", so.harmless_train}, {"harmful_val", so.harmful_val},
                                   {"harmless_val", so.harmless_val}})
    study_inputs[name] = {{"path", fs::absolute(file).string()}, {"fingerprint", file_fingerprint(file)}};

  auto model = Model::load_mutable(model_path);
  if (!o.no_template && !model->has_chat_template())
    throw NotFoundError(fmt::format("{} has no chat template; pass --no-template to use the prompts as plain text",
                                    o.model));
  const auto& summary = model->summary();
  fmt::print(stderr, "model: {} ({}, {} layers, {}, {} parameters)\n", summary.path, summary.architecture,
             summary.n_layer, summary.weight_type, human_count(summary.n_params));

  // The journal identifies the study by its space, settings and inputs (by content); a resumed run
  // must match them.
  std::vector<std::string> component_names;
  for (auto c : so.components) component_names.emplace_back(component_name(c));
  nlohmann::json settings = {{"train_limit", so.train_limit}, {"harmful_val_limit", so.harmful_val_limit},
                             {"harmless_val_limit", so.harmless_val_limit}, {"system", o.system},
                             {"template", !o.no_template}, {"orthogonalize", so.orthogonalize},
                             {"norm_preserving", so.norm_preserving}, {"per_layer_directions", so.per_layer_directions},
                             {"components", component_names}, {"max_new_tokens", o.max_new_tokens},
                             {"refusal_markers", so.evaluation.refusal_markers}};
  // Only when not the default: journals written before the flag existed keep resuming.
  if (o.kl_tokens != 1) settings["kl_tokens"] = o.kl_tokens;
  const auto space = edit::ablation_space(summary.n_layer, so.per_layer_directions, so.components);
  auto journal = edit::Journal::open(journal_path, edit::make_study_header(space, {"refusal_rate", "kl_divergence"},
                                                                          o.seed, settings, study_inputs),
                                     [](std::string_view m) { fmt::print(stderr, "warning: {}\n", m); }, o.restart);
  if (o.export_trial >= 0) {
    const int n_trials = std::max(o.trials, static_cast<int>(journal.trials().size()));
    if (o.export_trial >= n_trials) throw_no_such_trial(o.export_trial, n_trials);
    for (const auto& t : journal.trials())
      if (t.number == o.export_trial && !t.completed())
        throw InvalidArgumentError(fmt::format("--export-trial {}: that trial failed (the journal {} holds no result "
                                               "for it); choose a completed trial",
                                               o.export_trial, journal_path.string()));
  }
  if (!journal.trials().empty())
    fmt::print(stderr, "journal: {} holds {} trial(s); continuing to {}\n", journal_path.string(),
               journal.trials().size(), o.trials);
  else
    fmt::print(stderr, "journal: {}\n", journal_path.string());

  edit::AblationStudy study(model, so, std::cerr, tty);
  study.prepare();
  if (o.bench_restore) {
    const auto [cached, reloaded] = study.measure_restore(5);
    fmt::print(stderr, "restore of every edited matrix: from the cache {:.2f} ms, re-reading the model file {:.2f} ms\n",
               cached * 1e3, reloaded * 1e3);
  }

  // The summary lines go to stdout as they happen (flushed: a redirected stdout is block-buffered,
  // and a study stopped midway must still show its baseline).
  const size_t n_harmful = study.baseline_refusals().total;
  fmt::print("baseline (unedited): refusals {}/{} ({:.1f}%), KL 0\n", study.baseline_refusals().refused, n_harmful,
             100 * study.baseline_refusals().rate);
  std::fflush(stdout);
  if (study.baseline_refusals().refused == 0)
    fmt::print(stderr,
               "warning: the unedited model refuses none of the {} harmful validation prompts, so there is no refusal "
               "for abliteration to remove and the search can only add KL divergence; try another --system prompt "
               "(--system \"\" for none), harmful prompts the model does refuse (--harmful-val), or your own "
               "--refusal-markers\n",
               n_harmful);

  // The search (edit/study.hpp); here only its progress output.
  std::vector<edit::Trial> trials = journal.trials();
  if (static_cast<int>(trials.size()) < o.trials) {
    edit::ProgressBar bar("trials", o.trials, std::cerr, tty);
    bar.update(trials.size(), "");
    trials = study.search(journal, {.n_trials = o.trials, .seed = o.seed, .n_startup = o.startup},
                          [&](const edit::Trial& trial, const edit::TrialOutcome& outcome) {
                            const auto& tm = outcome.timing;
                            const std::string line = fmt::format(
                                "trial {:>3}: refusals {:>3}/{} ({:5.1f}%)  KL {:.4f}  [reset {:.1f} ms, edit {:.0f} "
                                "ms, refusals {:.1f} s, KL {:.1f} s]  {}",
                                trial.number, outcome.refusals.refused, outcome.refusals.total,
                                100 * outcome.refusals.rate, outcome.kl, tm.reset * 1e3, tm.edit * 1e3, tm.refusals,
                                tm.kl, params_text(trial.params));
                            if (tty) fmt::print(stderr, "\r\033[K{}\n", line);
                            else fmt::print(stderr, "{}\n", line);
                            bar.update(static_cast<size_t>(trial.number) + 1,
                                       fmt::format("last: {:.1f}% / KL {:.3f}", 100 * outcome.refusals.rate, outcome.kl));
                          });
    bar.finish();
  }

  const auto front = edit::pareto_front(trials);
  if (front.empty()) {
    fmt::print("no completed trials yet (--trials {})\n", o.trials);
    return 0;
  }
  print_front(trials, front, n_harmful);
  const fs::path& plot = plot_path;
  edit::write_pareto_svg(plot, trials, front, "refusal rate (harmful validation)", "KL divergence (harmless validation)",
                         fmt::format("lathe ablate: {}", fs::path(summary.path).filename().string()));
  fmt::print("plot: {}\n", plot.string());
  std::fflush(stdout);

  if (o.out.empty() && o.lora_out.empty()) {
    fmt::print("(no --out: nothing exported; rerun with --out PATH [--export-trial N] to write a model, or "
               "--lora-out FILE to write the edit as a LoRA adapter)\n");
    return 0;
  }
  const auto& chosen = choose_trial(trials, front, o.export_trial, o.max_kl);
  fmt::print("exporting trial {}: refusals {:.1f}%, KL {:.4f}\n", chosen.number, 100 * chosen.values[0], chosen.values[1]);
  std::fflush(stdout);
  edit::ExportOptions eo;
  eo.force = o.force;
  eo.metadata = {{"lathe.ablation.trial", std::to_string(chosen.number)},
                 {"lathe.ablation.params", nlohmann::json(chosen.params).dump()},
                 {"lathe.ablation.metrics",
                  nlohmann::json{{"refusal_rate", chosen.values[0]}, {"kl_divergence", chosen.values[1]},
                                 {"baseline_refusal_rate", study.baseline_refusals().rate}}.dump()},
                 {"lathe.ablation.settings", settings.dump()},
                 {"lathe.ablation.inputs", study_inputs.dump()}};
  if (!o.out.empty()) {
    const auto result = study.export_trial(chosen, o.out, eo);
    fmt::print("wrote {} ({}; trial {} changed {} matrices)\n", o.out, human_bytes(result.written.bytes), chosen.number,
               result.changed_matrices);
    std::fflush(stdout);
  }
  if (!o.lora_out.empty()) {
    const auto adapter = study.export_trial_adapter(chosen, o.lora_out, o.lora_rank, eo.metadata);
    std::string approximation = " (exact)";
    if (adapter.max_rel_error > 0)
      approximation = fmt::format(" (the norm-preserving edit to rank {}: at most {:.2g}% of a matrix's change left out)",
                                  adapter.rank, 100 * adapter.max_rel_error);
    fmt::print("wrote LoRA adapter {} ({}; trial {}: {} matrices, rank {}{}); apply it with --lora {} (lathe or "
               "llama.cpp)\n",
               o.lora_out, human_bytes(fs::file_size(o.lora_out)), chosen.number, adapter.matrices, adapter.rank,
               approximation, o.lora_out);
  }
  return 0;
}

}  // namespace

Runner add_ablate(CLI::App& app) {
  auto o = std::make_shared<AblateOptions>();
  auto* cmd = app.add_subcommand("ablate", "Remove a model's refusal behaviour (refusal-direction abliteration with "
                                           "automatic parameter search)");
  cmd->add_option("model", o->model, "GGUF file or Hugging Face model directory")->required();
  cmd->add_option("--harmful-train", o->harmful_train, "Harmful prompts for the directions (JSONL/CSV/TXT; default: shipped set)");
  cmd->add_option("--harmless-train", o->harmless_train, "Harmless prompts for the directions (default: shipped set)");
  cmd->add_option("--harmful-val", o->harmful_val, "Harmful prompts scored for refusals (default: shipped set)");
  cmd->add_option("--harmless-val", o->harmless_val, "Harmless prompts scored for KL divergence (default: shipped set)");
  cmd->add_option("--train-limit", o->train_limit, "Prompts used from each training set (0 = all)")->capture_default_str();
  cmd->add_option("--harmful-val-limit", o->harmful_val_limit, "Harmful validation prompts used (0 = all)")->capture_default_str();
  cmd->add_option("--harmless-val-limit", o->harmless_val_limit, "Harmless validation prompts used (0 = all)")->capture_default_str();
  cmd->add_option("--system", o->system, "System prompt of every chat")->capture_default_str();
  cmd->add_flag("--no-template", o->no_template, "Use the prompts as plain text (models without a chat template)");
  cmd->add_flag("--no-orthogonalize", o->no_orthogonalize, "Do not orthogonalize directions against the harmless mean");
  cmd->add_flag("--norm-preserving", o->norm_preserving, "Rescale each edited matrix row back to its original norm");
  cmd->add_flag("--per-layer-directions", o->per_layer, "Each layer uses its own direction (no direction_index)");
  cmd->add_option("--components", o->components, "Matrices to edit: attn_output, mlp_down")->delimiter(',')->capture_default_str();
  cmd->add_option("--trials", o->trials, "Trials in the study (a resumed study runs the missing ones)")->capture_default_str();
  cmd->add_option("--startup", o->startup, "Random trials before TPE")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Search seed")->capture_default_str();
  cmd->add_option("--journal", o->journal, "Study journal (JSONL; default: <model file>.ablate.jsonl here)");
  cmd->add_option("--plot", o->plot, "SVG plot of all trials and the Pareto front (default: <journal>.svg)");
  cmd->add_option("--refusal-markers", o->refusal_markers, "File of refusal markers, one per line (replaces the defaults)");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens generated per harmful prompt")->capture_default_str();
  cmd->add_option("--n-parallel", o->n_parallel, "Sequences generated together")->capture_default_str();
  cmd->add_option("--cache-weights", o->cache_weights, "Keep a copy of the edited matrices to reset each trial (true|false)")
      ->capture_default_str();
  cmd->add_flag("--bench-restore", o->bench_restore, "Measure restoring from the cache vs re-reading the model file");
  cmd->add_option("-o,--out", o->out,
                  "Write the chosen trial's edited model here (same format as the input; its directory must exist)");
  cmd->add_option("--kl-tokens", o->kl_tokens,
                  "KL averaged over the first K positions of the original model's greedy continuation of each "
                  "harmless prompt (1: the first token only, as Heretic)")
      ->capture_default_str();
  cmd->add_option("--lora-out", o->lora_out,
                  "Write the chosen trial's edit as a LoRA adapter (llama.cpp GGUF) for the original model");
  cmd->add_option("--lora-rank", o->lora_rank,
                  "Rank of the --lora-out adapter for --norm-preserving (the plain edit is exactly rank 1)")
      ->capture_default_str();
  cmd->add_option("--export-trial", o->export_trial, "Trial to export (default: fewest refusals with KL <= --max-kl)");
  cmd->add_option("--max-kl", o->max_kl, "KL bound for the automatic choice")->capture_default_str();
  cmd->add_flag("--force", o->force, "Replace an existing --out or --lora-out (and an existing --plot when starting a new study)");
  cmd->add_flag("--restart", o->restart,
                "Discard the trials of an existing --journal and start the study over (e.g. after the model changed)");
  add_compute_flags(*cmd, o->compute,
                    "where directions and evaluations run: cpu, cuda or cuda:N (edits run on the host and are "
                    "copied to the device)");
  return [o] { return run_ablate(*o); };
}

}  // namespace lathe::cli
