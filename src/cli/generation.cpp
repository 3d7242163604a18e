#include "cli/generation.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>
#include <utility>

#include "cli/format.hpp"
#include "edit/control_vector.hpp"
#include "edit/sae.hpp"
#include "io/file_spec.hpp"

namespace lathe::cli {

void add_sampling_flags(CLI::App& cmd, SamplingArgs& args) {
  SamplingOptions& o = args.options;
  cmd.add_option("--temp", o.temperature, "temperature; 0 = greedy (argmax)")->capture_default_str();
  cmd.add_option("--top-k", o.top_k, "keep the K most likely tokens; <= 0 = off")->capture_default_str();
  cmd.add_option("--top-p", o.top_p, "keep the smallest set with this probability mass, (0, 1]; 1 = off")
      ->capture_default_str();
  cmd.add_option("--min-p", o.min_p, "drop tokens less likely than this times the best one, [0, 1]; 0 = off")
      ->capture_default_str();
  cmd.add_option("--repeat-penalty", o.repeat_penalty, "penalize repeated tokens (> 0; 1 = off)")
      ->capture_default_str();
  cmd.add_option("--frequency-penalty", o.frequency_penalty, "subtract count * value from repeated tokens")
      ->capture_default_str();
  cmd.add_option("--presence-penalty", o.presence_penalty, "subtract value from tokens already present")
      ->capture_default_str();
  cmd.add_option("--repeat-last-n", o.penalty_last_n, "tokens the penalties look back over; 0 = off, -1 = all")
      ->capture_default_str();
  args.seed_option = cmd.add_option("--seed", o.seed, "random seed (default: random, printed to stderr)");
}

namespace {

// validate() refuses every out-of-range sampling option, naming its flag. --top-k is the one the
// API takes but the CLI refuses: SamplingOptions reads any top_k <= 0 as "off", while a user's
// negative --top-k is a mistake (0 is how to turn it off), not a value to reinterpret.
void check_top_k_flag(const SamplingOptions& o) {
  if (o.top_k < 0)
    throw InvalidArgumentError(fmt::format("--top-k {} is out of range: it must be >= 0 (0 = off)", o.top_k));
}

}  // namespace

SamplingOptions resolve_sampling(const SamplingArgs& args) {
  SamplingOptions options = args.options;
  check_top_k_flag(options);
  validate(options);
  if (!seed_given(args)) {
    std::random_device device;
    options.seed = (static_cast<uint64_t>(device()) << 32) | device();
  }
  return options;
}

bool seed_given(const SamplingArgs& args) { return args.seed_option != nullptr && args.seed_option->count() > 0; }

void announce_seed(const SamplingArgs& args, const SamplingOptions& resolved) {
  // Greedy decoding draws no random numbers, so its seed does not matter.
  if (!seed_given(args) && resolved.temperature > 0.0f)
    fmt::print(stderr, "seed: {} (repeat this run with --seed {})\n", resolved.seed, resolved.seed);
}

void add_compute_flags(CLI::App& cmd, ComputeArgs& args, const std::string& device_help) {
  cmd.add_option("-t,--threads", args.n_threads,
                 fmt::format("CPU threads; 0 = one per physical core ({} here)", default_cpu_threads()))
      ->capture_default_str();
  cmd.add_option("--device", args.device, device_help)->capture_default_str();
  cmd.add_flag("--batch-invariant", args.batch_invariant,
               "make each sequence's results independent of the batch it runs in (CUDA: per-token kernels, slower "
               "prefill; the CPU is always batch-invariant)");
  cmd.add_option("--vram-budget", args.vram_budget,
                 "GPU memory for weights, KV cache and scratch, e.g. 4G (K/M/G/T: powers of 1024), or auto (what is "
                 "free, less 1 GiB); the layers that do not fit stream from host memory in every pass "
                 "(docs/STREAMING.md). serve: without -c the context per slot shrinks first while the weights fit");
}

ComputeOptions resolve_compute(const ComputeArgs& args) {
  if (args.n_threads < 0 || args.n_threads > 4096)
    throw InvalidArgumentError(
        fmt::format("-t/--threads {} is out of range: it must be in 0..4096 (0 = one per physical core)", args.n_threads));
  ComputeOptions options;
  options.n_threads = static_cast<int>(args.n_threads);
  options.batch_invariant = args.batch_invariant;
  try {
    options.device = Device::parse(args.device);
  } catch (const InvalidArgumentError& e) {
    throw InvalidArgumentError(fmt::format("--device: {}", e.what()));
  }
  if (!args.vram_budget.empty()) {
    if (!options.device.is_cuda())
      throw InvalidArgumentError(fmt::format("--vram-budget {} applies to a GPU; this runs on {} (add --device cuda)",
                                             args.vram_budget, options.device.name()));
    options.vram_budget =
        args.vram_budget == "auto" ? kVramBudgetAuto : parse_size(args.vram_budget, "--vram-budget", uint64_t{1} << 50);
  }
  // More threads than CPUs compute the same results, only slower: say so rather than refuse.
  const int cpus = available_cpus();
  if (!options.device.is_cuda() && options.n_threads > cpus)
    fmt::print(stderr,
               "warning: -t/--threads {} is more than the {} CPUs this process may use; the extra threads wait for "
               "cores and make decoding slower (use -t {} or less, or 0 for one per physical core)\n",
               options.n_threads, cpus, cpus);
  return options;
}

void add_session_flags(CLI::App& cmd, SessionArgs& args, bool with_kv_type) {
  cmd.add_option("-c,--ctx-size", args.n_ctx,
                 fmt::format("context length in tokens, at most {}; 0 = the model's trained context, at most 4096 "
                             "(on the CPU, KV cache memory is committed as the context fills)",
                             kMaxContextLength))
      ->capture_default_str();
  cmd.add_option("-b,--batch-size", args.n_batch, "prompt tokens per forward pass (prefill batch)")
      ->capture_default_str();
  add_compute_flags(cmd, args.compute);
  if (with_kv_type)
    cmd.add_option("--kv-type", args.kv_type, "KV cache element type: f16, f32 or q8_0 (half of f16's memory)")
        ->capture_default_str();
}

void require_non_negative(const char* flag, int64_t value) {
  if (value < 0) throw InvalidArgumentError(fmt::format("{} is {}; it must be >= 0", flag, value));
}

SessionOptions resolve_session(const SessionArgs& args) {
  require_non_negative("-c/--ctx-size", args.n_ctx);
  if (args.n_ctx > kMaxContextLength)
    throw InvalidArgumentError(fmt::format("-c/--ctx-size {} is larger than lathe supports: it must be in 0..{} (0 = "
                                           "the model's trained context, at most 4096)",
                                           args.n_ctx, kMaxContextLength));
  if (args.n_batch < 1 || args.n_batch > 65536)
    throw InvalidArgumentError(fmt::format("-b/--batch-size {} is out of range: it must be in 1..65536", args.n_batch));
  if (args.kv_type != "f16" && args.kv_type != "f32" && args.kv_type != "q8_0")
    throw InvalidArgumentError(fmt::format("--kv-type {} is not supported; use f16, f32 or q8_0", args.kv_type));
  SessionOptions options;
  options.n_ctx = static_cast<uint32_t>(args.n_ctx);
  options.compute = resolve_compute(args.compute);
  options.compute.kv_type = args.kv_type == "f32" ? KvType::F32 : args.kv_type == "q8_0" ? KvType::Q8_0 : KvType::F16;
  options.compute.n_batch = static_cast<uint32_t>(args.n_batch);
  return options;
}

void check_context_size(const SessionOptions& options, const Model& model) {
  const uint32_t trained = model.summary().n_ctx_train;
  if (options.n_ctx != 0 && trained != 0 && options.n_ctx > trained)
    fmt::print(stderr,
               "warning: -c/--ctx-size {} is more than the {} tokens {} was trained on; past that the model's output "
               "usually degrades (use -c {} or less, or 0 for the default)\n",
               options.n_ctx, trained, model.summary().path, trained);
}

void report_device_memory(const Session& session) {
  if (!session.options().compute.device.is_cuda()) return;
  const MemoryUse m = session.memory_use();
  auto mib = [](uint64_t b) { return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1 << 20)); };
  fmt::print(stderr, "{}: weights {}, KV cache {}, scratch {}; {} free of {}\n", m.device, mib(m.weights), mib(m.kv),
             mib(m.scratch), mib(m.free), mib(m.total));
  if (m.streamed_layers > 0)
    fmt::print(stderr,
               "streaming {} of {} layers through {} slots of {} on the GPU, from {} of pinned host memory (made in "
               "{:.1f} s); the least --vram-budget that runs: {}\n",
               m.streamed_layers, m.n_layers, m.slots, mib(m.slot_bytes), mib(m.pinned_host), m.pinning_seconds,
               mib(m.min_budget));
}

void add_control_vector_flags(CLI::App& cmd, ControlVectorArgs& args) {
  cmd.add_option("--control-vector", args.specs,
                 "add a control vector (llama.cpp GGUF) to the residual stream, FILE or FILE:SCALE; repeatable, "
                 "the scaled vectors are summed");
  cmd.add_option("--control-vector-layers", args.layers,
                 "apply control vectors only to layers A-B (inclusive; default: all, 1..n_layer-1)");
}

std::shared_ptr<ResidualHooks> resolve_control_vectors(const ControlVectorArgs& args, const Model& model) {
  if (args.specs.empty()) {
    if (!args.layers.empty())
      throw InvalidArgumentError("--control-vector-layers needs --control-vector (it selects the layers they steer)");
    return nullptr;
  }
  std::vector<edit::ControlVectorSpec> specs;
  for (const auto& spec : args.specs) specs.push_back(edit::parse_control_vector_spec(spec));
  std::optional<std::pair<uint32_t, uint32_t>> range;
  const ModelSummary& summary = model.summary();
  if (!args.layers.empty()) {
    range = edit::parse_layer_range(args.layers, "--control-vector-layers");
    if (range->second >= summary.n_layer)
      throw InvalidArgumentError(fmt::format("--control-vector-layers {}: the model has layers 0..{}; give a range "
                                             "within them",
                                             args.layers, summary.n_layer - 1));
  }
  auto hooks = std::make_shared<ResidualHooks>();
  edit::add_control_vectors(*hooks, specs, summary.n_layer, summary.n_embd, range);
  if (hooks->empty())
    throw InvalidArgumentError(fmt::format("--control-vector{}: no direction of the control vector(s) falls in {}, so "
                                           "they would change nothing; the vectors hold directions for other layers",
                                           range ? "-layers " + args.layers : "",
                                           range ? "that range" : "the model's layers 1.." +
                                                                      std::to_string(summary.n_layer - 1)));
  return hooks;
}

void add_sae_flags(CLI::App& cmd, SaeArgs& args) {
  cmd.add_option("--sae", args.path,
                 "sparse autoencoder in SAELens's format (directory with cfg.json + sae_weights.safetensors; "
                 "standard, jumprelu or topk) whose features --sae-features edits in the residual stream");
  cmd.add_option("--sae-features", args.features,
                 "SAE features to edit: ID (set to 0), ID:VALUE (clamp where active; negative values allowed), "
                 "ID*SCALE, comma-separated, e.g. 12,57:-4,90*0.5");
  cmd.add_option("--sae-hook", args.hook,
                 "hook point of the SAE instead of cfg.json's hook_name, e.g. blocks.3.hook_resid_post or "
                 "blocks.3.resid_post");
  cmd.add_flag("--sae-clamp-everywhere", args.clamp_everywhere,
               "apply ID:VALUE at every token, also where the feature is inactive (f = 0)");
}

void check_sae_flags(const SaeArgs& args) {
  if (args.path.empty()) {
    for (const auto& [given, flag] : {std::pair{!args.features.empty(), "--sae-features"},
                                      std::pair{!args.hook.empty(), "--sae-hook"},
                                      std::pair{args.clamp_everywhere, "--sae-clamp-everywhere"}})
      if (given) throw InvalidArgumentError(fmt::format("{} needs --sae (the SAE whose features it edits)", flag));
    return;
  }
  if (args.features.empty())
    throw InvalidArgumentError(fmt::format("--sae {} needs --sae-features (which features to edit, e.g. 12,57:-4); "
                                           "without it the SAE would change nothing",
                                           args.path));
  (void)edit::parse_sae_features(args.features, "--sae-features");
  if (!args.hook.empty()) (void)edit::sae_hook_site(args.hook, "--sae-hook");
}

namespace {

// Loads the SAE, checks it against the model and adds its gate to `hooks`.
void add_sae_gate(const SaeArgs& args, const Model& model, ResidualHooks& hooks) {
  auto edits = edit::parse_sae_features(args.features, "--sae-features");
  auto sae = std::make_shared<const edit::Sae>(edit::load_sae(args.path));
  HookSite site;
  if (!args.hook.empty()) {
    site = edit::sae_hook_site(args.hook, "--sae-hook");
  } else if (sae->hook_name.empty()) {
    throw InvalidArgumentError(fmt::format("{}: cfg.json names no hook point (hook_name); give one with --sae-hook, "
                                           "e.g. blocks.3.hook_resid_post",
                                           sae->cfg_path.string()));
  } else {
    site = edit::sae_hook_site(sae->hook_name, sae->cfg_path.string() + ": hook_name");
  }
  const ModelSummary& summary = model.summary();
  edit::check_sae_fits(*sae, site, summary.n_layer, summary.n_embd);
  edit::check_sae_features(edits, sae->d_sae, "--sae-features");
  fmt::print(stderr, "sae: {} at {}, editing {} feature{}{}\n", sae->describe(), site.name(), edits.size(),
             edits.size() == 1 ? "" : "s", args.clamp_everywhere ? " (clamped at every token)" : "");
  hooks.transform(site, std::make_shared<edit::SaeGate>(std::move(sae), std::move(edits),
                                                        edit::SaeGateOptions{.clamp_everywhere = args.clamp_everywhere}));
}

}  // namespace

std::shared_ptr<ResidualHooks> resolve_hooks(const ControlVectorArgs& control_vectors, const SaeArgs& sae,
                                             const Model& model) {
  check_sae_flags(sae);
  auto hooks = resolve_control_vectors(control_vectors, model);
  if (sae.path.empty()) return hooks;
  if (!hooks) hooks = std::make_shared<ResidualHooks>();
  add_sae_gate(sae, model, *hooks);
  return hooks;
}

void add_lora_flags(CLI::App& cmd, std::vector<std::string>& specs) {
  cmd.add_option("--lora", specs,
                 "merge a LoRA adapter (llama.cpp's GGUF) into the weights at load, FILE or FILE:SCALE (default "
                 "scale 1, times the adapter's alpha / rank); repeatable, applied in order");
}

std::vector<LoraSpec> resolve_loras(const std::vector<std::string>& specs) {
  std::vector<LoraSpec> loras;
  for (const auto& spec : specs) {
    auto parsed = parse_file_with_scale(spec, "--lora");
    if (!std::filesystem::is_regular_file(parsed.path))
      throw NotFoundError(fmt::format("--lora {}: no such adapter file; check the path", parsed.path.string()));
    loras.push_back({std::move(parsed.path), parsed.scale});
  }
  return loras;
}

void report_loras(const Model& model) {
  for (const auto& lora : model.summary().loras) {
    std::string rounding;
    if (lora.requantization_rel_rms > 0)
      rounding = fmt::format(", stored back in their types (rounding {:.3g}% relative RMS)",
                             100 * lora.requantization_rel_rms);
    fmt::print(stderr, "lora {} (scale {}): {} matrices changed{}\n", lora.path, lora.scale, lora.matrices, rounding);
    if (lora.promoted > 0)
      fmt::print(stderr, "lora {}: {} of them converted from {} to {} before the merge (+{:.1f} MiB), which would round "
                         "the adapter's update away (--requantize TYPE chooses the type of every matrix)\n",
                 lora.path, lora.promoted, lora.promoted_from, lora.promoted_to, lora.promoted_bytes / 1048576.0);
    if (!lora.ignored.empty()) {
      const size_t shown = std::min<size_t>(lora.ignored.size(), 3);
      fmt::print(stderr, "warning: lora {}: {} tensors not applied (norm vectors, which llama.cpp skips too): {}{}\n",
                 lora.path, lora.ignored.size(),
                 fmt::join(lora.ignored.begin(), lora.ignored.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
                 shown < lora.ignored.size() ? ", ..." : "");
    }
  }
}

}  // namespace lathe::cli
