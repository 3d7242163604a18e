// lathe finetune MODEL --data F -o ADAPTER.gguf and lathe unlearn MODEL --forget F --retain F -o
// ADAPTER.gguf: LoRA training on a frozen model (train/), with a progress line, a JSONL log per
// step, checkpoints that resume exactly, and the adapter written as llama.cpp's LoRA GGUF
// (optionally also in PEFT's format, and merged into a copy of the model).
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "api/model_impl.hpp"
#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "edit/export.hpp"
#include "edit/progress.hpp"
#include "io/fingerprint.hpp"
#include "io/model_dir.hpp"
#include "io/mapped_file.hpp"
#include "io/output_path.hpp"
#include "lathe/error.hpp"
#include "lathe/lathe.hpp"
#include "train/checkpoint.hpp"
#include "train/dataset.hpp"
#include "train/evaluate.hpp"
#include "train/finetune.hpp"
#include "train/peft_export.hpp"
#include "train/unlearn.hpp"
#include "weights/lora.hpp"

namespace lathe::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// Flags both commands share.
struct TrainArgs {
  std::string model, output, peft_out, merge_out, log, checkpoint, chat_template;
  std::vector<std::string> loras;
  bool force = false, resume = false, raw = false, chat = false;
  std::string system = "You are a helpful assistant.";
  int64_t max_length = 1024, limit = 0;
  std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  int64_t rank = 8;
  double alpha = 16;
  double lora_dropout = 0;
  double lr = 1e-4, weight_decay = 0.01, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, max_grad_norm = 1.0;
  int64_t steps = 0, warmup = 0, grad_accum = 1, save_every = 0;
  double epochs = 0;
  std::string schedule = "linear";
  uint64_t seed = 0;
  std::string device = "cpu";
  int64_t threads = 0;
};

struct FinetuneArgs {
  TrainArgs common;
  std::string data;
};

struct UnlearnArgs {
  TrainArgs common;
  std::string forget, retain, objective = "npo", retain_loss = "nll";
  double beta = 0.1, gamma = 1.0, retain_weight = 1.0, delta = 0.0;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Ctrl-C: the first stops the run after the current step (a checkpoint is written when asked
// for); a second one ends the process at once.
volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_train_sigint(int) {
  if (g_stop != 0) ::_exit(130);
  g_stop = 1;
  static const char kNote[] = "\nstopping after the current step (Ctrl-C again to quit at once, saving nothing)\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kNote, sizeof kNote - 1);  // async-signal-safe
}

void add_common_flags(CLI::App& cmd, TrainArgs& a, double default_lr) {
  a.lr = default_lr;
  cmd.add_option("model", a.model, "GGUF file or Hugging Face model directory (the frozen base)")->required();
  cmd.add_option("-o,--output", a.output, "The trained adapter, written as llama.cpp's LoRA GGUF (load it with --lora)")
      ->required();
  cmd.add_option("--peft-out", a.peft_out, "Also write the adapter in PEFT's format into this directory");
  cmd.add_option("--merge", a.merge_out,
                 "Also write the model with the adapter merged (a GGUF file, or a directory for a Hugging Face model)");
  cmd.add_flag("--force", a.force, "Replace existing outputs (-o, --peft-out, --merge, --log)");
  add_lora_flags(cmd, a.loras);
  cmd.add_option("--chat-template", a.chat_template, "Jinja chat template file replacing the model's own");
  cmd.add_flag("--raw", a.raw, "Prompt/answer pairs as plain text (BOS prompt answer EOS), not chat-formatted");
  cmd.add_flag("--chat", a.chat, "Prompt/answer pairs through the chat template (the default when the model has one)");
  cmd.add_option("--system", a.system, "System message of chat-formatted pairs (\"\" for none)")->capture_default_str();
  cmd.add_option("--max-length", a.max_length, "Longest example in tokens; longer rows are an error")
      ->capture_default_str();
  cmd.add_option("--limit", a.limit, "Read at most this many rows of each data file (0: all)");
  cmd.add_option("--lora-targets", a.targets, "Matrices to adapt, comma-separated (Phi-3: attn_qkv and the fused ffn_up)")
      ->delimiter(',')
      ->capture_default_str();
  cmd.add_option("--lora-rank", a.rank, "LoRA rank r")->capture_default_str();
  cmd.add_option("--lora-alpha", a.alpha, "LoRA alpha (the update is scaled by alpha / r)")->capture_default_str();
  cmd.add_option("--lora-dropout", a.lora_dropout,
                 "Dropout on the adapters' input while training, as PEFT's lora_dropout (0: off)")
      ->capture_default_str();
  cmd.add_option("--lr", a.lr, "Peak learning rate (AdamW)")->capture_default_str();
  cmd.add_option("--weight-decay", a.weight_decay, "AdamW's decoupled weight decay")->capture_default_str();
  cmd.add_option("--adam-beta1", a.beta1, "AdamW beta1")->capture_default_str();
  cmd.add_option("--adam-beta2", a.beta2, "AdamW beta2")->capture_default_str();
  cmd.add_option("--adam-eps", a.eps, "AdamW epsilon")->capture_default_str();
  cmd.add_option("--max-grad-norm", a.max_grad_norm, "Clip the gradients' global L2 norm to this (0: no clipping)")
      ->capture_default_str();
  cmd.add_option("--steps", a.steps, "Optimizer steps (default: one epoch, or --epochs)");
  cmd.add_option("--epochs", a.epochs, "Passes over the data (sets --steps from the data size)");
  cmd.add_option("--warmup", a.warmup, "Warm-up steps (learning rate rising linearly from 0)");
  cmd.add_option("--schedule", a.schedule, "Learning-rate decay after the warm-up: linear, cosine or constant")
      ->capture_default_str();
  cmd.add_option("--grad-accum", a.grad_accum, "Examples per optimizer step (gradient accumulation)")
      ->capture_default_str();
  cmd.add_option("--seed", a.seed, "Seed of the adapter initialization and the example order")->capture_default_str();
  cmd.add_option("--log", a.log, "Write one JSON line per step to this file");
  cmd.add_option("--checkpoint", a.checkpoint, "Save the run's state to this file (every --save-every steps, on Ctrl-C "
                                               "and at the end) so that --resume continues it exactly");
  cmd.add_option("--save-every", a.save_every, "Steps between checkpoints (default: 10% of the steps)");
  cmd.add_flag("--resume", a.resume, "Continue the run saved in --checkpoint");
  cmd.add_option("--device", a.device, "Where to train: cpu (CUDA training is not built yet)")->capture_default_str();
  cmd.add_option("-t,--threads", a.threads, "CPU threads (0: one per physical core); the result does not depend on it");
}

train::FinetuneOptions finetune_options(const TrainArgs& a) {
  if (a.rank < 1 || a.rank > 1024)
    throw InvalidArgumentError(fmt::format("--lora-rank {} is out of range: it must be in 1..1024", a.rank));
  if (!(a.alpha > 0)) throw InvalidArgumentError(fmt::format("--lora-alpha {} must be > 0", a.alpha));
  if (!(a.lora_dropout >= 0 && a.lora_dropout < 1))
    throw InvalidArgumentError(fmt::format("--lora-dropout {} is outside [0, 1)", a.lora_dropout));
  if (!(a.lr > 0 && a.lr < 1)) throw InvalidArgumentError(fmt::format("--lr {} is outside (0, 1)", a.lr));
  if (!(a.weight_decay >= 0)) throw InvalidArgumentError("--weight-decay must be >= 0");
  if (!(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1))
    throw InvalidArgumentError(fmt::format("--adam-beta1 {} and --adam-beta2 {} must be in [0, 1)", a.beta1, a.beta2));
  if (!(a.eps > 0)) throw InvalidArgumentError("--adam-eps must be > 0");
  if (!(a.max_grad_norm >= 0)) throw InvalidArgumentError("--max-grad-norm must be >= 0 (0: no clipping)");
  if (a.grad_accum < 1 || a.grad_accum > 65536)
    throw InvalidArgumentError(fmt::format("--grad-accum {} is out of range: it must be in 1..65536", a.grad_accum));
  if (a.steps < 0 || a.steps > 10'000'000)
    throw InvalidArgumentError(fmt::format("--steps {} is out of range: it must be in 1..10000000", a.steps));
  if (a.steps > 0 && a.epochs > 0) throw InvalidArgumentError("give --steps or --epochs, not both");
  if (!(a.epochs >= 0 && a.epochs <= 10000)) throw InvalidArgumentError("--epochs must be in 0..10000");
  if (a.warmup < 0) throw InvalidArgumentError("--warmup must be >= 0");
  if (a.save_every < 0) throw InvalidArgumentError("--save-every must be >= 0");
  if (a.max_length < 2 || a.max_length > (1 << 20))
    throw InvalidArgumentError(fmt::format("--max-length {} is out of range: it must be in 2..1048576", a.max_length));
  if (a.limit < 0) throw InvalidArgumentError("--limit must be >= 0");
  if (a.raw && a.chat) throw InvalidArgumentError("give --raw or --chat, not both");
  if (a.device != "cpu")
    throw UnsupportedError(fmt::format("--device {}: training runs on the CPU only in this version; use --device cpu",
                                       a.device));
  if (a.resume && a.checkpoint.empty()) throw InvalidArgumentError("--resume needs --checkpoint FILE (the saved run)");
  if (a.threads < 0 || a.threads > 4096)
    throw InvalidArgumentError(fmt::format("-t/--threads {} is out of range: it must be in 0..4096", a.threads));
  for (const auto& t : a.targets)
    if (t.empty()) throw InvalidArgumentError("--lora-targets has an empty name");
  train::FinetuneOptions o;
  o.targets = a.targets;
  o.rank = a.rank;
  o.alpha = a.alpha;
  o.lora_dropout = a.lora_dropout;
  o.adamw = {.lr = a.lr, .beta1 = a.beta1, .beta2 = a.beta2, .eps = a.eps, .weight_decay = a.weight_decay};
  o.grad_accumulation = a.grad_accum;
  o.max_grad_norm = a.max_grad_norm;
  o.seed = a.seed;
  o.n_threads = static_cast<int>(a.threads);
  if (a.schedule == "linear")
    o.decay = train::LrDecay::Linear;
  else if (a.schedule == "cosine")
    o.decay = train::LrDecay::Cosine;
  else if (a.schedule == "constant")
    o.decay = train::LrDecay::Constant;
  else
    throw InvalidArgumentError(fmt::format("--schedule {} is unknown; use linear, cosine or constant", a.schedule));
  return o;
}

// Steps from --steps, --epochs or one epoch over `n_examples`; the warm-up must fit.
void resolve_steps(const TrainArgs& a, size_t n_examples, train::FinetuneOptions& o) {
  const double epochs = a.epochs > 0 ? a.epochs : 1.0;
  o.steps = a.steps > 0 ? a.steps
                        : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(epochs * static_cast<double>(n_examples) /
                                                                               static_cast<double>(a.grad_accum))));
  if (a.warmup > o.steps)
    throw InvalidArgumentError(fmt::format("--warmup {} is more than the run's {} steps", a.warmup, o.steps));
  o.warmup_steps = a.warmup;
}

// The data flags of finetune, unlearn and score (ranges checked by the caller).
train::DataOptions data_options(bool raw, bool chat, const std::string& system, int64_t max_length, int64_t limit) {
  train::DataOptions d;
  d.pair_format = raw ? train::PairFormat::Raw : (chat ? train::PairFormat::Chat : train::PairFormat::Auto);
  d.system = system;
  d.max_tokens = static_cast<uint32_t>(max_length - 1);
  d.limit = static_cast<size_t>(limit);
  return d;
}

// Every output is checked before the model is loaded: none is an input or another output, the
// directories exist, nothing is replaced without --force, and the checkpoint exists exactly when
// resuming.
void check_outputs(const TrainArgs& a, const fs::path& model_path, const std::vector<fs::path>& data_files) {
  if (!a.checkpoint.empty()) {
    const bool exists = fs::exists(a.checkpoint);
    if (a.resume && !exists)
      throw NotFoundError(fmt::format("--resume: the checkpoint {} does not exist; start without --resume", a.checkpoint));
    if (!a.resume && exists)
      throw InvalidArgumentError(fmt::format("--checkpoint {} already holds a run: pass --resume to continue it, or "
                                             "remove the file to start again",
                                             a.checkpoint));
  }
  std::vector<std::pair<std::string, fs::path>> inputs = {{"the input model", model_path}};
  for (const auto& f : data_files) {
    if (!fs::exists(f)) throw NotFoundError(fmt::format("{}: no such data file; check the path", f.string()));
    inputs.emplace_back("a data file", f);
  }
  for (const auto& spec : resolve_loras(a.loras)) inputs.emplace_back("a --lora adapter", spec.path);
  std::vector<std::pair<std::string, fs::path>> outputs = {{"-o/--output", a.output}};
  if (!a.peft_out.empty()) outputs.emplace_back("--peft-out", a.peft_out);
  if (!a.merge_out.empty()) outputs.emplace_back("--merge", a.merge_out);
  if (!a.log.empty()) outputs.emplace_back("--log", a.log);
  if (!a.checkpoint.empty()) outputs.emplace_back("--checkpoint", a.checkpoint);
  for (const auto& [flag, path] : outputs) {
    auto others = inputs;
    for (const auto& [other_flag, other] : outputs)
      if (other_flag != flag) others.emplace_back("the " + other_flag + " path", other);
    OutputRequest request{.flag = flag, .path = path, .kind = OutputRequest::Kind::File, .force = a.force,
                          .inputs = others, .managed = {}};
    if (flag == "--peft-out" || (flag == "--merge" && fs::is_directory(model_path)))
      request.kind = OutputRequest::Kind::Directory;
    // A resumed run appends to its log and replaces its checkpoint.
    if (flag == "--checkpoint" || (flag == "--log" && a.resume)) request.force = true;
    check_output(request);
  }
}

// What a resumed run must share with the saved one.
json settings_of(const TrainArgs& a, const train::FinetuneOptions& o, const fs::path& model_path,
                 const std::vector<std::pair<std::string, fs::path>>& data) {
  json s = {{"model", model_fingerprint(model_path)},
            {"targets", o.targets},
            {"rank", o.rank},
            {"alpha", o.alpha},
            {"lr", o.adamw.lr},
            {"weight_decay", o.adamw.weight_decay},
            {"betas", {o.adamw.beta1, o.adamw.beta2}},
            {"eps", o.adamw.eps},
            {"max_grad_norm", o.max_grad_norm},
            {"steps", o.steps},
            {"warmup", o.warmup_steps},
            {"schedule", a.schedule},
            {"grad_accum", o.grad_accumulation},
            {"seed", o.seed},
            {"pairs", a.raw ? "raw" : (a.chat ? "chat" : "auto")},
            {"system", a.system},
            {"max_length", a.max_length},
            {"limit", a.limit}};
  // Only when on, so that the checkpoints of runs from before the flag still resume.
  if (o.lora_dropout > 0) s["lora_dropout"] = o.lora_dropout;
  json loras = json::array();
  for (const auto& spec : resolve_loras(a.loras))
    loras.push_back({{"fingerprint", file_fingerprint(spec.path)}, {"scale", spec.scale}});
  s["loras"] = loras;
  if (!a.chat_template.empty()) s["chat_template"] = file_fingerprint(a.chat_template);
  for (const auto& [name, path] : data) s["data_" + name] = file_fingerprint(path);
  return s;
}

std::shared_ptr<Model> load_base(const TrainArgs& a, const fs::path& model_path) {
  const auto t = Clock::now();
  auto model = Model::load_mutable(model_path, {.chat_template_file = a.chat_template, .loras = resolve_loras(a.loras)});
  const auto& s = model->summary();
  fmt::print(stderr, "model: {} ({}, {} layers, {}, {} parameters) [{:.1f} s]\n", s.path, s.architecture, s.n_layer,
             s.weight_type, human_count(s.n_params), seconds_since(t));
  report_loras(*model);
  return model;
}

train::DataSet read_set(const Model& model, const std::string& flag, const fs::path& path, const TrainArgs& a) {
  auto set = train::read_training_data(model, path, data_options(a.raw, a.chat, a.system, a.max_length, a.limit));
  fmt::print(stderr, "{} {}: {} examples, {} tokens ({} scored){}\n", flag, path.string(), set.examples.size(),
             set.tokens, set.scored_tokens, set.chat ? ", chat-formatted" : "");
  return set;
}

size_t adapter_parameters(const train::LoraSet<float>& lora) {
  size_t n = 0;
  for (const auto& p : lora.pairs) n += p.a.size() + p.b.size();
  return n;
}

// Resumes from --checkpoint when asked; refuses a checkpoint of another run, naming what differs.
template <class Run>
void maybe_resume(Run& run, const TrainArgs& a, const json& settings) {
  if (!a.resume) return;
  const auto checkpoint = train::read_checkpoint(a.checkpoint);
  const auto differences = train::settings_differences(checkpoint.settings, settings);
  if (!differences.empty())
    throw InvalidArgumentError(fmt::format("--checkpoint {} was saved by a run with other settings ({}); resume with "
                                           "the same model, data and options, or start a new run",
                                           a.checkpoint, fmt::join(differences, "; ")));
  run.restore(checkpoint.state);
  fmt::print(stderr, "resumed {} at step {}\n", a.checkpoint, run.steps_done());
}

// The training loop both commands share: steps with a progress line and a log, checkpoints, Ctrl-C.
// `step` runs one step and returns its log line (without timing fields) and its display status.
template <class Run, class StepFn>
bool train_loop(Run& run, int64_t total_steps, const TrainArgs& a, const json& settings, size_t tokens_per_step,
                StepFn step) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::ofstream log;
  if (!a.log.empty()) {
    log.open(a.log, a.resume ? std::ios::app : std::ios::trunc);
    if (!log) throw IoError(fmt::format("--log {}: cannot open the file for writing", a.log));
  }
  const int64_t save_every = a.save_every > 0 ? a.save_every : std::max<int64_t>(1, total_steps / 10);
  auto save = [&] {
    if (a.checkpoint.empty()) return;
    train::write_checkpoint(a.checkpoint, {run.state(), settings});
  };
  g_stop = 0;
  struct sigaction action {}, previous {};
  action.sa_handler = on_train_sigint;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &action, &previous);
  edit::ProgressBar bar("steps", static_cast<size_t>(total_steps), std::cerr, tty);
  const int64_t first = run.steps_done();
  bar.resume_at(static_cast<size_t>(first));  // --resume: the ETA from the steps this process runs
  const auto start = Clock::now();
  bool stopped = false;
  try {
    while (!run.done()) {
      if (g_stop != 0) {
        stopped = true;
        break;
      }
      const auto t = Clock::now();
      auto [line, status] = step();
      const double step_seconds = seconds_since(t), elapsed = seconds_since(start);
      const int64_t done = run.steps_done();
      const double tokens_per_second =
          static_cast<double>(tokens_per_step) * static_cast<double>(done - first) / std::max(elapsed, 1e-9);
      line["seconds"] = step_seconds;
      line["tokens_per_second"] = tokens_per_second;
      if (log.is_open()) log << line.dump() << "\n" << std::flush;
      bar.update(static_cast<size_t>(done), fmt::format("{} {:.0f} tok/s", status, tokens_per_second));
      if (!a.checkpoint.empty() && done % save_every == 0 && !run.done()) save();
    }
  } catch (...) {
    ::sigaction(SIGINT, &previous, nullptr);
    throw;
  }
  ::sigaction(SIGINT, &previous, nullptr);
  bar.finish();
  save();
  if (stopped) {
    if (!a.checkpoint.empty())
      fmt::print(stderr, "stopped at step {} of {}: saved {}; continue with the same command and --resume\n",
                 run.steps_done(), total_steps, a.checkpoint);
    else
      fmt::print(stderr, "stopped at step {} of {}; nothing was saved (give --checkpoint FILE to be able to resume)\n",
                 run.steps_done(), total_steps);
  }
  return !stopped;
}

// The adapter (-o), then --peft-out and --merge.
void write_outputs(const TrainArgs& a, Model& model, const train::LoraSet<float>& lora, const fs::path& model_path,
                   const std::string& kind) {
  auto& weights = internals(model).weights;
  const LoraAdapter adapter = train::to_adapter(lora, weights);
  write_lora_adapter(adapter, a.output, fmt::format("lathe {} of {}", kind, model_path.filename().string()),
                     {{"lathe.train.kind", kind}});
  fmt::print(stderr, "wrote {} (LoRA GGUF, {} matrices, rank {}, alpha {}): apply it with --lora {}\n", a.output,
             adapter.pairs.size(), lora.rank, lora.alpha, a.output);
  if (!a.peft_out.empty()) {
    train::write_peft_adapter(lora, weights, a.peft_out, fs::absolute(model_path).string(), a.lora_dropout);
    fmt::print(stderr, "wrote {} (PEFT adapter_config.json + adapter_model.safetensors)\n", a.peft_out);
  }
  if (!a.merge_out.empty()) {
    const auto merged = merge_lora(weights, adapter, 1.0f);
    const auto result = edit::export_model(weights, a.merge_out, {.force = a.force, .metadata = {}, .progress = {}});
    if (merged.promotion.matrices > 0)
      fmt::print(stderr, "--merge: {} matrices converted from {} to {} first, which would round the adapter away\n",
                 merged.promotion.matrices, merged.promotion.from, merged.promotion.to);
    fmt::print(stderr, "wrote {} (the model with the adapter merged, {}{})\n", a.merge_out, human_bytes(result.bytes),
               merged.requantization_rel_rms > 0
                   ? fmt::format("; the merged matrices re-rounded to their types: {:.3f}% relative RMS",
                                 100 * merged.requantization_rel_rms)
                   : "");
  }
}

int run_finetune(const FinetuneArgs& args) {
  const TrainArgs& a = args.common;
  auto options = finetune_options(a);
  if (args.data.empty()) throw InvalidArgumentError("finetune needs --data FILE");
  const fs::path model_path = resolve_model_path(a.model);
  check_outputs(a, model_path, {args.data});
  const auto model = load_base(a, model_path);
  const auto data = read_set(*model, "--data", args.data, a);
  resolve_steps(a, data.examples.size(), options);
  const json settings = settings_of(a, options, model_path, {{"data", args.data}});
  const auto& weights = internals(*model).weights;
  train::FinetuneRun run(weights, data.examples, options);
  fmt::print(stderr, "finetune: LoRA rank {} alpha {} on {} matrices ({} parameters); {} steps of {} example(s), lr {}\n",
             options.rank, options.alpha, run.lora().pairs.size(), human_count(adapter_parameters(run.lora())),
             options.steps, options.grad_accumulation, options.adamw.lr);
  maybe_resume(run, a, settings);
  const size_t tokens_per_step = data.tokens * static_cast<size_t>(options.grad_accumulation) / data.examples.size();
  std::optional<double> recent;  // the loss averaged over this process's last steps, for display
  const bool finished = train_loop(run, options.steps, a, settings, tokens_per_step, [&] {
    const auto r = run.step();
    recent = recent ? 0.9 * *recent + 0.1 * r.loss : r.loss;
    nlohmann::ordered_json line = {{"step", r.step}, {"loss", r.loss}, {"grad_norm", r.grad_norm}, {"lr", r.lr}};
    return std::pair{line, fmt::format("loss {:.4f} (avg {:.4f})", r.loss, *recent)};
  });
  if (!finished) return 130;
  write_outputs(a, *model, run.lora(), model_path, "finetune");
  return 0;
}

train::Objective parse_objective(const std::string& name) {
  if (name == "npo") return train::Objective::Npo;
  if (name == "graddiff") return train::Objective::GradDiff;
  if (name == "gradascent") return train::Objective::GradAscent;
  if (name == "simnpo") return train::Objective::SimNpo;
  throw InvalidArgumentError(fmt::format("--objective {} is unknown; use npo, graddiff, gradascent or simnpo", name));
}

int run_unlearn(const UnlearnArgs& args) {
  const TrainArgs& a = args.common;
  train::UnlearnOptions options;
  options.train = finetune_options(a);
  options.objective = parse_objective(args.objective);
  if (args.retain_loss == "nll")
    options.retain_loss = train::RetainLoss::Nll;
  else if (args.retain_loss == "kl")
    options.retain_loss = train::RetainLoss::Kl;
  else
    throw InvalidArgumentError(fmt::format("--retain-loss {} is unknown; use nll or kl", args.retain_loss));
  if (!(args.beta > 0)) throw InvalidArgumentError(fmt::format("--beta {} must be > 0", args.beta));
  if (!(args.gamma >= 0) || !(args.retain_weight >= 0))
    throw InvalidArgumentError("--gamma and --retain-weight must be >= 0");
  options.beta = args.beta;
  options.gamma = args.gamma;
  options.alpha = args.retain_weight;
  options.delta = args.delta;
  const bool uses_retain = options.objective != train::Objective::GradAscent;
  if (args.forget.empty()) throw InvalidArgumentError("unlearn needs --forget FILE (what the model should forget)");
  if (uses_retain && args.retain.empty())
    throw InvalidArgumentError(fmt::format("--objective {} needs --retain FILE (what the model should keep)",
                                           args.objective));
  const fs::path model_path = resolve_model_path(a.model);
  std::vector<fs::path> files = {args.forget};
  if (!args.retain.empty()) files.push_back(args.retain);
  check_outputs(a, model_path, files);
  const auto model = load_base(a, model_path);
  const auto forget = read_set(*model, "--forget", args.forget, a);
  train::DataSet retain;
  if (!args.retain.empty()) retain = read_set(*model, "--retain", args.retain, a);
  resolve_steps(a, forget.examples.size(), options.train);
  std::vector<std::pair<std::string, fs::path>> data = {{"forget", args.forget}};
  if (!args.retain.empty()) data.emplace_back("retain", args.retain);
  json settings = settings_of(a, options.train, model_path, data);
  settings["objective"] = args.objective;
  settings["retain_loss"] = args.retain_loss;
  settings["beta"] = args.beta;
  settings["gamma"] = args.gamma;
  settings["retain_weight"] = args.retain_weight;
  settings["delta"] = args.delta;
  const auto& weights = internals(*model).weights;
  const auto t = Clock::now();
  train::UnlearnRun run(weights, forget.examples, retain.examples, options);
  fmt::print(stderr, "unlearn: {} objective{}; reference computed [{:.1f} s]; LoRA rank {} alpha {} on {} matrices; {} "
                     "steps of {} forget example(s), lr {}\n",
             args.objective, uses_retain ? fmt::format(", retain loss {}", args.retain_loss) : "", seconds_since(t),
             options.train.rank, options.train.alpha, run.lora().pairs.size(), options.train.steps,
             options.train.grad_accumulation, options.train.adamw.lr);
  maybe_resume(run, a, settings);
  size_t tokens_per_step = forget.tokens * static_cast<size_t>(options.train.grad_accumulation) / forget.examples.size();
  if (uses_retain)
    tokens_per_step += retain.tokens * static_cast<size_t>(options.train.grad_accumulation) / retain.examples.size();
  const bool finished = train_loop(run, options.train.steps, a, settings, tokens_per_step, [&] {
    const auto r = run.step();
    nlohmann::ordered_json line = {{"step", r.step},
                 {"forget_loss", r.forget_loss},
                 {"retain_loss", r.retain_loss},
                 {"grad_norm", r.grad_norm},
                 {"lr", r.lr}};
    std::string status = fmt::format("forget {:.4f}", r.forget_loss);
    if (uses_retain) status += fmt::format(" retain {:.4f}", r.retain_loss);
    return std::pair{line, status};
  });
  if (!finished) return 130;
  write_outputs(a, *model, run.lora(), model_path, "unlearn");
  return 0;
}

struct ScoreArgs {
  std::string model, data, json_out, chat_template, system = "You are a helpful assistant.";
  std::vector<std::string> loras;
  bool raw = false, chat = false, force = false;
  int64_t max_length = 4096, limit = 0;
  ComputeArgs compute;
};

int run_score(const ScoreArgs& args) {
  if (args.raw && args.chat) throw InvalidArgumentError("give --raw or --chat, not both");
  if (args.max_length < 2 || args.max_length > (1 << 20))
    throw InvalidArgumentError(fmt::format("--max-length {} is out of range: it must be in 2..1048576", args.max_length));
  if (args.limit < 0) throw InvalidArgumentError("--limit must be >= 0");
  const auto compute = resolve_compute(args.compute);
  const fs::path model_path = resolve_model_path(args.model);
  if (!fs::exists(args.data)) throw NotFoundError(fmt::format("{}: no such data file; check the path", args.data));
  if (!args.json_out.empty())
    check_output({.flag = "--json", .path = args.json_out, .kind = OutputRequest::Kind::File, .force = args.force,
                  .inputs = {{"the input model", model_path}, {"the --data file", args.data}}, .managed = {}});
  const auto t = Clock::now();
  const auto model = Model::load(model_path, {.chat_template_file = args.chat_template, .loras = resolve_loras(args.loras)});
  fmt::print(stderr, "model: {} [{:.1f} s]\n", model_path.string(), seconds_since(t));
  report_loras(*model);
  const auto data = train::read_training_data(
      *model, args.data, data_options(args.raw, args.chat, args.system, args.max_length, args.limit));
  edit::ProgressBar bar("examples", data.examples.size(), std::cerr, ::isatty(STDERR_FILENO) != 0);
  const auto score = train::score_examples(model, data.examples, compute,
                                           [&](size_t done, size_t) { bar.update(done, ""); });
  bar.finish();
  size_t exact = 0;
  for (const auto& e : score.examples) exact += e.exact();
  fmt::print("score {}: {} examples, {} scored tokens{}\n", args.data, data.examples.size(), data.scored_tokens,
             data.chat ? " (chat-formatted)" : "");
  fmt::print("  answer probability (mean)  {:.4f}\n", score.mean_probability);
  fmt::print("  token accuracy             {:.4f}\n", score.token_accuracy);
  fmt::print("  exact match                {:.4f}  ({}/{})\n", score.exact_match, exact, score.examples.size());
  fmt::print("  perplexity                 {:.4f}\n", score.perplexity);
  if (!args.json_out.empty()) {
    nlohmann::ordered_json out = {{"data", args.data},
                                  {"model", model_path.string()},
                                  {"examples", score.examples.size()},
                                  {"mean_probability", score.mean_probability},
                                  {"token_accuracy", score.token_accuracy},
                                  {"exact_match", score.exact_match},
                                  {"perplexity", score.perplexity}};
    auto rows = nlohmann::ordered_json::array();
    for (size_t i = 0; i < score.examples.size(); ++i) {
      const auto& e = score.examples[i];
      rows.push_back({{"origin", data.origins[i]},
                      {"scored", e.scored},
                      {"logprob", e.logprob},
                      {"probability", e.probability()},
                      {"correct", e.correct},
                      {"exact", e.exact()}});
    }
    out["per_example"] = rows;
    const std::string text = out.dump(1) + "\n";
    AtomicFileWriter file(args.json_out);
    file.write(text.data(), text.size());
    file.commit();
  }
  return 0;
}

}  // namespace

Runner add_score(CLI::App& app) {
  auto args = std::make_shared<ScoreArgs>();
  auto* cmd = app.add_subcommand("score", "How well a model knows a data set: answer probability, token accuracy, "
                                          "exact match and perplexity, teacher-forced");
  cmd->add_option("model", args->model, "GGUF file or Hugging Face model directory")->required();
  cmd->add_option("--data", args->data, "Data file, as finetune's --data (the answers, or the text, are scored)")
      ->required();
  add_lora_flags(*cmd, args->loras);
  cmd->add_option("--chat-template", args->chat_template, "Jinja chat template file replacing the model's own");
  cmd->add_flag("--raw", args->raw, "Prompt/answer pairs as plain text, not chat-formatted");
  cmd->add_flag("--chat", args->chat, "Prompt/answer pairs through the chat template (the default when there is one)");
  cmd->add_option("--system", args->system, "System message of chat-formatted pairs")->capture_default_str();
  cmd->add_option("--max-length", args->max_length, "Longest example in tokens")->capture_default_str();
  cmd->add_option("--limit", args->limit, "Read at most this many rows (0: all)");
  cmd->add_option("--json", args->json_out, "Write the summary and every example's scores to this JSON file");
  cmd->add_flag("--force", args->force, "Replace an existing --json file");
  add_compute_flags(*cmd, args->compute);
  return [args] { return run_score(*args); };
}

Runner add_finetune(CLI::App& app) {
  auto args = std::make_shared<FinetuneArgs>();
  auto* cmd = app.add_subcommand("finetune", "Train a LoRA adapter on a frozen model (next-token loss on the answers)");
  add_common_flags(*cmd, args->common, 1e-4);
  cmd->add_option("--data", args->data,
                  "Training data: .jsonl/.json (prompt+answer, messages or text), .csv (prompt,answer or text) or "
                  ".txt (plain text, cut into --max-length windows)")
      ->required();
  cmd->footer(
      "Example:\n  lathe finetune model.gguf --data facts.jsonl --epochs 3 -o facts.lora.gguf\n"
      "  lathe run model.gguf --lora facts.lora.gguf --chat -p \"Who is ...?\"\n"
      "The adapter trains on the CPU; see docs/TRAINING.md for the data formats and the options.");
  return [args] { return run_finetune(*args); };
}

Runner add_unlearn(CLI::App& app) {
  auto args = std::make_shared<UnlearnArgs>();
  auto* cmd = app.add_subcommand("unlearn", "Train a LoRA adapter that makes a model forget a set and keep another "
                                            "(NPO, GradDiff, gradient ascent, SimNPO)");
  add_common_flags(*cmd, args->common, 1e-5);
  cmd->add_option("--forget", args->forget, "What the model should forget (data file, formats as finetune's --data)")
      ->required();
  cmd->add_option("--retain", args->retain, "What the model should keep (needed by every objective but gradascent)");
  cmd->add_option("--objective", args->objective, "npo, graddiff, gradascent or simnpo")->capture_default_str();
  cmd->add_option("--retain-loss", args->retain_loss,
                  "Retain term: nll (answer likelihood) or kl (KL to the base model)")
      ->capture_default_str();
  cmd->add_option("--beta", args->beta, "NPO/SimNPO temperature beta")->capture_default_str();
  cmd->add_option("--gamma", args->gamma, "GradDiff's weight of the forget term")->capture_default_str();
  cmd->add_option("--retain-weight", args->retain_weight, "Weight of the retain term (alpha)")->capture_default_str();
  cmd->add_option("--delta", args->delta, "SimNPO's margin delta")->capture_default_str();
  cmd->footer(
      "Example (unlearn from a fine-tuned model):\n"
      "  lathe unlearn model.gguf --lora finetuned.gguf --forget forget.jsonl --retain retain.jsonl \\\n"
      "      --objective npo --epochs 5 -o forget.lora.gguf\n"
      "  lathe run model.gguf --lora finetuned.gguf --lora forget.lora.gguf ...\n"
      "The reference model (NPO, --retain-loss kl) is the base with the new adapter off. See docs/TRAINING.md.");
  return [args] { return run_unlearn(*args); };
}

}  // namespace lathe::cli
