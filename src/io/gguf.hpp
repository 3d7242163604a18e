// GGUF files (versions 2 and 3): reader over a memory map, and writer.
// Layout: magic "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv pairs, tensor infos,
// padding to general.alignment (default 32), tensor data. All little-endian.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "core/dtype.hpp"
#include "io/mapped_file.hpp"

namespace lathe::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string_view value_type_name(ValueType type) noexcept;

struct Value;
struct Array {
  ValueType elem_type = ValueType::UINT8;
  std::vector<Value> items;  // arrays may nest (elem_type == ARRAY)
};

// One metadata value. The variant's alternative follows type(); integer accessors accept any
// integer type whose value fits, and throw InvalidArgumentError naming the key otherwise.
struct Value {
  using Storage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string,
                               Array, uint64_t, int64_t, double>;
  ValueType type = ValueType::UINT8;
  Storage data;

  Value() = default;
  static Value u8(uint8_t v) { return {ValueType::UINT8, v}; }
  static Value i8(int8_t v) { return {ValueType::INT8, v}; }
  static Value u16(uint16_t v) { return {ValueType::UINT16, v}; }
  static Value i16(int16_t v) { return {ValueType::INT16, v}; }
  static Value u32(uint32_t v) { return {ValueType::UINT32, v}; }
  static Value i32(int32_t v) { return {ValueType::INT32, v}; }
  static Value f32(float v) { return {ValueType::FLOAT32, v}; }
  static Value boolean(bool v) { return {ValueType::BOOL, v}; }
  static Value str(std::string v) { return {ValueType::STRING, std::move(v)}; }
  static Value array(Array v) { return {ValueType::ARRAY, std::move(v)}; }
  static Value u64(uint64_t v) { return {ValueType::UINT64, v}; }
  static Value i64(int64_t v) { return {ValueType::INT64, v}; }
  static Value f64(double v) { return {ValueType::FLOAT64, v}; }
  static Value string_array(std::vector<std::string> items);

  bool is_integer() const noexcept;
  bool is_float() const noexcept { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }
  // `what` names the value in error messages (e.g. "file.gguf: llama.block_count").
  uint64_t as_u64(std::string_view what) const;
  int64_t as_i64(std::string_view what) const;
  double as_f64(std::string_view what) const;  // any integer or float
  bool as_bool(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;
  const Array& as_array(std::string_view what) const;
  // Short human-readable rendering; arrays longer than max_items are elided ("[a, b, ... (N items)]").
  std::string to_string(size_t max_items = 8) const;

 private:
  Value(ValueType t, Storage d) : type(t), data(std::move(d)) {}
};

struct TensorInfo {
  std::string name;
  DType type = DType::F32;
  std::vector<uint64_t> shape;  // ggml order: shape[0] is the innermost (contiguous) dimension
  uint64_t offset = 0;          // relative to the start of the data section, as stored in the file
  uint64_t file_offset = 0;     // absolute offset in the file
  uint64_t n_bytes = 0;
  uint64_t n_elements() const noexcept;
};

// A parsed GGUF file. Metadata values are copied; tensor data stays in the memory map.
class File {
 public:
  // Maps and parses the file. Throws NotFoundError/IoError for the path, FormatError (file, field,
  // offset, remedy) for malformed content, UnsupportedError for unsupported versions/types.
  static File open(const std::filesystem::path& path);
  // Parses bytes owned by the caller (they must outlive the File). display_name is used in errors.
  static File parse(std::span<const uint8_t> bytes, std::string display_name);

  const std::string& display_name() const noexcept { return name_; }
  uint32_t version() const noexcept { return version_; }
  uint64_t alignment() const noexcept { return alignment_; }
  uint64_t data_offset() const noexcept { return data_offset_; }
  uint64_t file_size() const noexcept { return bytes_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const noexcept { return kv_; }
  const Value* find(std::string_view key) const noexcept;
  const Value& get(std::string_view key) const;  // NotFoundError naming file and key

  const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const noexcept;
  std::span<const uint8_t> tensor_data(const TensorInfo& info) const noexcept;

 private:
  File() = default;
  std::string name_;
  std::shared_ptr<MappedFile> map_;  // null when parsing caller-owned bytes
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file. Tensor data spans are referenced, not copied, and must stay valid until
// write() returns. write() goes through AtomicFileWriter, so an existing file is only replaced by
// a complete new one.
class Writer {
 public:
  void set(std::string key, Value value);  // replaces an existing key, keeps first position
  void set_alignment(uint32_t alignment);  // also written as general.alignment when != 32
  // shape in ggml order; throws InvalidArgumentError on duplicate names, >4 dims, or a byte span
  // that does not match type x shape.
  void add_tensor(std::string name, DType type, std::vector<uint64_t> shape, std::span<const uint8_t> data);
  // progress, when set, is called after each tensor's data is written: (tensors done, tensors total).
  void write(const std::filesystem::path& path,
             const std::function<void(size_t done, size_t total)>& progress = {}) const;

 private:
  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, Value>> kv_;
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    std::span<const uint8_t> data;
  };
  std::vector<PendingTensor> tensors_;
};

}  // namespace lathe::gguf
