// lathe's safetensors reader and writer against the reference (python safetensors 0.8.0 via
// tests/oracle/safetensors_oracle.py).
#include <gtest/gtest.h>

#include <algorithm>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <numeric>

#include "common/test_support.hpp"
#include "core/sha256.hpp"
#include "io/safetensors.hpp"
#include "io/safetensors_cases.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace st = safetensors;
using nlohmann::json;
using test::TempDir;

json run_oracle_json(const std::vector<std::string>& args) {
  const auto r = test::run_oracle("safetensors_oracle.py", args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

// The same description the oracle prints, from lathe's reader.
json describe_with_lathe(const st::File& file) {
  json tensors = json::array();
  std::vector<const st::TensorInfo*> sorted;
  for (const auto& t : file.tensors()) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
  for (const auto* t : sorted) {
    const auto bytes = file.tensor_data(*t);
    tensors.push_back({{"name", t->name},
                       {"dtype", std::string(dtype_info(t->type).st_name)},
                       {"shape", t->shape},
                       {"sha256", sha256_hex(bytes)}});
  }
  json metadata = json::object();
  for (const auto& [k, v] : file.metadata()) metadata[k] = v;
  return {{"metadata", metadata}, {"tensors", tensors}};
}

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 29 + i * 13 + (i >> 8));
  return v;
}

TEST(SafetensorsOracle, PythonReadsWhatLatheWrites) {
  TempDir dir("st-oracle-write");
  std::vector<std::vector<uint8_t>> storage;
  st::Writer writer;
  const std::vector<std::vector<uint64_t>> shapes{{}, {3}, {2, 5}, {0, 3}, {2, 1, 3}};
  uint8_t seed = 1;
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::I16, DType::I32, DType::I64, DType::U8,
                     DType::BOOL}) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      const uint64_t n = std::accumulate(shapes[s].begin(), shapes[s].end(), uint64_t{1}, std::multiplies<>());
      storage.push_back(pattern(*dtype_bytes(type, n), seed++));
      if (type == DType::BOOL) for (auto& b : storage.back()) b &= 1;  // numpy bools must be 0 or 1
      writer.add_tensor(fmt::format("layer.{}.{}", s, dtype_name(type)), type, shapes[s], storage.back());
    }
  }
  writer.set_metadata("format", "pt");
  writer.set_metadata("written_by", "lathe \xe2\x9c\x93");
  writer.write(dir / "lathe.safetensors");

  const json expected = describe_with_lathe(st::File::open(dir / "lathe.safetensors"));
  // Tie the expectation to the inputs, not only to our own reader.
  ASSERT_EQ(expected["tensors"].size(), storage.size());
  const json python = run_oracle_json({"describe", (dir / "lathe.safetensors").string()});
  EXPECT_EQ(python, expected);
}

TEST(SafetensorsOracle, LatheReadsWhatPythonWrites) {
  TempDir dir("st-oracle-read");
  const json python = run_oracle_json({"write", dir.path().string()});
  ASSERT_EQ(python["files"].size(), 2u);
  for (const auto& [file_name, expected] : python["files"].items()) {
    const auto file = st::File::open(dir / file_name);
    EXPECT_EQ(describe_with_lathe(file), expected) << file_name;
  }
}

TEST(SafetensorsOracle, RewritingPythonFilesIsByteIdentical) {
  // Reading a reference-written file and writing it back must reproduce it byte for byte: same
  // header text, tensor order and padding as the reference serializer.
  TempDir dir("st-oracle-bytes");
  run_oracle_json({"write", dir.path().string()});
  for (const std::string name : {"numpy.safetensors", "bf16.safetensors"}) {
    const auto file = st::File::open(dir / name);
    st::Writer writer;
    for (const auto& [k, v] : file.metadata()) writer.set_metadata(k, v);
    for (const auto& t : file.tensors()) writer.add_tensor(t.name, t.type, t.shape, file.tensor_data(t));
    writer.write(dir / ("lathe-" + name));
    EXPECT_EQ(test::read_file(dir / ("lathe-" + name)), test::read_file(dir / name)) << name;
  }
}

TEST(SafetensorsOracle, ReferenceAlsoRejectsTheMalformedCases) {
  TempDir dir("st-oracle-bad");
  for (const auto& c : test::malformed_cases()) {
    const auto path = dir / (c.name + ".safetensors");
    test::write_file(path, c.bytes);
    const auto r = test::run_oracle("safetensors_oracle.py", {"check-reject", path.string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (c.reference_rejects)
      EXPECT_EQ(r.out.rfind("rejected", 0), 0u) << c.name << ": reference says " << r.out;
    else
      EXPECT_EQ(r.out, "accepted\n") << c.name;
  }
}

}  // namespace
}  // namespace lathe
