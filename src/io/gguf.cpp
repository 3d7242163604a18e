// GGUF reader and writer. The reader treats the file as hostile: every count and length is checked
// against the bytes that remain BEFORE anything is allocated, so a corrupt or malicious header can
// neither read out of bounds nor make us allocate more than a small multiple of the file size.
//
// Decisions beyond the GGUF spec (documented here because llama.cpp and gguf-py differ):
//  * dimensions must be >= 1 (a 0 dimension makes an empty tensor no model uses; ggml's own
//    reader divides by it), and the element count must fit in int64 (ggml's ne type);
//  * n_dims 0..4 (0 is a scalar with one element, as gguf-py writes numpy scalars);
//  * the innermost dimension must be a whole number of blocks for quantized types (ggml's rule,
//    which implies n_elements is a whole number of blocks);
//  * BOOL values must be 0 or 1;
//  * general.alignment must be a UINT32 holding a non-zero power of two (as gguf-py requires);
//  * tensors must not overlap one another, and must lie inside the file.
#include "io/gguf.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>

#include "lathe/error.hpp"

static_assert(std::endian::native == std::endian::little, "the GGUF reader/writer assumes a little-endian host");

namespace lathe::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kWriteVersion = 3;
constexpr size_t kMaxDims = 4;
// Arrays may nest; bounding the depth keeps the recursive parser's stack use small.
constexpr int kMaxArrayDepth = 16;
// Smallest possible encodings, used to bound counts by the bytes that remain.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;               // empty key, type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;   // empty name, n_dims 0, type, offset
constexpr uint32_t kValueTypeCount = 13;

constexpr const char* kRemedyCorrupt = "the file is truncated or corrupt; re-download or re-convert it";

bool valid_value_type(uint32_t raw) { return raw < kValueTypeCount; }

// Bytes that one element of `type` takes at least (strings: the length; arrays: type + count).
uint64_t min_encoded_size(ValueType type) {
  switch (type) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    case ValueType::STRING: return 8;
    case ValueType::ARRAY: return 12;
  }
  return 1;
}

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

uint64_t align_up(uint64_t v, uint64_t alignment) { return (v + alignment - 1) / alignment * alignment; }

// Names the field being read, formatted only when an error is reported: "metadata key 'x'[3][0]".
struct FieldRef {
  std::string_view base;
  std::span<const uint64_t> indices = {};
  std::string str() const {
    std::string s(base);
    for (uint64_t i : indices) s += fmt::format("[{}]", i);
    return s;
  }
};

class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  uint64_t offset() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }
  const std::string& file() const { return file_; }

  [[noreturn]] void fail(const FieldRef& field, uint64_t at, const std::string& problem,
                         const std::string& remedy = kRemedyCorrupt) const {
    throw FormatError(file_, field.str(), at, problem, remedy);
  }

  // `what` (+ `what_suffix`) says what is being read; both are formatted only on failure.
  void require(uint64_t n, const FieldRef& field, std::string_view what, std::string_view what_suffix = {}) const {
    if (n > remaining())
      fail(field, pos_, fmt::format("{}{} needs {} bytes but only {} remain (file size {})", what, what_suffix, n,
                                    remaining(), bytes_.size()));
  }

  template <class T>
  T read(const FieldRef& field, std::string_view what, std::string_view what_suffix = {}) {
    require(sizeof(T), field, what, what_suffix);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const FieldRef& field, std::string_view what) {
    const uint64_t at = pos_;
    const auto len = read<uint64_t>(field, what, " length");
    if (len > remaining())
      fail(field, at, fmt::format("{} length {} exceeds the {} bytes remaining in the file", what, len, remaining()));
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& file_;
  uint64_t pos_ = 0;
};

// ---- metadata values ----------------------------------------------------------------------------

ValueType read_value_type(Cursor& c, const FieldRef& field, std::string_view what) {
  const uint64_t at = c.offset();
  const auto raw = c.read<uint32_t>(field, what);
  if (!valid_value_type(raw))
    c.fail(field, at, fmt::format("unknown metadata value type {} (valid types are 0..12)", raw),
           "the file is corrupt or was written by a newer GGUF version; re-convert it with a current llama.cpp");
  return static_cast<ValueType>(raw);
}

Value read_value(Cursor& c, ValueType type, std::string_view base, std::vector<uint64_t>& path, int depth);

Value read_array(Cursor& c, std::string_view base, std::vector<uint64_t>& path, int depth) {
  const FieldRef field{base, path};
  if (depth >= kMaxArrayDepth)
    c.fail(field, c.offset(), fmt::format("arrays nest deeper than {} levels", kMaxArrayDepth),
           "no real model nests metadata arrays this deep; the file is corrupt");
  Array array;
  array.elem_type = read_value_type(c, field, "array element type");
  const uint64_t count_at = c.offset();
  const auto count = c.read<uint64_t>(field, "array length");
  // Checked before reserving: each element takes at least min_encoded_size bytes.
  const uint64_t max_count = c.remaining() / min_encoded_size(array.elem_type);
  if (count > max_count)
    c.fail(field, count_at,
           fmt::format("array length {} of {} exceeds what the remaining {} bytes can hold (at most {})", count,
                       value_type_name(array.elem_type), c.remaining(), max_count));
  array.items.reserve(static_cast<size_t>(count));
  path.push_back(0);
  for (uint64_t i = 0; i < count; ++i) {
    path.back() = i;
    array.items.push_back(read_value(c, array.elem_type, base, path, depth + 1));
  }
  path.pop_back();
  return Value::array(std::move(array));
}

Value read_value(Cursor& c, ValueType type, std::string_view base, std::vector<uint64_t>& path, int depth) {
  const FieldRef field{base, path};
  switch (type) {
    case ValueType::UINT8: return Value::u8(c.read<uint8_t>(field, "UINT8 value"));
    case ValueType::INT8: return Value::i8(c.read<int8_t>(field, "INT8 value"));
    case ValueType::UINT16: return Value::u16(c.read<uint16_t>(field, "UINT16 value"));
    case ValueType::INT16: return Value::i16(c.read<int16_t>(field, "INT16 value"));
    case ValueType::UINT32: return Value::u32(c.read<uint32_t>(field, "UINT32 value"));
    case ValueType::INT32: return Value::i32(c.read<int32_t>(field, "INT32 value"));
    case ValueType::FLOAT32: return Value::f32(c.read<float>(field, "FLOAT32 value"));
    case ValueType::UINT64: return Value::u64(c.read<uint64_t>(field, "UINT64 value"));
    case ValueType::INT64: return Value::i64(c.read<int64_t>(field, "INT64 value"));
    case ValueType::FLOAT64: return Value::f64(c.read<double>(field, "FLOAT64 value"));
    case ValueType::BOOL: {
      const uint64_t at = c.offset();
      const auto raw = c.read<uint8_t>(field, "BOOL value");  // read as a byte: not every byte is a valid bool
      if (raw > 1) c.fail(field, at, fmt::format("BOOL value is {}, not 0 or 1", raw));
      return Value::boolean(raw == 1);
    }
    case ValueType::STRING: return Value::str(c.read_string(field, "string"));
    case ValueType::ARRAY: return read_array(c, base, path, depth);
  }
  c.fail(field, c.offset(), "unknown metadata value type");
}

// ---- value rendering and conversion helpers ------------------------------------------------------

std::string render_scalar(const Value& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          return fmt::format("\"{}\"", x);
        } else if constexpr (std::is_same_v<T, Array>) {
          return "[]";
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>) {
          return fmt::format("{}", static_cast<int>(x));
        } else {
          return fmt::format("{}", x);
        }
      },
      v.data);
}

// Checks that a Value built by a caller is self-consistent, so the Writer never emits a file the
// reader would reject.
void check_value(const Value& v, const std::string& what, int depth) {
  const auto raw = static_cast<uint32_t>(v.type);
  if (!valid_value_type(raw))
    throw InvalidArgumentError(fmt::format("{}: invalid value type {}", what, raw));
  if (v.data.index() != raw)
    throw InvalidArgumentError(
        fmt::format("{}: value type {} does not match the stored alternative; build values with the Value factories",
                    what, value_type_name(v.type)));
  if (v.type != ValueType::ARRAY) return;
  if (depth >= kMaxArrayDepth)
    throw InvalidArgumentError(fmt::format("{}: arrays nest deeper than {} levels", what, kMaxArrayDepth));
  const auto& array = std::get<Array>(v.data);
  if (!valid_value_type(static_cast<uint32_t>(array.elem_type)))
    throw InvalidArgumentError(fmt::format("{}: invalid array element type", what));
  for (size_t i = 0; i < array.items.size(); ++i) {
    const auto& item = array.items[i];
    if (item.type != array.elem_type)
      throw InvalidArgumentError(fmt::format("{}[{}]: item of type {} in an array of {}; all items must share a type",
                                             what, i, value_type_name(item.type), value_type_name(array.elem_type)));
    check_value(item, fmt::format("{}[{}]", what, i), depth + 1);
  }
}

template <class T>
void append_pod(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

void append_string(std::string& out, std::string_view s) {
  append_pod<uint64_t>(out, s.size());
  out.append(s);
}

void append_value(std::string& out, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          append_string(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          append_pod<uint32_t>(out, static_cast<uint32_t>(x.elem_type));
          append_pod<uint64_t>(out, x.items.size());
          for (const auto& item : x.items) append_value(out, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          append_pod<uint8_t>(out, x ? 1 : 0);
        } else {
          append_pod<T>(out, x);
        }
      },
      v.data);
}

}  // namespace

// ---- Value ------------------------------------------------------------------------------------------

std::string_view value_type_name(ValueType type) noexcept {
  switch (type) {
    case ValueType::UINT8: return "UINT8";
    case ValueType::INT8: return "INT8";
    case ValueType::UINT16: return "UINT16";
    case ValueType::INT16: return "INT16";
    case ValueType::UINT32: return "UINT32";
    case ValueType::INT32: return "INT32";
    case ValueType::FLOAT32: return "FLOAT32";
    case ValueType::BOOL: return "BOOL";
    case ValueType::STRING: return "STRING";
    case ValueType::ARRAY: return "ARRAY";
    case ValueType::UINT64: return "UINT64";
    case ValueType::INT64: return "INT64";
    case ValueType::FLOAT64: return "FLOAT64";
  }
  return "UNKNOWN";
}

Value Value::string_array(std::vector<std::string> items) {
  Array array;
  array.elem_type = ValueType::STRING;
  array.items.reserve(items.size());
  for (auto& s : items) array.items.push_back(Value::str(std::move(s)));
  return Value::array(std::move(array));
}

bool Value::is_integer() const noexcept {
  switch (type) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::UINT16: case ValueType::INT16:
    case ValueType::UINT32: case ValueType::INT32: case ValueType::UINT64: case ValueType::INT64:
      return true;
    default:
      return false;
  }
}

namespace {
[[noreturn]] void wrong_type(const Value& v, std::string_view what, std::string_view expected) {
  throw InvalidArgumentError(fmt::format("{}: expected {}, found {} {}; check the model's metadata", what, expected,
                                         value_type_name(v.type), v.to_string(4)));
}

// Integer alternatives as (is_negative, magnitude-as-u64 or i64) without narrowing surprises.
template <class F>
auto visit_integer(const Value& v, F&& f) {
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return f(x);
        } else {
          return f(uint8_t{0});  // unreachable: callers check is_integer() first
        }
      },
      v.data);
}
}  // namespace

uint64_t Value::as_u64(std::string_view what) const {
  if (!is_integer()) wrong_type(*this, what, "an unsigned integer");
  return visit_integer(*this, [&](auto x) -> uint64_t {
    if constexpr (std::is_signed_v<decltype(x)>) {
      if (x < 0) wrong_type(*this, what, "a non-negative integer");
    }
    return static_cast<uint64_t>(x);
  });
}

int64_t Value::as_i64(std::string_view what) const {
  if (!is_integer()) wrong_type(*this, what, "an integer");
  return visit_integer(*this, [&](auto x) -> int64_t {
    if constexpr (std::is_unsigned_v<decltype(x)>) {
      if (static_cast<uint64_t>(x) > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        wrong_type(*this, what, "an integer that fits in int64");
    }
    return static_cast<int64_t>(x);
  });
}

double Value::as_f64(std::string_view what) const {
  if (type == ValueType::FLOAT32) return std::get<float>(data);
  if (type == ValueType::FLOAT64) return std::get<double>(data);
  if (!is_integer()) wrong_type(*this, what, "a number");
  return visit_integer(*this, [](auto x) { return static_cast<double>(x); });
}

bool Value::as_bool(std::string_view what) const {
  if (type != ValueType::BOOL) wrong_type(*this, what, "a BOOL");
  return std::get<bool>(data);
}

const std::string& Value::as_string(std::string_view what) const {
  if (type != ValueType::STRING) wrong_type(*this, what, "a STRING");
  return std::get<std::string>(data);
}

const Array& Value::as_array(std::string_view what) const {
  if (type != ValueType::ARRAY) wrong_type(*this, what, "an ARRAY");
  return std::get<Array>(data);
}

std::string Value::to_string(size_t max_items) const {
  if (type != ValueType::ARRAY) return render_scalar(*this);
  const auto& array = std::get<Array>(data);
  std::string s = "[";
  const size_t shown = std::min(max_items, array.items.size());
  for (size_t i = 0; i < shown; ++i) {
    if (i > 0) s += ", ";
    s += array.items[i].to_string(max_items);
  }
  if (shown < array.items.size()) s += fmt::format("{}... ({} items)", shown > 0 ? ", " : "", array.items.size());
  s += "]";
  return s;
}

uint64_t TensorInfo::n_elements() const noexcept {
  return std::accumulate(shape.begin(), shape.end(), uint64_t{1}, std::multiplies<>());
}

// ---- File -------------------------------------------------------------------------------------------

namespace {

void read_header_version(Cursor& c, uint32_t& version) {
  const FieldRef magic_field{"magic"};
  const auto magic = c.read<uint32_t>(magic_field, "the GGUF magic");
  if (magic != kMagic) {
    // Legacy ggml/ggmf/ggjt files (before GGUF) are well-formed but no longer supported.
    if (magic == 0x67676d6c || magic == 0x67676d66 || magic == 0x67676a74)
      throw UnsupportedError(format_error_message(
          c.file(), "magic", 0, "this is a legacy GGML/GGJT file from before GGUF",
          "re-convert the original model with a current llama.cpp (convert_hf_to_gguf.py)"));
    char shown[4];
    std::memcpy(shown, &magic, 4);
    std::string printable;
    for (char ch : shown) printable += (ch >= 32 && ch < 127) ? ch : '.';
    c.fail(magic_field, 0, fmt::format("bad magic '{}' (0x{:08x}), expected 'GGUF'", printable, magic),
           "this is not a GGUF file; pass a .gguf model");
  }
  const FieldRef version_field{"version"};
  version = c.read<uint32_t>(version_field, "the GGUF version");
  if (version == 2 || version == 3) return;
  if (version == 1)
    throw UnsupportedError(format_error_message(
        c.file(), "version", 4, "GGUF version 1 is not supported (it used 32-bit counts and lengths)",
        "re-convert the model with a current llama.cpp (convert_hf_to_gguf.py), which writes version 3"));
  if (version != 0 && (version & 0xFFFFu) == 0)
    throw UnsupportedError(format_error_message(
        c.file(), "version", 4,
        fmt::format("the version field reads 0x{:08x} (byte-swapped: {}), so this is a big-endian GGUF file", version,
                    __builtin_bswap32(version)),
        "lathe reads little-endian GGUF only; convert it with gguf-py's gguf_convert_endian.py <file> little"));
  throw UnsupportedError(format_error_message(
      c.file(), "version", 4, fmt::format("GGUF version {} is not supported (lathe reads versions 2 and 3)", version),
      "re-convert the model with a llama.cpp release that writes version 3, or update lathe"));
}

uint64_t read_count(Cursor& c, std::string_view name, uint64_t min_entry_bytes, std::string_view entries) {
  const FieldRef field{name};
  const uint64_t at = c.offset();
  const auto count = c.read<uint64_t>(field, name);
  const uint64_t max_count = c.remaining() / min_entry_bytes;
  if (count > max_count)
    c.fail(field, at,
           fmt::format("{} {} exceeds what the remaining {} bytes can hold (at most {} {} of {} bytes or more)", name,
                       count, c.remaining(), max_count, entries, min_entry_bytes));
  return count;
}

uint32_t checked_alignment(const Cursor& c, const Value& v, const std::string& field, uint64_t at) {
  const FieldRef ref{field};
  if (v.type != ValueType::UINT32)
    c.fail(ref, at, fmt::format("general.alignment has type {}, expected UINT32", value_type_name(v.type)));
  const uint32_t a = std::get<uint32_t>(v.data);
  if (!is_power_of_two(a))
    c.fail(ref, at, fmt::format("general.alignment is {}, which is not a non-zero power of two", a));
  return a;
}

}  // namespace

File File::open(const std::filesystem::path& path) {
  auto map = std::make_shared<MappedFile>(path);
  File file = parse(map->bytes(), path.string());
  file.map_ = std::move(map);
  return file;
}

File File::parse(std::span<const uint8_t> bytes, std::string display_name) {
  File f;
  f.name_ = std::move(display_name);
  f.bytes_ = bytes;
  Cursor c(bytes, f.name_);

  read_header_version(c, f.version_);
  uint64_t tensor_count = read_count(c, "tensor_count", kMinTensorInfoBytes, "tensor infos");
  const uint64_t kv_count = read_count(c, "kv_count", kMinKvBytes, "metadata entries");

  // Metadata.
  f.kv_.reserve(static_cast<size_t>(kv_count));
  std::vector<uint64_t> path;
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t key_at = c.offset();
    const std::string key_label = fmt::format("metadata entry #{} key", i);
    std::string key = c.read_string(FieldRef{key_label}, "key");
    const std::string field = fmt::format("metadata key '{}'", key);
    if (f.kv_index_.count(key) != 0)
      c.fail(FieldRef{field}, key_at, "duplicate key (it already appeared earlier in the file)",
             "the file is corrupt or was written by a buggy tool; re-convert it");
    const ValueType type = read_value_type(c, FieldRef{field}, "value type");
    const uint64_t value_at = c.offset();
    Value value = read_value(c, type, field, path, 0);
    if (key == "general.alignment") f.alignment_ = checked_alignment(c, value, field, value_at);
    f.kv_index_.emplace(key, f.kv_.size());
    f.kv_.emplace_back(std::move(key), std::move(value));
  }

  // Tensor infos. Re-check the count against what is left now that the metadata is consumed.
  if (tensor_count > c.remaining() / kMinTensorInfoBytes)
    c.fail(FieldRef{"tensor_count"}, 8,
           fmt::format("tensor_count {} exceeds what the remaining {} bytes after the metadata can hold",
                       tensor_count, c.remaining()));
  f.tensors_.reserve(static_cast<size_t>(tensor_count));
  std::vector<uint64_t> info_offsets;
  info_offsets.reserve(static_cast<size_t>(tensor_count));
  for (uint64_t i = 0; i < tensor_count; ++i) {
    const uint64_t info_at = c.offset();
    TensorInfo t;
    t.name = c.read_string(FieldRef{fmt::format("tensor #{} name", i)}, "tensor name");
    const std::string label = fmt::format("tensor '{}'", t.name);
    const FieldRef field{label};
    if (f.tensor_index_.count(t.name) != 0)
      c.fail(field, info_at, "duplicate tensor name (it already appeared earlier in the file)",
             "the file is corrupt or was written by a buggy tool; re-convert it");

    const uint64_t dims_at = c.offset();
    const auto n_dims = c.read<uint32_t>(field, "n_dims");
    if (n_dims > kMaxDims)
      c.fail(field, dims_at, fmt::format("n_dims is {}; GGUF tensors have at most {} dimensions", n_dims, kMaxDims));
    uint64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim_at = c.offset();
      const auto dim = c.read<uint64_t>(field, "dimension");
      if (dim == 0) c.fail(field, dim_at, fmt::format("dimension {} is 0; every dimension must be at least 1", d));
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / n_elements)
        c.fail(field, dim_at, "the element count overflows int64");
      n_elements *= dim;
      t.shape.push_back(dim);
    }

    const uint64_t type_at = c.offset();
    const auto type_id = c.read<uint32_t>(field, "ggml type");
    const auto dtype = dtype_from_ggml_id(type_id);
    if (!dtype)
      c.fail(field, type_at, fmt::format("unknown ggml tensor type id {}", type_id),
             "the file uses a tensor type lathe does not know; re-quantize it to a supported type (e.g. Q8_0, Q4_K)");
    t.type = *dtype;
    const auto& info = dtype_info(t.type);
    const uint64_t row = t.shape.empty() ? 1 : t.shape[0];
    const auto n_bytes = dtype_bytes(t.type, n_elements);
    if (row % info.block_size != 0 || !n_bytes)
      c.fail(field, type_at,
             fmt::format("type {} packs {} elements per block but the innermost dimension is {}", info.name,
                         info.block_size, row));
    t.n_bytes = *n_bytes;

    const uint64_t offset_at = c.offset();
    t.offset = c.read<uint64_t>(field, "data offset");
    if (t.offset % f.alignment_ != 0)
      c.fail(field, offset_at,
             fmt::format("data offset {} is not a multiple of the alignment {}", t.offset, f.alignment_));
    f.tensor_index_.emplace(t.name, f.tensors_.size());
    f.tensors_.push_back(std::move(t));
    info_offsets.push_back(info_at);
  }

  // Tensor data: the data section starts at the next multiple of the alignment.
  f.data_offset_ = align_up(c.offset(), f.alignment_);
  const uint64_t size = bytes.size();
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    auto& t = f.tensors_[i];
    const bool inside = f.data_offset_ <= size && t.offset <= size - f.data_offset_ &&
                        t.n_bytes <= size - f.data_offset_ - t.offset;
    if (!inside)
      c.fail(FieldRef{fmt::format("tensor '{}'", t.name)}, info_offsets[i],
             fmt::format("its {} bytes of data at data offset {} (data section starts at {}) extend beyond the end of "
                         "the file ({} bytes)",
                         t.n_bytes, t.offset, f.data_offset_, size));
    t.file_offset = f.data_offset_ + t.offset;
  }
  std::vector<size_t> order(f.tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return f.tensors_[a].offset < f.tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = f.tensors_[order[k - 1]];
    const auto& cur = f.tensors_[order[k]];
    if (prev.offset + prev.n_bytes > cur.offset)  // cannot overflow: both lie inside the file
      c.fail(FieldRef{fmt::format("tensor '{}'", cur.name)}, info_offsets[order[k]],
             fmt::format("its data [{}, {}) overlaps tensor '{}' [{}, {}) (data-section offsets)", cur.offset,
                         cur.offset + cur.n_bytes, prev.name, prev.offset, prev.offset + prev.n_bytes));
  }
  return f;
}

const Value* File::find(std::string_view key) const noexcept {
  const auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& File::get(std::string_view key) const {
  if (const Value* v = find(key)) return *v;
  throw NotFoundError(fmt::format("{}: metadata key '{}' not found; the model may be incomplete or of another "
                                  "architecture (list its keys with `lathe inspect`)",
                                  name_, key));
}

const TensorInfo* File::find_tensor(std::string_view name) const noexcept {
  const auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const uint8_t> File::tensor_data(const TensorInfo& info) const noexcept {
  if (info.file_offset > bytes_.size() || info.n_bytes > bytes_.size() - info.file_offset) return {};
  return bytes_.subspan(static_cast<size_t>(info.file_offset), static_cast<size_t>(info.n_bytes));
}

// ---- Writer -----------------------------------------------------------------------------------------

void Writer::set(std::string key, Value value) {
  check_value(value, fmt::format("metadata key '{}'", key), 0);
  if (key == "general.alignment") {
    if (value.type != ValueType::UINT32 || !is_power_of_two(std::get<uint32_t>(value.data)))
      throw InvalidArgumentError(
          fmt::format("general.alignment must be a UINT32 non-zero power of two, got {} {}",
                      value_type_name(value.type), value.to_string()));
    alignment_ = std::get<uint32_t>(value.data);
  }
  for (auto& [k, v] : kv_) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  kv_.emplace_back(std::move(key), std::move(value));
}

void Writer::set_alignment(uint32_t alignment) {
  if (!is_power_of_two(alignment))
    throw InvalidArgumentError(fmt::format("alignment {} is not a non-zero power of two", alignment));
  const bool present = std::any_of(kv_.begin(), kv_.end(), [](const auto& kv) { return kv.first == "general.alignment"; });
  if (alignment != kDefaultAlignment || present) set("general.alignment", Value::u32(alignment));
  alignment_ = alignment;
}

void Writer::add_tensor(std::string name, DType type, std::vector<uint64_t> shape, std::span<const uint8_t> data) {
  for (const auto& t : tensors_)
    if (t.name == name) throw InvalidArgumentError(fmt::format("tensor '{}' added twice; tensor names must be unique", name));
  const auto& info = dtype_info(type);
  if (info.ggml_id < 0)
    throw UnsupportedError(fmt::format("tensor '{}': type {} cannot be stored in GGUF; convert it to a ggml type first",
                                       name, info.name));
  if (shape.size() > kMaxDims)
    throw InvalidArgumentError(fmt::format("tensor '{}' has {} dimensions; GGUF allows at most {}", name, shape.size(), kMaxDims));
  uint64_t n_elements = 1;
  for (uint64_t dim : shape) {
    if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / n_elements)
      throw InvalidArgumentError(fmt::format("tensor '{}': dimension {} is 0 or the element count overflows", name, dim));
    n_elements *= dim;
  }
  const uint64_t row = shape.empty() ? 1 : shape[0];
  const auto n_bytes = dtype_bytes(type, n_elements);
  if (row % info.block_size != 0 || !n_bytes)
    throw InvalidArgumentError(fmt::format("tensor '{}': type {} needs the innermost dimension ({}) to be a multiple of {}",
                                           name, info.name, row, info.block_size));
  if (*n_bytes != data.size())
    throw InvalidArgumentError(fmt::format("tensor '{}': {} x {} elements take {} bytes but {} bytes were given", name,
                                           info.name, n_elements, *n_bytes, data.size()));
  tensors_.push_back({std::move(name), type, std::move(shape), data});
}

void Writer::write(const std::filesystem::path& path, const std::function<void(size_t, size_t)>& progress) const {
  std::string header;
  append_pod<uint32_t>(header, kMagic);
  append_pod<uint32_t>(header, kWriteVersion);
  append_pod<uint64_t>(header, tensors_.size());
  append_pod<uint64_t>(header, kv_.size());
  for (const auto& [key, value] : kv_) {
    append_string(header, key);
    append_pod<uint32_t>(header, static_cast<uint32_t>(value.type));
    append_value(header, value);
  }
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    append_string(header, t.name);
    append_pod<uint32_t>(header, static_cast<uint32_t>(t.shape.size()));
    for (uint64_t dim : t.shape) append_pod<uint64_t>(header, dim);
    append_pod<uint32_t>(header, static_cast<uint32_t>(dtype_info(t.type).ggml_id));
    append_pod<uint64_t>(header, offset);
    offset = align_up(offset + t.data.size(), alignment_);
  }

  AtomicFileWriter out(path);
  out.write(header.data(), header.size());
  out.write_zeros(static_cast<size_t>(align_up(out.position(), alignment_) - out.position()));
  size_t done = 0;
  for (const auto& t : tensors_) {
    out.write(t.data.data(), t.data.size());
    out.write_zeros(static_cast<size_t>(align_up(out.position(), alignment_) - out.position()));
    if (progress) progress(++done, tensors_.size());
  }
  out.commit();
}

}  // namespace lathe::gguf
