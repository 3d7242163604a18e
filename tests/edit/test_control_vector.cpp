// Control vectors in llama.cpp's format: write/read round trip, the format's rules (1-based
// direction.N, direction.0 rejected as llama.cpp rejects it, F32 1-D only, one n_embd per file),
// FILE:SCALE and layer-range parsing, and add_control_vectors' sum, scale, range and errors,
// observed through the hooks it registers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "common/test_support.hpp"
#include "edit/control_vector.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using test::TempDir;

std::vector<float> ramp(uint32_t n, float start, float step) {
  std::vector<float> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

ControlVector sample_vector(uint32_t n_embd = 8) {
  ControlVector cv;
  cv.n_embd = n_embd;
  cv.model_hint = "llama";
  cv.directions[1] = ramp(n_embd, 0.5f, 0.25f);
  cv.directions[3] = ramp(n_embd, -1.0f, 0.125f);
  cv.directions[10] = ramp(n_embd, 2.0f, -0.5f);
  return cv;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A GGUF with the given architecture and F32 tensors (name, shape, values).
struct RawTensor {
  std::string name;
  std::vector<uint64_t> shape;
  std::vector<float> values;
  DType type = DType::F32;
};
std::filesystem::path write_raw(const TempDir& dir, const std::string& file, const std::string& arch,
                                const std::vector<RawTensor>& tensors) {
  gguf::Writer writer;
  if (!arch.empty()) writer.set("general.architecture", gguf::Value::str(arch));
  std::vector<std::vector<uint8_t>> buffers;
  for (const auto& t : tensors) {
    std::vector<uint8_t> bytes;
    if (t.type == DType::F32) {
      bytes.resize(t.values.size() * 4);
      std::memcpy(bytes.data(), t.values.data(), bytes.size());
    } else {  // F16 stand-in: 2 bytes per value, content irrelevant
      bytes.assign(t.values.size() * 2, 0);
    }
    buffers.push_back(std::move(bytes));
    writer.add_tensor(t.name, t.type, t.shape, buffers.back());
  }
  const auto path = dir / file;
  writer.write(path);
  return path;
}

TEST(ControlVector, WriteReadRoundTrip) {
  TempDir dir("cvec");
  const ControlVector cv = sample_vector();
  write_control_vector(dir / "cv.gguf", cv);
  const ControlVector back = read_control_vector(dir / "cv.gguf");
  EXPECT_EQ(back.n_embd, cv.n_embd);
  EXPECT_EQ(back.model_hint, "llama");
  EXPECT_EQ(back.directions, cv.directions);
  // The layout llama.cpp's generator writes.
  const gguf::File file = gguf::File::open(dir / "cv.gguf");
  EXPECT_EQ(file.get("general.architecture").as_string("arch"), "controlvector");
  EXPECT_EQ(file.get("controlvector.layer_count").as_i64("layer_count"), 3);
  ASSERT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.tensors()[0].name, "direction.1");
  EXPECT_EQ(file.tensors()[1].name, "direction.3");
  EXPECT_EQ(file.tensors()[2].name, "direction.10");
  EXPECT_EQ(file.tensors()[2].shape, (std::vector<uint64_t>{8}));
}

TEST(ControlVector, WriteRefusesWhatTheFormatCannotHold) {
  TempDir dir("cvec");
  ControlVector cv = sample_vector();
  cv.directions[0] = ramp(8, 0, 1);
  EXPECT_THROW(write_control_vector(dir / "a.gguf", cv), InvalidArgumentError);
  cv = sample_vector();
  cv.directions[4] = ramp(7, 0, 1);
  EXPECT_NE(error_of([&] { write_control_vector(dir / "b.gguf", cv); }).find("direction.4 has 7 elements"),
            std::string::npos);
  EXPECT_THROW(write_control_vector(dir / "c.gguf", ControlVector{}), InvalidArgumentError);
  EXPECT_FALSE(std::filesystem::exists(dir / "a.gguf"));
}

TEST(ControlVector, ReadErrorsNameFileAndTensor) {
  TempDir dir("cvec");
  EXPECT_THROW(read_control_vector(dir / "missing.gguf"), NotFoundError);
  const std::vector<RawTensor> good{{"direction.1", {4}, {1, 2, 3, 4}}};

  auto expect = [&](const std::filesystem::path& path, const std::string& part) {
    const std::string message = error_of([&] { read_control_vector(path); });
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    EXPECT_NE(message.find(part), std::string::npos) << message;
    EXPECT_THROW(read_control_vector(path), FormatError) << part;
  };
  expect(write_raw(dir, "llama.gguf", "llama", good), "\"llama\" is not \"controlvector\"");
  expect(write_raw(dir, "noarch.gguf", "", good), "general.architecture");
  expect(write_raw(dir, "zero.gguf", "controlvector", {{"direction.0", {4}, {1, 2, 3, 4}}}), "direction.0");
  expect(write_raw(dir, "zero.gguf", "controlvector", {{"direction.0", {4}, {1, 2, 3, 4}}}), "layer 0 cannot be steered");
  for (const char* bad_name : {"direction.x", "direction.", "direction.1a", "dir.1", "direction.-1", "blk.1.direction"})
    expect(write_raw(dir, "name.gguf", "controlvector", {{bad_name, {4}, {1, 2, 3, 4}}}), bad_name);
  expect(write_raw(dir, "f16.gguf", "controlvector", {{"direction.2", {4}, {1, 2, 3, 4}, DType::F16}}), "not F32");
  expect(write_raw(dir, "2d.gguf", "controlvector", {{"direction.2", {2, 2}, {1, 2, 3, 4}}}), "not 1-D");
  expect(write_raw(dir, "sizes.gguf", "controlvector",
                   {{"direction.1", {4}, {1, 2, 3, 4}}, {"direction.2", {3}, {1, 2, 3}}}),
         "direction.2");
  expect(write_raw(dir, "nan.gguf", "controlvector", {{"direction.5", {4}, {1, NAN, 3, 4}}}), "element 1 is not finite");
  expect(write_raw(dir, "empty.gguf", "controlvector", {}), "no direction tensors");
  // [n_embd, 1] is 1-D for ggml as well.
  const ControlVector trailing_one =
      read_control_vector(write_raw(dir, "col.gguf", "controlvector", {{"direction.7", {4, 1}, {1, 2, 3, 4}}}));
  EXPECT_EQ(trailing_one.directions.at(7), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(trailing_one.model_hint, "");
}

TEST(ControlVector, ParsesFileAndScale) {
  auto spec = parse_control_vector_spec("cv.gguf");
  EXPECT_EQ(spec.path, "cv.gguf");
  EXPECT_EQ(spec.scale, 1.0f);
  spec = parse_control_vector_spec("cv.gguf:0.5");
  EXPECT_EQ(spec.path, "cv.gguf");
  EXPECT_EQ(spec.scale, 0.5f);
  EXPECT_EQ(parse_control_vector_spec("cv.gguf:-2").scale, -2.0f);
  EXPECT_EQ(parse_control_vector_spec("cv.gguf:+1e-1").scale, 0.1f);
  EXPECT_EQ(parse_control_vector_spec("cv.gguf:0").scale, 0.0f);
  // Colons inside the path: only a trailing number is a scale.
  spec = parse_control_vector_spec("/data/a:b/cv.gguf:3");
  EXPECT_EQ(spec.path, "/data/a:b/cv.gguf");
  EXPECT_EQ(spec.scale, 3.0f);
  spec = parse_control_vector_spec("/data/a:b/cv.gguf");
  EXPECT_EQ(spec.path, "/data/a:b/cv.gguf");
  EXPECT_EQ(spec.scale, 1.0f);
  for (const char* path_only : {"c:\\vectors\\cv.gguf", "cv.gguf:", "cv.gguf:x2", "cv.gguf:inf", "cv:1.5.gguf"})
    EXPECT_EQ(parse_control_vector_spec(path_only).path, path_only) << path_only;
  EXPECT_THROW(parse_control_vector_spec(""), InvalidArgumentError);
  EXPECT_THROW(parse_control_vector_spec(":2"), InvalidArgumentError);
  EXPECT_THROW(parse_control_vector_spec("cv.gguf:1e99"), InvalidArgumentError);  // not finite as a float
}

TEST(ControlVector, ParsesLayerRanges) {
  EXPECT_EQ(parse_layer_range("3-7", "--x"), (std::pair<uint32_t, uint32_t>{3, 7}));
  EXPECT_EQ(parse_layer_range("5", "--x"), (std::pair<uint32_t, uint32_t>{5, 5}));
  for (const char* bad : {"", "-", "7-3", "a-b", "1-", "-4", "1-2-3", "1 - 2", "99999999999"}) {
    EXPECT_THROW(parse_layer_range(bad, "--layers"), InvalidArgumentError) << bad;
  }
  EXPECT_NE(error_of([] { parse_layer_range("7-3", "--layers"); }).find("--layers '7-3'"), std::string::npos);
}

// The vector the hooks add at blocks.{layer}.resid_post (applied to a zero row), or empty.
std::vector<float> added_at(ResidualHooks& hooks, uint32_t layer, uint32_t n_embd) {
  const HookSite site{HookPoint::ResidPost, layer};
  if (!hooks.has(site)) return {};
  std::vector<float> row(n_embd, 0.0f);
  hooks.apply(site, row.data(), 1, n_embd, true);
  return row;
}

TEST(ControlVector, AddSumsScaledFilesWithinTheRange) {
  TempDir dir("cvec");
  const ControlVector a = sample_vector();
  ControlVector b;
  b.n_embd = 8;
  b.directions[3] = ramp(8, 1.0f, 1.0f);
  b.directions[5] = ramp(8, 0.0f, 2.0f);
  write_control_vector(dir / "a.gguf", a);
  write_control_vector(dir / "b.gguf", b);
  const std::vector<ControlVectorSpec> specs{{dir / "a.gguf", 2.0f}, {dir / "b.gguf", -0.5f}};

  ResidualHooks hooks;
  add_control_vectors(hooks, specs, 12, 8, std::nullopt);
  EXPECT_TRUE(added_at(hooks, 0, 8).empty());
  EXPECT_TRUE(added_at(hooks, 2, 8).empty());
  for (uint32_t layer : {1u, 3u, 5u, 10u}) {
    const auto got = added_at(hooks, layer, 8);
    ASSERT_EQ(got.size(), 8u) << layer;
    for (size_t i = 0; i < 8; ++i) {
      float expected = 0;
      if (a.directions.count(layer)) expected += 2.0f * a.directions.at(layer)[i];
      if (b.directions.count(layer)) expected += -0.5f * b.directions.at(layer)[i];
      EXPECT_FLOAT_EQ(got[i], expected) << "layer " << layer << " element " << i;
    }
  }
  hooks.validate(12, 8);

  ResidualHooks ranged;
  add_control_vectors(ranged, specs, 12, 8, std::pair<uint32_t, uint32_t>{3, 5});
  EXPECT_TRUE(added_at(ranged, 1, 8).empty());
  EXPECT_FALSE(added_at(ranged, 3, 8).empty());
  EXPECT_FALSE(added_at(ranged, 5, 8).empty());
  EXPECT_TRUE(added_at(ranged, 10, 8).empty());

  ResidualHooks none;
  add_control_vectors(none, {}, 12, 8, std::nullopt);
  EXPECT_TRUE(none.empty());
}

TEST(ControlVector, AddRejectsVectorsForAnotherModel) {
  TempDir dir("cvec");
  write_control_vector(dir / "cv.gguf", sample_vector());
  ResidualHooks hooks;
  const std::string width = error_of([&] { add_control_vectors(hooks, {{dir / "cv.gguf", 1.0f}}, 12, 576, std::nullopt); });
  EXPECT_NE(width.find("n_embd = 8"), std::string::npos) << width;
  EXPECT_NE(width.find("n_embd = 576"), std::string::npos) << width;
  EXPECT_NE(width.find("cv.gguf"), std::string::npos) << width;
  // direction.10 needs at least 11 blocks.
  const std::string depth = error_of([&] { add_control_vectors(hooks, {{dir / "cv.gguf", 1.0f}}, 10, 8, std::nullopt); });
  EXPECT_NE(depth.find("direction.10"), std::string::npos) << depth;
  EXPECT_NE(depth.find("10 blocks"), std::string::npos) << depth;
  EXPECT_THROW(add_control_vectors(hooks, {{dir / "cv.gguf", 1.0f}}, 12, 8, std::pair<uint32_t, uint32_t>{5, 2}),
               InvalidArgumentError);
  EXPECT_THROW(add_control_vectors(hooks, {{dir / "missing.gguf", 1.0f}}, 12, 8, std::nullopt), NotFoundError);
  EXPECT_TRUE(hooks.empty()) << "nothing is added when a file is rejected";
}

}  // namespace
}  // namespace lathe::edit
