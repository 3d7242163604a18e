// Internal to the tokenizer room: the configurable stages behind Tokenizer, filled by the loaders
// (load_hf.cpp, load_gguf.cpp) and run by tokenizer.cpp.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/unicode.hpp"
#include "tokenizer/vocab.hpp"

namespace lathe::tokenizer {

// A PCRE2 pattern compiled with UTF + UCP (JIT when available), rewritten where PCRE2 and
// Oniguruma (which HF tokenizers uses) disagree; see regex.cpp.
class Regex {
 public:
  // `what` names the pattern's origin in errors (e.g. "tokenizer.json: pre_tokenizer.pattern").
  Regex(const std::string& pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends the [start, end) of every non-empty match in `subject` (valid UTF-8), left to right.
  void find_all(std::string_view subject, std::vector<std::pair<uint32_t, uint32_t>>& matches) const;
  static std::string escape(std::string_view literal);

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
  std::string what_;
};

// The regex of HF's ByteLevel pre-tokenizer with use_regex=true (GPT-2's), and the ones of the
// Llama 3 and Qwen 2 tokenizers (used for GGUF files, which name their pre-tokenizer only).
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// What a GGUF tokenizer.ggml.pre name stands for (the same mapping as llama.cpp's llama-vocab.cpp).
struct PreTokenizerChoice {
  std::vector<std::string> patterns;  // applied in order, each a Split with Isolated behaviour
  bool nfc = false;
  bool ignore_merges = false;
};
// Throws UnsupportedError naming `file` for a name lathe does not know.
PreTokenizerChoice choose_pre_tokenizer(const std::string& pre, const std::string& file);

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  std::shared_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
};

struct NormalizerStep {
  enum class Kind { Unicode, Prepend, Replace };
  Kind kind = Kind::Unicode;
  NormalForm form = NormalForm::NFC;
  std::string pattern;  // Replace: the literal to replace
  std::string content;  // Prepend: the prefix; Replace: the replacement
};

struct DecoderStep {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip };
  Kind kind = Kind::ByteLevel;
  std::string pattern, content;  // Replace; Strip uses content (one character) and start
  size_t start = 0;
};

struct BpeOptions {
  bool byte_fallback = false;  // unknown characters become <0xNN> tokens
  bool fuse_unk = false;       // consecutive unknowns become one unk token
  bool ignore_merges = false;  // a word that is itself a token is not merged (Llama 3)
  // SentencePiece BPE as stored in GGUF ("llama": scores, no merges): the candidate pairs are all
  // splits of a token into two tokens, ranked by the merged token's score (higher first); pairs
  // of equal score go leftmost first. This is llama.cpp's llm_tokenizer_spm and sentencepiece's
  // own BPE encoder. Vocabulary::merges is ignored.
  bool merge_by_score = false;
};

// Ranked-merge BPE over one pre-tokenized word, with a bounded per-word cache.
class BpeModel {
 public:
  BpeModel(const Vocabulary& vocab, BpeOptions options, const std::string& source);
  // Appends the ids of `word`. byte_level: `word` holds raw bytes to be mapped through the GPT-2
  // byte map; otherwise `word` is UTF-8 text whose characters are the initial symbols.
  void encode_word(std::string_view word, bool byte_level, std::vector<TokenId>& out) const;

 private:
  void merge_symbols(std::vector<TokenId>& symbols) const;
  void initial_symbols(std::string_view word, bool byte_level, std::vector<TokenId>& symbols) const;
  void add_ranked_merges(const Vocabulary& vocab, const std::string& source);
  void add_score_merges(const Vocabulary& vocab);

  const Vocabulary* vocab_;
  BpeOptions options_;
  struct MergeTarget {
    int32_t rank;
    TokenId id;
  };
  std::unordered_map<uint64_t, MergeTarget> merges_;  // (left id << 32 | right id) -> result
  std::array<TokenId, 256> byte_level_ids_{};          // byte -> id of its byte-level char, -1 if none
  std::array<TokenId, 256> byte_fallback_ids_{};       // byte -> id of "<0xNN>", -1 if none
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<TokenId>, TextHash, std::equal_to<>> cache_;
};

class Pipeline {
 public:
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  bool byte_level = false;  // pieces go through the GPT-2 byte map before BPE
  std::vector<DecoderStep> decoders;
  std::unique_ptr<BpeModel> model;
  // Indices into Vocabulary::added_tokens by the first byte of their content, longest first.
  std::array<std::vector<uint32_t>, 256> added_by_first_byte;
  bool has_normalized_added = false;
  const DecoderStep* strip_step = nullptr;  // points into `decoders`

  // Fills added_by_first_byte, has_normalized_added and strip_step; loaders call it last.
  void finalize(const Vocabulary& vocab);

  std::string normalize(std::string_view text) const;
  // Splits `text` into pieces ([start, end) offsets) by running every pre-tokenizer in turn.
  void pre_tokenize(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& pieces) const;
};

// Calls fn(left_id, right_id) for every split of token `id`'s text, at character boundaries,
// into two tokens that are both in the vocabulary: the merges that can make this token. Used to
// derive SentencePiece merges from scores (bpe.cpp) and to export them (export_hf.cpp).
template <typename Fn>
void for_each_two_token_split(const Vocabulary& vocab, size_t id, Fn&& fn) {
  const std::string_view text = vocab.tokens[id];
  for (size_t split = 0; split < text.size();) {
    const size_t len = utf8_sequence_length(text, split);
    split += len == 0 ? 1 : len;
    if (split >= text.size()) break;
    const auto left = vocab.find(text.substr(0, split)), right = vocab.find(text.substr(split));
    if (left && right) fn(*left, *right);
  }
}

}  // namespace lathe::tokenizer
