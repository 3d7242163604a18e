#include "tokenizer/export_hf.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "tokenizer/pipeline.hpp"

namespace lathe::tokenizer {

namespace {

using json = nlohmann::json;

const char* const kSpaceMarker = "\xE2\x96\x81";  // U+2581, SentencePiece's space

bool is_spm(const HfExportOptions& options) {
  if (options.ggml_model == "llama") return true;
  if (options.ggml_model == "gpt2") return false;
  throw UnsupportedError("tokenizer export: tokenizer.ggml.model \"" + options.ggml_model +
                         "\" cannot be exported as tokenizer.json (supported: gpt2, llama)");
}

json text_of(const Vocabulary& vocab, const std::optional<TokenId>& id) {
  if (!id || static_cast<size_t>(*id) >= vocab.size()) return nullptr;
  return vocab.tokens[static_cast<size_t>(*id)];
}

// model.vocab: text -> id, first id of a repeated text, no empty holes.
json vocab_object(const Vocabulary& vocab) {
  json object = json::object();
  for (size_t id = 0; id < vocab.size(); ++id) {
    const std::string& text = vocab.tokens[id];
    if (text.empty() && vocab.types[id] == TokenType::Unused) continue;
    if (!is_valid_utf8(text))
      throw UnsupportedError("tokenizer export: token " + std::to_string(id) +
                             " is not valid UTF-8, which tokenizer.json cannot hold; keep the GGUF tokenizer");
    if (!object.contains(text)) object[text] = id;
  }
  return object;
}

json added_tokens_array(const Vocabulary& vocab) {
  json list = json::array();
  for (const AddedToken& token : vocab.added_tokens)
    list.push_back({{"id", token.id}, {"content", token.content}, {"single_word", token.single_word},
                    {"lstrip", token.lstrip}, {"rstrip", token.rstrip}, {"normalized", token.normalized},
                    {"special", token.special}});
  return list;
}

// TemplateProcessing adding BOS/EOS as the vocabulary asks (what lathe's add_special does), or
// null when it adds neither.
json post_processor(const Vocabulary& vocab) {
  const bool bos = vocab.add_bos && vocab.bos, eos = vocab.add_eos && vocab.eos;
  if (!bos && !eos) return nullptr;
  json single = json::array(), pair = json::array(), specials = json::object();
  auto special = [&](TokenId id, int type_id) {
    const std::string& text = vocab.tokens[static_cast<size_t>(id)];
    specials[text] = {{"id", text}, {"ids", {id}}, {"tokens", {text}}};
    return json{{"SpecialToken", {{"id", text}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* name, int type_id) { return json{{"Sequence", {{"id", name}, {"type_id", type_id}}}}; };
  if (bos) single.push_back(special(*vocab.bos, 0));
  single.push_back(sequence("A", 0));
  if (eos) single.push_back(special(*vocab.eos, 0));
  pair = single;
  if (bos) pair.push_back(special(*vocab.bos, 1));
  pair.push_back(sequence("B", 1));
  if (eos) pair.push_back(special(*vocab.eos, 1));
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

json merges_array(const std::vector<std::pair<std::string, std::string>>& merges) {
  json list = json::array();
  for (const auto& [left, right] : merges) list.push_back(json::array({left, right}));
  return list;
}

// HF's SentencePieceExtractor: for every normal token, each split into two tokens is a merge;
// merges are ordered by the token's score (best first), then token id, then the parts' ids.
std::vector<std::pair<std::string, std::string>> merges_from_scores(const Vocabulary& vocab) {
  struct Candidate {
    float score;
    TokenId merged, left, right;
  };
  std::vector<Candidate> candidates;
  for (size_t id = 0; id < vocab.size(); ++id) {
    const TokenType type = vocab.types[id];
    if (type != TokenType::Normal && type != TokenType::UserDefined) continue;
    if (vocab.find(vocab.tokens[id]) != static_cast<TokenId>(id)) continue;  // a repeated text
    float score = id < vocab.scores.size() ? vocab.scores[id] : 0.0f;
    if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
    for_each_two_token_split(vocab, id, [&](TokenId left, TokenId right) {
      candidates.push_back({score, static_cast<TokenId>(id), left, right});
    });
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return std::tie(a.merged, a.left, a.right) < std::tie(b.merged, b.left, b.right);
  });
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(candidates.size());
  for (const Candidate& c : candidates)
    merges.emplace_back(vocab.tokens[static_cast<size_t>(c.left)], vocab.tokens[static_cast<size_t>(c.right)]);
  return merges;
}

json bpe_model(const Vocabulary& vocab, bool spm, bool ignore_merges) {
  json model = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", text_of(vocab, vocab.unk)},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", spm}, {"byte_fallback", spm}, {"ignore_merges", ignore_merges}};
  model["vocab"] = vocab_object(vocab);
  model["merges"] = merges_array(spm ? merges_from_scores(vocab) : vocab.merges);
  return model;
}

json byte_level_json(const Vocabulary& vocab, const HfExportOptions& options) {
  const PreTokenizerChoice choice = choose_pre_tokenizer(options.ggml_pre, "tokenizer export");
  json steps = json::array();
  for (const std::string& pattern : choice.patterns)
    steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}});
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  json root;
  root["normalizer"] = choice.nfc ? json{{"type", "NFC"}} : json(nullptr);
  root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
  root["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = bpe_model(vocab, false, choice.ignore_merges);
  return root;
}

json sentencepiece_json(const Vocabulary& vocab, const HfExportOptions& options) {
  json normalizers = json::array();
  if (options.add_space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpaceMarker}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpaceMarker}});
  json decoders = json::array({json{{"type", "Replace"}, {"pattern", {{"String", kSpaceMarker}}}, {"content", " "}},
                               json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}}});
  if (options.add_space_prefix) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  json root;
  root["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
  root["pre_tokenizer"] = nullptr;
  root["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  root["model"] = bpe_model(vocab, true, false);
  return root;
}

}  // namespace

HfExportOptions hf_export_options_from_gguf(const gguf::File& file) {
  const std::string& name = file.display_name();
  HfExportOptions options;
  options.ggml_model = file.get("tokenizer.ggml.model").as_string(name + ": tokenizer.ggml.model");
  if (const gguf::Value* pre = file.find("tokenizer.ggml.pre")) options.ggml_pre = pre->as_string(name + ": tokenizer.ggml.pre");
  if (const gguf::Value* prefix = file.find("tokenizer.ggml.add_space_prefix"))
    options.add_space_prefix = prefix->as_bool(name + ": tokenizer.ggml.add_space_prefix");
  return options;
}

json tokenizer_json_from_vocabulary(const Vocabulary& vocab, const HfExportOptions& options) {
  json root = is_spm(options) ? sentencepiece_json(vocab, options) : byte_level_json(vocab, options);
  json document = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}};
  document["added_tokens"] = added_tokens_array(vocab);
  document["normalizer"] = root["normalizer"];
  document["pre_tokenizer"] = root["pre_tokenizer"];
  document["post_processor"] = post_processor(vocab);
  document["decoder"] = root["decoder"];
  document["model"] = std::move(root["model"]);
  return document;
}

json tokenizer_config_from_vocabulary(const Vocabulary& vocab, const HfExportOptions& options) {
  const bool spm = is_spm(options);
  json config = {{"add_bos_token", vocab.add_bos}, {"add_eos_token", vocab.add_eos},
                 {"bos_token", text_of(vocab, vocab.bos)}, {"eos_token", text_of(vocab, vocab.eos)},
                 {"unk_token", text_of(vocab, vocab.unk)}, {"pad_token", text_of(vocab, vocab.pad)},
                 {"clean_up_tokenization_spaces", false}, {"tokenizer_class", "PreTrainedTokenizerFast"}};
  if (spm) config["legacy"] = true;
  json decoder = json::object();
  for (const AddedToken& token : vocab.added_tokens)
    decoder[std::to_string(token.id)] = {{"content", token.content}, {"lstrip", token.lstrip},
                                         {"normalized", token.normalized}, {"rstrip", token.rstrip},
                                         {"single_word", token.single_word}, {"special", token.special}};
  config["added_tokens_decoder"] = decoder;
  if (!vocab.chat_template.empty()) config["chat_template"] = vocab.chat_template;
  return config;
}

}  // namespace lathe::tokenizer
