// safetensors files: reader over a memory map, writer, and sharded writer (Hugging Face layout).
// Layout: u64 LE header length N, N bytes of JSON header
//   {"<tensor>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the data section; data_offsets are relative to its start. Validation follows the reference
// implementation (python safetensors 0.8.0): the tensors must cover the data section exactly, in
// order, with no gap, overlap or trailing byte, and each byte range must match dtype x shape.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.hpp"
#include "io/mapped_file.hpp"

namespace lathe::safetensors {

// Headers larger than this are rejected before parsing, as the reference does (100 MB).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  std::vector<uint64_t> shape;  // Hugging Face order: shape[0] is the outermost dimension; [] = scalar
  uint64_t data_begin = 0;      // data_offsets as stored, relative to the start of the data section
  uint64_t data_end = 0;
  uint64_t file_offset = 0;     // absolute offset of the first byte in the file
  uint64_t n_bytes() const noexcept { return data_end - data_begin; }
  uint64_t n_elements() const noexcept;  // 1 for a scalar
};

// A parsed safetensors file. Metadata is copied; tensor data stays in the memory map.
class File {
 public:
  // Maps and parses the file. Throws NotFoundError/IoError for the path, FormatError (file, tensor
  // or field, offset, remedy) for malformed content, UnsupportedError for a valid safetensors dtype
  // lathe has no DType for (F8_E4M3, U16, C64...).
  static File open(const std::filesystem::path& path);
  // Parses bytes owned by the caller (they must outlive the File). display_name is used in errors.
  static File parse(std::span<const uint8_t> bytes, std::string display_name);

  const std::string& display_name() const noexcept { return name_; }
  uint64_t header_size() const noexcept { return header_size_; }  // N, the JSON length
  uint64_t data_offset() const noexcept { return 8 + header_size_; }
  uint64_t file_size() const noexcept { return bytes_.size(); }

  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  // Sorted by data offset (ties, which only zero-size tensors can have, by name).
  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const noexcept;
  const TensorInfo& tensor(std::string_view name) const;  // NotFoundError naming file and tensor
  std::span<const uint8_t> tensor_data(const TensorInfo& info) const noexcept;

 private:
  File() = default;
  std::string name_;
  std::shared_ptr<MappedFile> map_;  // null when parsing caller-owned bytes
  std::span<const uint8_t> bytes_;
  uint64_t header_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Builds a safetensors file like the reference serializer does: header JSON without spaces,
// "__metadata__" first, tensors ordered by dtype alignment (largest first) then by name, header
// padded with spaces to a multiple of 8. Tensor data spans are referenced, not copied, and must
// stay valid until write() returns.
class Writer {
 public:
  void set_metadata(std::string key, std::string value);
  // shape in Hugging Face order. Throws InvalidArgumentError on a duplicate or reserved name, a type
  // safetensors cannot hold (quantized ggml types), or a byte span that does not match type x shape.
  void add_tensor(std::string name, DType type, std::vector<uint64_t> shape, std::span<const uint8_t> data);

  // Writes one file through AtomicFileWriter: an existing file is only replaced by a complete one.
  void write(const std::filesystem::path& path) const;

  // Writes the tensors into dir split in shards of at most max_shard_bytes of tensor data (a tensor
  // larger than that gets a shard of its own), filling shards greedily in add_tensor() order like
  // transformers: model-00001-of-0000N.safetensors ... plus model.safetensors.index.json
  // {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard file}}. When everything fits in
  // one shard, writes model.safetensors and no index, as transformers does. Every shard carries the
  // metadata. Returns the files written (the index last).
  std::vector<std::filesystem::path> write_sharded(const std::filesystem::path& dir, uint64_t max_shard_bytes) const;

  size_t tensor_count() const noexcept { return tensors_.size(); }

 private:
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    std::span<const uint8_t> data;
  };
  static void write_file(const std::filesystem::path& path, std::vector<const PendingTensor*> tensors,
                         const std::map<std::string, std::string>& metadata);
  std::map<std::string, std::string> metadata_;
  std::vector<PendingTensor> tensors_;
  std::unordered_map<std::string, size_t> names_;
};

}  // namespace lathe::safetensors
