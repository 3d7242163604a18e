// lathe's C++ API for running models: load a model, open a session (a context with its KV
// cache), tokenize, evaluate tokens, read logits, sample, generate with a streaming callback.
// The CLI uses only this header (and the other headers in include/lathe/).
//
//   auto model = lathe::Model::load("SmolLM2-135M-Instruct.Q4_1.gguf");
//   lathe::Session session(model, {.n_ctx = 2048});
//   lathe::GenerateOptions gen;  gen.max_tokens = 64;  gen.sampling.temperature = 0;
//   lathe::generate(session, model->tokenize("Once upon a time", true), gen,
//                   [](std::string_view piece) { std::cout << piece << std::flush; return true; });
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/compute.hpp"
#include "lathe/error.hpp"
#include "lathe/generate.hpp"
#include "lathe/hooks.hpp"
#include "lathe/sampling.hpp"

namespace lathe {

// A LoRA adapter to merge into the weights at load: llama.cpp's adapter GGUF (what
// convert_lora_to_gguf.py and `lathe ablate --lora-out` write), applied as W + s B A with
// s = scale * alpha / rank (scale alone when the adapter has no alpha), as llama.cpp's --lora.
struct LoraSpec {
  std::filesystem::path path;
  float scale = 1.0f;
};

struct LoadOptions {
  // Scan every weight for NaN/Inf at load (slow on big models); the first bad tensor is reported
  // by name in a FormatError.
  bool check_tensors = false;
  // Convert every weight matrix to this type after loading ("Q8_0", "Q4_0", "Q4_1", "F16",
  // "BF16", "F32"), as llama-quantize would, without writing a file; empty: keep the stored types.
  std::string requantize = {};
  // A Jinja chat template file that replaces the model's own (tokenizer.chat_template /
  // chat_template); empty: the model's. IoError when it cannot be read.
  std::filesystem::path chat_template_file = {};
  // Adapters merged into the weights, in order, before --requantize converts them. Each merged
  // matrix is stored back in its type (exact for F32, one more rounding for F16/BF16/Q8_0), except
  // targets stored under 8 bits per weight (Q4_0, Q4_1, Q4_K, ...), which become Q8_0 (or F16)
  // first: merged back into such a type, an adapter's small update is largely rounded away.
  std::vector<LoraSpec> loras = {};
};

// An adapter merged at load (LoadOptions::loras), for display.
struct AppliedLora {
  std::string path;
  float scale = 1.0f;
  size_t matrices = 0;                // matrices it changed
  double requantization_rel_rms = 0;  // ||Q(W') - W'|| / ||W'|| of those matrices (0 for F32)
  std::vector<std::string> ignored;   // adapter tensors not applied (norm vectors, as llama.cpp)
  // Targets stored under 8 bits per weight (Q4_1, Q4_K...) are converted before the merge (to
  // Q8_0, or F16), which would otherwise round the adapter's update away: how many, from/to.
  size_t promoted = 0;
  std::string promoted_from, promoted_to;
  uint64_t promoted_bytes = 0;  // memory those copies add
};

// What a loaded model is, for display and for callers sizing things.
struct ModelSummary {
  std::string path;
  std::string format;        // "gguf" or "safetensors"
  std::string architecture;  // "llama", "qwen2", "qwen3", "phi3", "qwen2moe", "qwen3moe", "olmoe"
  std::string weight_type;   // the most common matrix type, e.g. "Q4_1"
  uint32_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  uint32_t n_vocab = 0, n_ctx_train = 0;
  uint64_t n_params = 0;
  uint64_t weight_bytes = 0;  // bytes of tensor data
  // Mixtures of experts (n_expert 0: dense): experts per layer and per token, and what one token
  // uses: the parameters and weight bytes with each layer's routed experts counted at
  // n_expert_used / n_expert (= n_params / weight_bytes for dense models).
  uint32_t n_expert = 0, n_expert_used = 0;
  uint64_t n_params_active = 0, weight_bytes_active = 0;
  std::vector<AppliedLora> loras;  // LoadOptions::loras as applied
};

class Model {
 public:
  // A GGUF file or a Hugging Face directory (config.json + safetensors, single or sharded), or an
  // "org/name" found in the Hugging Face cache. Weights stay memory-mapped in their stored type.
  // Throws NotFoundError / IoError / FormatError / UnsupportedError naming the file, tensor or
  // architecture (listing the supported ones or the missing tensors).
  static std::shared_ptr<const Model> load(const std::filesystem::path& path, const LoadOptions& options = {});

  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSummary& summary() const noexcept;

  // Text -> ids. add_special adds BOS (and EOS) where the vocabulary asks for them; parse_special
  // turns special-token text such as "<|im_start|>" into its id.
  std::vector<TokenId> tokenize(std::string_view text, bool add_special, bool parse_special = true) const;
  std::string detokenize(std::span<const TokenId> ids, bool skip_special = false) const;
  uint32_t n_vocab() const noexcept;
  // Ids that end a generation: EOS, and end-of-turn tokens such as <|im_end|>, <|eot_id|>, <|end|>.
  bool is_end_of_generation(TokenId id) const noexcept;
  TokenId bos() const noexcept;  // -1 when the vocabulary has none

  // The model's chat template applied to `messages` (a JSON array of {"role", "content"}), as
  // transformers' apply_chat_template(tokenize=False) renders it. Throws NotFoundError when the
  // model has no template.
  std::string apply_chat_template(const nlohmann::json& messages, bool add_generation_prompt) const;
  bool has_chat_template() const noexcept;

  // The same, for editing the weights in place (lathe/edit.hpp). Sessions accept it too; edits
  // between evaluations are seen by every session of the model.
  static std::shared_ptr<Model> load_mutable(const std::filesystem::path& path, const LoadOptions& options = {});

  struct Impl;

 private:
  // lathe's own rooms reach the inside through api/model_impl.hpp (internals()), users do not.
  friend struct Internals;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The longest context a session accepts (tokens).
inline constexpr uint32_t kMaxContextLength = 1u << 22;

struct SessionOptions {
  // Context length in tokens, at most kMaxContextLength; 0 = min(training context, 4096). On the
  // CPU the KV cache's memory is committed as positions are used, not all up front.
  uint32_t n_ctx = 0;
  ComputeOptions compute;
};

// Memory a session holds, by purpose (bytes).
struct MemoryUse {
  std::string device;       // "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  uint64_t weights = 0;     // the device copy of the weights (0 on the CPU: the file stays mapped)
  uint64_t kv = 0;          // KV cache
  uint64_t scratch = 0;     // activations, logits
  uint64_t free = 0, total = 0;  // the device's free and total memory after allocation (0 on the CPU)
  // Layer streaming (CUDA with ComputeOptions::vram_budget, docs/STREAMING.md): layers streamed of
  // n_layers, the device slots they take turns in (each slot_bytes, counted in `weights`), their
  // pinned host copies and the seconds making those took; min_budget: the least vram_budget this
  // engine runs in (every layer streamed through two slots).
  uint32_t streamed_layers = 0, n_layers = 0, slots = 0;
  uint64_t slot_bytes = 0, pinned_host = 0, min_budget = 0;
  double pinning_seconds = 0;
};

// One conversation's state: the tokens evaluated so far and their keys/values.
class Session {
 public:
  Session(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  ~Session();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;

  // Appends `tokens` to the context and runs the model over them (in n_batch chunks). Afterwards
  // logits() holds the last token's logits; with all_logits, logits_at(i) holds those of every
  // token of this call. Throws InvalidArgumentError for an empty span or an id outside the
  // vocabulary, and ContextLengthError ("context length exceeded: N > M") when the context would
  // overflow (nothing is evaluated then).
  void eval(std::span<const TokenId> tokens, bool all_logits = false);
  std::span<const float> logits() const;  // n_vocab floats
  std::span<const float> logits_at(size_t index) const;  // index into the last eval(all_logits)
  // The argmax of logits() over the tokenizer's vocabulary (argmax_logit, lathe/sampling.hpp: the
  // first on ties, NaN and -inf never taken, -1 if every logit is one of those), computed where
  // the logits are: on a GPU only the id crosses PCIe. What a Sampler with picks_argmax() options
  // draws.
  TokenId greedy_token() const;

  const std::vector<TokenId>& tokens() const noexcept;  // everything evaluated so far
  uint32_t n_past() const noexcept;
  uint32_t n_ctx() const noexcept;
  // Forgets everything after the first n tokens (n <= n_past()); reset() forgets all.
  void truncate(uint32_t n);
  void reset();
  // Bytes held by the KV cache.
  uint64_t kv_bytes() const noexcept;
  // Weights / KV / scratch memory on the session's device, and what is left free there.
  MemoryUse memory_use() const;
  const SessionOptions& options() const noexcept;

  const Model& model() const noexcept;

  // Residual-stream hooks (lathe/hooks.hpp) run by every later eval(); nullptr removes them.
  // Throws InvalidArgumentError when a hook names a layer or vector size the model lacks.
  void set_hooks(std::shared_ptr<ResidualHooks> hooks);
  const std::shared_ptr<ResidualHooks>& hooks() const noexcept;

  struct Impl;

 private:
  friend GenerateResult generate(Session&, std::span<const TokenId>, const GenerateOptions&, const TextCallback&);
  std::unique_ptr<Impl> impl_;
};

// Evaluates `prompt` on top of what the session holds and samples up to max_tokens tokens,
// streaming their text. The session keeps the prompt and the generated tokens (multi-turn chat
// reuses them). Throws InvalidArgumentError for bad options or an empty prompt on an empty
// session, ContextLengthError as described above.
GenerateResult generate(Session& session, std::span<const TokenId> prompt, const GenerateOptions& options,
                        const TextCallback& on_text = {});

struct BatchGenerateOptions {
  GenerateOptions generate;     // per sequence (truncate_prompt is not supported here)
  uint32_t n_parallel = 16;     // sequences decoded together (continuous batching)
  ComputeOptions compute;
  std::shared_ptr<ResidualHooks> hooks;  // applied to every sequence (captures see batched rows)
};

// Called after each new token of sequence `index` with all its text so far; return true to stop
// that sequence early (e.g. once a refusal marker has appeared).
using BatchStopCheck = std::function<bool(size_t index, std::string_view text)>;

// Generates a continuation for every prompt, decoding up to n_parallel sequences in one forward
// pass per step (each with its own KV cache; a finished sequence's slot takes the next prompt).
// Each prompt is sampled as generate() would on a fresh session with the same options. Results
// are in prompt order. Throws InvalidArgumentError for an empty prompt or bad options and
// ContextLengthError when a prompt + max_tokens exceeds the model's training context.
std::vector<GenerateResult> generate_batch(const std::shared_ptr<const Model>& model,
                                           const std::vector<std::vector<TokenId>>& prompts,
                                           const BatchGenerateOptions& options, const BatchStopCheck& stop = {});

// A long-lived engine: one model on one device with a pool of sequence slots (each with its own
// KV cache of n_ctx tokens) and a scheduler that evaluates every running sequence in one forward
// pass per step: prefill chunks of newly admitted prompts mixed with one decode token of each of
// the others (continuous batching). Create it once and reuse it: later calls allocate nothing
// and, on a GPU, reuse the captured decode step.
struct EngineOptions {
  uint32_t n_slots = 16;  // sequences in flight at once
  uint32_t n_ctx = 0;     // tokens per sequence (prompt + generated); 0 = min(training context, 4096)
  ComputeOptions compute;
  // GPU memory the engine may hold (its weights, KV cache and scratch), in bytes; 0 = no limit.
  // CUDA only. With n_ctx = 0 the context is shortened in steps of 256 tokens until the engine
  // fits (InvalidArgumentError below 256); a given n_ctx that does not fit is an
  // InvalidArgumentError saying the largest one that would. options().n_ctx tells the context used.
  uint64_t vram_budget = 0;
};

class Engine {
 public:
  // Throws InvalidArgumentError for bad options, UnsupportedError / DeviceError /
  // OutOfMemoryError as Session does.
  Engine(std::shared_ptr<const Model> model, const EngineOptions& options);
  ~Engine();
  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;

  const Model& model() const noexcept;
  const EngineOptions& options() const noexcept;  // with n_ctx resolved
  MemoryUse memory_use() const;

  struct Impl;

 private:
  friend struct Internals;
  std::unique_ptr<Impl> impl_;
};

// generate_batch() on a long-lived engine: up to options().n_slots sequences at once. Every prompt
// + max_tokens must fit the engine's n_ctx (ContextLengthError otherwise, before any work);
// `hooks` run on every sequence. Not to be called from two threads at once on one engine.
std::vector<GenerateResult> generate_batch(Engine& engine, const std::vector<std::vector<TokenId>>& prompts,
                                           const GenerateOptions& options,
                                           const std::shared_ptr<ResidualHooks>& hooks = {},
                                           const BatchStopCheck& stop = {});

}  // namespace lathe
