#include "io/model_dir.hpp"
#include "io/json_text.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <map>

#include "io/mapped_file.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kDownloadAdvice =
    "download it with `huggingface-cli download <org>/<name>` (or `hf download`), or pass the path of a model directory or file";

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

json read_json_file(const fs::path& path) {
  MappedFile file(path);
  const auto bytes = file.bytes();
  return parse_json_text(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path.string(),
                         "fix or re-download the file");
}

std::optional<fs::path> optional_file(const fs::path& path) {
  if (is_file(path)) return path;
  return std::nullopt;
}

fs::path hub_cache_dir(std::string& source) {
  if (const char* v = std::getenv("HF_HUB_CACHE"); v && *v) {
    source = "$HF_HUB_CACHE";
    return v;
  }
  if (const char* v = std::getenv("HF_HOME"); v && *v) {
    source = "$HF_HOME/hub";
    return fs::path(v) / "hub";
  }
  source = "~/.cache/huggingface/hub";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/") / ".cache" / "huggingface" / "hub";
}

// "org/name" or "name": non-empty parts with no path tricks.
bool looks_like_repo_id(const std::string& spec) {
  if (spec.empty() || spec.front() == '/' || spec.back() == '/' || std::count(spec.begin(), spec.end(), '/') > 1) return false;
  for (const auto& part : fs::path(spec))
    if (part == "." || part == "..") return false;
  return true;
}

std::string trimmed(std::string s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string read_small_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::string text(256, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  return trimmed(text);
}

std::string found_files_summary(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  if (names.empty()) return "the directory is empty";
  if (names.size() > 20) {
    const size_t more = names.size() - 20;
    names.resize(20);
    names.push_back(fmt::format("... ({} more)", more));
  }
  return fmt::format("found: {}", fmt::join(names, ", "));
}

// A shard name from an index must stay inside the model directory.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos && name != "." &&
         name != "..";
}

}  // namespace

fs::path resolve_model_path(const std::string& spec) {
  std::error_code ec;
  if (!spec.empty() && fs::exists(spec, ec)) return spec;
  if (!spec.empty()) {
    // A path that is there but cannot be followed (a link loop, a dangling link, a directory that
    // cannot be searched) is reported as such, not as a model that was never there.
    std::error_code link_ec;
    const bool is_link = fs::is_symlink(fs::symlink_status(spec, link_ec));
    if (ec && ec != std::errc::no_such_file_or_directory) throw IoError(fmt::format("{}: {}", spec, ec.message()));
    if (is_link)
      throw IoError(fmt::format("{}: the link points to {}, which does not exist", spec,
                                fs::read_symlink(spec, link_ec).string()));
  }
  std::vector<std::string> tried{spec};
  if (looks_like_repo_id(spec)) {
    std::string source;
    const fs::path cache = hub_cache_dir(source);
    // The hub stores "org/name" as models--org--name.
    const size_t slash = spec.find('/');
    const std::string repo_dir_name =
        slash == std::string::npos ? "models--" + spec : "models--" + spec.substr(0, slash) + "--" + spec.substr(slash + 1);
    const fs::path repo = cache / repo_dir_name;
    const fs::path ref = repo / "refs" / "main";
    if (is_file(ref)) {
      const std::string revision = read_small_text(ref);
      const fs::path snapshot = repo / "snapshots" / revision;
      if (!revision.empty() && revision.find('/') == std::string::npos && revision != ".." && is_dir(snapshot))
        return snapshot;
      tried.push_back(fmt::format("{} (from {} = '{}', in {})", snapshot.string(), ref.string(), revision, source));
    } else {
      tried.push_back(fmt::format("{} (no such file, in {})", ref.string(), source));
      std::vector<fs::path> snapshots;
      for (const auto& entry : fs::directory_iterator(repo / "snapshots", ec))
        if (entry.is_directory(ec)) snapshots.push_back(entry.path());
      std::sort(snapshots.begin(), snapshots.end());
      if (snapshots.size() == 1) return snapshots.front();
      if (snapshots.size() > 1) {
        std::vector<std::string> names;
        for (const auto& s : snapshots) names.push_back(s.string());
        throw NotFoundError(fmt::format("model '{}': {} has no refs/main and {} snapshots ({}); pass the snapshot directory you want",
                                        spec, repo.string(), snapshots.size(), fmt::join(names, ", ")));
      }
      tried.push_back(fmt::format("{} (no snapshot)", (repo / "snapshots").string()));
    }
  }
  throw NotFoundError(fmt::format("model '{}' not found; tried: {}; {}", spec, fmt::join(tried, "; "), kDownloadAdvice));
}

ModelDir ModelDir::open(const fs::path& dir) {
  ModelDir model;
  model.dir_ = dir;
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw NotFoundError(fmt::format("{}: no such model directory; {}", dir.string(), kDownloadAdvice));
  if (!is_dir(dir))
    throw IoError(fmt::format("{}: not a directory; pass the Hugging Face model directory (the one with config.json)", dir.string()));
  model.read_config();
  model.read_side_files();
  model.read_weights();
  return model;
}

void ModelDir::read_config() {
  config_path_ = dir_ / "config.json";
  if (!is_file(config_path_))
    throw NotFoundError(fmt::format("{}: config.json missing ({}); a Hugging Face model directory needs its config.json, "
                                    "download the complete model",
                                    config_path_.string(), found_files_summary(dir_)));
  config_ = read_json_file(config_path_);
  if (!config_.is_object())
    throw FormatError(config_path_.string(), "top level", 0, fmt::format("is a JSON {}, not an object", config_.type_name()),
                      "config.json must be a JSON object; re-download it");
  if (!find("model_type") && !find("architectures"))
    throw FormatError(config_path_.string(), "model_type", 0, "neither \"model_type\" nor \"architectures\" is set",
                      "the model's architecture is unknown; restore the config.json that came with the model");
}

void ModelDir::read_side_files() {
  generation_config_path_ = optional_file(dir_ / "generation_config.json");
  if (generation_config_path_) generation_config_ = read_json_file(*generation_config_path_);
  tokenizer_json_path_ = optional_file(dir_ / "tokenizer.json");
  tokenizer_config_path_ = optional_file(dir_ / "tokenizer_config.json");
  if (tokenizer_config_path_) tokenizer_config_ = read_json_file(*tokenizer_config_path_);
}

void ModelDir::read_weights() {
  const fs::path single = dir_ / "model.safetensors";
  const fs::path index = dir_ / "model.safetensors.index.json";
  if (is_file(single)) {
    shards_.push_back(safetensors::File::open(single));
    add_shard_tensors(0);
    return;
  }
  if (is_file(index)) {
    read_index(index);
    return;
  }
  throw NotFoundError(fmt::format("{}: no weights: neither model.safetensors nor model.safetensors.index.json ({}); "
                                  "download the model's safetensors files or convert the checkpoint to safetensors",
                                  dir_.string(), found_files_summary(dir_)));
}

void ModelDir::read_index(const fs::path& index) {
  index_path_ = index;
  const std::string index_name = index.string();
  const json doc = read_json_file(index);
  const auto weight_map = doc.is_object() ? doc.find("weight_map") : doc.end();
  if (!doc.is_object() || weight_map == doc.end() || !weight_map->is_object())
    throw FormatError(index_name, "weight_map", 0, "missing or not an object", "the index must map tensor names to shard files; re-download it");

  // Shard file -> one tensor the index maps to it (named when the shard is missing).
  std::map<std::string, std::string> shard_files;
  for (const auto& [tensor, file] : weight_map->items()) {
    if (!file.is_string() || !is_plain_file_name(file.get<std::string>()))
      throw FormatError(index_name, fmt::format("weight_map['{}']", tensor), 0, fmt::format("{} is not a shard file name", file.dump()),
                        "each entry must name a file in the model directory; re-download the index");
    shard_files.try_emplace(file.get<std::string>(), tensor);
  }
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [file, example_tensor] : shard_files) {
    const fs::path shard_path = dir_ / file;
    if (!is_file(shard_path))
      throw NotFoundError(fmt::format("{}: shard {} (holding tensor '{}' and possibly others) is missing at {}; "
                                      "download all the model's files again",
                                      index_name, file, example_tensor, shard_path.string()));
    shard_of_file[file] = shards_.size();
    shards_.push_back(safetensors::File::open(shard_path));
    add_shard_tensors(shards_.size() - 1);
  }
  for (const auto& [tensor, file] : weight_map->items()) {
    const auto& shard = shards_[shard_of_file.at(file.get<std::string>())];
    if (!shard.find_tensor(tensor))
      throw FormatError(index_name, fmt::format("weight_map['{}']", tensor), 0,
                        fmt::format("the tensor is not in {}", shard.display_name()),
                        "the index and the shards disagree; re-download the model");
  }
}

void ModelDir::add_shard_tensors(size_t shard) {
  const auto& tensors = shards_[shard].tensors();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto [it, inserted] = tensor_index_.try_emplace(tensors[i].name, shard, i);
    if (!inserted)
      throw FormatError(shards_[shard].display_name(), fmt::format("tensor '{}'", tensors[i].name), tensors[i].file_offset,
                        fmt::format("the tensor is also in {}", shards_[it->second.first].display_name()),
                        "a tensor may live in one shard only; re-download the model");
    tensor_names_.push_back(tensors[i].name);
  }
}

const json* ModelDir::find(std::string_view field) const noexcept {
  const auto it = config_.find(field);
  if (it == config_.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& ModelDir::require(std::string_view field) const {
  if (const json* value = find(field)) return *value;
  throw FormatError(config_path_.string(), std::string(field), 0, "required field missing",
                    "the architecture needs it; restore the config.json that came with the model");
}

namespace {
[[noreturn]] void wrong_type(const fs::path& config, std::string_view field, const json& value, const char* expected) {
  throw FormatError(config.string(), std::string(field), 0, fmt::format("is {} ({}), expected {}", value.dump(), value.type_name(), expected),
                    "fix config.json");
}
}  // namespace

int64_t ModelDir::require_int(std::string_view field) const {
  const json& value = require(field);
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      wrong_type(config_path_, field, value, "an integer that fits 64 bits");
    return value.get<int64_t>();
  }
  wrong_type(config_path_, field, value, "an integer");
}

double ModelDir::require_number(std::string_view field) const {
  const json& value = require(field);
  if (!value.is_number()) wrong_type(config_path_, field, value, "a number");
  return value.get<double>();
}

std::string ModelDir::require_string(std::string_view field) const {
  const json& value = require(field);
  if (!value.is_string()) wrong_type(config_path_, field, value, "a string");
  return value.get<std::string>();
}

bool ModelDir::require_bool(std::string_view field) const {
  const json& value = require(field);
  if (!value.is_boolean()) wrong_type(config_path_, field, value, "true or false");
  return value.get<bool>();
}

std::optional<ModelDir::TensorRef> ModelDir::find_tensor(std::string_view name) const noexcept {
  const auto it = tensor_index_.find(std::string(name));
  if (it == tensor_index_.end()) return std::nullopt;
  const auto& shard = shards_[it->second.first];
  const auto& info = shard.tensors()[it->second.second];
  return TensorRef{&shard, &info, shard.tensor_data(info)};
}

ModelDir::TensorRef ModelDir::tensor(std::string_view name) const {
  if (auto ref = find_tensor(name)) return *ref;
  throw NotFoundError(fmt::format("{}: no tensor named '{}' in the model's {} safetensors file(s) ({} tensors); check the name",
                                  dir_.string(), name, shards_.size(), tensor_names_.size()));
}

}  // namespace lathe
