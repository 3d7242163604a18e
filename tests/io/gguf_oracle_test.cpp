// Compares lathe's GGUF reader with gguf-py's GGUFReader (tests/oracle/gguf_dump.py): every
// metadata key, type and value, every tensor's name, type, shape, offsets, size and data checksum.
// Run on the default model, and on a file written by lathe's Writer (so gguf-py must read our output).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "io/gguf.hpp"

namespace lathe::gguf {
namespace {

using nlohmann::json;

json dump_with_gguf_py(const std::filesystem::path& path) {
  const auto r = test::run_oracle("gguf_dump.py", {path.string()});
  if (r.exit_code != 0) throw std::runtime_error("gguf_dump.py failed: " + r.err);
  return json::parse(r.out);
}

uint32_t crc32(std::span<const uint8_t> data) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (uint8_t b : data) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string hex(const std::string& s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char ch : s) {
    out += digits[ch >> 4];
    out += digits[ch & 15];
  }
  return out;
}

bool same_float(double ours, const json& j) {
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    if (s == "nan") return std::isnan(ours);
    return std::isinf(ours) && (s == "inf") == (ours > 0);
  }
  return j.is_number() && j.get<double>() == ours;
}

// "" when `v` equals gguf-py's dump `j`, else a description of the first difference.
std::string diff_value(const Value& v, const json& j, const std::string& where) {
  const auto mismatch = [&] { return where + ": lathe " + v.to_string(3) + " vs gguf-py " + j.dump().substr(0, 200); };
  switch (v.type) {
    case ValueType::STRING: {
      const auto& s = std::get<std::string>(v.data);
      if (j.is_string() ? j.get<std::string>() != s : j.value("hex", std::string("?")) != hex(s)) return mismatch();
      return "";
    }
    case ValueType::BOOL:
      return j.is_boolean() && j.get<bool>() == std::get<bool>(v.data) ? "" : mismatch();
    case ValueType::FLOAT32:
    case ValueType::FLOAT64:
      return same_float(v.as_f64(where), j) ? "" : mismatch();
    case ValueType::INT8: case ValueType::INT16: case ValueType::INT32: case ValueType::INT64:
      return j.is_number_integer() && j.get<int64_t>() == v.as_i64(where) ? "" : mismatch();
    case ValueType::UINT8: case ValueType::UINT16: case ValueType::UINT32: case ValueType::UINT64:
      return j.is_number_unsigned() && j.get<uint64_t>() == v.as_u64(where) ? "" : mismatch();
    case ValueType::ARRAY: {
      const auto& a = std::get<Array>(v.data);
      if (!j.is_object() || j.at("elem_type") != value_type_name(a.elem_type)) return mismatch();
      const auto& items = j.at("items");
      if (items.size() != a.items.size())
        return where + ": lathe has " + std::to_string(a.items.size()) + " items, gguf-py " + std::to_string(items.size());
      for (size_t i = 0; i < a.items.size(); ++i) {
        if (a.items[i].type != a.elem_type) return where + ": item type differs from the element type";
        auto d = diff_value(a.items[i], items[i], where + "[" + std::to_string(i) + "]");
        if (!d.empty()) return d;
      }
      return "";
    }
  }
  return where + ": unknown type";
}

void expect_matches_dump(const File& f, const json& dump) {
  EXPECT_EQ(f.version(), dump.at("version").get<uint32_t>());
  EXPECT_EQ(f.alignment(), dump.at("alignment").get<uint64_t>());
  EXPECT_EQ(f.data_offset(), dump.at("data_offset").get<uint64_t>());

  const auto& metadata = dump.at("metadata");
  ASSERT_EQ(f.metadata().size(), metadata.size());
  for (size_t i = 0; i < metadata.size(); ++i) {
    const auto& [key, value] = f.metadata()[i];
    const auto& entry = metadata[i];
    EXPECT_EQ(key, entry.at("key").get<std::string>()) << "entry #" << i;
    EXPECT_EQ(value_type_name(value.type), entry.at("type").get<std::string>()) << key;
    EXPECT_EQ(diff_value(value, entry.at("value"), key), "");
  }

  const auto& tensors = dump.at("tensors");
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = f.tensors()[i];
    const auto& e = tensors[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, e.at("name").get<std::string>());
    EXPECT_EQ(dtype_name(t.type), e.at("type").get<std::string>());
    EXPECT_EQ(t.shape, e.at("shape").get<std::vector<uint64_t>>());
    EXPECT_EQ(t.offset, e.at("offset").get<uint64_t>());
    EXPECT_EQ(t.file_offset, e.at("file_offset").get<uint64_t>());
    EXPECT_EQ(t.n_bytes, e.at("n_bytes").get<uint64_t>());
    EXPECT_EQ(t.n_elements(), e.at("n_elements").get<uint64_t>());
    EXPECT_EQ(crc32(f.tensor_data(t)), e.at("crc32").get<uint32_t>());
  }
}

TEST(GgufOracle, DefaultModelMatchesGgufPy) {
  LATHE_REQUIRE_MODEL();
  const File f = File::open(test::default_model());
  const json dump = dump_with_gguf_py(test::default_model());
  ASSERT_GT(dump.at("tensors").size(), 100u);  // the model really has its ~272 tensors
  expect_matches_dump(f, dump);
}

Value array_of(ValueType elem_type, std::vector<Value> items) {
  Array a;
  a.elem_type = elem_type;
  a.items = std::move(items);
  return Value::array(std::move(a));
}

TEST(GgufOracle, WriterOutputIsReadIdenticallyByGgufPy) {
  test::TempDir dir("gguf_oracle");
  const auto path = dir / "written.gguf";
  std::vector<uint8_t> f32(6 * 4), q4_1(64 * 2 / 32 * 20), q8_0(34), q6_k(210), i16(2);
  for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < q4_1.size(); ++i) q4_1[i] = static_cast<uint8_t>(i * 13 + 1);
  for (size_t i = 0; i < q8_0.size(); ++i) q8_0[i] = static_cast<uint8_t>(255 - i);
  for (size_t i = 0; i < q6_k.size(); ++i) q6_k[i] = static_cast<uint8_t>(i ^ 0x5a);
  i16 = {0x34, 0x12};

  Writer w;
  w.set_alignment(64);
  w.set("general.architecture", Value::str("llama"));
  w.set("u8", Value::u8(200));
  w.set("i8", Value::i8(-100));
  w.set("u16", Value::u16(60000));
  w.set("i16", Value::i16(-30000));
  w.set("u32", Value::u32(4000000000u));
  w.set("i32", Value::i32(-2000000000));
  w.set("f32", Value::f32(3.14159f));
  w.set("f32.inf", Value::f32(-std::numeric_limits<float>::infinity()));
  w.set("bool", Value::boolean(true));
  w.set("str.empty", Value::str(""));
  w.set("str.utf8", Value::str("Ġhello ✓ \xF0\x9F\x98\x80"));
  w.set("str.not_utf8", Value::str("\xff\xfe"));
  w.set("u64", Value::u64(std::numeric_limits<uint64_t>::max()));
  w.set("i64", Value::i64(std::numeric_limits<int64_t>::min()));
  w.set("f64", Value::f64(-2.5e-300));
  w.set("tokens", Value::string_array({"<s>", "", "a b"}));
  w.set("empty.f64", array_of(ValueType::FLOAT64, {}));
  w.set("nested", array_of(ValueType::ARRAY, {array_of(ValueType::INT32, {Value::i32(1), Value::i32(-2)}),
                                              array_of(ValueType::STRING, {}),
                                              array_of(ValueType::ARRAY, {array_of(ValueType::BOOL, {Value::boolean(false)})})}));
  w.add_tensor("token_embd.weight", DType::F32, {3, 2}, f32);
  w.add_tensor("blk.0.q4_1", DType::Q4_1, {64, 2}, q4_1);
  w.add_tensor("blk.0.q8_0", DType::Q8_0, {32, 1, 1, 1}, q8_0);
  w.add_tensor("blk.0.q6_k", DType::Q6_K, {256}, q6_k);
  w.add_tensor("scalar", DType::I16, {}, i16);
  w.write(path);

  const File f = File::open(path);
  const json dump = dump_with_gguf_py(path);
  EXPECT_EQ(dump.at("metadata").size(), 20u);  // 19 set above + general.alignment
  EXPECT_EQ(dump.at("alignment").get<uint64_t>(), 64u);
  expect_matches_dump(f, dump);
}

}  // namespace
}  // namespace lathe::gguf
