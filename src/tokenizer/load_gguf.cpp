// Loader for the tokenizer.ggml.* metadata of GGUF files. GGUF names its pre-tokenizer
// (tokenizer.ggml.pre) instead of storing it; the names map to the regexes of the Hugging Face
// tokenizers they were converted from (llama.cpp's llama-vocab.cpp uses the same mapping).
#include <set>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"
#include "tokenizer/tokenizer.hpp"

namespace lathe::tokenizer {

namespace {

constexpr uint64_t kMaxTokens = 1u << 24;

std::optional<TokenId> optional_id(const gguf::File& file, const char* key, size_t n_tokens) {
  const gguf::Value* value = file.find(key);
  if (value == nullptr) return std::nullopt;
  const std::string what = file.display_name() + ": " + key;
  const int64_t id = value->as_i64(what);
  if (id < 0 || static_cast<uint64_t>(id) >= n_tokens)
    throw FormatError(file.display_name(), key, 0,
                      "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n_tokens) + " tokens",
                      "fix or remove the key");
  return static_cast<TokenId>(id);
}

bool optional_flag(const gguf::File& file, const char* key, bool fallback) {
  const gguf::Value* value = file.find(key);
  return value == nullptr ? fallback : value->as_bool(file.display_name() + ": " + key);
}

}  // namespace

namespace {

// tokenizer.ggml.tokens, token_type and scores, checked against each other.
void load_tokens(const gguf::File& file, Vocabulary& vocab) {
  const std::string& name = file.display_name();
  const gguf::Array& tokens = file.get("tokenizer.ggml.tokens").as_array(name + ": tokenizer.ggml.tokens");
  if (tokens.items.size() > kMaxTokens)
    throw FormatError(name, "tokenizer.ggml.tokens", 0, "more than 2^24 tokens", "this is not a real vocabulary");
  const size_t n = tokens.items.size();
  vocab.tokens.reserve(n);
  for (size_t i = 0; i < n; ++i)
    vocab.tokens.push_back(tokens.items[i].as_string(name + ": tokenizer.ggml.tokens[" + std::to_string(i) + "]"));
  vocab.types.assign(n, TokenType::Normal);
  if (const gguf::Value* types = file.find("tokenizer.ggml.token_type")) {
    const gguf::Array& items = types->as_array(name + ": tokenizer.ggml.token_type");
    if (items.items.size() != n)
      throw FormatError(name, "tokenizer.ggml.token_type", 0,
                        std::to_string(items.items.size()) + " entries for " + std::to_string(n) + " tokens", "fix the file");
    for (size_t i = 0; i < n; ++i) {
      const int64_t type = items.items[i].as_i64(name + ": tokenizer.ggml.token_type[" + std::to_string(i) + "]");
      if (type < 1 || type > 6)
        throw FormatError(name, "tokenizer.ggml.token_type[" + std::to_string(i) + "]", 0,
                          "unknown token type " + std::to_string(type), "expected 1..6 (normal..byte)");
      vocab.types[i] = static_cast<TokenType>(type);
    }
  }
  if (const gguf::Value* scores = file.find("tokenizer.ggml.scores")) {
    const gguf::Array& items = scores->as_array(name + ": tokenizer.ggml.scores");
    if (items.items.size() != n)
      throw FormatError(name, "tokenizer.ggml.scores", 0,
                        std::to_string(items.items.size()) + " entries for " + std::to_string(n) + " tokens", "fix the file");
    vocab.scores.reserve(n);
    for (size_t i = 0; i < n; ++i)
      vocab.scores.push_back(static_cast<float>(items.items[i].as_f64(name + ": tokenizer.ggml.scores[" + std::to_string(i) + "]")));
  }
}

void load_merges(const gguf::File& file, Vocabulary& vocab) {
  const std::string& name = file.display_name();
  const gguf::Array& merges = file.get("tokenizer.ggml.merges").as_array(name + ": tokenizer.ggml.merges");
  vocab.merges.reserve(merges.items.size());
  for (size_t i = 0; i < merges.items.size(); ++i) {
    const std::string field = "tokenizer.ggml.merges[" + std::to_string(i) + "]";
    const std::string& text = merges.items[i].as_string(name + ": " + field);
    const size_t space = text.find(' ');
    if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
      throw FormatError(name, field, 0, "expected \"left right\" with exactly one space", "fix the file");
    vocab.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
  }
}

// Token types matched verbatim in the text, as llama.cpp does: control and user-defined tokens,
// and for SentencePiece vocabularies also the unknown token (HF's Llama tokenizers list <unk> as
// a special added token).
void collect_added_tokens(Vocabulary& vocab, bool unknown_is_special) {
  for (size_t i = 0; i < vocab.size(); ++i) {
    const TokenType type = vocab.types[i];
    const bool special = type == TokenType::Control || (unknown_is_special && type == TokenType::Unknown);
    if (!special && type != TokenType::UserDefined) continue;
    if (vocab.tokens[i].empty()) continue;
    AddedToken token;
    token.id = static_cast<TokenId>(i);
    token.content = vocab.tokens[i];
    token.special = special;
    vocab.added_tokens.push_back(std::move(token));
  }
}

void load_special_ids(const gguf::File& file, Vocabulary& vocab) {
  const size_t n = vocab.size();
  vocab.bos = optional_id(file, "tokenizer.ggml.bos_token_id", n);
  vocab.eos = optional_id(file, "tokenizer.ggml.eos_token_id", n);
  vocab.unk = optional_id(file, "tokenizer.ggml.unknown_token_id", n);
  vocab.pad = optional_id(file, "tokenizer.ggml.padding_token_id", n);
  if (const gguf::Value* tmpl = file.find("tokenizer.chat_template"))
    vocab.chat_template = tmpl->as_string(file.display_name() + ": tokenizer.chat_template");
}

// Byte-level BPE ("gpt2"): ranked merges, the pre-tokenizer named by tokenizer.ggml.pre.
std::unique_ptr<Pipeline> gpt2_pipeline(const gguf::File& file, const Vocabulary& vocab) {
  const std::string& name = file.display_name();
  const gguf::Value* pre_value = file.find("tokenizer.ggml.pre");
  const std::string pre = pre_value ? pre_value->as_string(name + ": tokenizer.ggml.pre") : "default";
  const PreTokenizerChoice choice = choose_pre_tokenizer(pre, name);
  auto pipeline = std::make_unique<Pipeline>();
  if (choice.nfc) pipeline->normalizers.push_back({NormalizerStep::Kind::Unicode, NormalForm::NFC, {}, {}});
  for (const std::string& pattern : choice.patterns) {
    PreTokenizerStep step;
    step.regex = std::make_shared<Regex>(pattern, name + ": tokenizer.ggml.pre=" + pre);
    pipeline->pre_tokenizers.push_back(std::move(step));
  }
  pipeline->byte_level = true;
  pipeline->decoders.push_back(DecoderStep{DecoderStep::Kind::ByteLevel, {}, {}, 0});
  BpeOptions options;
  options.ignore_merges = choice.ignore_merges;
  // Without an unk token, bytes missing from the vocabulary are dropped (as HF does).
  pipeline->model = std::make_unique<BpeModel>(vocab, options, name);
  return pipeline;
}

// SentencePiece BPE ("llama"): the text is one word with spaces written as U+2581 and, when
// tokenizer.ggml.add_space_prefix (default true), one U+2581 in front of each segment between
// added tokens; merges by score; characters outside the vocabulary become <0xNN> byte tokens.
// This is the HF pipeline of Llama 2's tokenizer.json (Prepend + Replace, byte_fallback, fuse_unk).
std::unique_ptr<Pipeline> spm_pipeline(const gguf::File& file, const Vocabulary& vocab) {
  const bool add_space_prefix = optional_flag(file, "tokenizer.ggml.add_space_prefix", true);
  const std::string space_marker = "\xE2\x96\x81";  // U+2581
  auto pipeline = std::make_unique<Pipeline>();
  if (add_space_prefix) pipeline->normalizers.push_back({NormalizerStep::Kind::Prepend, NormalForm::NFC, {}, space_marker});
  pipeline->normalizers.push_back({NormalizerStep::Kind::Replace, NormalForm::NFC, " ", space_marker});
  pipeline->decoders.push_back({DecoderStep::Kind::Replace, space_marker, " ", 0});
  pipeline->decoders.push_back({DecoderStep::Kind::ByteFallback, {}, {}, 0});
  pipeline->decoders.push_back({DecoderStep::Kind::Fuse, {}, {}, 0});
  if (add_space_prefix) pipeline->decoders.push_back({DecoderStep::Kind::Strip, {}, " ", 1});
  BpeOptions options;
  options.byte_fallback = true;
  options.fuse_unk = true;
  options.merge_by_score = true;
  pipeline->model = std::make_unique<BpeModel>(vocab, options, file.display_name());
  return pipeline;
}

}  // namespace

Tokenizer Tokenizer::from_gguf(const gguf::File& file) {
  const std::string& name = file.display_name();
  const std::string model = file.get("tokenizer.ggml.model").as_string(name + ": tokenizer.ggml.model");
  if (model != "gpt2" && model != "llama")
    throw UnsupportedError(name + ": tokenizer.ggml.model \"" + model +
                           "\" is not supported from GGUF (supported: \"gpt2\", byte-level BPE, and \"llama\", "
                           "SentencePiece BPE); use the model's tokenizer.json instead");
  const bool spm = model == "llama";
  auto vocab = std::make_unique<Vocabulary>();
  load_tokens(file, *vocab);
  if (!spm) load_merges(file, *vocab);
  collect_added_tokens(*vocab, spm);
  vocab->build_index();
  load_special_ids(file, *vocab);
  // llama.cpp's defaults: SentencePiece vocabularies add BOS unless told otherwise.
  vocab->add_bos = optional_flag(file, "tokenizer.ggml.add_bos_token", spm);
  vocab->add_eos = optional_flag(file, "tokenizer.ggml.add_eos_token", false);
  if (spm && !vocab->unk) {
    for (size_t i = 0; i < vocab->size() && !vocab->unk; ++i)
      if (vocab->types[i] == TokenType::Unknown) vocab->unk = static_cast<TokenId>(i);
  }
  auto pipeline = spm ? spm_pipeline(file, *vocab) : gpt2_pipeline(file, *vocab);
  return Tokenizer(std::move(vocab), std::move(pipeline));
}

PreTokenizerChoice choose_pre_tokenizer(const std::string& pre, const std::string& file) {
  static const std::set<std::string> gpt2 = {"default", "gpt2", "mpt", "olmo", "jais"};
  static const std::set<std::string> digits_then_gpt2 = {"smollm", "starcoder", "refact", "command-r",
                                                         "codeshell", "exaone", "minerva"};
  if (gpt2.count(pre)) return {{kGpt2Pattern}, false, false};
  if (digits_then_gpt2.count(pre)) return {{R"(\p{N})", kGpt2Pattern}, false, false};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return {{kLlama3Pattern}, false, true};
  // llama.cpp's converter names a Llama-3 vocabulary "smaug-bpe" when its test tokenization matches
  // Smaug's (as it does for some Llama-3 tokenizer files); llama.cpp then uses Llama 3's regex
  // without ignore_merges, and so does DBRX.
  if (pre == "smaug-bpe" || pre == "dbrx") return {{kLlama3Pattern}, false, false};
  if (pre == "qwen2") return {{kQwen2Pattern}, true, false};
  throw UnsupportedError(file + ": tokenizer.ggml.pre \"" + pre +
                         "\" is not supported by lathe's tokenizer; supported: default, gpt2, mpt, olmo, jais, smollm, "
                         "starcoder, refact, command-r, codeshell, exaone, minerva, llama-bpe, llama3, llama-v3, smaug-bpe, dbrx, "
                         "qwen2");
}

}  // namespace lathe::tokenizer
