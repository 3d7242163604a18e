// Export of a GGUF vocabulary as Hugging Face tokenizer files (tokenizer.json and the
// tokenizer_config.json settings), for `lathe convert` GGUF -> safetensors directories.
//
// The exported tokenizer.json uses only components that both HF `tokenizers` and lathe's own
// loader understand, and encodes like the GGUF tokenizer (tested against both in
// tests/tokenizer/export_hf_test.cpp):
//   gpt2  : byte-level BPE with the merges; tokenizer.ggml.pre becomes Split(Regex) steps (+ NFC
//           for qwen2, ignore_merges for llama3/llama-bpe), then ByteLevel(use_regex=false).
//   llama : SentencePiece-style BPE as in Llama 2's tokenizer.json (Prepend/Replace "▁",
//           byte_fallback, fuse_unk); merges are derived from the scores the way HF's
//           SentencePieceExtractor does (every split of a token into two tokens, ordered by the
//           token's score). Rank-based BPE then equals score-based merging except when two
//           *different* merges of *equal* score compete for an overlapping symbol: there
//           sentencepiece/llama.cpp take the leftmost, HF the lower rank (see docs/TOKENIZER.md).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "tokenizer/vocab.hpp"

namespace lathe::gguf {
class File;
}

namespace lathe::tokenizer {

// The GGUF settings that are not part of Vocabulary.
struct HfExportOptions {
  std::string ggml_model = "gpt2";   // tokenizer.ggml.model: "gpt2" or "llama"
  std::string ggml_pre = "default";  // tokenizer.ggml.pre (gpt2 only)
  bool add_space_prefix = true;      // tokenizer.ggml.add_space_prefix (llama only)
};

// Reads tokenizer.ggml.model / pre / add_space_prefix from `file` (defaults as llama.cpp).
HfExportOptions hf_export_options_from_gguf(const gguf::File& file);

// The tokenizer.json document. Throws UnsupportedError for a model or pre-tokenizer name lathe
// cannot express. Tokens whose text repeats an earlier token's are left out of model.vocab (a
// JSON object holds each text once; the earlier id is the one encoding produces anyway).
nlohmann::json tokenizer_json_from_vocabulary(const Vocabulary& vocab, const HfExportOptions& options);

// The tokenizer_config.json settings: bos/eos/unk/pad tokens, add_bos_token/add_eos_token,
// chat_template, added_tokens_decoder, tokenizer_class (PreTrainedTokenizerFast, so that
// transformers uses tokenizer.json as it is).
nlohmann::json tokenizer_config_from_vocabulary(const Vocabulary& vocab, const HfExportOptions& options);

}  // namespace lathe::tokenizer
