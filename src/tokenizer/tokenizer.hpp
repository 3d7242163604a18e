// Text <-> token ids, exact to Hugging Face `tokenizers` for BPE vocabularies (byte-level BPE as
// in GPT-2/Llama 3/Qwen/SmolLM, and SentencePiece-style BPE with byte fallback as in Llama 2).
// GGUF SentencePiece vocabularies (scores, no merges) merge by score, as llama.cpp does.
//
// Pipeline of encode(): (1) invalid UTF-8 is replaced by U+FFFD (docs/TOKENIZER.md); (2) added
// tokens are split out longest-first; (3) each remaining segment is normalized (NFC, Prepend,
// Replace...), (4) pre-tokenized (regex Split, ByteLevel, Digits), (5) each piece is BPE-merged.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.hpp"

namespace lathe::gguf {
class File;
}

namespace lathe::tokenizer {

struct EncodeOptions {
  bool add_special = false;   // prepend BOS / append EOS when the vocabulary asks for them
  // Match added tokens in the text. Special (control) added tokens are only matched when this is
  // on; non-special added tokens are always matched (HF's encode_special_tokens semantics).
  bool parse_special = true;
};

struct DecodeOptions {
  bool skip_special = false;  // leave out special added tokens (BOS, EOS, <|im_end|>...)
};

class Pipeline;  // normalizers, pre-tokenizers, BPE model and decoder (tokenizer.cpp)

class Tokenizer {
 public:
  // From a Hugging Face tokenizer.json (+ optional tokenizer_config.json in the same directory).
  // `path` may be the tokenizer.json file or the directory holding it.
  static Tokenizer from_hf_file(const std::filesystem::path& path);
  // From the JSON texts themselves; `config_json` may be empty. `display_name` is used in errors.
  static Tokenizer from_hf_json(std::string_view tokenizer_json, std::string_view config_json,
                                const std::string& display_name);
  // From GGUF metadata (tokenizer.ggml.*): tokenizer.ggml.model "gpt2" (byte-level BPE, with the
  // pre-tokenizer types listed in docs/TOKENIZER.md) or "llama" (SentencePiece BPE, by score).
  static Tokenizer from_gguf(const gguf::File& file);
  // A GGUF file, a model directory (GGUF inside or tokenizer.json), or a tokenizer.json.
  static Tokenizer from_path(const std::filesystem::path& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  const Vocabulary& vocab() const noexcept { return *vocab_; }

  // Token ids for `text` (any bytes; never throws for content).
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Bytes for `ids` (may be invalid UTF-8 when ids split characters). Throws InvalidArgumentError
  // for an id outside the vocabulary.
  std::string decode(const std::vector<TokenId>& ids, const DecodeOptions& options = {}) const;
  // The bytes one token stands for on its own (no sequence-start space stripping).
  std::string token_bytes(TokenId id) const;
  // The token's text in the vocabulary's alphabet ("Ġhello", "▁the", "<0x0A>").
  const std::string& token_text(TokenId id) const;

 private:
  friend class StreamDecoder;
  // The pipeline's model refers to *vocab, which therefore lives on the heap.
  Tokenizer(std::unique_ptr<Vocabulary> vocab, std::unique_ptr<Pipeline> pipeline);
  // Bytes of `id` with its decoder applied; `strip_budget` counts leading strip characters still
  // to remove at the start of the sequence (Llama 2 drops the first space).
  void append_token_bytes(TokenId id, std::string& out, size_t& strip_budget, const DecodeOptions& options) const;
  size_t initial_strip() const noexcept;

  std::unique_ptr<Vocabulary> vocab_;
  std::unique_ptr<Pipeline> pipeline_;
};

// Incremental decoding for streaming generation: push() returns the text that became complete,
// always ending at a UTF-8 character boundary; finish() returns what is left, with each
// ill-formed or truncated sequence replaced by U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, DecodeOptions options = {});
  std::string push(TokenId id);
  std::string finish();

 private:
  const Tokenizer* tokenizer_;
  DecodeOptions options_;
  size_t strip_budget_;
  std::string pending_;  // bytes not yet emitted
};

// Text of `bytes` with ill-formed UTF-8 replaced by U+FFFD (same policy as encode()).
std::string bytes_to_text(std::string_view bytes);

}  // namespace lathe::tokenizer
