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

#include "lathe/error.hpp"
#include "lathe/hooks.hpp"
#include "lathe/sampling.hpp"

namespace lathe {

using TokenId = int32_t;

struct LoadOptions {
  // Scan every weight for NaN/Inf at load (slow on big models); the first bad tensor is reported
  // by name in a FormatError.
  bool check_tensors = false;
  // Convert every weight matrix to this type after loading ("Q8_0", "Q4_0", "Q4_1", "F16",
  // "BF16", "F32"), as llama-quantize would, without writing a file; empty: keep the stored types.
  std::string requantize = {};
};

// What a loaded model is, for display and for callers sizing things.
struct ModelSummary {
  std::string path;
  std::string format;        // "gguf" or "safetensors"
  std::string architecture;  // "llama", "qwen2", "qwen3", "phi3"
  std::string weight_type;   // the most common matrix type, e.g. "Q4_1"
  uint32_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  uint32_t n_vocab = 0, n_ctx_train = 0;
  uint64_t n_params = 0;
  uint64_t weight_bytes = 0;  // bytes of tensor data
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
  const Impl& impl() const noexcept { return *impl_; }
  Impl& impl() noexcept { return *impl_; }

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// KV cache element type: IEEE half (default), float32, or Q8_0 (8-bit blocks of 32 with a half
// scale, as llama.cpp's q8_0 cache: about half of F16's memory; needs head_dim % 32 == 0).
enum class KvType { F16, F32, Q8_0 };

// Where a session computes: the CPU, or a CUDA GPU (weights uploaded once per model and device,
// KV cache on the device).
struct Device {
  enum class Kind { Cpu, Cuda };
  Kind kind = Kind::Cpu;
  int index = 0;  // CUDA device number

  static Device cpu() noexcept { return {}; }
  static Device cuda(int index = 0) noexcept { return {Kind::Cuda, index}; }
  // "cpu", "cuda" (= cuda:0) or "cuda:N"; InvalidArgumentError listing the accepted forms.
  static Device parse(std::string_view text);
  std::string name() const;  // "cpu", "cuda:0"
  bool is_cuda() const noexcept { return kind == Kind::Cuda; }
};

struct SessionOptions {
  uint32_t n_ctx = 0;       // context length in tokens; 0 = min(training context, 4096)
  uint32_t n_batch = 512;   // tokens evaluated per forward pass during prefill
  int n_threads = 0;        // 0 = one per hardware thread (CPU)
  KvType kv_type = KvType::F16;
  Device device = Device::cpu();
};

// Memory a session holds, by purpose (bytes).
struct MemoryUse {
  std::string device;       // "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3)"
  uint64_t weights = 0;     // the device copy of the weights (0 on the CPU: the file stays mapped)
  uint64_t kv = 0;          // KV cache
  uint64_t scratch = 0;     // activations, logits
  uint64_t free = 0, total = 0;  // the device's free and total memory after allocation (0 on the CPU)
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ContextLengthError : public InvalidArgumentError {
 public:
  ContextLengthError(uint64_t needed, uint64_t n_ctx);
  uint64_t needed() const noexcept { return needed_; }
  uint64_t n_ctx() const noexcept { return n_ctx_; }

 private:
  uint64_t needed_, n_ctx_;
};

struct GenerateOptions {
  int32_t max_tokens = 128;  // >= 0
  SamplingOptions sampling;
  bool stop_at_end_of_generation = true;
  // When prompt + max_tokens exceed the context: false -> ContextLengthError before any work;
  // true -> keep the last tokens of the prompt that leave room for max_tokens.
  bool truncate_prompt = false;
};

enum class StopReason { MaxTokens, EndOfGeneration, Callback };

struct GenerateResult {
  std::vector<TokenId> tokens;  // generated ids (without the prompt)
  std::string text;             // their text
  uint32_t n_prompt = 0;        // prompt tokens evaluated by this call
  double prompt_seconds = 0, generate_seconds = 0;
  StopReason stop = StopReason::MaxTokens;
};

// Called with each new piece of text as soon as it is complete UTF-8; return false to stop.
using TextCallback = std::function<bool(std::string_view piece)>;

// Evaluates `prompt` on top of what the session holds and samples up to max_tokens tokens,
// streaming their text. The session keeps the prompt and the generated tokens (multi-turn chat
// reuses them). Throws InvalidArgumentError for bad options or an empty prompt on an empty
// session, ContextLengthError as described above.
GenerateResult generate(Session& session, std::span<const TokenId> prompt, const GenerateOptions& options,
                        const TextCallback& on_text = {});

struct BatchGenerateOptions {
  GenerateOptions generate;     // per sequence (truncate_prompt is not supported here)
  uint32_t n_parallel = 16;     // sequences decoded together (continuous batching)
  int n_threads = 0;            // 0 = one per hardware thread
  KvType kv_type = KvType::F16;
  Device device = Device::cpu();
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

}  // namespace lathe
