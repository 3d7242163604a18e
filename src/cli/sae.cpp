// lathe sae-train MODEL --hook blocks.N.resid_post --data F -o OUT_DIR: a TopK SAE trained on the
// residual rows of a data file, written in SAELens's format; lathe sae-eval MODEL --sae DIR
// --data F: SAELens's quality metrics of an SAE (L0, explained variance, MSE, CE loss recovered,
// KL, dead features); lathe sae-select MODEL --sae DIR --forget F --retain F: the features a gate
// should edit to forget one set and keep another (train/sae_select.hpp). docs/EDITING.md,
// "Training an SAE", "SAE quality" and "Choosing features".
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "edit/progress.hpp"
#include "edit/sae.hpp"
#include "edit/sae_train.hpp"
#include "io/model_dir.hpp"
#include "io/output_path.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "train/dataset.hpp"
#include "train/sae_select.hpp"

namespace lathe::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct SaeTrainArgs {
  std::string model, hook, data, output;
  int64_t d_sae = 4096, k = 32, tokens = 65536, batch = 256, steps = 0, max_length = 1024, dead_tokens = 10'000'000;
  int64_t skip_first = 0;
  double lr = 2e-4, auxk_alpha = 1.0 / 32;
  uint64_t seed = 0;
  int64_t threads = 0;
  bool raw = false, force = false;
  std::vector<std::string> loras;
};

struct SaeEvalArgs {
  std::string model, sae, data, hook;
  int64_t max_length = 1024, limit = 0, threads = 0, skip_first = 0;
  bool raw = false, json = false;
  std::vector<std::string> loras;
};

struct SaeSelectArgs {
  std::string model, sae, forget, retain, hook, by = "attribution", system = "You are a helpful assistant.";
  int64_t count = 8, max_length = 1024, limit = 0, threads = 0;
  double value = 0;
  bool clamp_everywhere = false, raw = false, chat = false, json = false;
  std::vector<std::string> loras;
};

void check_threads(int64_t threads) {
  if (threads < 0 || threads > 4096)
    throw InvalidArgumentError(fmt::format("-t/--threads {} is out of range: it must be in 0..4096", threads));
}

void check_max_length(int64_t max_length) {
  if (max_length < 2 || max_length > (1 << 20))
    throw InvalidArgumentError(fmt::format("--max-length {} is out of range: it must be in 2..1048576", max_length));
}

// The data file's token sequences (every position is used, scored or not).
std::vector<std::vector<TokenId>> read_sequences(const Model& model, const std::string& path, bool raw,
                                                 int64_t max_length, int64_t limit) {
  train::DataOptions d;
  d.pair_format = raw ? train::PairFormat::Raw : train::PairFormat::Auto;
  d.max_tokens = static_cast<uint32_t>(max_length - 1);
  d.limit = static_cast<size_t>(limit);
  auto set = train::read_training_data(model, path, d);
  std::vector<std::vector<TokenId>> sequences;
  sequences.reserve(set.examples.size());
  for (auto& e : set.examples) sequences.push_back(std::move(e.tokens));
  fmt::print(stderr, "--data {}: {} sequences, {} tokens{}\n", path, sequences.size(), set.tokens,
             set.chat ? ", chat-formatted" : "");
  return sequences;
}

// blocks.N.resid_post -> blocks.N.hook_resid_post (TransformerLens, as SAELens's cfg.json names it).
std::string transformer_lens_name(HookSite site) {
  const std::string name = site.name();
  const size_t at = name.find(".resid_");
  return at == std::string::npos ? name : name.substr(0, at + 1) + "hook_" + name.substr(at + 1);
}

// The model with --lora adapters merged (an SAE of a fine-tuned model sees its stream).
std::shared_ptr<const Model> load_model(const fs::path& model_path, const std::vector<std::string>& loras) {
  const auto t = Clock::now();
  auto model = Model::load(model_path, {.loras = resolve_loras(loras)});
  report_loras(*model);
  const auto& s = model->summary();
  fmt::print(stderr, "model: {} ({}, {} layers, n_embd {}) [{:.1f} s]\n", model_path.string(), s.architecture, s.n_layer,
             s.n_embd, seconds_since(t));
  return model;
}

// The SAE of --sae and its hook point: --sae-hook when given, else the one its cfg.json names.
std::pair<std::shared_ptr<const edit::Sae>, HookSite> load_sae_at_hook(const std::string& path, const std::string& hook_flag) {
  auto sae = std::make_shared<const edit::Sae>(edit::load_sae(path));
  const std::string hook = hook_flag.empty() ? sae->hook_name : hook_flag;
  if (hook.empty())
    throw InvalidArgumentError(fmt::format("{}: cfg.json names no hook point; give it with --sae-hook "
                                           "(e.g. blocks.5.hook_resid_post)",
                                           sae->cfg_path.string()));
  return {sae, edit::sae_hook_site(hook, hook_flag.empty() ? sae->cfg_path.string() + ": hook_name" : "--sae-hook")};
}

int run_sae_train(const SaeTrainArgs& a) {
  check_threads(a.threads);
  check_max_length(a.max_length);
  if (a.tokens < 1 || a.tokens > (int64_t{1} << 31))
    throw InvalidArgumentError(fmt::format("--tokens {} is out of range: it must be in 1..2147483648", a.tokens));
  if (a.skip_first < 0 || a.skip_first > a.max_length)
    throw InvalidArgumentError(fmt::format("--skip-first {} is out of range: it must be in 0..--max-length ({})",
                                           a.skip_first, a.max_length));
  if (a.steps < 0 || a.steps > 100'000'000)
    throw InvalidArgumentError(fmt::format("--steps {} is out of range: it must be in 1..100000000", a.steps));
  if (a.batch < 1 || a.batch > 65536)
    throw InvalidArgumentError(fmt::format("--batch {} is out of range: it must be in 1..65536", a.batch));
  if (a.d_sae < 1 || a.d_sae > (1 << 24))
    throw InvalidArgumentError(fmt::format("--d-sae {} is out of range: it must be in 1..16777216", a.d_sae));
  if (a.k < 1 || a.k > a.d_sae)
    throw InvalidArgumentError(fmt::format("--k {} is out of range: it must be in 1..--d-sae ({})", a.k, a.d_sae));
  if (!(a.lr > 0 && a.lr < 1)) throw InvalidArgumentError(fmt::format("--lr {} is outside (0, 1)", a.lr));
  if (!(a.auxk_alpha >= 0 && std::isfinite(a.auxk_alpha)))
    throw InvalidArgumentError(fmt::format("--auxk-alpha {} must be a number >= 0 (0: no AuxK loss)", a.auxk_alpha));
  if (a.dead_tokens < 1) throw InvalidArgumentError(fmt::format("--dead-tokens {} must be >= 1", a.dead_tokens));
  const HookSite site = edit::sae_hook_site(a.hook, "--hook");
  if (site.point == HookPoint::FinalNorm)
    throw UnsupportedError("--hook final_norm: sae-train reads the residual stream; use blocks.<i>.resid_pre|resid_mid|"
                           "resid_post");
  const fs::path model_path = resolve_model_path(a.model);
  if (!fs::exists(a.data)) throw NotFoundError(fmt::format("--data {}: no such data file; check the path", a.data));
  check_output({.flag = "-o/--output", .path = a.output, .kind = OutputRequest::Kind::Directory, .force = a.force,
                .inputs = {{"the input model", model_path}, {"the --data file", a.data}},
                .managed = [](std::string_view name) { return edit::is_sae_file_name(name); }});
  const auto model = load_model(model_path, a.loras);
  const auto& summary = model->summary();
  if (site.layer >= summary.n_layer)
    throw InvalidArgumentError(fmt::format("--hook {}: the model has layers 0..{}; give one of them", a.hook,
                                           summary.n_layer - 1));
  const auto sequences = read_sequences(*model, a.data, a.raw, a.max_length, 0);
  const ComputeOptions compute{.n_threads = static_cast<int>(a.threads)};
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  auto t = Clock::now();
  std::vector<float> rows;
  {
    edit::ProgressBar bar("rows", static_cast<size_t>(a.tokens), std::cerr, tty);
    rows = edit::collect_rows(model, sequences, site, a.tokens, compute,
                              [&](int64_t done, int64_t) { bar.update(static_cast<size_t>(done), ""); }, a.skip_first);
    bar.finish();
  }
  const int64_t d_in = summary.n_embd, n_rows = static_cast<int64_t>(rows.size()) / d_in;
  fmt::print(stderr, "collected {} rows at {} ({} floats, {}) [{:.1f} s]\n", n_rows, site.name(), d_in,
             human_bytes(rows.size() * sizeof(float)), seconds_since(t));
  edit::SaeTrainOptions o;
  o.d_sae = a.d_sae;
  o.k = a.k;
  o.batch = a.batch;
  o.steps = a.steps > 0 ? a.steps : std::max<int64_t>(1, (n_rows + a.batch - 1) / a.batch);
  o.lr = a.lr;
  o.auxk_alpha = a.auxk_alpha;
  o.dead_rows = a.dead_tokens;
  o.seed = a.seed;
  o.n_threads = static_cast<int>(a.threads);
  edit::SaeTrainer trainer(rows.data(), n_rows, d_in, o);
  fmt::print(stderr, "sae-train: TopK SAE {} -> {} features, k {}; {} steps of {} rows, lr {}, AuxK alpha {}\n", d_in,
             o.d_sae, o.k, o.steps, o.batch, o.lr, o.auxk_alpha);
  t = Clock::now();
  edit::SaeStepReport last;
  double recent = -1;
  {
    edit::ProgressBar bar("steps", static_cast<size_t>(o.steps), std::cerr, tty);
    while (!trainer.done()) {
      last = trainer.step();
      recent = recent < 0 ? last.fvu : 0.9 * recent + 0.1 * last.fvu;
      bar.update(static_cast<size_t>(last.step),
                 fmt::format("fvu {:.4f} (avg {:.4f}) auxk {:.4f} l0 {:.1f} dead {}", last.fvu, recent, last.auxk,
                             last.l0, last.dead));
    }
    bar.finish();
  }
  const double train_seconds = seconds_since(t);
  const std::string hook_name = transformer_lens_name(site);
  const nlohmann::json metadata = {
      {"model_name", model_path.filename().string()},
      {"hook_layer", site.layer},
      {"lathe_version", LATHE_VERSION},
      {"training",
       {{"trainer", "lathe sae-train (TopK, Adam, unit-norm decoder, AuxK)"},
        {"data", fs::path(a.data).filename().string()},
        {"rows", n_rows},
        {"steps", o.steps},
        {"batch", o.batch},
        {"lr", o.lr},
        {"auxk_alpha", o.auxk_alpha},
        {"dead_tokens", o.dead_rows},
        {"seed", o.seed},
        {"pairs", a.raw ? "raw" : "auto"},
        {"max_length", a.max_length},
        {"final_fvu_avg", recent},
        {"final_dead", last.dead}}}};
  edit::write_sae(trainer.sae(hook_name), a.output, metadata);
  fmt::print(stderr, "trained in {:.1f} s; last steps' FVU {:.4f}, {} dead latents\n", train_seconds, recent, last.dead);
  fmt::print(stderr, "wrote {} (SAELens topk: cfg.json + sae_weights.safetensors, hook {}): use it with --sae {} "
                     "--sae-features ID..., measure it with lathe sae-eval\n",
             a.output, hook_name, a.output);
  return 0;
}

int run_sae_eval(const SaeEvalArgs& a) {
  check_threads(a.threads);
  check_max_length(a.max_length);
  if (a.limit < 0) throw InvalidArgumentError("--limit must be >= 0");
  if (a.skip_first < 0 || a.skip_first >= a.max_length)
    throw InvalidArgumentError(fmt::format("--skip-first {} is out of range: it must be in 0..--max-length - 1 ({})",
                                           a.skip_first, a.max_length - 1));
  const fs::path model_path = resolve_model_path(a.model);
  const auto [sae, site] = load_sae_at_hook(a.sae, a.hook);
  if (!fs::exists(a.data)) throw NotFoundError(fmt::format("--data {}: no such data file; check the path", a.data));
  const auto model = load_model(model_path, a.loras);
  edit::check_sae_fits(*sae, site, model->summary().n_layer, model->summary().n_embd);
  const auto sequences = read_sequences(*model, a.data, a.raw, a.max_length, a.limit);
  const auto t = Clock::now();
  edit::SaeEvalResult r;
  {
    edit::ProgressBar bar("sequences", sequences.size(), std::cerr, ::isatty(STDERR_FILENO) != 0);
    r = edit::evaluate_sae(model, sae, site, sequences, {.n_threads = static_cast<int>(a.threads)},
                           [&](size_t done, size_t) { bar.update(done, ""); }, a.skip_first);
    bar.finish();
  }
  if (a.json) {
    nlohmann::ordered_json out = {{"sae", a.sae},
                                  {"model", model_path.string()},
                                  {"data", a.data},
                                  {"hook", site.name()},
                                  {"sequences", r.sequences},
                                  {"tokens", r.tokens},
                                  {"l0", r.l0},
                                  {"explained_variance", r.explained_variance},
                                  {"mse", r.mse},
                                  {"cossim", r.cossim},
                                  {"ce_loss_without_sae", r.ce_clean},
                                  {"ce_loss_with_sae", r.ce_sae},
                                  {"ce_loss_with_ablation", r.ce_zero},
                                  {"ce_loss_score", r.ce_loss_score},
                                  {"kl_div_with_sae", r.kl_sae},
                                  {"kl_div_with_ablation", r.kl_zero},
                                  {"kl_div_score", r.kl_div_score},
                                  {"dead_features", r.dead},
                                  {"d_sae", r.d_sae},
                                  {"seconds", seconds_since(t)}};
    fmt::print("{}\n", out.dump(1));
    return 0;
  }
  fmt::print("sae-eval {} at {}: {} sequences, {} tokens [{:.1f} s]\n", a.sae, site.name(), r.sequences, r.tokens,
             seconds_since(t));
  fmt::print("  L0 (active features / token)   {:.2f}\n", r.l0);
  fmt::print("  explained variance             {:.4f}\n", r.explained_variance);
  fmt::print("  MSE (per element)              {:.6g}\n", r.mse);
  fmt::print("  cosine(x, x_hat)               {:.4f}\n", r.cossim);
  fmt::print("  CE clean / SAE / zero-ablated  {:.4f} / {:.4f} / {:.4f}\n", r.ce_clean, r.ce_sae, r.ce_zero);
  fmt::print("  CE loss recovered              {:.4f}\n", r.ce_loss_score);
  fmt::print("  KL(clean || SAE) / (|| zero)   {:.4f} / {:.4f}  (score {:.4f})\n", r.kl_sae, r.kl_zero, r.kl_div_score);
  fmt::print("  dead features                  {} of {}\n", r.dead, r.d_sae);
  return 0;
}

int run_sae_select(const SaeSelectArgs& a) {
  check_threads(a.threads);
  check_max_length(a.max_length);
  if (a.limit < 0) throw InvalidArgumentError("--limit must be >= 0");
  if (a.count < 1 || a.count > 65536)
    throw InvalidArgumentError(fmt::format("--count {} is out of range: it must be in 1..65536", a.count));
  if (!std::isfinite(a.value)) throw InvalidArgumentError(fmt::format("--value {} must be a finite number", a.value));
  if (a.raw && a.chat) throw InvalidArgumentError("give --raw or --chat, not both");
  const auto by = train::parse_feature_criterion(a.by, "--by");
  const fs::path model_path = resolve_model_path(a.model);
  const auto [sae, site] = load_sae_at_hook(a.sae, a.hook);
  for (const auto& [flag, path] : {std::pair{"--forget", a.forget}, std::pair{"--retain", a.retain}})
    if (!fs::exists(path)) throw NotFoundError(fmt::format("{} {}: no such data file; check the path", flag, path));
  const auto model = load_model(model_path, a.loras);
  edit::check_sae_fits(*sae, site, model->summary().n_layer, model->summary().n_embd);
  train::DataOptions data;
  data.pair_format = a.raw ? train::PairFormat::Raw : (a.chat ? train::PairFormat::Chat : train::PairFormat::Auto);
  data.system = a.system;
  data.max_tokens = static_cast<uint32_t>(a.max_length - 1);
  data.limit = static_cast<size_t>(a.limit);
  const auto forget = train::read_training_data(*model, a.forget, data);
  const auto retain = train::read_training_data(*model, a.retain, data);
  fmt::print(stderr, "--forget {}: {} examples, {} scored tokens; --retain {}: {} examples, {} scored tokens\n", a.forget,
             forget.examples.size(), forget.scored_tokens, a.retain, retain.examples.size(), retain.scored_tokens);
  const edit::SaeFeatureEdit edit{.id = 0, .kind = edit::SaeFeatureEdit::Kind::Set, .value = static_cast<float>(a.value)};
  const auto t = Clock::now();
  std::vector<train::SelectedFeature> chosen;
  {
    edit::ProgressBar bar("examples", forget.examples.size() + retain.examples.size(), std::cerr,
                          ::isatty(STDERR_FILENO) != 0);
    chosen = train::select_sae_features(model, sae, site, forget.examples, retain.examples,
                                        {.by = by,
                                         .count = a.count,
                                         .edit = edit,
                                         .gate = {.clamp_everywhere = a.clamp_everywhere},
                                         .rows = train::FeatureSelectOptions::Rows::Answers,
                                         .compute = {.n_threads = static_cast<int>(a.threads)},
                                         .on_progress = [&](size_t done, size_t) { bar.update(done, ""); }});
    bar.finish();
  }
  std::vector<std::string> spec;
  for (const auto& f : chosen) spec.push_back(fmt::format("{}:{}", f.id, a.value));
  const std::string features = fmt::format("{}", fmt::join(spec, ","));
  const bool attribution = by == train::FeatureCriterion::Attribution;
  if (a.json) {
    auto rows = nlohmann::ordered_json::array();
    for (const auto& f : chosen)
      rows.push_back({{"feature", f.id}, {"score", f.score}, {"forget", f.forget}, {"retain", f.retain}});
    nlohmann::ordered_json out = {{"sae", a.sae},
                                  {"model", model_path.string()},
                                  {"hook", site.name()},
                                  {"by", train::feature_criterion_name(by)},
                                  {"value", a.value},
                                  {"clamp_everywhere", a.clamp_everywhere},
                                  {"features", rows},
                                  {"sae_features", features},
                                  {"seconds", seconds_since(t)}};
    fmt::print("{}\n", out.dump(1));
    return 0;
  }
  fmt::print("sae-select {} at {} by {} [{:.1f} s]\n", a.sae, site.name(), train::feature_criterion_name(by),
             seconds_since(t));
  fmt::print("  {:>8}  {:>12}  {:>12}  {:>12}\n", "feature", "score", attribution ? "forget dCE" : "forget mean",
             attribution ? "retain dCE" : "retain mean");
  for (const auto& f : chosen)
    fmt::print("  {:>8}  {:>12.6g}  {:>12.6g}  {:>12.6g}\n", f.id, f.score, f.forget, f.retain);
  fmt::print("--sae {} --sae-features {}{}\n", a.sae, features, a.clamp_everywhere ? " --sae-clamp-everywhere" : "");
  return 0;
}

}  // namespace

Runner add_sae_select(CLI::App& app) {
  auto a = std::make_shared<SaeSelectArgs>();
  auto* cmd = app.add_subcommand("sae-select", "Choose the SAE features a gate should edit to forget one data set "
                                               "and keep another (by attribution or activation)");
  cmd->add_option("model", a->model, "GGUF file or Hugging Face model directory")->required();
  cmd->add_option("--sae", a->sae, "SAELens SAE directory (or its cfg.json)")->required();
  cmd->add_option("--forget", a->forget, "What the gate should make the model forget (data file, as finetune's --data)")
      ->required();
  cmd->add_option("--retain", a->retain, "What it should keep (data file)")->required();
  cmd->add_option("--by", a->by,
                  "attribution: the features whose clamp to --value most raises the forget set's answer loss beyond "
                  "the retain set's (first order, from one backward pass per example); activation: those most "
                  "active on the forget set's answers beyond the retain set's")
      ->capture_default_str();
  cmd->add_option("--count", a->count, "How many features")->capture_default_str();
  cmd->add_option("--value", a->value, "The value the gate sets each feature to (0: ablation)")->capture_default_str();
  cmd->add_flag("--clamp-everywhere", a->clamp_everywhere,
                "The gate sets the features at every token, not only where active (as --sae-clamp-everywhere)");
  cmd->add_option("--sae-hook", a->hook, "Hook point replacing the one cfg.json names");
  cmd->add_flag("--raw", a->raw, "Prompt/answer pairs as plain text, not chat-formatted");
  cmd->add_flag("--chat", a->chat, "Prompt/answer pairs through the chat template (the default when there is one)");
  cmd->add_option("--system", a->system, "System message of chat-formatted pairs")->capture_default_str();
  cmd->add_option("--max-length", a->max_length, "Longest example in tokens")->capture_default_str();
  cmd->add_option("--limit", a->limit, "Read at most this many rows of each file (0: all)");
  cmd->add_flag("--json", a->json, "Print the features as one JSON object on stdout");
  add_lora_flags(*cmd, a->loras);
  cmd->add_option("-t,--threads", a->threads, "CPU threads (0: one per physical core)");
  cmd->footer("Example:\n  lathe sae-select model.gguf --sae saes/l5 --forget forget.jsonl --retain retain.jsonl "
              "--value -4\n  lathe run model.gguf --sae saes/l5 --sae-features <the printed list> -p \"...\"\n"
              "See docs/EDITING.md.");
  return [a] { return run_sae_select(*a); };
}

Runner add_sae_train(CLI::App& app) {
  auto a = std::make_shared<SaeTrainArgs>();
  auto* cmd = app.add_subcommand("sae-train", "Train a TopK sparse autoencoder on a model's residual stream "
                                               "(written in SAELens's format, for --sae)");
  cmd->add_option("model", a->model, "GGUF file or Hugging Face model directory")->required();
  cmd->add_option("--hook", a->hook, "Where: blocks.N.resid_pre|resid_mid|resid_post (or blocks.N.hook_resid_post)")
      ->required();
  cmd->add_option("--data", a->data, "Data file, as finetune's --data; every position's row is used")->required();
  cmd->add_option("-o,--output", a->output, "The SAE's directory (cfg.json + sae_weights.safetensors)")->required();
  cmd->add_option("--d-sae", a->d_sae, "Latents (features)")->capture_default_str();
  cmd->add_option("--k", a->k, "Active latents per token (TopK)")->capture_default_str();
  cmd->add_option("--tokens", a->tokens, "Rows kept for training (memory: tokens x n_embd floats)")
      ->capture_default_str();
  cmd->add_option("--batch", a->batch, "Rows per step")->capture_default_str();
  cmd->add_option("--lr", a->lr, "Adam learning rate")->capture_default_str();
  cmd->add_option("--steps", a->steps, "Optimizer steps (default: one pass over the rows)");
  cmd->add_option("--auxk-alpha", a->auxk_alpha, "Weight of the AuxK dead-latent loss (0: off)")->capture_default_str();
  cmd->add_option("--dead-tokens", a->dead_tokens, "A latent is dead after this many rows without firing")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the initialization and the row order")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "CPU threads (0: one per physical core)");
  cmd->add_option("--max-length", a->max_length, "Longest data row in tokens")->capture_default_str();
  cmd->add_option("--skip-first", a->skip_first,
                  "Leave out the rows of each sequence's first N positions (e.g. 1: the first token's "
                  "attention-sink row, whose few huge dimensions can dominate the loss)")
      ->capture_default_str();
  cmd->add_flag("--raw", a->raw, "Prompt/answer pairs as plain text, not chat-formatted");
  cmd->add_flag("--force", a->force, "Replace an existing SAE in the -o directory");
  add_lora_flags(*cmd, a->loras);
  cmd->footer("Example:\n  lathe sae-train model.gguf --hook blocks.5.resid_post --data text.txt -o saes/l5\n"
              "  lathe sae-eval model.gguf --sae saes/l5 --data held_out.txt\n"
              "  lathe run model.gguf --sae saes/l5 --sae-features 12 -p \"...\"\nSee docs/EDITING.md.");
  return [a] { return run_sae_train(*a); };
}

Runner add_sae_eval(CLI::App& app) {
  auto a = std::make_shared<SaeEvalArgs>();
  auto* cmd = app.add_subcommand("sae-eval", "An SAE's quality on a data set: L0, explained variance, MSE, CE loss "
                                              "recovered, KL, dead features (SAELens's metrics)");
  cmd->add_option("model", a->model, "GGUF file or Hugging Face model directory")->required();
  cmd->add_option("--sae", a->sae, "SAELens SAE directory (or its cfg.json)")->required();
  cmd->add_option("--data", a->data, "Data file, as finetune's --data; every position is evaluated")->required();
  cmd->add_option("--sae-hook", a->hook, "Hook point replacing the one cfg.json names");
  cmd->add_option("--max-length", a->max_length, "Longest data row in tokens")->capture_default_str();
  cmd->add_option("--limit", a->limit, "Read at most this many rows (0: all)");
  cmd->add_flag("--raw", a->raw, "Prompt/answer pairs as plain text, not chat-formatted");
  cmd->add_flag("--json", a->json, "Print the metrics as one JSON object on stdout");
  cmd->add_option("--skip-first", a->skip_first,
                  "Neither splice nor measure each sequence's first N positions (as sae-train --skip-first)")
      ->capture_default_str();
  add_lora_flags(*cmd, a->loras);
  cmd->add_option("-t,--threads", a->threads, "CPU threads (0: one per physical core)");
  return [a] { return run_sae_eval(*a); };
}

}  // namespace lathe::cli
