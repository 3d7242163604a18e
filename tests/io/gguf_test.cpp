// GGUF reader/writer unit tests. Malformed files are built byte by byte with GgufBytes (the Writer
// refuses bad input), and every error is checked for its type and for a message that names the
// file, the field or tensor, and the byte offset.
#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "common/test_support.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"

// ---- allocation tracking: proves that absurd counts are rejected before anything is allocated ----
namespace {
std::atomic<bool> g_tracking{false};
std::atomic<size_t> g_allocated{0};  // bytes requested through operator new while tracking
}  // namespace

void* operator new(size_t n) {
  if (g_tracking.load(std::memory_order_relaxed)) g_allocated.fetch_add(n, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// noinline: once inlined, GCC pairs `new` expressions with free() and warns (-Wmismatched-new-delete).
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace lathe::gguf {
namespace {

constexpr const char* kName = "crafted.gguf";

// Builds GGUF bytes by hand, including malformed ones.
class GgufBytes {
 public:
  template <class T>
  GgufBytes& pod(T v) {
    char buf[sizeof(T)];
    std::memcpy(buf, &v, sizeof(T));
    bytes_.append(buf, sizeof(T));
    return *this;
  }
  GgufBytes& u8(uint8_t v) { return pod(v); }
  GgufBytes& u32(uint32_t v) { return pod(v); }
  GgufBytes& u64(uint64_t v) { return pod(v); }
  GgufBytes& raw(std::string_view s) {
    bytes_.append(s);
    return *this;
  }
  GgufBytes& str(std::string_view s) { return u64(s.size()).raw(s); }
  GgufBytes& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
  }
  GgufBytes& key(std::string_view k, ValueType type) { return str(k).u32(static_cast<uint32_t>(type)); }
  GgufBytes& kv_u32(std::string_view k, uint32_t v) { return key(k, ValueType::UINT32).u32(v); }
  GgufBytes& kv_str(std::string_view k, std::string_view v) { return key(k, ValueType::STRING).str(v); }
  GgufBytes& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t ggml_type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    return u32(ggml_type).u64(offset);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back('\0');
    return *this;
  }
  GgufBytes& fill(size_t n, char c = '\x5a') {
    bytes_.append(n, c);
    return *this;
  }
  const std::string& bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  std::string bytes_;
};

constexpr uint32_t kF32 = 0, kQ8_0 = 8;

std::span<const uint8_t> as_span(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

File parse(const std::string& bytes) { return File::parse(as_span(bytes), kName); }

// Parses `bytes`, expects error type E, and checks that the message contains every needle plus the
// file name and the word "offset". Returns the message.
template <class E>
std::string expect_error(const std::string& bytes, std::vector<std::string> needles) {
  try {
    parse(bytes);
  } catch (const E& e) {
    const std::string msg = e.what();
    needles.push_back(kName);
    needles.push_back("offset");
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception";
  return {};
}

// A small valid file: 3 metadata entries (one a nested array), two F32/Q8_0 tensors, no trailing
// padding, so that every proper prefix of it is truncated somewhere that matters.
GgufBytes small_valid_file() {
  GgufBytes b;
  b.header(3, 2, 3).kv_str("general.name", "tiny").kv_u32("general.alignment", 32);
  b.key("nested", ValueType::ARRAY).u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(2);
  b.u32(static_cast<uint32_t>(ValueType::INT16)).u64(2).pod<int16_t>(-1).pod<int16_t>(7);
  b.u32(static_cast<uint32_t>(ValueType::STRING)).u64(1).str("x");
  b.tensor("a", {4}, kF32, 0).tensor("b", {32}, kQ8_0, 32);
  b.pad_to(32).fill(16).fill(16, '\0').fill(34);
  return b;
}

// ---- values -----------------------------------------------------------------------------------------

bool same_value(const Value& a, const Value& b) {
  if (a.type != b.type || a.data.index() != b.data.index()) return false;
  if (a.type == ValueType::FLOAT32)
    return std::bit_cast<uint32_t>(std::get<float>(a.data)) == std::bit_cast<uint32_t>(std::get<float>(b.data));
  if (a.type == ValueType::FLOAT64)
    return std::bit_cast<uint64_t>(std::get<double>(a.data)) == std::bit_cast<uint64_t>(std::get<double>(b.data));
  if (a.type != ValueType::ARRAY)
    return std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, Array>) {
            return false;
          } else {
            return x == std::get<T>(b.data);
          }
        },
        a.data);
  const auto& x = std::get<Array>(a.data);
  const auto& y = std::get<Array>(b.data);
  if (x.elem_type != y.elem_type || x.items.size() != y.items.size()) return false;
  for (size_t i = 0; i < x.items.size(); ++i)
    if (!same_value(x.items[i], y.items[i])) return false;
  return true;
}

Value array_of(ValueType elem_type, std::vector<Value> items) {
  Array a;
  a.elem_type = elem_type;
  a.items = std::move(items);
  return Value::array(std::move(a));
}

std::vector<std::pair<std::string, Value>> every_value_type() {
  return {
      {"u8", Value::u8(255)},
      {"i8", Value::i8(-128)},
      {"u16", Value::u16(65535)},
      {"i16", Value::i16(-32768)},
      {"u32", Value::u32(4000000000u)},
      {"i32", Value::i32(-2000000000)},
      {"f32", Value::f32(-1.5e-7f)},
      {"f32.nan", Value::f32(std::numeric_limits<float>::quiet_NaN())},
      {"f32.neg_zero", Value::f32(-0.0f)},
      {"bool.true", Value::boolean(true)},
      {"bool.false", Value::boolean(false)},
      {"str", Value::str("héllo\nworld")},
      {"str.empty", Value::str("")},
      {"str.nul", Value::str(std::string("a\0b", 3))},
      {"u64", Value::u64(std::numeric_limits<uint64_t>::max())},
      {"i64", Value::i64(std::numeric_limits<int64_t>::min())},
      {"f64", Value::f64(std::numeric_limits<double>::infinity())},
      {"arr.strings", Value::string_array({"a", "", "ccc"})},
      {"arr.empty_i32", array_of(ValueType::INT32, {})},
      {"arr.empty_string", array_of(ValueType::STRING, {})},
      {"arr.f32", array_of(ValueType::FLOAT32, {Value::f32(1.0f), Value::f32(-2.25f)})},
      {"arr.bool", array_of(ValueType::BOOL, {Value::boolean(true), Value::boolean(false)})},
      {"arr.nested",
       array_of(ValueType::ARRAY, {array_of(ValueType::UINT8, {Value::u8(1), Value::u8(2)}),
                                   array_of(ValueType::STRING, {}),
                                   array_of(ValueType::ARRAY, {array_of(ValueType::INT64, {Value::i64(-5)})})})},
      {"", Value::str("empty key")},
  };
}

std::vector<uint8_t> pattern_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 31);
  return v;
}

TEST(GgufRoundTrip, EveryValueTypeAndSeveralTensorTypes) {
  test::TempDir dir("gguf");
  const auto path = dir / "round.gguf";
  const auto kvs = every_value_type();
  struct T {
    std::string name;
    DType type;
    std::vector<uint64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<T> tensors = {
      {"f32", DType::F32, {3, 2}, pattern_bytes(24, 1)},
      {"f16", DType::F16, {5}, pattern_bytes(10, 2)},
      {"q4_1", DType::Q4_1, {64, 2, 1}, pattern_bytes(80, 3)},
      {"q8_0", DType::Q8_0, {32}, pattern_bytes(34, 4)},
      {"q4_k", DType::Q4_K, {256, 1, 1, 2}, pattern_bytes(288, 5)},
      {"i32.scalar", DType::I32, {}, pattern_bytes(4, 6)},
  };
  Writer w;
  for (const auto& [k, v] : kvs) w.set(k, v);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.shape, t.data);
  w.write(path);

  const File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  ASSERT_EQ(f.metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, kvs[i].first);
    EXPECT_TRUE(same_value(f.metadata()[i].second, kvs[i].second)) << kvs[i].first << ": "
                                                                    << f.metadata()[i].second.to_string();
    ASSERT_NE(f.find(kvs[i].first), nullptr);
  }
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& info = f.tensors()[i];
    EXPECT_EQ(info.name, tensors[i].name);
    EXPECT_EQ(info.type, tensors[i].type);
    EXPECT_EQ(info.shape, tensors[i].shape);
    EXPECT_EQ(info.offset % 32, 0u);
    EXPECT_EQ(info.file_offset, f.data_offset() + info.offset);
    const auto data = f.tensor_data(info);
    EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.end()), tensors[i].data) << info.name;
    EXPECT_EQ(f.find_tensor(info.name), &info);
  }
  EXPECT_EQ(f.find_tensor("i32.scalar")->n_elements(), 1u);
  EXPECT_EQ(f.find_tensor("q4_k")->n_elements(), 512u);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  EXPECT_EQ(f.find("nope"), nullptr);
}

TEST(GgufRoundTrip, CustomAlignmentIsWrittenAndHonoured) {
  test::TempDir dir("gguf");
  const auto path = dir / "aligned.gguf";
  const auto a = pattern_bytes(12, 7), b = pattern_bytes(8, 9);
  Writer w;
  w.set_alignment(256);
  w.set("general.name", Value::str("x"));
  w.add_tensor("a", DType::F32, {3}, a);
  w.add_tensor("b", DType::F32, {2}, b);
  w.write(path);
  const File f = File::open(path);
  EXPECT_EQ(f.alignment(), 256u);
  EXPECT_EQ(f.get("general.alignment").as_u64("alignment"), 256u);
  EXPECT_EQ(f.data_offset() % 256, 0u);
  EXPECT_EQ(f.find_tensor("b")->offset, 256u);
  EXPECT_EQ(f.file_size() % 256, 0u);  // the last tensor is padded too, as llama.cpp does
}

TEST(GgufWriter, ReplacesExistingFileAndKeepsKeyPosition) {
  test::TempDir dir("gguf");
  const auto path = dir / "over.gguf";
  test::write_file(path, "old contents");
  Writer w;
  w.set("a", Value::u32(1));
  w.set("b", Value::u32(2));
  w.set("a", Value::str("replaced"));
  w.write(path);
  const File f = File::open(path);
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].first, "a");
  EXPECT_EQ(f.metadata()[0].second.as_string("a"), "replaced");
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u) << "temporary file left behind";
}

TEST(GgufWriter, RefusesBadInput) {
  Writer w;
  const auto four = pattern_bytes(4, 0);
  w.add_tensor("t", DType::F32, {1}, four);
  EXPECT_THROW(w.add_tensor("t", DType::F32, {1}, four), InvalidArgumentError);
  EXPECT_THROW(w.add_tensor("five", DType::F32, {1, 1, 1, 1, 1}, four), InvalidArgumentError);
  EXPECT_THROW(w.add_tensor("size", DType::F32, {2}, four), InvalidArgumentError);
  EXPECT_THROW(w.add_tensor("zero", DType::F32, {0}, {}), InvalidArgumentError);
  EXPECT_THROW(w.add_tensor("block", DType::Q8_0, {16, 2}, pattern_bytes(34, 0)), InvalidArgumentError);
  EXPECT_THROW(w.add_tensor("u8", DType::U8, {4}, four), UnsupportedError);
  EXPECT_THROW(w.set_alignment(48), InvalidArgumentError);
  EXPECT_THROW(w.set("general.alignment", Value::u64(64)), InvalidArgumentError);
  EXPECT_THROW(w.set("mixed", array_of(ValueType::INT32, {Value::i32(1), Value::u32(2)})), InvalidArgumentError);
  Value forged = Value::u32(1);
  forged.type = ValueType::STRING;  // type and stored alternative disagree
  EXPECT_THROW(w.set("forged", forged), InvalidArgumentError);
  Value deep = array_of(ValueType::UINT8, {});
  for (int i = 0; i < 16; ++i) deep = array_of(ValueType::ARRAY, {deep});
  EXPECT_THROW(w.set("deep", deep), InvalidArgumentError);
}

TEST(GgufValue, Accessors) {
  EXPECT_EQ(Value::i8(5).as_u64("k"), 5u);
  EXPECT_EQ(Value::u64(7).as_i64("k"), 7);
  EXPECT_EQ(Value::i32(-3).as_i64("k"), -3);
  EXPECT_DOUBLE_EQ(Value::u16(9).as_f64("k"), 9.0);
  EXPECT_DOUBLE_EQ(Value::f32(0.5f).as_f64("k"), 0.5);
  EXPECT_TRUE(Value::boolean(true).as_bool("k"));
  EXPECT_FALSE(Value::boolean(true).is_integer());
  EXPECT_TRUE(Value::u8(0).is_integer());
  EXPECT_TRUE(Value::f64(0).is_float());
  try {
    (void)Value::i32(-1).as_u64("model.gguf: llama.block_count");
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("llama.block_count"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)Value::u64(std::numeric_limits<uint64_t>::max()).as_i64("k"), InvalidArgumentError);
  EXPECT_THROW((void)Value::str("x").as_u64("k"), InvalidArgumentError);
  EXPECT_THROW((void)Value::u32(1).as_string("k"), InvalidArgumentError);
  EXPECT_THROW((void)Value::u32(1).as_array("k"), InvalidArgumentError);
  EXPECT_THROW((void)Value::u32(1).as_bool("k"), InvalidArgumentError);
  EXPECT_THROW((void)Value::boolean(true).as_f64("k"), InvalidArgumentError);
}

TEST(GgufValue, ToStringElidesLongArrays) {
  EXPECT_EQ(Value::i8(-3).to_string(), "-3");
  EXPECT_EQ(Value::str("ab").to_string(), "\"ab\"");
  EXPECT_EQ(Value::boolean(false).to_string(), "false");
  std::vector<std::string> many(10, "t");
  EXPECT_EQ(Value::string_array(many).to_string(2), "[\"t\", \"t\", ... (10 items)]");
  EXPECT_EQ(Value::string_array({"a"}).to_string(), "[\"a\"]");
}

TEST(GgufFile, GetMissingKeyNamesFileAndKey) {
  const auto bytes = small_valid_file().bytes();
  const File f = parse(bytes);
  try {
    (void)f.get("llama.block_count");
    ADD_FAILURE() << "no exception";
  } catch (const NotFoundError& e) {
    EXPECT_NE(std::string(e.what()).find(kName), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("llama.block_count"), std::string::npos);
  }
}

TEST(GgufFile, OpenMissingFileIsNotFound) {
  EXPECT_THROW(File::open("/nonexistent/dir/model.gguf"), NotFoundError);
}

// ---- hand-crafted valid files ----------------------------------------------------------------------

TEST(GgufReader, ReadsVersion2File) {
  GgufBytes b;
  b.header(2, 1, 2).kv_str("general.architecture", "llama").kv_u32("llama.block_count", 30);
  b.tensor("w", {2, 1}, kF32, 0).pad_to(32);
  b.pod<float>(1.5f).pod<float>(-2.0f);
  const File f = parse(b.bytes());
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.get("general.architecture").as_string("arch"), "llama");
  EXPECT_EQ(f.get("llama.block_count").as_u64("blocks"), 30u);
  ASSERT_EQ(f.tensors().size(), 1u);
  const auto& t = f.tensors()[0];
  EXPECT_EQ(t.shape, (std::vector<uint64_t>{2, 1}));
  EXPECT_EQ(t.n_bytes, 8u);
  EXPECT_EQ(t.file_offset, f.data_offset());
  float v[2];
  std::memcpy(v, f.tensor_data(t).data(), 8);
  EXPECT_EQ(v[0], 1.5f);
  EXPECT_EQ(v[1], -2.0f);
}

TEST(GgufReader, SmallValidFileParses) {
  const auto bytes = small_valid_file().bytes();
  const File f = parse(bytes);
  EXPECT_EQ(f.tensors().size(), 2u);
  const auto& nested = f.get("nested").as_array("nested");
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].as_array("n0").items[0].as_i64("n00"), -1);
  EXPECT_EQ(nested.items[1].as_array("n1").items[0].as_string("n10"), "x");
  EXPECT_EQ(f.tensor_data(*f.find_tensor("b")).size(), 34u);
}

TEST(GgufReader, EmptyFileWithoutTensorsParses) {
  GgufBytes b;
  b.header(3, 0, 0);
  const File f = parse(b.bytes());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
}

// ---- malformed files: one test per defect ----------------------------------------------------------

TEST(GgufMalformed, BadMagic) {
  GgufBytes b;
  b.raw("GGUX").u32(3).u64(0).u64(0);
  expect_error<FormatError>(b.bytes(), {"magic", "not a GGUF file"});
}

TEST(GgufMalformed, LegacyGgjtMagicIsUnsupported) {
  GgufBytes b;
  b.raw("tjgg").u32(3).u64(0).u64(0);
  expect_error<UnsupportedError>(b.bytes(), {"magic", "legacy", "re-convert"});
}

TEST(GgufMalformed, Version1IsUnsupported) {
  GgufBytes b;
  b.header(1, 0, 0);
  expect_error<UnsupportedError>(b.bytes(), {"version", "version 1", "llama.cpp"});
}

TEST(GgufMalformed, Version4IsUnsupported) {
  GgufBytes b;
  b.header(4, 0, 0);
  expect_error<UnsupportedError>(b.bytes(), {"version", "version 4", "llama.cpp"});
}

TEST(GgufMalformed, BigEndianFileIsUnsupported) {
  GgufBytes b;
  b.raw("GGUF").u32(0x03000000u).u64(0).u64(0);
  expect_error<UnsupportedError>(b.bytes(), {"version", "big-endian", "little"});
}

TEST(GgufMalformed, EveryTruncatedPrefixThrowsFormatError) {
  const std::string full = small_valid_file().bytes();
  ASSERT_NO_THROW(parse(full));
  for (size_t n = 0; n < full.size(); ++n) {
    // Copy into an exact-size buffer so that ASan would flag any read past the prefix.
    const std::string prefix = full.substr(0, n);
    auto* exact = new uint8_t[n == 0 ? 1 : n];
    std::memcpy(exact, prefix.data(), n);
    try {
      File::parse({exact, n}, kName);
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("offset"), std::string::npos) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "prefix " << n << ": wrong exception: " << e.what();
    }
    delete[] exact;
  }
}

TEST(GgufMalformed, TruncatedHeaderSaysHowManyBytesAreMissing) {
  const std::string cut = small_valid_file().bytes().substr(0, 10);
  expect_error<FormatError>(cut, {"tensor_count", "needs 8 bytes but only 2 remain"});
}

TEST(GgufMalformed, TruncatedTensorData) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("blk.0.w", {8}, kF32, 0).pad_to(32).fill(20);  // needs 32 bytes
  expect_error<FormatError>(b.bytes(), {"tensor 'blk.0.w'", "beyond the end"});
}

TEST(GgufMalformed, KeyLengthBeyondFile) {
  GgufBytes b;
  b.header(3, 0, 1).u64(1000).raw("general.name").u32(8).str("x");
  expect_error<FormatError>(b.bytes(), {"metadata entry #0 key", "length 1000 exceeds"});
}

TEST(GgufMalformed, StringValueLengthBeyondFile) {
  GgufBytes b;
  b.header(3, 0, 1).key("general.name", ValueType::STRING).u64(1ull << 40).raw("abc");
  expect_error<FormatError>(b.bytes(), {"metadata key 'general.name'", "length 1099511627776 exceeds"});
}

TEST(GgufMalformed, ArrayLengthBeyondFile) {
  GgufBytes b;
  b.header(3, 0, 1).key("tokenizer.ggml.tokens", ValueType::ARRAY).u32(8).u64(1000).str("a").str("b");
  expect_error<FormatError>(b.bytes(), {"metadata key 'tokenizer.ggml.tokens'", "array length 1000", "remaining"});
}

TEST(GgufMalformed, NestedArrayLengthBeyondFileNamesTheItem) {
  GgufBytes b;
  b.header(3, 0, 1).key("n", ValueType::ARRAY).u32(9).u64(2);
  b.u32(0).u64(1).u8(1);
  b.u32(6).u64(1ull << 50);
  expect_error<FormatError>(b.bytes(), {"metadata key 'n'[1]", "array length"});
}

TEST(GgufMalformed, AbsurdKvCount) {
  GgufBytes b;
  b.header(3, 0, 1ull << 62).kv_u32("a", 1);
  expect_error<FormatError>(b.bytes(), {"kv_count", "4611686018427387904", "remaining"});
}

TEST(GgufMalformed, AbsurdTensorCount) {
  GgufBytes b;
  b.header(3, 1ull << 62, 0).tensor("t", {1}, kF32, 0);
  expect_error<FormatError>(b.bytes(), {"tensor_count", "4611686018427387904", "remaining"});
}

// Counts that a vector could really try to reserve (2^32 entries) must be refused before any
// allocation: the whole parse of these tiny files allocates only a few small strings.
TEST(GgufMalformed, LargeCountsAreRejectedBeforeAllocating) {
  std::vector<std::string> files;
  files.push_back(GgufBytes().header(3, 0, 1ull << 32).kv_u32("a", 1).bytes());
  files.push_back(GgufBytes().header(3, 1ull << 32, 0).tensor("t", {1}, kF32, 0).bytes());
  files.push_back(GgufBytes().header(3, 0, 1).key("a", ValueType::ARRAY).u32(0).u64(1ull << 32).u8(1).bytes());
  files.push_back(GgufBytes().header(3, 0, 1).key("a", ValueType::ARRAY).u32(9).u64(1ull << 32).u32(0).u64(0).bytes());
  for (const auto& bytes : files) {
    g_allocated = 0;
    g_tracking = true;
    bool threw_format_error = false;
    try {
      parse(bytes);
    } catch (const FormatError&) {
      threw_format_error = true;
    }
    g_tracking = false;
    EXPECT_TRUE(threw_format_error);
    EXPECT_LT(g_allocated.load(), 16u * 1024u) << "bytes allocated while rejecting a " << bytes.size() << "-byte file";
  }
}

TEST(GgufMalformed, TensorDataOutsideFile) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("far", {4}, kF32, 1ull << 40).pad_to(32).fill(16);
  expect_error<FormatError>(b.bytes(), {"tensor 'far'", "beyond the end"});
}

TEST(GgufMalformed, TensorOffsetPlusSizeOverflows) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("wrap", {8}, kF32, std::numeric_limits<uint64_t>::max() - 31).pad_to(32).fill(32);
  expect_error<FormatError>(b.bytes(), {"tensor 'wrap'", "beyond the end"});
}

TEST(GgufMalformed, OverlappingTensors) {
  GgufBytes b;
  b.header(3, 2, 0).tensor("first", {16}, kF32, 0).tensor("second", {8}, kF32, 32).pad_to(32).fill(64);
  expect_error<FormatError>(b.bytes(), {"tensor 'second'", "overlaps tensor 'first'"});
}

TEST(GgufMalformed, UnknownTensorType) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("odd", {4}, 1000, 0).pad_to(32).fill(32);
  expect_error<FormatError>(b.bytes(), {"tensor 'odd'", "type id 1000"});
}

TEST(GgufMalformed, FiveDimensions) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("t5", {1, 1, 1, 1, 1}, kF32, 0).pad_to(32).fill(4);
  expect_error<FormatError>(b.bytes(), {"tensor 't5'", "n_dims is 5"});
}

TEST(GgufMalformed, ZeroDimension) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("empty", {4, 0}, kF32, 0).pad_to(32);
  expect_error<FormatError>(b.bytes(), {"tensor 'empty'", "dimension 1 is 0"});
}

TEST(GgufMalformed, ElementCountOverflow) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("huge", {1ull << 32, 1ull << 32}, kF32, 0).pad_to(32);
  expect_error<FormatError>(b.bytes(), {"tensor 'huge'", "overflows"});
}

TEST(GgufMalformed, PartialQuantBlock) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("q", {16, 2}, kQ8_0, 0).pad_to(32).fill(34);
  expect_error<FormatError>(b.bytes(), {"tensor 'q'", "Q8_0", "innermost dimension is 16"});
}

TEST(GgufMalformed, DuplicateTensorNames) {
  GgufBytes b;
  b.header(3, 2, 0).tensor("dup", {4}, kF32, 0).tensor("dup", {4}, kF32, 32).pad_to(32).fill(64);
  expect_error<FormatError>(b.bytes(), {"tensor 'dup'", "duplicate tensor name"});
}

TEST(GgufMalformed, DuplicateKeys) {
  GgufBytes b;
  b.header(3, 0, 2).kv_u32("llama.block_count", 1).kv_u32("llama.block_count", 2);
  const std::string msg = expect_error<FormatError>(b.bytes(), {"metadata key 'llama.block_count'", "duplicate key"});
  EXPECT_NE(msg.find("offset 57"), std::string::npos) << msg;  // 24-byte header + first entry (8 + 17 + 4 + 4)
}

TEST(GgufMalformed, MisalignedOffset) {
  GgufBytes b;
  b.header(3, 1, 0).tensor("mis", {4}, kF32, 8).pad_to(32).fill(64);
  expect_error<FormatError>(b.bytes(), {"tensor 'mis'", "not a multiple of the alignment 32"});
}

TEST(GgufMalformed, AlignmentZero) {
  GgufBytes b;
  b.header(3, 0, 1).kv_u32("general.alignment", 0);
  expect_error<FormatError>(b.bytes(), {"general.alignment", "not a non-zero power of two"});
}

TEST(GgufMalformed, AlignmentNotPowerOfTwo) {
  GgufBytes b;
  b.header(3, 0, 1).kv_u32("general.alignment", 48);
  expect_error<FormatError>(b.bytes(), {"general.alignment", "48", "not a non-zero power of two"});
}

TEST(GgufMalformed, AlignmentWrongType) {
  GgufBytes b;
  b.header(3, 0, 1).key("general.alignment", ValueType::UINT64).u64(64);
  expect_error<FormatError>(b.bytes(), {"general.alignment", "UINT64, expected UINT32"});
}

TEST(GgufMalformed, UnknownValueType) {
  GgufBytes b;
  b.header(3, 0, 1).str("k").u32(13).u32(0);
  expect_error<FormatError>(b.bytes(), {"metadata key 'k'", "unknown metadata value type 13"});
}

TEST(GgufMalformed, ArraysNestedTooDeep) {
  GgufBytes b;
  b.header(3, 0, 1).key("deep", ValueType::ARRAY);
  for (int i = 0; i < 40; ++i) b.u32(static_cast<uint32_t>(ValueType::ARRAY)).u64(1);
  b.u32(0).u64(0);
  expect_error<FormatError>(b.bytes(), {"metadata key 'deep'[0]", "deeper than 16"});
}

TEST(GgufMalformed, BoolOutsideZeroOne) {
  GgufBytes b;
  b.header(3, 0, 1).key("flag", ValueType::BOOL).u8(2);
  expect_error<FormatError>(b.bytes(), {"metadata key 'flag'", "BOOL value is 2"});
}

}  // namespace
}  // namespace lathe::gguf
