// libFuzzer target: encode arbitrary bytes with synthetic vocabularies built in code, then check
// the round trip and that streaming decoding agrees with whole decoding. The first input byte
// picks the vocabulary:
//   0: byte-level BPE from tokenizer.json (256 byte characters, a few merges, a special token,
//      NFC, the Llama 3 split regex): decode(encode(x)) is valid UTF-8, and x itself for ASCII x;
//   1: SentencePiece BPE from a GGUF ("llama": scores, byte tokens, merged by score);
//   2: the same vocabulary as a Llama 2 style tokenizer.json (Prepend/Replace, byte_fallback,
//      Strip decoder; ranked merges).
// For 1 and 2 with special-token parsing off, decode(encode(x)) == x with ill-formed UTF-8
// replaced by U+FFFD and U+2581 by a space, exactly.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

#include "io/gguf.hpp"
#include "tokenizer/tokenizer.hpp"
#include "tokenizer/unicode.hpp"

namespace {

using lathe::tokenizer::Tokenizer;

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "\"";
}

std::string byte_level_tokenizer_json() {
  using lathe::tokenizer::byte_level_map;
  std::string vocab = "{";
  for (int b = 0; b < 256; ++b) vocab += (b ? "," : "") + json_string(byte_level_map().byte_to_text[b]) + ":" + std::to_string(b);
  vocab += ",\"th\":256,\"the\":257,\"\xC4\xA0the\":258,\"in\":259,\"ing\":260}";
  return R"({"added_tokens":[{"id":261,"content":"<|end|>","special":true}],
    "normalizer":{"type":"NFC"},
    "pre_tokenizer":{"type":"Sequence","pretokenizers":[
      {"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
      {"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
    "decoder":{"type":"ByteLevel"},
    "model":{"type":"BPE","vocab":)" + vocab + R"(,"merges":["t h","th e","Ġ the","i n","in g"]}})";
}

// A small SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then pieces with
// descending scores (two pairs of equal score to exercise the leftmost tie-break).
struct SpmPiece {
  const char* text;
  float score;
};
const std::vector<SpmPiece>& spm_pieces() {
  static const std::vector<SpmPiece> pieces = {
      {"\xE2\x96\x81t", -1}, {"he", -2}, {"\xE2\x96\x81the", -3}, {"in", -4}, {"ing", -5}, {"ab", -6}, {"ba", -6},
      {"aba", -7}, {"bab", -7}, {"\xE2\x96\x81\xE2\x96\x81", -8}, {"\xC3\xA9t", -9}, {"\xE2\x96\x81", -100}, {"t", -101},
      {"h", -102}, {"e", -103}, {"i", -104}, {"n", -105}, {"g", -106}, {"a", -107}, {"b", -108}, {"\xC3\xA9", -109}};
  return pieces;
}

std::filesystem::path spm_gguf_path() {
  namespace gguf = lathe::gguf;
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    tokens.push_back(name);
    scores.push_back(0);
    types.push_back(6);
  }
  for (const SpmPiece& piece : spm_pieces()) {
    tokens.push_back(piece.text);
    scores.push_back(piece.score);
    types.push_back(1);
  }
  gguf::Writer writer;
  writer.set("tokenizer.ggml.model", gguf::Value::str("llama"));
  writer.set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
  gguf::Array score_array{gguf::ValueType::FLOAT32, {}}, type_array{gguf::ValueType::INT32, {}};
  for (float s : scores) score_array.items.push_back(gguf::Value::f32(s));
  for (int32_t t : types) type_array.items.push_back(gguf::Value::i32(t));
  writer.set("tokenizer.ggml.scores", gguf::Value::array(std::move(score_array)));
  writer.set("tokenizer.ggml.token_type", gguf::Value::array(std::move(type_array)));
  writer.set("tokenizer.ggml.unknown_token_id", gguf::Value::u32(0));
  const auto path = std::filesystem::temp_directory_path() / ("lathe_fuzz_spm_" + std::to_string(getpid()) + ".gguf");
  writer.write(path);
  return path;
}

// The same vocabulary as a Llama 2 style tokenizer.json, merges ordered by score.
std::string spm_tokenizer_json() {
  std::string vocab = R"({"<unk>":0,"<s>":1,"</s>":2)";
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab += ",\"" + std::string(name) + "\":" + std::to_string(3 + b);
  }
  int id = 259;
  for (const SpmPiece& piece : spm_pieces()) vocab += "," + json_string(piece.text) + ":" + std::to_string(id++);
  vocab += "}";
  const std::string merges = R"(["▁ t","h e","▁t he","i n","in g","a b","b a","ab a","ba b","▁ ▁","é t"])";
  return R"({"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},
      {"id":2,"content":"</s>","special":true}],
    "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
      {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
    "pre_tokenizer":null,
    "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
      {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
    "model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,"vocab":)" +
         vocab + R"(,"merges":)" + merges + "}}";
}

const Tokenizer& tokenizer(uint8_t which) {
  static const Tokenizer byte_level = Tokenizer::from_hf_json(byte_level_tokenizer_json(), "", "synthetic byte-level");
  static const Tokenizer spm_gguf = [] {
    const auto path = spm_gguf_path();
    auto tok = Tokenizer::from_gguf(lathe::gguf::File::open(path));
    std::filesystem::remove(path);
    return tok;
  }();
  static const Tokenizer spm_json = Tokenizer::from_hf_json(spm_tokenizer_json(), "", "synthetic sentencepiece");
  switch (which % 3) {
    case 0: return byte_level;
    case 1: return spm_gguf;
    default: return spm_json;
  }
}

void check_stream(const Tokenizer& tok, const std::vector<lathe::tokenizer::TokenId>& ids, const std::string& decoded) {
  lathe::tokenizer::StreamDecoder stream(tok);
  std::string streamed;
  for (auto id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  if (streamed != decoded) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 3;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  const Tokenizer& tok = tokenizer(which);
  const bool parse_special = (size % 2) == 0;
  const auto ids = tok.encode(input, {.add_special = (size % 3) == 0, .parse_special = parse_special});
  const std::string decoded = lathe::tokenizer::bytes_to_text(tok.decode(ids));
  check_stream(tok, ids, decoded);
  if (which == 0) {
    // NFC may compose characters, so only ASCII input must come back unchanged.
    const std::string raw = tok.decode(ids);
    if (!lathe::tokenizer::is_valid_utf8(raw)) std::abort();
    bool ascii = true;
    for (char c : input) ascii = ascii && static_cast<uint8_t>(c) < 0x80;
    if (ascii && raw != input) std::abort();
    return 0;
  }
  if (!parse_special) {
    // U+2581 is SentencePiece's space: one in the input comes back as " " (HF does the same).
    std::string expected = lathe::tokenizer::bytes_to_text(input);
    for (size_t hit; (hit = expected.find("\xE2\x96\x81")) != std::string::npos;) expected.replace(hit, 3, " ");
    const auto plain = tok.encode(input, {.add_special = false, .parse_special = false});
    if (lathe::tokenizer::bytes_to_text(tok.decode(plain)) != expected) std::abort();
  }
  return 0;
}
