#include "io/safetensors.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <utility>

#include "lathe/error.hpp"

namespace lathe::safetensors {
namespace {

using nlohmann::json;

constexpr uint64_t kLengthBytes = 8;
// A valid header nests three levels (root object, tensor object, shape array); the limit only
// bounds the parser's memory on hostile input while leaving room for unknown extra fields.
constexpr int kMaxJsonDepth = 64;
constexpr std::string_view kMetadataKey = "__metadata__";

// Every dtype the reference knows, in its enum order, which is ascending alignment: the writer
// sorts by this rank (descending) as the reference serializer does. bits: size of one element.
struct StDType {
  std::string_view name;
  uint32_t bits;
};
constexpr std::array<StDType, 22> kStDTypes{{
    {"BOOL", 8},    {"F4", 4},           {"F6_E2M3", 6},      {"F6_E3M2", 6}, {"U8", 8},   {"I8", 8},
    {"F8_E5M2", 8}, {"F8_E4M3", 8},      {"F8_E8M0", 8},      {"F8_E4M3FNUZ", 8},          {"F8_E5M2FNUZ", 8},
    {"I16", 16},    {"U16", 16},         {"F16", 16},         {"BF16", 16},   {"I32", 32}, {"U32", 32},
    {"F32", 32},    {"C64", 64},         {"F64", 64},         {"I64", 64},    {"U64", 64},
}};

std::optional<size_t> st_dtype_rank(std::string_view name) {
  for (size_t i = 0; i < kStDTypes.size(); ++i)
    if (kStDTypes[i].name == name) return i;
  return std::nullopt;
}

std::string known_dtype_list() {
  std::string out;
  for (const auto& d : kStDTypes) out += (out.empty() ? "" : ", ") + std::string(d.name);
  return out;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// What the parser callback saw that the DOM cannot tell: keys repeated inside one object (the DOM
// keeps only the last), reported after parsing so the message can carry the key's offset.
struct DuplicateKey {
  bool found = false;
  std::string tensor;  // the top-level key it sits under ("" when the duplicate is top-level)
  std::string key;
};

class HeaderParser {
 public:
  HeaderParser(std::string_view file, std::string_view text) : file_(file), text_(text) {}

  json parse() {
    // Per open object, the keys seen so far; path_ holds the current key at each depth.
    std::vector<std::set<std::string>> open_objects;
    std::vector<std::string> path;
    json::parser_callback_t callback = [&](int depth, json::parse_event_t event, json& parsed) {
      switch (event) {
        case json::parse_event_t::object_start:
        case json::parse_event_t::array_start:
          if (depth >= kMaxJsonDepth)
            throw FormatError(std::string(file_), "header JSON", kLengthBytes, fmt::format("nested deeper than {} levels", kMaxJsonDepth),
                              "a safetensors header holds only tensor entries and string metadata; the file is corrupt");
          if (event == json::parse_event_t::object_start) open_objects.emplace_back();
          break;
        case json::parse_event_t::object_end:
          if (!open_objects.empty()) open_objects.pop_back();
          break;
        case json::parse_event_t::key: {
          std::string key = parsed.get<std::string>();
          if (path.size() < static_cast<size_t>(depth) + 1) path.resize(static_cast<size_t>(depth) + 1);
          path[static_cast<size_t>(depth)] = key;
          if (!open_objects.empty() && !open_objects.back().insert(key).second && !duplicate_.found) {
            duplicate_.found = true;
            duplicate_.key = key;
            if (depth >= 2) duplicate_.tensor = path[1];
          }
          break;
        }
        default:
          break;
      }
      return true;
    };
    // nlohmann's parser stops at a NUL byte and accepts what came before it; JSON allows no raw
    // NUL anywhere (the reference rejects "{}\0..." as trailing characters), so reject it here.
    if (const size_t nul = text_.find('\0'); nul != std::string_view::npos)
      throw FormatError(std::string(file_), "header JSON", kLengthBytes + nul, "contains a NUL byte, which JSON does not allow",
                        "the header is corrupt or truncated; re-download or re-export the file");
    try {
      return json::parse(text_.begin(), text_.end(), callback);
    } catch (const json::parse_error& e) {
      const uint64_t pos = e.byte > 0 ? e.byte - 1 : 0;
      throw FormatError(std::string(file_), "header JSON", kLengthBytes + pos, fmt::format("not valid JSON ({})", e.what()),
                        "the header is corrupt or truncated; re-download or re-export the file");
    } catch (const json::exception& e) {
      // Not a syntax error but a value nlohmann cannot hold (e.g. a number beyond double's range).
      throw FormatError(std::string(file_), "header JSON", kLengthBytes, fmt::format("has an unrepresentable value ({})", e.what()),
                        "the header is corrupt; re-download or re-export the file");
    }
  }

  const DuplicateKey& duplicate() const { return duplicate_; }

 private:
  std::string_view file_;
  std::string_view text_;
  DuplicateKey duplicate_;
};

// Offsets (within the header text) of every top-level key, in order, duplicates included. Runs on
// text the JSON parser already accepted, so it only needs to track strings and nesting.
std::vector<std::pair<std::string, uint64_t>> top_level_key_offsets(std::string_view text) {
  std::vector<std::pair<std::string, uint64_t>> keys;
  int depth = 0;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '{' || c == '[') {
      ++depth;
      ++i;
    } else if (c == '}' || c == ']') {
      --depth;
      ++i;
    } else if (c == '"') {
      const size_t start = i++;
      bool escaped = false;
      while (i < text.size() && (escaped || text[i] != '"')) {
        escaped = !escaped && text[i] == '\\';
        ++i;
      }
      ++i;  // closing quote
      const std::string_view quoted = text.substr(start, i - start);
      size_t j = i;
      while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' || text[j] == '\r')) ++j;
      if (depth == 1 && j < text.size() && text[j] == ':') {
        std::string key(quoted.substr(1, quoted.size() - 2));
        if (quoted.find('\\') != std::string_view::npos) {
          // Unescape through the JSON parser; the text was accepted already, so this cannot fail,
          // but a defensive fallback keeps the raw spelling rather than throwing.
          const json decoded = json::parse(quoted, nullptr, /*allow_exceptions=*/false);
          if (decoded.is_string()) key = decoded.get<std::string>();
        }
        keys.emplace_back(std::move(key), start);
      }
    } else {
      ++i;
    }
  }
  return keys;
}

// Builds TensorInfos from the parsed header and checks them against the data section.
class HeaderValidator {
 public:
  HeaderValidator(const std::string& file, uint64_t header_size, uint64_t data_size,
                  std::vector<std::pair<std::string, uint64_t>> key_offsets)
      : file_(file), header_size_(header_size), data_size_(data_size), key_offsets_(std::move(key_offsets)) {
    for (const auto& [key, offset] : key_offsets_) first_offset_.try_emplace(key, offset);
  }

  uint64_t data_start() const { return kLengthBytes + header_size_; }

  // Absolute file offset of a top-level key.
  uint64_t key_offset(const std::string& key) const {
    auto it = first_offset_.find(key);
    return it == first_offset_.end() ? kLengthBytes : kLengthBytes + it->second;
  }

  void report_duplicate(const DuplicateKey& dup) const {
    if (!dup.found) return;
    if (dup.tensor.empty()) {
      uint64_t offset = kLengthBytes;
      bool seen = false;
      for (const auto& [key, pos] : key_offsets_) {
        if (key != dup.key) continue;
        if (seen) {
          offset = kLengthBytes + pos;
          break;
        }
        seen = true;
      }
      throw FormatError(file_, fmt::format("tensor '{}'", dup.key), offset, "the name appears twice in the header",
                        "each tensor name must be unique; the file is corrupt or was written by a broken tool");
    }
    throw FormatError(file_, fmt::format("tensor '{}' field '{}'", dup.tensor, dup.key), key_offset(dup.tensor),
                      "the field appears twice", "each field may appear once; the file is corrupt");
  }

  std::map<std::string, std::string> read_metadata(const json& value) const {
    std::map<std::string, std::string> metadata;
    if (value.is_null()) return metadata;
    const uint64_t offset = key_offset(std::string(kMetadataKey));
    if (!value.is_object())
      throw FormatError(file_, "__metadata__", offset, fmt::format("is a JSON {}, not an object", value.type_name()),
                        "__metadata__ must map strings to strings; the file is corrupt");
    for (const auto& [key, item] : value.items()) {
      if (!item.is_string())
        throw FormatError(file_, fmt::format("__metadata__ key '{}'", key), offset,
                          fmt::format("value is a JSON {}, not a string", item.type_name()),
                          "safetensors metadata values must be strings; re-export the file");
      metadata.emplace(key, item.get<std::string>());
    }
    return metadata;
  }

  // One tensor entry; the dtype name is kept for the support check done after validation.
  struct Entry {
    TensorInfo info;
    std::string st_dtype;
  };

  Entry read_entry(const std::string& name, const json& value) const {
    const uint64_t offset = key_offset(name);
    const std::string what = fmt::format("tensor '{}'", name);
    if (!value.is_object())
      throw FormatError(file_, what, offset, fmt::format("entry is a JSON {}, not an object", value.type_name()),
                        "each tensor entry needs dtype, shape and data_offsets; the file is corrupt");
    Entry entry;
    entry.info.name = name;
    entry.st_dtype = field(name, value, "dtype", json::value_t::string, offset).get<std::string>();
    const auto rank = st_dtype_rank(entry.st_dtype);
    if (!rank)
      throw FormatError(file_, what + " field 'dtype'", offset, fmt::format("unknown dtype '{}'", entry.st_dtype),
                        fmt::format("safetensors dtypes are {}; the file is corrupt or from a newer format", known_dtype_list()));

    const json& shape = field(name, value, "shape", json::value_t::array, offset);
    for (const auto& dim : shape) {
      if (!dim.is_number_unsigned())
        throw FormatError(file_, what + " field 'shape'", offset, fmt::format("dimension {} is not a non-negative integer", dim.dump()),
                          "shape must be a list of non-negative integers; the file is corrupt");
      entry.info.shape.push_back(dim.get<uint64_t>());
    }

    const json& offsets = field(name, value, "data_offsets", json::value_t::array, offset);
    if (offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw FormatError(file_, what + " field 'data_offsets'", offset, fmt::format("{} is not [begin, end]", offsets.dump()),
                        "data_offsets must be two non-negative integers; the file is corrupt");
    entry.info.data_begin = offsets[0].get<uint64_t>();
    entry.info.data_end = offsets[1].get<uint64_t>();
    check_byte_range(entry, kStDTypes[*rank].bits, offset);
    entry.info.file_offset = data_start() + entry.info.data_begin;
    return entry;
  }

  // Sorts by offset and checks that the tensors tile the data section exactly.
  void check_coverage(std::vector<Entry>& entries) const {
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
      return std::tie(a.info.data_begin, a.info.data_end, a.info.name) < std::tie(b.info.data_begin, b.info.data_end, b.info.name);
    });
    uint64_t covered = 0;
    const std::string* previous = nullptr;
    for (const auto& entry : entries) {
      const auto& info = entry.info;
      if (info.data_begin < covered)
        throw FormatError(file_, fmt::format("tensor '{}' data_offsets", info.name), data_start() + info.data_begin,
                          fmt::format("bytes [{}, {}) overlap tensor '{}' which ends at {}", info.data_begin, info.data_end,
                                      previous ? *previous : "", covered),
                          "tensors must not share bytes; the file is corrupt");
      if (info.data_begin > covered)
        throw FormatError(file_, fmt::format("tensor '{}' data_offsets", info.name), data_start() + covered,
                          fmt::format("{} unused bytes before it (data section bytes [{}, {}) belong to no tensor)",
                                      info.data_begin - covered, covered, info.data_begin),
                          "the reference implementation rejects gaps between tensors; re-export the file");
      covered = info.data_end;
      previous = &info.name;
    }
    if (covered != data_size_)
      throw FormatError(file_, previous ? fmt::format("data after tensor '{}'", *previous) : std::string("data section"),
                        data_start() + covered,
                        fmt::format("{} trailing bytes belong to no tensor (tensors cover {} of {} data bytes)",
                                    data_size_ - covered, covered, data_size_),
                        "the reference implementation rejects trailing bytes; the file is corrupt or was appended to");
  }

 private:
  const json& field(const std::string& name, const json& entry, const char* key, json::value_t type, uint64_t offset) const {
    auto it = entry.find(key);
    if (it == entry.end())
      throw FormatError(file_, fmt::format("tensor '{}' field '{}'", name, key), offset, "missing",
                        "each tensor entry needs dtype, shape and data_offsets; the file is corrupt");
    if (it->type() != type)
      throw FormatError(file_, fmt::format("tensor '{}' field '{}'", name, key), offset,
                        fmt::format("is a JSON {}, expected {}", it->type_name(), type == json::value_t::string ? "string" : "array"),
                        "the file is corrupt");
    return *it;
  }

  void check_byte_range(const Entry& entry, uint32_t bits, uint64_t offset) const {
    const auto& info = entry.info;
    const std::string what = fmt::format("tensor '{}'", info.name);
    uint64_t elements = 1;
    for (uint64_t dim : info.shape) {
      if (dim != 0 && elements > UINT64_MAX / dim)
        throw FormatError(file_, what + " field 'shape'", offset, "the element count overflows 64 bits", "the file is corrupt");
      elements *= dim;
    }
    if (elements > UINT64_MAX / bits)
      throw FormatError(file_, what + " field 'shape'", offset, "the size in bits overflows 64 bits", "the file is corrupt");
    const uint64_t total_bits = elements * bits;
    if (total_bits % 8 != 0)
      throw FormatError(file_, what + " field 'shape'", offset,
                        fmt::format("{} elements of {} do not fill whole bytes", elements, entry.st_dtype), "the file is corrupt");
    if (info.data_begin > info.data_end)
      throw FormatError(file_, what + " field 'data_offsets'", offset,
                        fmt::format("begin {} is after end {}", info.data_begin, info.data_end), "the file is corrupt");
    if (info.data_end > data_size_)
      throw FormatError(file_, what + " field 'data_offsets'", data_start() + info.data_begin,
                        fmt::format("bytes [{}, {}) extend beyond the {}-byte data section (file is {} bytes)", info.data_begin,
                                    info.data_end, data_size_, data_start() + data_size_),
                        "the file is truncated; re-download it");
    if (info.n_bytes() != total_bits / 8)
      throw FormatError(file_, what, offset,
                        fmt::format("{} x {} needs {} bytes but data_offsets [{}, {}) hold {}", entry.st_dtype,
                                    fmt::join(info.shape, "x"), total_bits / 8, info.data_begin, info.data_end, info.n_bytes()),
                        "dtype, shape and data_offsets disagree; the file is corrupt");
  }

  const std::string& file_;
  uint64_t header_size_;
  uint64_t data_size_;
  std::vector<std::pair<std::string, uint64_t>> key_offsets_;
  std::unordered_map<std::string, uint64_t> first_offset_;
};

}  // namespace

uint64_t TensorInfo::n_elements() const noexcept {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;  // cannot overflow: checked when the file was parsed
  return n;
}

File File::open(const std::filesystem::path& path) {
  auto map = std::make_shared<MappedFile>(path);
  File file = parse(map->bytes(), path.string());
  file.map_ = std::move(map);
  return file;
}

File File::parse(std::span<const uint8_t> bytes, std::string display_name) {
  File file;
  file.name_ = std::move(display_name);
  file.bytes_ = bytes;
  const std::string& name = file.name_;

  if (bytes.size() < kLengthBytes)
    throw FormatError(name, "header length", 0, fmt::format("the file has only {} bytes, fewer than the 8-byte length", bytes.size()),
                      "the file is truncated or not a safetensors file");
  const uint64_t header_size = read_u64_le(bytes.data());
  if (header_size > kMaxHeaderBytes)
    throw FormatError(name, "header length", 0, fmt::format("{} bytes exceeds the {}-byte limit", header_size, kMaxHeaderBytes),
                      "the file is corrupt or not a safetensors file");
  if (header_size > bytes.size() - kLengthBytes)
    throw FormatError(name, "header length", 0,
                      fmt::format("{} header bytes extend beyond the end of the {}-byte file", header_size, bytes.size()),
                      "the file is truncated or not a safetensors file; re-download it");
  file.header_size_ = header_size;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + kLengthBytes), header_size);

  HeaderParser parser(name, text);
  const json header = parser.parse();
  HeaderValidator validator(name, header_size, bytes.size() - kLengthBytes - header_size, top_level_key_offsets(text));
  validator.report_duplicate(parser.duplicate());
  if (!header.is_object())
    throw FormatError(name, "header JSON", kLengthBytes, fmt::format("is a JSON {}, not an object", header.type_name()),
                      "the file is not a safetensors file");

  std::vector<HeaderValidator::Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey)
      file.metadata_ = validator.read_metadata(value);
    else
      entries.push_back(validator.read_entry(key, value));
  }
  validator.check_coverage(entries);

  // Structure is valid; now refuse dtypes lathe has no type for.
  for (auto& entry : entries) {
    const auto type = dtype_from_safetensors_name(entry.st_dtype);
    if (!type)
      throw UnsupportedError(fmt::format("{}: tensor '{}' at offset {}: dtype {} is not supported by lathe (supported: F32, F16, BF16, "
                                         "F64, I8, I16, I32, I64, U8, BOOL); convert the model to one of those",
                                         name, entry.info.name, entry.info.file_offset, entry.st_dtype));
    entry.info.type = *type;
    file.tensor_index_.emplace(entry.info.name, file.tensors_.size());
    file.tensors_.push_back(std::move(entry.info));
  }
  return file;
}

const TensorInfo* File::find_tensor(std::string_view name) const noexcept {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
  if (const auto* info = find_tensor(name)) return *info;
  throw NotFoundError(fmt::format("{}: no tensor named '{}' ({} tensors in the file); check the name", name_, name, tensors_.size()));
}

std::span<const uint8_t> File::tensor_data(const TensorInfo& info) const noexcept {
  return bytes_.subspan(info.file_offset, info.n_bytes());
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

std::string json_string(const std::string& s, std::string_view what) {
  try {
    return json(s).dump();
  } catch (const json::type_error&) {
    throw InvalidArgumentError(fmt::format("safetensors writer: {} '{}' is not valid UTF-8; use UTF-8 names", what, s));
  }
}

size_t writer_rank(DType type) { return *st_dtype_rank(dtype_info(type).st_name); }

}  // namespace

void Writer::set_metadata(std::string key, std::string value) {
  json_string(key, "metadata key");
  json_string(value, "metadata value");
  metadata_[std::move(key)] = std::move(value);
}

void Writer::add_tensor(std::string name, DType type, std::vector<uint64_t> shape, std::span<const uint8_t> data) {
  if (name == kMetadataKey)
    throw InvalidArgumentError("safetensors writer: the name __metadata__ is reserved for the metadata; rename the tensor");
  if (names_.count(name))
    throw InvalidArgumentError(fmt::format("safetensors writer: tensor '{}' added twice; tensor names must be unique", name));
  json_string(name, "tensor name");
  if (dtype_info(type).st_name.empty())
    throw InvalidArgumentError(fmt::format("safetensors writer: tensor '{}' has type {} which safetensors cannot hold; dequantize it first",
                                           name, dtype_name(type)));
  uint64_t elements = 1;
  for (uint64_t dim : shape) {
    if (dim != 0 && elements > UINT64_MAX / dim)
      throw InvalidArgumentError(fmt::format("safetensors writer: tensor '{}' shape overflows 64 bits", name));
    elements *= dim;
  }
  const auto expected = dtype_bytes(type, elements);
  if (!expected || *expected != data.size())
    throw InvalidArgumentError(fmt::format("safetensors writer: tensor '{}' is {} x [{}] but has {} bytes of data; pass matching data",
                                           name, dtype_name(type), fmt::join(shape, ", "), data.size()));
  names_.emplace(name, tensors_.size());
  tensors_.push_back({std::move(name), type, std::move(shape), data});
}

void Writer::write_file(const std::filesystem::path& path, std::vector<const PendingTensor*> tensors,
                        const std::map<std::string, std::string>& metadata) {
  // The reference serializer's order: larger alignment first, then by name (bytewise).
  std::sort(tensors.begin(), tensors.end(), [](const PendingTensor* a, const PendingTensor* b) {
    const size_t ra = writer_rank(a->type), rb = writer_rank(b->type);
    return ra != rb ? ra > rb : a->name < b->name;
  });
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      header += json(key).dump();
      header += ':';
      header += json(value).dump();
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (const auto* t : tensors) {
    if (header.size() > 1) header += ",";
    header += fmt::format("{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", json(t->name).dump(),
                          dtype_info(t->type).st_name, fmt::join(t->shape, ","), offset, offset + t->data.size());
    offset += t->data.size();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  AtomicFileWriter out(path);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header.size() >> (8 * i));
  out.write(length, sizeof(length));
  out.write(header.data(), header.size());
  for (const auto* t : tensors) out.write(t->data.data(), t->data.size());
  out.commit();
}

void Writer::write(const std::filesystem::path& path) const {
  std::vector<const PendingTensor*> all;
  for (const auto& t : tensors_) all.push_back(&t);
  write_file(path, std::move(all), metadata_);
}

std::vector<std::filesystem::path> Writer::write_sharded(const std::filesystem::path& dir, uint64_t max_shard_bytes) const {
  if (max_shard_bytes == 0)
    throw InvalidArgumentError("safetensors writer: max shard size must be positive; pass a size in bytes such as 5000000000");
  std::vector<std::vector<const PendingTensor*>> shards(1);
  uint64_t shard_bytes = 0, total_bytes = 0;
  for (const auto& t : tensors_) {
    if (!shards.back().empty() && shard_bytes + t.data.size() > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(&t);
    shard_bytes += t.data.size();
    total_bytes += t.data.size();
  }

  std::vector<std::filesystem::path> written;
  if (shards.size() == 1) {
    written.push_back(dir / "model.safetensors");
    write_file(written.back(), shards.front(), metadata_);
    return written;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file_name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    written.push_back(dir / file_name);
    write_file(written.back(), shards[i], metadata_);
    for (const auto* t : shards[i]) weight_map[t->name] = file_name;
  }
  // Written last so that an index never names a shard that is not there yet.
  const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", std::move(weight_map)}};
  const std::string text = index.dump(2) + "\n";
  written.push_back(dir / "model.safetensors.index.json");
  AtomicFileWriter out(written.back());
  out.write(text.data(), text.size());
  out.commit();
  return written;
}

}  // namespace lathe::safetensors
