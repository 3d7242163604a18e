// Options and helpers shared by the generating subcommands (`run`, `chat`, `bench`): sampling
// flags, session flags, the seed, and control vectors.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lathe/lathe.hpp"
#include "lathe/sampling.hpp"

namespace lathe::cli {

struct SamplingArgs {
  SamplingOptions options;
  CLI::Option* seed_option = nullptr;  // to tell "--seed 0" from no --seed
};

// --temp --top-k --top-p --min-p --repeat-penalty --frequency-penalty --presence-penalty
// --repeat-last-n --seed, bound to `args` (defaults: SamplingOptions' defaults).
void add_sampling_flags(CLI::App& cmd, SamplingArgs& args);

// The validated options; without --seed, a random seed (from std::random_device).
SamplingOptions resolve_sampling(const SamplingArgs& args);
bool seed_given(const SamplingArgs& args);
// Prints a random seed to stderr so that the run can be repeated with --seed (nothing when the
// seed was given or decoding is greedy). Call it once the work is about to start.
void announce_seed(const SamplingArgs& args, const SamplingOptions& resolved);

// -t/--threads and --device: declared here once for every command that runs a model.
struct ComputeArgs {
  int64_t n_threads = 0;
  std::string device = "cpu";
  bool batch_invariant = false;
  std::string vram_budget;  // empty: none; SIZE or auto
};
// -t/--threads, --device, --batch-invariant, --vram-budget.
void add_compute_flags(CLI::App& cmd, ComputeArgs& args,
                       const std::string& device_help = "where to compute: cpu, cuda or cuda:N (see `lathe devices`)");
// Threads in 0..4096 and a device lathe knows (InvalidArgumentError naming the flag otherwise).
ComputeOptions resolve_compute(const ComputeArgs& args);

struct SessionArgs {
  int64_t n_ctx = 0;
  ComputeArgs compute;
  int64_t n_batch = 512;
  std::string kv_type = "f16";
};

// -c/--ctx-size, -t/--threads, -b/--batch-size, --device (and --kv-type when with_kv_type).
void add_session_flags(CLI::App& cmd, SessionArgs& args, bool with_kv_type);

// A warning on stderr when -c asks for more tokens than the model was trained on (call it once
// the model is loaded; the context is still used as given).
void check_context_size(const SessionOptions& options, const Model& model);

// On a GPU: "cuda:0 (NAME): weights X, KV cache Y, scratch Z; F free of T" to stderr.
void report_device_memory(const Session& session);

// Validated SessionOptions (negative sizes are InvalidArgumentError naming the flag).
SessionOptions resolve_session(const SessionArgs& args);

// Throws InvalidArgumentError("<flag> must be >= 0 ...") when value < 0.
void require_non_negative(const char* flag, int64_t value);

// --control-vector FILE[:SCALE] (repeatable) and --control-vector-layers A-B, llama.cpp's
// control vectors (edit/control_vector.hpp) added to the residual stream of every token.
struct ControlVectorArgs {
  std::vector<std::string> specs;
  std::string layers;
};
void add_control_vector_flags(CLI::App& cmd, ControlVectorArgs& args);
// The hooks for `model`, or nullptr when no --control-vector was given (then
// --control-vector-layers is an InvalidArgumentError, as it would do nothing).
std::shared_ptr<ResidualHooks> resolve_control_vectors(const ControlVectorArgs& args, const Model& model);

// --sae PATH --sae-features SPEC [--sae-hook NAME] [--sae-clamp-everywhere]: a sparse-autoencoder
// feature gate (edit/sae.hpp) in SAELens's format at the SAE's hook point.
struct SaeArgs {
  std::string path, features, hook;
  bool clamp_everywhere = false;
};
void add_sae_flags(CLI::App& cmd, SaeArgs& args);
// The flags' pairing and the feature spec's syntax, before any model is loaded
// (InvalidArgumentError naming the flag).
void check_sae_flags(const SaeArgs& args);
// The hooks of --control-vector and --sae together (control vectors first where both use one
// point), or nullptr when neither was given. Prints what the SAE gate is to stderr.
std::shared_ptr<ResidualHooks> resolve_hooks(const ControlVectorArgs& control_vectors, const SaeArgs& sae,
                                             const Model& model);

// --lora FILE[:SCALE] (repeatable): llama.cpp LoRA adapters merged into the weights at load.
void add_lora_flags(CLI::App& cmd, std::vector<std::string>& specs);
// The adapters as LoadOptions::loras (InvalidArgumentError naming --lora for a bad spec).
std::vector<LoraSpec> resolve_loras(const std::vector<std::string>& specs);
// "lora FILE (scale S): N matrices changed[, re-rounded to their types: X% relative RMS]" per
// applied adapter, and a warning for tensors it had that were not applied, to stderr.
void report_loras(const Model& model);

}  // namespace lathe::cli
