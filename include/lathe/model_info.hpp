// What `lathe inspect` shows: a model's format, architecture, hyper-parameters, tokenizer and
// tensor table, for a GGUF file, a Hugging Face model directory, or a hub cache id (org/name).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lathe {

struct TensorSummary {
  std::string name;
  std::string type;            // "Q4_1", "F32", "BF16", ...
  std::vector<uint64_t> shape; // in the file's own order (GGUF: innermost first; safetensors: outermost first)
  uint64_t bytes = 0;
  std::string file;            // shard file name (safetensors) or the GGUF file name
};

struct TokenizerSummary {
  bool present = false;
  std::string source;   // "gguf metadata" or the tokenizer.json path
  std::string model;    // "gpt2" / "llama" (GGUF), "BPE" / "Unigram" ... (tokenizer.json)
  std::string pre;      // GGUF tokenizer.ggml.pre, or the tokenizer.json pre-tokenizer type
  uint64_t n_tokens = 0, n_merges = 0, n_added = 0;
  std::optional<int64_t> bos_id, eos_id, unk_id, pad_id;
  std::string bos_token, eos_token;
  std::optional<bool> add_bos, add_eos;
  bool has_chat_template = false;
  uint64_t chat_template_chars = 0;
};

struct ModelInfo {
  std::string path;            // resolved path
  std::string format;          // "gguf" or "safetensors"
  std::string format_version;  // "3" for GGUF v3, "" for safetensors
  std::vector<std::string> files;
  uint64_t file_bytes = 0;     // sum over files
  std::string name;            // general.name or the directory name
  std::string architecture;    // as the file names it
  bool architecture_supported = false;
  std::string architecture_problem;  // why hyper-parameters could not be read, when they could not
  // Canonical hyper-parameters, present when the architecture is supported.
  uint32_t n_layer = 0, n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, rope_dim = 0, n_vocab = 0,
           n_ctx_train = 0;
  float rms_eps = 0, rope_freq_base = 0;
  bool tied_embeddings = false;
  std::string rope_scaling;  // "" when none
  // Mixture of experts (n_expert 0: dense): experts per layer, used per token, their widths.
  uint32_t n_expert = 0, n_expert_used = 0, n_ff_exp = 0, n_ff_shexp = 0;
  std::vector<std::pair<std::string, std::string>> metadata;  // key, short rendering (GGUF kv / config.json)
  TokenizerSummary tokenizer;
  std::vector<TensorSummary> tensors;

  uint64_t n_parameters() const;
  // The parameters one token uses: the routed experts' tensors (GGUF *_exps, Hugging Face
  // .experts.) count n_expert_used / n_expert of their size; = n_parameters() for dense models.
  uint64_t n_active_parameters() const;
  uint64_t tensor_bytes() const;
  uint64_t active_tensor_bytes() const;  // the same weighting of the bytes: read per token
  std::string to_json(int indent = 2) const;
};

// Opens and validates the model's files (no tensor data is read). Throws lathe::Error subclasses.
ModelInfo inspect_model(const std::string& path_or_hub_id);

}  // namespace lathe
