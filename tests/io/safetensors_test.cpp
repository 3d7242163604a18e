#include "io/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "common/test_support.hpp"
#include "io/safetensors_cases.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace st = safetensors;
using test::TempDir;

std::span<const uint8_t> as_bytes(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

// Deterministic, position-dependent bytes so that a swapped or shifted tensor shows.
std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 31 + i * 7 + (i >> 8));
  return v;
}

struct Spec {
  std::string name;
  DType type;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;
};

std::vector<Spec> every_dtype_specs() {
  std::vector<Spec> specs;
  const std::vector<std::vector<uint64_t>> shapes{{}, {5}, {2, 3}, {0, 4}, {1, 2, 1, 3}};
  uint8_t seed = 1;
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::I16, DType::I32, DType::I64, DType::U8,
                     DType::BOOL}) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      const uint64_t n = std::accumulate(shapes[s].begin(), shapes[s].end(), uint64_t{1}, std::multiplies<>());
      specs.push_back({std::string(dtype_name(type)) + ".s" + std::to_string(s), type, shapes[s],
                       pattern(*dtype_bytes(type, n), seed++)});
    }
  }
  return specs;
}

TEST(Safetensors, RoundTripEveryDtypeAndShape) {
  TempDir dir("st-roundtrip");
  const auto specs = every_dtype_specs();
  st::Writer writer;
  for (const auto& s : specs) writer.add_tensor(s.name, s.type, s.shape, s.data);
  writer.set_metadata("format", "pt");
  writer.set_metadata("note", "quote \" backslash \\ newline \n unicode \xc3\xa9");
  writer.write(dir / "all.safetensors");

  const auto file = st::File::open(dir / "all.safetensors");
  EXPECT_EQ(file.data_offset() % 8, 0u) << "header must be padded to a multiple of 8";
  ASSERT_EQ(file.tensors().size(), specs.size());
  for (const auto& s : specs) {
    const auto* info = file.find_tensor(s.name);
    ASSERT_NE(info, nullptr) << s.name;
    EXPECT_EQ(info->type, s.type) << s.name;
    EXPECT_EQ(info->shape, s.shape) << s.name;
    const auto bytes = file.tensor_data(*info);
    ASSERT_EQ(bytes.size(), s.data.size()) << s.name;
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), s.data.begin())) << s.name;
  }
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("note"), "quote \" backslash \\ newline \n unicode \xc3\xa9");
  for (size_t i = 1; i < file.tensors().size(); ++i)
    EXPECT_LE(file.tensors()[i - 1].data_end, file.tensors()[i].data_begin) << "tensors() must be in data order";
}

TEST(Safetensors, ScalarHasOneElementAndEmptyShape) {
  TempDir dir("st-scalar");
  const float value = 3.5f;
  st::Writer writer;
  writer.add_tensor("s", DType::F32, {}, {reinterpret_cast<const uint8_t*>(&value), sizeof(value)});
  writer.write(dir / "s.safetensors");
  const auto file = st::File::open(dir / "s.safetensors");
  const auto& info = file.tensor("s");
  EXPECT_TRUE(info.shape.empty());
  EXPECT_EQ(info.n_elements(), 1u);
  float read = 0;
  std::memcpy(&read, file.tensor_data(info).data(), sizeof(read));
  EXPECT_EQ(read, 3.5f);
}

TEST(Safetensors, WriterUsesReferenceOrderAndPadding) {
  // The reference serializer orders by dtype alignment (largest first), then name, and pads the
  // header with spaces; the oracle test checks byte equality with python, this checks the layout.
  TempDir dir("st-order");
  const auto a = pattern(4, 1), b = pattern(8, 2), c = pattern(1, 3), d = pattern(4, 4);
  st::Writer writer;
  writer.add_tensor("z_u8", DType::U8, {1}, c);
  writer.add_tensor("b_f32", DType::F32, {1}, a);
  writer.add_tensor("a_f64", DType::F64, {1}, b);
  writer.add_tensor("a_f32", DType::F32, {1}, d);
  writer.write(dir / "o.safetensors");
  const std::string raw = test::read_file(dir / "o.safetensors");
  const std::string header = raw.substr(8, raw.size() - 8 - 17);
  EXPECT_EQ(header.size() % 8, 0u);
  EXPECT_LT(header.find("a_f64"), header.find("a_f32"));
  EXPECT_LT(header.find("a_f32"), header.find("b_f32"));
  EXPECT_LT(header.find("b_f32"), header.find("z_u8"));
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}'));
}

TEST(Safetensors, WriterRejectsBadTensors) {
  st::Writer writer;
  const auto four = pattern(4, 1);
  writer.add_tensor("a", DType::F32, {1}, four);
  EXPECT_THROW(writer.add_tensor("a", DType::F32, {1}, four), InvalidArgumentError);
  EXPECT_THROW(writer.add_tensor("__metadata__", DType::F32, {1}, four), InvalidArgumentError);
  EXPECT_THROW(writer.add_tensor("q", DType::Q8_0, {32}, four), InvalidArgumentError);
  EXPECT_THROW(writer.add_tensor("short", DType::F32, {2}, four), InvalidArgumentError);
  EXPECT_THROW(writer.add_tensor("bad\xff", DType::F32, {1}, four), InvalidArgumentError);
  EXPECT_THROW(writer.add_tensor("huge", DType::F32, {uint64_t{1} << 40, uint64_t{1} << 40}, four), InvalidArgumentError);
  EXPECT_EQ(writer.tensor_count(), 1u);
}

TEST(Safetensors, FailedWriteLeavesNoPartialFile) {
  TempDir dir("st-atomic");
  st::Writer writer;
  const auto four = pattern(4, 1);
  writer.add_tensor("a", DType::F32, {1}, four);
  // A directory in the way of the final rename makes the write fail after the data is written.
  std::filesystem::create_directories(dir / "blocked.safetensors" / "x");
  EXPECT_THROW(writer.write(dir / "blocked.safetensors"), IoError);
  EXPECT_TRUE(std::filesystem::exists(dir / "blocked.safetensors" / "x"));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << "temporary file left behind";
}

TEST(Safetensors, AcceptsWhitespaceAroundHeaderAndNullMetadata) {
  const std::string bytes = test::st_bytes(
      R"(  {"__metadata__":null,"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4],"extra":[1]}}    )", "\x01\x02\x03\x04");
  const auto file = st::File::parse(as_bytes(bytes), "mem");
  ASSERT_EQ(file.tensors().size(), 1u);
  EXPECT_EQ(file.tensors()[0].type, DType::I16);
  EXPECT_TRUE(file.metadata().empty());
  EXPECT_EQ(file.tensor_data(file.tensors()[0]).front(), 1);
}

TEST(Safetensors, ZeroSizeTensorsMaySharePosition) {
  const std::string bytes = test::st_bytes(
      R"({"e2":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"e1":{"dtype":"F32","shape":[0,7],"data_offsets":[0,0]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
      "\x05");
  const auto file = st::File::parse(as_bytes(bytes), "mem");
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "e1");  // ties in offset ordered by name
  EXPECT_EQ(file.tensors()[1].name, "e2");
  EXPECT_EQ(file.tensors()[2].name, "x");
  EXPECT_TRUE(file.tensor_data(file.tensors()[0]).empty());
}

TEST(Safetensors, EmptyFileWithNoTensors) {
  const std::string bytes = test::st_bytes("{}", "");
  const auto file = st::File::parse(as_bytes(bytes), "mem");
  EXPECT_TRUE(file.tensors().empty());
  EXPECT_THROW(file.tensor("missing"), NotFoundError);
}

TEST(Safetensors, MissingFileIsNotFound) {
  EXPECT_THROW(st::File::open("/nonexistent/dir/model.safetensors"), NotFoundError);
}

// Each malformed case: lathe refuses it with the right error type and a message naming the file,
// the tensor/field and the offset.
void expect_rejected(const std::string& case_name) {
  for (const auto& c : test::malformed_cases()) {
    if (c.name != case_name) continue;
    TempDir dir("st-bad");
    const auto path = dir / (c.name + ".safetensors");
    test::write_file(path, c.bytes);
    try {
      st::File::open(path);
      FAIL() << c.name << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), c.code) << c.name << ": " << e.what();
      const std::string message = e.what();
      EXPECT_NE(message.find(path.string()), std::string::npos) << "message must name the file: " << message;
      for (const auto& part : c.message_parts)
        EXPECT_NE(message.find(part), std::string::npos) << c.name << ": '" << part << "' not in: " << message;
    }
    // The in-memory entry must agree with the file one.
    EXPECT_THROW(st::File::parse(as_bytes(c.bytes), "mem"), Error);
    return;
  }
  FAIL() << "no case " << case_name;
}

TEST(SafetensorsMalformed, HeaderLengthBeyondFile) { expect_rejected("header_length_beyond_file"); }
TEST(SafetensorsMalformed, HeaderLengthAbsurd) { expect_rejected("header_length_absurd"); }
TEST(SafetensorsMalformed, FileShorterThanLength) { expect_rejected("file_shorter_than_length"); }
TEST(SafetensorsMalformed, InvalidJson) { expect_rejected("invalid_json"); }
TEST(SafetensorsMalformed, HeaderNotObject) { expect_rejected("header_not_object"); }
TEST(SafetensorsMalformed, NulAfterJson) { expect_rejected("nul_after_json"); }
TEST(SafetensorsMalformed, NulThenEscapedKey) { expect_rejected("nul_then_escaped_key"); }
TEST(SafetensorsMalformed, NumberOutOfRange) { expect_rejected("number_out_of_range"); }
TEST(SafetensorsMalformed, DtypeShapeMismatch) { expect_rejected("dtype_shape_mismatch"); }
TEST(SafetensorsMalformed, OffsetsGap) { expect_rejected("offsets_gap"); }
TEST(SafetensorsMalformed, OffsetsTrailingBytes) { expect_rejected("offsets_trailing_bytes"); }
TEST(SafetensorsMalformed, OffsetsOverlap) { expect_rejected("offsets_overlap"); }
TEST(SafetensorsMalformed, OffsetsBeyondFile) { expect_rejected("offsets_beyond_file"); }
TEST(SafetensorsMalformed, OffsetsBeginAfterEnd) { expect_rejected("offsets_begin_after_end"); }
TEST(SafetensorsMalformed, UnknownDtype) { expect_rejected("unknown_dtype"); }
TEST(SafetensorsMalformed, UnsupportedDtype) { expect_rejected("unsupported_dtype"); }
TEST(SafetensorsMalformed, DuplicateTensorNames) { expect_rejected("duplicate_tensor_names"); }
TEST(SafetensorsMalformed, ShapeOverflow) { expect_rejected("shape_overflow"); }
TEST(SafetensorsMalformed, MissingDataOffsets) { expect_rejected("missing_data_offsets"); }
TEST(SafetensorsMalformed, NegativeDimension) { expect_rejected("negative_dimension"); }
TEST(SafetensorsMalformed, MetadataValueNotString) { expect_rejected("metadata_value_not_string"); }
TEST(SafetensorsMalformed, NestedTooDeep) { expect_rejected("nested_too_deep"); }

TEST(SafetensorsMalformed, EveryCaseHasANamedTest) {
  // Guards against a case added to the list without its own test above.
  EXPECT_EQ(test::malformed_cases().size(), 22u);
}

TEST(SafetensorsMalformed, DuplicateFieldInsideEntry) {
  const std::string bytes =
      test::st_bytes(R"({"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  try {
    st::File::parse(as_bytes(bytes), "mem.safetensors");
    FAIL() << "accepted";
  } catch (const FormatError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("mem.safetensors: tensor 'a' field 'dtype' at offset 9"), std::string::npos) << message;
  }
}

TEST(SafetensorsMalformed, TruncatedCopiesOfAValidFileNeverCrash) {
  TempDir dir("st-trunc");
  st::Writer writer;
  const auto data = pattern(24, 9);
  writer.add_tensor("w", DType::F32, {2, 3}, data);
  writer.set_metadata("k", "v");
  writer.write(dir / "w.safetensors");
  const std::string full = test::read_file(dir / "w.safetensors");
  for (size_t n = 0; n < full.size(); ++n)
    EXPECT_THROW(st::File::parse(as_bytes(full.substr(0, n)), "cut"), FormatError) << "prefix of " << n << " bytes accepted";
  EXPECT_NO_THROW(st::File::parse(as_bytes(full), "full"));
}

}  // namespace
}  // namespace lathe
