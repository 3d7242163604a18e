// The vocabulary shared by both loaders (Hugging Face tokenizer.json and GGUF metadata).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lathe::tokenizer {

using TokenId = int32_t;

// Hash for unordered_maps keyed by std::string that are searched with string_views.
struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

// GGUF's tokenizer.ggml.token_type numbering.
enum class TokenType : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// A token matched verbatim in the input before pre-tokenization (HF "added_tokens").
struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool special = false;      // control token: skipped by parse_special=false and skip_special decoding
  bool lstrip = false;       // the match swallows whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool normalized = false;   // matched in the normalized text rather than the raw text
  bool single_word = false;  // only matched when not inside a word
};

struct Vocabulary {
  std::vector<std::string> tokens;  // id -> text in the model's alphabet (byte-level chars, "▁"...)
  std::vector<float> scores;        // empty or one per token
  std::vector<TokenType> types;     // one per token
  std::vector<std::pair<std::string, std::string>> merges;  // BPE merges, best (rank 0) first
  std::optional<TokenId> bos, eos, unk, pad;
  bool add_bos = false;
  bool add_eos = false;
  std::vector<AddedToken> added_tokens;
  std::string chat_template;  // empty when absent

  size_t size() const noexcept { return tokens.size(); }
  std::optional<TokenId> find(std::string_view text) const;
  // Rebuilds the text -> id index; call after filling `tokens`. Later duplicates keep the first id.
  void build_index();

 private:
  std::unordered_map<std::string, TokenId, TextHash, std::equal_to<>> index_;
};

}  // namespace lathe::tokenizer
