// Builds a SentencePiece GGUF vocabulary (tokenizer.ggml.model = "llama") from the Llama 2
// tokenizer.json in the shared test data, the way llama.cpp's convert_hf_to_gguf.py
// (_set_vocab_sentencepiece + SpecialVocab) writes one:
//   tokens      the pieces in id order
//   scores      sentencepiece's piece scores. The shared data has no tokenizer.model, so they are
//               recovered from tokenizer.json, which HF's converter made by ordering the merges
//               by the merged piece's score: a piece's score is minus the rank of the first merge
//               that makes it. Pieces no merge makes (single characters) score below every merged
//               piece, as in sentencepiece's BPE trainer; control/unknown/byte pieces score 0.
//   token_type  UNKNOWN (2) for the unk piece, CONTROL (3) for the other special added tokens,
//               BYTE (6) for <0xNN>, NORMAL (1) otherwise
//   bos/eos/unk ids and add_bos_token/add_eos_token from tokenizer_config.json
// `equal_whitespace_scores` instead gives every piece made only of U+2581 the same score -1e9
// (what the real Llama 2 tokenizer.model is believed to hold for them: HF ranks all their
// merges last, ordered by id), to compare score-based merging with HF on such ties.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/test_support.hpp"
#include "io/gguf.hpp"

namespace lathe::test {

inline std::filesystem::path llama2_tokenizer_dir() { return shared_data_dir() / "tokenizers" / "llama2"; }

inline void write_llama2_spm_gguf(const std::filesystem::path& out, bool equal_whitespace_scores = false) {
  const auto root = nlohmann::json::parse(read_file(llama2_tokenizer_dir() / "tokenizer.json"));
  const auto config = nlohmann::json::parse(read_file(llama2_tokenizer_dir() / "tokenizer_config.json"));
  const auto& model = root.at("model");
  const auto& vocab = model.at("vocab");
  std::vector<std::string> tokens(vocab.size());
  for (const auto& [text, id] : vocab.items()) tokens.at(id.get<size_t>()) = text;

  std::unordered_map<std::string, size_t> first_rank;
  const auto& merges = model.at("merges");
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string merged;
    if (merges[rank].is_string()) {
      std::string text = merges[rank].get<std::string>();
      text.erase(text.find(' '), 1);
      merged = text;
    } else {
      merged = merges[rank][0].get<std::string>() + merges[rank][1].get<std::string>();
    }
    first_rank.try_emplace(merged, rank);
  }
  std::unordered_map<std::string, bool> special;
  for (const auto& added : root.at("added_tokens")) special[added.at("content").get<std::string>()] = added.at("special").get<bool>();
  const std::string unk = model.at("unk_token").get<std::string>();

  std::vector<float> scores(tokens.size());
  std::vector<int32_t> types(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& text = tokens[id];
    const bool byte = text.size() == 6 && text.rfind("<0x", 0) == 0 && text.back() == '>';
    if (text == unk) types[id] = 2;
    else if (special.count(text) && special[text]) types[id] = 3;
    else if (byte) types[id] = 6;
    else types[id] = 1;
    if (types[id] != 1) {
      scores[id] = 0.0f;
      continue;
    }
    const auto it = first_rank.find(text);
    scores[id] = it != first_rank.end() ? -static_cast<float>(it->second) : -static_cast<float>(merges.size() + id);
    if (equal_whitespace_scores && text.find_first_not_of("\xE2\x96\x81") == std::string::npos) scores[id] = -1e9f;
  }

  gguf::Writer writer;
  writer.set("general.architecture", gguf::Value::str("llama"));
  writer.set("tokenizer.ggml.model", gguf::Value::str("llama"));
  writer.set("tokenizer.ggml.pre", gguf::Value::str("default"));
  writer.set("tokenizer.ggml.tokens", gguf::Value::string_array(tokens));
  gguf::Array score_array{gguf::ValueType::FLOAT32, {}};
  for (float s : scores) score_array.items.push_back(gguf::Value::f32(s));
  writer.set("tokenizer.ggml.scores", gguf::Value::array(std::move(score_array)));
  gguf::Array type_array{gguf::ValueType::INT32, {}};
  for (int32_t t : types) type_array.items.push_back(gguf::Value::i32(t));
  writer.set("tokenizer.ggml.token_type", gguf::Value::array(std::move(type_array)));
  auto id_of = [&](const char* key) { return static_cast<uint32_t>(vocab.at(config.at(key).get<std::string>()).get<size_t>()); };
  writer.set("tokenizer.ggml.bos_token_id", gguf::Value::u32(id_of("bos_token")));
  writer.set("tokenizer.ggml.eos_token_id", gguf::Value::u32(id_of("eos_token")));
  writer.set("tokenizer.ggml.unknown_token_id", gguf::Value::u32(id_of("unk_token")));
  writer.set("tokenizer.ggml.add_bos_token", gguf::Value::boolean(config.at("add_bos_token").get<bool>()));
  writer.set("tokenizer.ggml.add_eos_token", gguf::Value::boolean(config.at("add_eos_token").get<bool>()));
  writer.write(out);
}

}  // namespace lathe::test
