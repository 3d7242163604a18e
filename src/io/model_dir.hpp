// A Hugging Face model directory: config.json, optional generation/tokenizer files, and the
// weights as model.safetensors or as shards listed in model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/safetensors.hpp"

namespace lathe {

// Turns what a user typed into a model path. An existing file or directory is returned as is.
// Otherwise "org/name" (or "name") is looked up in the Hugging Face hub cache: $HF_HUB_CACHE, else
// $HF_HOME/hub, else ~/.cache/huggingface/hub; models--org--name/refs/main names the revision whose
// snapshots/<rev>/ is returned; without refs/main, the only snapshot if there is exactly one.
// Throws NotFoundError listing the paths tried and how to get the model.
std::filesystem::path resolve_model_path(const std::string& spec);

class ModelDir {
 public:
  // One tensor wherever it lives: the shard that holds it, its entry, and its bytes (in the map).
  struct TensorRef {
    const safetensors::File* shard = nullptr;
    const safetensors::TensorInfo* info = nullptr;
    std::span<const uint8_t> data;
  };

  // Reads config.json (required, with "model_type" or "architectures"), generation_config.json and
  // tokenizer_config.json when present, notes tokenizer.json, and maps the weights: model.safetensors
  // if present (as transformers prefers it), else model.safetensors.index.json and its shards.
  // Throws NotFoundError (directory, config.json, weights or a shard missing), FormatError
  // (malformed JSON or safetensors, index and shards disagreeing), UnsupportedError (tensor dtype).
  static ModelDir open(const std::filesystem::path& dir);

  const std::filesystem::path& path() const noexcept { return dir_; }

  // config.json
  const std::filesystem::path& config_path() const noexcept { return config_path_; }
  const nlohmann::json& config() const noexcept { return config_; }
  // The field's value, or nullptr when it is absent or null.
  const nlohmann::json* find(std::string_view field) const noexcept;
  // The field's value; FormatError naming config.json and the field when it is absent or null.
  const nlohmann::json& require(std::string_view field) const;
  // As require(), also checking the JSON type (FormatError naming the field and the type found).
  int64_t require_int(std::string_view field) const;
  double require_number(std::string_view field) const;  // integer or float
  std::string require_string(std::string_view field) const;
  bool require_bool(std::string_view field) const;

  // Optional side files: the path when present.
  const std::optional<std::filesystem::path>& generation_config_path() const noexcept { return generation_config_path_; }
  const std::optional<nlohmann::json>& generation_config() const noexcept { return generation_config_; }
  const std::optional<std::filesystem::path>& tokenizer_json_path() const noexcept { return tokenizer_json_path_; }
  const std::optional<std::filesystem::path>& tokenizer_config_path() const noexcept { return tokenizer_config_path_; }
  const std::optional<nlohmann::json>& tokenizer_config() const noexcept { return tokenizer_config_; }

  // Weights.
  const std::optional<std::filesystem::path>& index_path() const noexcept { return index_path_; }  // sharded only
  const std::vector<safetensors::File>& shards() const noexcept { return shards_; }
  // Every tensor name, in shard order then data-offset order.
  const std::vector<std::string>& tensor_names() const noexcept { return tensor_names_; }
  std::optional<TensorRef> find_tensor(std::string_view name) const noexcept;
  TensorRef tensor(std::string_view name) const;  // NotFoundError naming the directory and tensor

 private:
  ModelDir() = default;
  void read_config();
  void read_side_files();
  void read_weights();
  void read_index(const std::filesystem::path& index);
  void add_shard_tensors(size_t shard);

  std::filesystem::path dir_;
  std::filesystem::path config_path_;
  nlohmann::json config_;
  std::optional<std::filesystem::path> generation_config_path_, tokenizer_json_path_, tokenizer_config_path_, index_path_;
  std::optional<nlohmann::json> generation_config_, tokenizer_config_;
  std::vector<safetensors::File> shards_;
  std::vector<std::string> tensor_names_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> tensor_index_;  // name -> (shard, tensor)
};

}  // namespace lathe
