#include "io/fingerprint.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <span>

#include "core/sha256.hpp"
#include "io/gguf.hpp"
#include "io/mapped_file.hpp"
#include "io/model_dir.hpp"
#include "io/safetensors.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSampleBytes = 1024;

void add_number(Sha256& h, uint64_t v) {
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(v >> (8 * i));
  h.update(std::span<const uint8_t>(bytes, 8));
}

void add_field(Sha256& h, std::string_view text) {
  add_number(h, text.size());
  h.update(text);
}

// Start, middle and end of a tensor's bytes (fewer when the tensor is small).
void add_samples(Sha256& h, std::span<const uint8_t> data) {
  add_number(h, data.size());
  if (data.size() <= 3 * kSampleBytes) {
    h.update(data);
    return;
  }
  h.update(data.first(kSampleBytes));
  h.update(data.subspan(data.size() / 2 - kSampleBytes / 2, kSampleBytes));
  h.update(data.last(kSampleBytes));
}

void add_whole_file(Sha256& h, const fs::path& path) {
  const MappedFile file(path);
  add_field(h, path.filename().string());
  add_number(h, file.size());
  h.update(file.bytes());
}

void add_safetensors(Sha256& h, const safetensors::File& file, const fs::path& path) {
  const MappedFile map(path);  // the header bytes as stored
  add_field(h, path.filename().string());
  add_number(h, file.file_size());
  h.update(map.bytes().first(std::min<uint64_t>(file.data_offset(), map.size())));
  for (const auto& info : file.tensors()) add_samples(h, file.tensor_data(info));
}

}  // namespace

std::string model_fingerprint(const fs::path& model) {
  Sha256 h;
  h.update(std::string_view("lathe model fingerprint v1"));
  std::error_code ec;
  if (fs::is_directory(model, ec)) {
    const auto dir = ModelDir::open(model);
    for (const char* side : {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"})
      if (fs::is_regular_file(model / side, ec)) add_whole_file(h, model / side);
    for (const auto& shard : dir.shards()) add_safetensors(h, shard, shard.display_name());
  } else {
    const auto file = gguf::File::open(model);
    const MappedFile map(model);
    add_field(h, "gguf");
    add_number(h, file.file_size());
    h.update(map.bytes().first(std::min<uint64_t>(file.data_offset(), map.size())));
    for (const auto& info : file.tensors()) add_samples(h, file.tensor_data(info));
  }
  return "sha256:" + h.finish_hex();
}

std::string file_fingerprint(const fs::path& file) {
  const MappedFile map(file);
  return "sha256:" + sha256_hex(map.bytes());
}

}  // namespace lathe
