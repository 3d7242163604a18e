// lathe ablate-eval MODEL [MODEL2] --reference ORIGINAL: the held-out evaluation of abliterated
// models. A study (`lathe ablate`) picks its trial on the validation sets, so its own figures are
// optimistic; this command scores the chosen model(s) on prompts the search never saw: refusal
// rate on a harmful test set and mean KL(reference || model) on a harmless test set, each with a
// BCa bootstrap interval (stats/bootstrap.hpp), and for two models a paired comparison (McNemar's
// exact test on per-prompt refusals, the paired BCa interval of the KL difference).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/generation.hpp"
#include "edit/ablation.hpp"
#include "edit/prompt_file.hpp"
#include "io/mapped_file.hpp"
#include "io/model_dir.hpp"
#include "io/output_path.hpp"
#include "lathe/chat.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "stats/bootstrap.hpp"
#include "stats/mcnemar.hpp"

namespace lathe::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct EvalOptions {
  std::vector<std::string> models;  // one, or two to compare
  std::string reference, harmful, harmless, refusal_markers, json_out;
  bool no_kl = false, no_template = false, force = false;
  uint32_t kl_tokens = 1;
  uint64_t resamples = 10000;
  double confidence = 0.95;
  uint64_t seed = 0;
  std::string system = "You are a helpful assistant.";
  int32_t max_new_tokens = 100;
  uint32_t n_parallel = 16;
  ComputeArgs compute;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Every flag's range and the flags that need one another, before any file is read.
void check_options(const EvalOptions& o) {
  if (o.models.empty() || o.models.size() > 2)
    throw InvalidArgumentError(fmt::format("ablate-eval takes one model, or two to compare (got {})", o.models.size()));
  if (o.reference.empty() && !o.no_kl)
    throw InvalidArgumentError("ablate-eval needs --reference ORIGINAL (the unedited model) for the KL divergence; "
                               "pass --no-kl to measure refusals only");
  if (o.harmful.empty()) throw InvalidArgumentError("ablate-eval needs --harmful FILE (the held-out harmful prompts)");
  if (o.harmless.empty() && !o.no_kl)
    throw InvalidArgumentError("ablate-eval needs --harmless FILE (the held-out harmless prompts) for the KL "
                               "divergence; pass --no-kl to measure refusals only");
  if (o.kl_tokens < 1 || o.kl_tokens > 1024)
    throw InvalidArgumentError(fmt::format("--kl-tokens {} is out of range: it must be in 1..1024", o.kl_tokens));
  if (o.resamples < 100 || o.resamples > 10'000'000)
    throw InvalidArgumentError(fmt::format("--resamples {} is out of range: it must be in 100..10000000 (BCa's ends "
                                           "are quantiles of the resamples; 10000 is a good default)",
                                           o.resamples));
  if (!(o.confidence > 0 && o.confidence < 1))
    throw InvalidArgumentError(fmt::format("--confidence {} is outside (0, 1); use e.g. 0.95", o.confidence));
  if (o.max_new_tokens < 1) throw InvalidArgumentError("--max-new-tokens must be at least 1");
  if (o.n_parallel < 1 || o.n_parallel > 4096)
    throw InvalidArgumentError(fmt::format("--n-parallel {} is out of range: it must be in 1..4096", o.n_parallel));
}

std::shared_ptr<const Model> load_model(const fs::path& path, const EvalOptions& o, const std::string& role) {
  const auto t = Clock::now();
  auto model = Model::load(path);
  if (!o.no_template && !model->has_chat_template())
    throw NotFoundError(fmt::format("{} ({}) has no chat template; pass --no-template to use the prompts as plain text",
                                    path.string(), role));
  fmt::print(stderr, "{}: loaded {} [{:.1f} s]\n", role, path.string(), seconds_since(t));
  return model;
}

struct PromptSet {
  std::string flag;
  fs::path path;
  std::vector<std::string> texts;        // the prompts used, in file order
  std::vector<std::vector<TokenId>> tokens;
  size_t skipped = 0;                    // empty or too long for the context
};

PromptSet tokenize_set(const Model& model, std::string flag, const fs::path& path, const ChatPromptOptions& chat,
                       size_t max_tokens) {
  PromptSet set;
  set.flag = std::move(flag);
  set.path = path;
  for (auto& text : edit::read_prompts(path)) {
    auto tokens = chat_prompt_tokens(model, text, chat);
    if (tokens.empty() || tokens.size() > max_tokens) {
      ++set.skipped;
      continue;
    }
    set.texts.push_back(std::move(text));
    set.tokens.push_back(std::move(tokens));
  }
  if (set.skipped > 0)
    fmt::print(stderr, "warning: {} {}: skipped {} prompt(s) that are empty or longer than {} tokens\n", set.flag,
               path.string(), set.skipped, max_tokens);
  if (set.tokens.empty())
    throw InvalidArgumentError(fmt::format("{} {}: no prompt fits in {} tokens; use shorter prompts", set.flag,
                                           path.string(), max_tokens));
  if (set.tokens.size() < 2)  // a bootstrap interval needs two observations (as scipy's)
    throw InvalidArgumentError(fmt::format("{} {}: one usable prompt; an interval needs at least two, give more",
                                           set.flag, path.string()));
  return set;
}

// Prompt lengths the evaluation can take: a harmful prompt plus its generated tokens, and a
// harmless prompt plus its fed continuation, within the training context (at most 4096 for KL).
size_t training_context(const Model& model) {
  const uint32_t trained = model.summary().n_ctx_train;
  return trained == 0 ? 4096 : trained;
}

// An edited model must see the very tokens the reference saw: the same tokenizer and template.
void require_same_prompts(const Model& model, const std::string& path, const PromptSet& set, const ChatPromptOptions& chat) {
  for (size_t i = 0; i < set.texts.size(); ++i)
    if (chat_prompt_tokens(model, set.texts[i], chat) != set.tokens[i])
      throw InvalidArgumentError(fmt::format("{} turns {} prompt {} of {} into other tokens than the reference does "
                                             "(another tokenizer or chat template): compare edits of the reference "
                                             "model only",
                                             path, set.flag, i + 1, set.path.string()));
}

json interval_json(const stats::BootstrapInterval& r) {
  return {{"estimate", r.estimate}, {"low", r.low}, {"high", r.high}, {"confidence", r.confidence},
          {"method", std::string(stats::interval_method_name(r.method))}, {"z0", r.z0},
          {"acceleration", r.acceleration}, {"standard_error", r.standard_error}, {"n_resamples", r.n_resamples}};
}

struct ModelResult {
  std::string label, path;
  edit::TrialEvaluator::Refusals refusals;
  std::vector<double> refused;  // 1 / 0 per harmful prompt
  stats::BootstrapInterval refusal_interval;
  bool has_kl = false;
  edit::TrialEvaluator::KlDivergence kl;
  stats::BootstrapInterval kl_first, kl_over;
};

stats::BootstrapOptions bootstrap_options(const EvalOptions& o) {
  return {.n_resamples = o.resamples, .confidence = o.confidence, .seed = o.seed};
}

void score_refusals(ModelResult& r, const std::vector<std::string>& markers, const EvalOptions& o) {
  for (const auto& response : r.refusals.responses) r.refused.push_back(edit::is_refusal(response, markers) ? 1.0 : 0.0);
  r.refusal_interval = stats::bootstrap_bca_mean(r.refused, bootstrap_options(o));
}

void score_kl(ModelResult& r, const EvalOptions& o) {
  r.has_kl = true;
  r.kl_first = stats::bootstrap_bca_mean(r.kl.first_token, bootstrap_options(o));
  r.kl_over = stats::bootstrap_bca_mean(r.kl.per_prompt, bootstrap_options(o));
}

json model_json(const ModelResult& r, const PromptSet& harmful, uint32_t kl_tokens) {
  json prompts = json::array();
  for (size_t i = 0; i < r.refused.size(); ++i)
    prompts.push_back({{"prompt", harmful.texts[i]}, {"refused", r.refused[i] != 0}, {"response", r.refusals.responses[i]}});
  json out = {{"label", r.label},
              {"path", r.path},
              {"refusals", {{"refused", r.refusals.refused}, {"total", r.refusals.total}, {"rate", r.refusals.rate},
                            {"interval", interval_json(r.refusal_interval)}, {"per_prompt", prompts}}}};
  if (r.has_kl)
    out["kl"] = {{"first_token", {{"mean", r.kl_first.estimate}, {"interval", interval_json(r.kl_first)},
                                  {"per_prompt", r.kl.first_token}}},
                 {"over_tokens", {{"kl_tokens", kl_tokens}, {"mean", r.kl.mean}, {"interval", interval_json(r.kl_over)},
                                  {"per_prompt", r.kl.per_prompt}, {"positions", r.kl.positions}}}};
  return out;
}

std::string percent_interval(const stats::BootstrapInterval& r) {
  return fmt::format("{:5.1f}% [{:.1f}%, {:.1f}%]", 100 * r.estimate, 100 * r.low, 100 * r.high);
}

std::string value_interval(const stats::BootstrapInterval& r) {
  return fmt::format("{:.4g} [{:.4g}, {:.4g}]", r.estimate, r.low, r.high);
}

void print_model(const ModelResult& r, uint32_t kl_tokens) {
  fmt::print("{:<10} {}\n", r.label, r.path);
  fmt::print("  refusals         {}/{} = {}\n", r.refusals.refused, r.refusals.total, percent_interval(r.refusal_interval));
  if (!r.has_kl) return;
  fmt::print("  KL first token   {}\n", value_interval(r.kl_first));
  if (kl_tokens > 1) fmt::print("  KL over {:<3} tok  {}\n", kl_tokens, value_interval(r.kl_over));
}

// The paired comparison of models A and B on the same prompts.
json compare(const ModelResult& a, const ModelResult& b, const EvalOptions& o) {
  uint64_t only_a = 0, only_b = 0;
  for (size_t i = 0; i < a.refused.size(); ++i) {
    only_a += (a.refused[i] != 0 && b.refused[i] == 0) ? 1 : 0;
    only_b += (a.refused[i] == 0 && b.refused[i] != 0) ? 1 : 0;
  }
  const auto test = stats::mcnemar_exact(only_a, only_b);
  const auto rate_diff = stats::bootstrap_bca_paired_mean_difference(a.refused, b.refused, bootstrap_options(o));
  fmt::print("\ncomparison A - B (paired, same prompts):\n");
  fmt::print("  refusals         McNemar exact p = {:.4g} (b = {} refused by A only, c = {} by B only)\n", test.p_value,
             only_a, only_b);
  fmt::print("  refusal rate     {:+.1f} points [{:+.1f}, {:+.1f}]\n", 100 * rate_diff.estimate, 100 * rate_diff.low,
             100 * rate_diff.high);
  json out = {{"a", a.label}, {"b", b.label},
              {"mcnemar", {{"b", only_a}, {"c", only_b}, {"p_value", test.p_value}, {"exact", true}}},
              {"refusal_rate_difference", interval_json(rate_diff)}};
  if (!a.has_kl) return out;
  const auto first = stats::bootstrap_bca_paired_mean_difference(a.kl.first_token, b.kl.first_token, bootstrap_options(o));
  const auto over = stats::bootstrap_bca_paired_mean_difference(a.kl.per_prompt, b.kl.per_prompt, bootstrap_options(o));
  fmt::print("  KL first token   {}\n", value_interval(first));
  if (o.kl_tokens > 1) fmt::print("  KL over {:<3} tok  {}\n", o.kl_tokens, value_interval(over));
  out["kl_difference"] = {{"first_token", interval_json(first)}, {"over_tokens", interval_json(over)}};
  return out;
}

void write_json(const fs::path& path, const json& doc) {
  const std::string text = doc.dump(2) + "\n";
  AtomicFileWriter writer(path);
  writer.write(text.data(), text.size());
  writer.commit();
}

int run_ablate_eval(const EvalOptions& o) {
  check_options(o);
  std::vector<fs::path> model_paths;
  for (const auto& m : o.models) model_paths.push_back(resolve_model_path(m));
  const fs::path reference_path = o.reference.empty() ? fs::path() : resolve_model_path(o.reference);
  for (const auto& [flag, file] : {std::pair<const char*, std::string>{"--harmful", o.harmful}, {"--harmless", o.harmless},
                                   {"--refusal-markers", o.refusal_markers}})
    if (!file.empty() && !fs::is_regular_file(file))
      throw NotFoundError(fmt::format("{} {}: no such file", flag, file));
  if (!o.json_out.empty()) {
    std::vector<std::pair<std::string, fs::path>> inputs{{"the --harmful file", o.harmful}};
    if (!o.harmless.empty()) inputs.emplace_back("the --harmless file", o.harmless);
    if (!reference_path.empty()) inputs.emplace_back("the --reference model", reference_path);
    for (const auto& p : model_paths) inputs.emplace_back("the model " + p.string(), p);
    check_output({.flag = "--json", .path = o.json_out, .kind = OutputRequest::Kind::File, .force = o.force,
                  .inputs = inputs, .managed = {}});
  }

  edit::EvaluationSettings settings;
  settings.max_new_tokens = o.max_new_tokens;
  settings.n_parallel = o.n_parallel;
  settings.kl_tokens = o.kl_tokens;
  settings.compute = resolve_compute(o.compute);
  if (!o.refusal_markers.empty()) settings.refusal_markers = edit::read_refusal_markers(o.refusal_markers);
  const ChatPromptOptions chat{.system = o.system, .use_template = !o.no_template};

  // The prompts are tokenized by the reference (else the first model); every other model must
  // produce the same tokens.
  const bool with_reference = !reference_path.empty();
  auto first = load_model(with_reference ? reference_path : model_paths[0], o, with_reference ? "reference" : "A");
  const size_t context = training_context(*first);
  const PromptSet harmful = tokenize_set(*first, "--harmful", o.harmful, chat,
                                         context > size_t(o.max_new_tokens) ? context - o.max_new_tokens : 0);
  PromptSet harmless;
  if (!o.no_kl) {
    const size_t kl_room = std::min<size_t>(context, 4096);
    harmless = tokenize_set(*first, "--harmless", o.harmless, chat, kl_room > o.kl_tokens - 1 ? kl_room - (o.kl_tokens - 1) : 0);
  }
  fmt::print(stderr, "prompts: {} harmful, {} harmless; {} resamples per interval\n", harmful.tokens.size(),
             harmless.tokens.size(), o.resamples);

  std::unique_ptr<edit::TrialEvaluator> evaluator;
  if (!o.no_kl) {
    const auto t = Clock::now();
    evaluator = std::make_unique<edit::TrialEvaluator>(first, harmful.tokens, harmless.tokens, settings);
    fmt::print(stderr, "reference: distributions of {} harmless prompts over {} token(s) [{:.1f} s]\n",
               harmless.tokens.size(), o.kl_tokens, seconds_since(t));
  }

  std::vector<ModelResult> results;
  std::optional<ModelResult> baseline;
  if (with_reference) {
    const auto t = Clock::now();
    ModelResult r;
    r.label = "reference";
    r.path = reference_path.string();
    r.refusals = evaluator ? evaluator->refusals() : edit::evaluate_refusals(first, harmful.tokens, settings);
    score_refusals(r, settings.refusal_markers, o);
    fmt::print(stderr, "reference: refusals {}/{} [{:.1f} s]\n", r.refusals.refused, r.refusals.total, seconds_since(t));
    baseline = std::move(r);
  }
  for (size_t m = 0; m < model_paths.size(); ++m) {
    const std::string label = m == 0 ? "A" : "B";
    // Without a reference, model A is the first model loaded above.
    auto model = (!with_reference && m == 0) ? first : load_model(model_paths[m], o, label);
    if (model != first) {
      require_same_prompts(*model, model_paths[m].string(), harmful, chat);
      if (!o.no_kl) require_same_prompts(*model, model_paths[m].string(), harmless, chat);
    }
    ModelResult r;
    r.label = label;
    r.path = model_paths[m].string();
    auto t = Clock::now();
    r.refusals = evaluator ? evaluator->refusals_of(model) : edit::evaluate_refusals(model, harmful.tokens, settings);
    score_refusals(r, settings.refusal_markers, o);
    fmt::print(stderr, "{}: refusals {}/{} [{:.1f} s]\n", label, r.refusals.refused, r.refusals.total, seconds_since(t));
    if (evaluator) {
      t = Clock::now();
      r.kl = evaluator->kl_divergences_of(model);
      score_kl(r, o);
      fmt::print(stderr, "{}: KL {:.4g} [{:.1f} s]\n", label, r.kl.mean, seconds_since(t));
    }
    results.push_back(std::move(r));
  }

  fmt::print("held-out evaluation: {} harmful prompts ({}), {} harmless prompts ({}); {:g}% BCa bootstrap intervals, "
             "{} resamples, seed {}\n\n",
             harmful.tokens.size(), o.harmful, harmless.tokens.size(), o.no_kl ? "none: --no-kl" : o.harmless,
             100 * o.confidence, o.resamples, o.seed);
  if (baseline) print_model(*baseline, o.kl_tokens);
  for (const auto& r : results) print_model(r, o.kl_tokens);

  json doc = {{"command", "ablate-eval"},
              {"settings", {{"confidence", o.confidence}, {"resamples", o.resamples}, {"seed", o.seed},
                            {"interval_method", "BCa bootstrap (Efron 1987)"}, {"kl_tokens", o.kl_tokens},
                            {"kl", !o.no_kl}, {"max_new_tokens", o.max_new_tokens}, {"system", o.system},
                            {"template", !o.no_template}, {"refusal_markers", settings.refusal_markers}}},
              {"prompts", {{"harmful", {{"path", o.harmful}, {"used", harmful.tokens.size()}, {"skipped", harmful.skipped}}},
                           {"harmless", {{"path", o.harmless}, {"used", harmless.tokens.size()},
                                         {"skipped", harmless.skipped}}}}},
              {"reference", baseline ? model_json(*baseline, harmful, o.kl_tokens) : json(nullptr)},
              {"models", json::array()}};
  for (const auto& r : results) doc["models"].push_back(model_json(r, harmful, o.kl_tokens));
  if (results.size() == 2) doc["comparison"] = compare(results[0], results[1], o);
  std::fflush(stdout);
  if (!o.json_out.empty()) {
    write_json(o.json_out, doc);
    fmt::print(stderr, "wrote {}\n", o.json_out);
  }
  return 0;
}

}  // namespace

Runner add_ablate_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("ablate-eval", "Held-out evaluation of abliterated models: refusal rate and KL "
                                                "divergence with BCa bootstrap intervals, paired comparison of two");
  cmd->add_option("models", o->models, "The edited model, or two edited models to compare (GGUF or HF directory)")
      ->required()
      ->expected(1, 2);
  cmd->add_option("--reference", o->reference, "The original (unedited) model: KL reference and baseline refusals");
  cmd->add_option("--harmful", o->harmful, "Held-out harmful prompts (JSONL/CSV/TXT), scored for refusals");
  cmd->add_option("--harmless", o->harmless, "Held-out harmless prompts, scored for KL divergence");
  cmd->add_flag("--no-kl", o->no_kl, "Refusals only (no --reference or --harmless needed)");
  cmd->add_option("--kl-tokens", o->kl_tokens,
                  "KL averaged over the first K positions of the reference's greedy continuation")
      ->capture_default_str();
  cmd->add_option("--resamples", o->resamples, "Bootstrap resamples per interval")->capture_default_str();
  cmd->add_option("--confidence", o->confidence, "Confidence level of the intervals")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Bootstrap seed (the same intervals on every machine)")->capture_default_str();
  cmd->add_option("--system", o->system, "System prompt of every chat")->capture_default_str();
  cmd->add_flag("--no-template", o->no_template, "Use the prompts as plain text (models without a chat template)");
  cmd->add_option("--refusal-markers", o->refusal_markers, "File of refusal markers, one per line (replaces the defaults)");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens generated per harmful prompt")->capture_default_str();
  cmd->add_option("--n-parallel", o->n_parallel, "Sequences generated together")->capture_default_str();
  cmd->add_option("--json", o->json_out, "Write every figure, interval and per-prompt value here (JSON)");
  cmd->add_flag("--force", o->force, "Replace an existing --json file");
  add_compute_flags(*cmd, o->compute);
  return [o] { return run_ablate_eval(*o); };
}

}  // namespace lathe::cli
