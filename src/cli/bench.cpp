// `lathe bench`: prompt-processing and generation throughput, measured like llama-bench.
//   ppP: P random token ids evaluated in one eval() call on an empty session.
//   tgN: after BOS, N single-token eval() calls (only those N are timed).
//   With -d D (llama-bench's --n-depth), D random tokens fill the context first, untimed, and the
//   test is named "ppP @ dD" / "tgN @ dD": speed at the position a chat reaches after its prompt.
// Both read the logits after each eval(), as llama-bench's decode copies them to the host.
// Each test runs once as a warm-up, then -r times; the table shows mean ± sample sd of tok/s.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cuda/device.hpp"
#include "cli/commands.hpp"
#include "cli/format.hpp"
#include "cli/generation.hpp"
#include "lathe/lathe.hpp"

namespace lathe::cli {
namespace {

struct BenchArgs {
  std::string model;
  int64_t n_prompt = 512, n_gen = 128, reps = 5, depth = 0;
  SessionArgs session;
  SaeArgs sae;
  bool json = false;
  std::string requantize;
  std::vector<std::string> loras;
  int64_t parallel = 0;
};

struct TestResult {
  std::string name;
  uint64_t n_prompt = 0, n_gen = 0, n_depth = 0;
  std::vector<double> samples_ts;
  double mean = 0, stddev = 0;
};

double seconds_of(const auto& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Mean and sample standard deviation (n - 1), as llama-bench reports them.
void summarize(TestResult& t) {
  double sum = 0;
  for (double v : t.samples_ts) sum += v;
  t.mean = sum / static_cast<double>(t.samples_ts.size());
  double squares = 0;
  for (double v : t.samples_ts) squares += (v - t.mean) * (v - t.mean);
  t.stddev = t.samples_ts.size() > 1 ? std::sqrt(squares / static_cast<double>(t.samples_ts.size() - 1)) : 0.0;
}

// Token ids drawn uniformly from the vocabulary with a fixed seed, so every run sees the same input.
std::vector<TokenId> random_tokens(uint32_t n_vocab, uint64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<TokenId> ids(count);
  for (TokenId& id : ids) id = static_cast<TokenId>(rng() % n_vocab);
  return ids;
}

// Each timed eval() is followed by reading its logits, as llama.cpp's decode copies them out
// (the CUDA engine otherwise leaves them on the device until they are asked for).
void read_logits(const Session& session) { (void)session.logits(); }

// Empties the session, then evaluates `depth` (untimed) in prefill batches.
void reset_to_depth(Session& session, std::span<const TokenId> depth) {
  session.reset();
  if (!depth.empty()) session.eval(depth);
}

std::string depth_suffix(size_t depth) { return depth > 0 ? fmt::format(" @ d{}", depth) : std::string(); }

TestResult bench_prompt(Session& session, uint64_t n_prompt, int64_t reps, std::span<const TokenId> depth) {
  TestResult t;
  t.name = fmt::format("pp{}", n_prompt) + depth_suffix(depth.size());
  t.n_depth = depth.size();
  t.n_prompt = n_prompt;
  const auto ids = random_tokens(session.model().n_vocab(), n_prompt, 1234);
  for (int64_t rep = -1; rep < reps; ++rep) {  // rep -1: warm-up
    reset_to_depth(session, depth);
    const double seconds = seconds_of([&] {
      session.eval(ids);
      read_logits(session);
    });
    if (rep >= 0) t.samples_ts.push_back(static_cast<double>(n_prompt) / seconds);
  }
  summarize(t);
  return t;
}

TestResult bench_generation(Session& session, uint64_t n_gen, int64_t reps, std::span<const TokenId> depth) {
  TestResult t;
  t.name = fmt::format("tg{}", n_gen) + depth_suffix(depth.size());
  t.n_depth = depth.size();
  t.n_gen = n_gen;
  const Model& model = session.model();
  const auto ids = random_tokens(model.n_vocab(), n_gen, 5678);
  const TokenId first = model.bos() >= 0 ? model.bos() : ids.front();
  for (int64_t rep = -1; rep < reps; ++rep) {
    if (depth.empty()) {
      session.reset();
      session.eval(std::span<const TokenId>(&first, 1));
    } else {
      reset_to_depth(session, depth);
    }
    const double seconds = seconds_of([&] {
      for (const TokenId& id : ids) {
        session.eval(std::span<const TokenId>(&id, 1));
        read_logits(session);
      }
    });
    if (rep >= 0) t.samples_ts.push_back(static_cast<double>(n_gen) / seconds);
  }
  summarize(t);
  return t;
}

// P sequences decoded together (continuous batching, generate_batch): each starts from BOS and
// generates N tokens greedily; tokens per second summed over the sequences (the 1-token prompts'
// prefill is inside the timed region). `hooks` (an SAE gate) run on every sequence.
TestResult bench_parallel(const std::shared_ptr<const Model>& model, const SessionOptions& so, uint64_t n_gen,
                          uint32_t n_parallel, int64_t reps, const std::shared_ptr<ResidualHooks>& hooks) {
  TestResult t;
  t.name = fmt::format("tg{}x{}", n_gen, n_parallel);
  t.n_gen = n_gen * n_parallel;
  const auto ids = random_tokens(model->n_vocab(), n_parallel, 91);
  std::vector<std::vector<TokenId>> prompts;
  for (uint32_t i = 0; i < n_parallel; ++i) prompts.push_back({model->bos() >= 0 ? model->bos() : ids[i]});
  BatchGenerateOptions options;
  options.generate.max_tokens = static_cast<int32_t>(n_gen);
  options.generate.sampling.temperature = 0;
  options.generate.stop_at_end_of_generation = false;
  options.n_parallel = n_parallel;
  options.compute = so.compute;
  options.hooks = hooks;
  for (int64_t rep = -1; rep < reps; ++rep) {
    size_t generated = 0;
    const double seconds = seconds_of([&] {
      for (const auto& r : generate_batch(model, prompts, options)) generated += r.tokens.size();
    });
    if (rep >= 0) t.samples_ts.push_back(static_cast<double>(generated) / seconds);
  }
  summarize(t);
  return t;
}

int bench(const BenchArgs& args) {
  require_non_negative("-p/--n-prompt", args.n_prompt);
  require_non_negative("-n/--n-gen", args.n_gen);
  require_non_negative("-d/--depth", args.depth);
  if (args.reps < 1) throw InvalidArgumentError(fmt::format("-r/--repetitions is {}; it must be >= 1", args.reps));
  if (args.parallel < 0 || args.parallel > 512)
    throw InvalidArgumentError(fmt::format("--parallel {} is out of range: it must be in 0..512 (0 = skip)", args.parallel));
  if (args.n_prompt > 1'000'000 || args.n_gen > 1'000'000 || args.depth > 1'000'000)
    throw InvalidArgumentError(
        fmt::format("-p/--n-prompt {}, -n/--n-gen {} and -d/--depth {} must each be at most 1000000 tokens",
                    args.n_prompt, args.n_gen, args.depth));
  // Options that would measure nothing are refused rather than skipped.
  if (args.n_prompt == 0 && args.n_gen == 0)
    throw InvalidArgumentError("-p/--n-prompt 0 and -n/--n-gen 0 leave nothing to measure; give one of them > 0");
  if (args.parallel > 0 && args.n_gen == 0)
    throw InvalidArgumentError(fmt::format("--parallel {} times generation, which -n/--n-gen 0 skips; give -n > 0",
                                           args.parallel));
  SessionOptions session_options = resolve_session(args.session);
  check_sae_flags(args.sae);
  const auto needed =
      static_cast<uint32_t>(args.depth + std::max<int64_t>({args.n_prompt, args.n_gen + (args.depth > 0 ? 0 : 1), 1}));
  if (session_options.n_ctx == 0) session_options.n_ctx = needed;
  if (session_options.n_ctx < needed)
    throw InvalidArgumentError(fmt::format("-c/--ctx-size {} is too small for the tests: they need {} tokens",
                                           session_options.n_ctx, needed));
  const ComputeOptions& compute = session_options.compute;
  const int threads = compute.n_threads > 0 ? compute.n_threads : default_cpu_threads();

  const auto model = Model::load(
      args.model, LoadOptions{.check_tensors = false, .requantize = args.requantize, .loras = resolve_loras(args.loras)});
  report_loras(*model);
  check_context_size(session_options, *model);
  Session session(model, session_options);
  // The SAE gate (--sae) runs in every test.
  session.set_hooks(resolve_hooks({}, args.sae, *model));
  report_device_memory(session);
  const std::string backend = compute.device.is_cuda() ? compute.device.name() : "cpu";
  std::vector<TestResult> results;
  const auto depth = random_tokens(model->n_vocab(), static_cast<uint64_t>(args.depth), 4321);
  if (args.n_prompt > 0)
    results.push_back(bench_prompt(session, static_cast<uint64_t>(args.n_prompt), args.reps, depth));
  if (args.n_gen > 0) results.push_back(bench_generation(session, static_cast<uint64_t>(args.n_gen), args.reps, depth));
  if (args.parallel > 0 && args.n_gen > 0)
    results.push_back(bench_parallel(model, session_options, static_cast<uint64_t>(args.n_gen),
                                     static_cast<uint32_t>(args.parallel), args.reps, session.hooks()));

  const ModelSummary& s = model->summary();
  const MemoryUse memory = session.memory_use();
  // Streaming: the pinned host-to-device rate, measured now, and the floor it sets on a pass
  // (every streamed byte crosses once per pass).
  const double h2d_gbps = memory.streamed_layers > 0 ? cuda::pinned_host_to_device_gbps(compute.device.index) : 0;
  const double floor_s = h2d_gbps > 0 ? static_cast<double>(memory.pinned_host) / (h2d_gbps * 1e9) : 0;
  if (args.json) {
    const std::string device = memory.device;
    nlohmann::json out = nlohmann::json::array();
    for (const TestResult& t : results)
      out.push_back({{"model", s.path},
                     {"architecture", s.architecture},
                     {"format", s.format},
                     {"weight_type", s.weight_type},
                     {"n_params", s.n_params},
                     {"model_bytes", s.weight_bytes},
                     {"n_experts", s.n_expert},
                     {"n_experts_used", s.n_expert_used},
                     {"n_params_active", s.n_params_active},
                     {"model_bytes_active", s.weight_bytes_active},
                     {"backend", backend},
                     {"device", device},
                     {"n_batch", session_options.compute.n_batch},
                     {"kv_type", args.session.kv_type},
                     {"batch_invariant", session_options.compute.batch_invariant},
                     {"vram_budget", session_options.compute.vram_budget == kVramBudgetAuto
                                         ? nlohmann::json("auto")
                                         : nlohmann::json(session_options.compute.vram_budget)},
                     {"streamed_layers", memory.streamed_layers},
                     {"n_layers", memory.n_layers},
                     {"streamed_bytes_per_pass", memory.pinned_host},
                     {"pinning_seconds", memory.pinning_seconds},
                     {"h2d_gbps", h2d_gbps},
                     {"floor_s_per_pass", floor_s},
                     {"device_weight_bytes", memory.weights},
                     {"threads", threads},
                     {"test", t.name},
                     {"n_prompt", t.n_prompt},
                     {"n_gen", t.n_gen},
                     {"n_depth", t.n_depth},
                     {"reps", args.reps},
                     {"samples_ts", t.samples_ts},
                     {"avg_ts", t.mean},
                     {"stddev_ts", t.stddev}});
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  const std::string name = fmt::format("{} {} {}", s.architecture, human_count(s.n_params), s.weight_type);
  fmt::print("| model | size | params | backend | threads | test | t/s |\n");
  fmt::print("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
  for (const TestResult& t : results)
    fmt::print("| {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} |\n", name, human_bytes(s.weight_bytes),
               s.n_expert > 0 ? fmt::format("{} ({} active)", human_count(s.n_params), human_count(s.n_params_active))
                              : human_count(s.n_params),
               (backend == "cpu" ? std::string("CPU") : backend) + (compute.batch_invariant ? " batch-invariant" : ""),
               threads, t.name, t.mean, t.stddev);
  if (memory.streamed_layers > 0) {
    const double pinned_gib = static_cast<double>(memory.pinned_host) / (1ull << 30);
    fmt::print("\nstreaming {} of {} layers: {} per pass over a {:.1f} GB/s pinned link (measured now), a floor of {:.3f} "
               "s per pass ({:.2f} t/s at batch 1); host copies pinned in {:.1f} s ({:.2f} s/GiB)\n",
               memory.streamed_layers, memory.n_layers, human_bytes(memory.pinned_host), h2d_gbps, floor_s,
               floor_s > 0 ? 1.0 / floor_s : 0.0, memory.pinning_seconds,
               pinned_gib > 0 ? memory.pinning_seconds / pinned_gib : 0.0);
  }
  if (s.n_expert > 0)
    fmt::print("\n{} experts per layer, {} per token: {} of weights read per generated token (the routed experts' "
               "share of a batch's reads grows with the experts its tokens choose)\n",
               s.n_expert, s.n_expert_used, human_bytes(s.weight_bytes_active));
  return 0;
}

}  // namespace

Runner add_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "Measure prompt processing (pp) and generation (tg) speed, like llama-bench");
  cmd->add_option("-m,--model", args->model, "GGUF file, model directory, or Hugging Face org/name")->required();
  cmd->add_option("-p,--n-prompt", args->n_prompt, "prompt tokens for the pp test; 0 skips it")->capture_default_str();
  cmd->add_option("-n,--n-gen", args->n_gen, "tokens for the tg test; 0 skips it")->capture_default_str();
  cmd->add_option("-d,--depth", args->depth,
                  "tokens in the context before each pp/tg test (untimed; llama-bench's --n-depth); 0 = empty")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", args->reps, "timed repetitions of each test (after one warm-up)")
      ->capture_default_str();
  add_session_flags(*cmd, args->session, /*with_kv_type=*/true);
  cmd->add_flag("--json", args->json, "print a JSON array, one object per test");
  cmd->add_option("--parallel", args->parallel,
                  "also time P sequences decoded together (tg N x P, continuous batching); 0 skips it")
      ->capture_default_str();
  cmd->add_option("--requantize", args->requantize,
                  "convert the weights to this type after loading (Q8_0, Q4_0, Q4_1, F16, BF16, F32)");
  add_lora_flags(*cmd, args->loras);
  add_sae_flags(*cmd, args->sae);
  return [args]() -> int { return bench(*args); };
}

}  // namespace lathe::cli
