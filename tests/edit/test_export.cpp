// Export of an edited model on the tiny synthetic llama: GGUF in -> GGUF out and Hugging Face
// directory in (converted from the tiny GGUF, single file and sharded) -> directory out. The edited
// matrix comes back from the export, every other tensor and metadata entry is identical to the
// input, the metadata strings are present, and bad output paths are refused without touching
// anything. The oracle program reads the exports with gguf-py and python safetensors.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "edit/export.hpp"
#include "io/gguf.hpp"
#include "io/model_dir.hpp"
#include "lathe/convert.hpp"
#include "lathe/error.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using test::TinyModel;

const std::pair<std::string, std::string> kParams{"lathe.ablation.params", R"({"layers":[1],"scale":1.5})"};

std::vector<uint8_t> span_bytes(std::span<const uint8_t> s) { return {s.begin(), s.end()}; }
std::vector<uint8_t> view_bytes(const MatrixView& v) {
  return {v.data, v.data + static_cast<size_t>(v.rows) * v.row_bytes};
}

// Replaces a matrix's values with a ramp, stored in the matrix's own type.
std::vector<uint8_t> edit_matrix(ModelWeights& w, const MatrixView& view) {
  std::vector<float> ramp(static_cast<size_t>(view.rows * view.cols));
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = 0.001f * static_cast<float>(i % 997) - 0.4f;
  const auto edited = quantize(view.type, ramp);
  auto dst = writable_bytes(w, view);
  EXPECT_EQ(dst.size(), edited.size());
  std::memcpy(dst.data(), edited.data(), dst.size());
  return edited;
}

template <class Exception, class Action>
void expect_refused(const std::vector<std::string>& parts, Action action) {
  try {
    action();
    FAIL() << "expected the export to be refused";
  } catch (const Exception& e) {
    for (const auto& part : parts) EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << part << "\n" << e.what();
  }
}

// ---- GGUF -------------------------------------------------------------------------------------------

TEST(ExportGguf, EditedTensorReplacedEverythingElseIdenticalMetadataAdded) {
  test::TempDir dir("export_gguf");
  TinyModel tiny("", DType::Q8_0);
  const auto in = tiny.write(dir, "tiny.gguf");
  auto w = load_model_weights(in);
  make_editable(w, kAllEditComponents);
  const auto edited = edit_matrix(w, w.layers[1].wo);

  std::vector<std::pair<size_t, size_t>> progress;
  const auto out = dir / "sub/edited.gguf";  // the parent directory is created
  const auto result = edit::export_model(
      w, out, {.force = false, .metadata = {kParams}, .progress = [&](size_t d, size_t t) { progress.emplace_back(d, t); }});
  ASSERT_EQ(result.files, std::vector<fs::path>{out});
  EXPECT_EQ(result.bytes, fs::file_size(out));
  EXPECT_EQ(result.n_edited_tensors, 4u);  // wo and w_down of both layers were made editable

  const auto a = gguf::File::open(in), b = gguf::File::open(out);
  ASSERT_EQ(b.metadata().size(), a.metadata().size() + 1);
  for (size_t i = 0; i < a.metadata().size(); ++i) {
    EXPECT_EQ(b.metadata()[i].first, a.metadata()[i].first);
    EXPECT_EQ(b.metadata()[i].second.type, a.metadata()[i].second.type);
    EXPECT_EQ(b.metadata()[i].second.to_string(1000), a.metadata()[i].second.to_string(1000));
  }
  EXPECT_EQ(b.get(kParams.first).as_string("params"), kParams.second);
  ASSERT_EQ(b.tensors().size(), a.tensors().size());
  for (size_t i = 0; i < a.tensors().size(); ++i) {
    const auto &ta = a.tensors()[i], &tb = b.tensors()[i];
    EXPECT_EQ(tb.name, ta.name);
    EXPECT_EQ(tb.type, ta.type);
    EXPECT_EQ(tb.shape, ta.shape);
    if (ta.name == "blk.1.attn_output.weight") {
      EXPECT_EQ(span_bytes(b.tensor_data(tb)), edited);
      EXPECT_NE(span_bytes(b.tensor_data(tb)), span_bytes(a.tensor_data(ta)));
    } else {
      EXPECT_EQ(span_bytes(b.tensor_data(tb)), span_bytes(a.tensor_data(ta))) << ta.name;
    }
  }
  // Loadable as a model, with the edit in place.
  const auto reloaded = load_model_weights(out);
  EXPECT_EQ(view_bytes(reloaded.layers[1].wo), edited);
  EXPECT_EQ(view_bytes(reloaded.layers[0].wo), view_bytes(load_model_weights(in).layers[0].wo));

  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), std::make_pair(a.tensors().size(), a.tensors().size()));
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GT(progress[i].first, progress[i - 1].first);
}

TEST(ExportGguf, RefusesTheInputAsOutputEvenWithForce) {
  test::TempDir dir("export_same");
  TinyModel tiny;
  const auto in = tiny.write(dir, "tiny.gguf");
  const auto original = test::read_file(in);
  auto w = load_model_weights(in);
  make_editable(w, kAllEditComponents);
  edit_matrix(w, w.layers[0].w_down);
  for (const fs::path& same : {in, dir.path() / "." / "tiny.gguf"}) {
    for (bool force : {false, true}) {
      expect_refused<InvalidArgumentError>({same.string(), "is the input model", "another output path"},
                                           [&] { edit::export_model(w, same, {.force = force, .metadata = {}, .progress = {}}); });
    }
  }
  EXPECT_EQ(test::read_file(in), original);
}

TEST(ExportGguf, RefusesAnExistingFileWithoutForceAndADirectory) {
  test::TempDir dir("export_exists");
  TinyModel tiny;
  const auto in = tiny.write(dir, "tiny.gguf");
  auto w = load_model_weights(in);
  make_editable(w, kAllEditComponents);
  const auto edited = edit_matrix(w, w.layers[0].w_down);

  const auto out = dir / "precious.gguf";
  test::write_file(out, "the user's data");
  expect_refused<InvalidArgumentError>({out.string(), "already exists", "--force"}, [&] { edit::export_model(w, out); });
  EXPECT_EQ(test::read_file(out), "the user's data");
  edit::export_model(w, out, {.force = true, .metadata = {}, .progress = {}});
  EXPECT_EQ(view_bytes(load_model_weights(out).layers[0].w_down), edited);

  fs::create_directories(dir / "a_dir");
  expect_refused<InvalidArgumentError>({(dir / "a_dir").string(), "is a directory"},
                                       [&] { edit::export_model(w, dir / "a_dir"); });
  expect_refused<InvalidArgumentError>({"no output path"}, [&] { edit::export_model(w, ""); });
}

TEST(ExportGguf, InputChangedSinceLoadingIsAnError) {
  test::TempDir dir("export_changed");
  TinyModel f32;
  const auto in = f32.write(dir, "tiny.gguf");
  auto w = load_model_weights(in);
  make_editable(w, kAllEditComponents);
  TinyModel q8("", DType::Q8_0);
  q8.write(dir, "tiny.gguf");  // replaced (atomically: the loaded weights keep the old map)
  const auto out = dir / "out.gguf";
  expect_refused<FormatError>({in.string(), "blk.0.attn_output.weight", "F32", "Q8_0", "changed since the model was loaded"},
                              [&] { edit::export_model(w, out); });
  EXPECT_FALSE(fs::exists(out));
}

// ---- Hugging Face directory -------------------------------------------------------------------------

struct HfModel {
  test::TempDir dir{"export_hf"};
  fs::path in;
  explicit HfModel(uint64_t max_shard_bytes) {
    TinyModel tiny;
    const auto gguf_path = tiny.write(dir, "tiny.gguf");
    in = dir / "hf";
    ConvertOptions options;
    options.out_dir = in.string();
    options.max_shard_bytes = max_shard_bytes;
    convert_gguf_to_hf(gguf_path.string(), options);
    test::write_file(in / "tokenizer.json", R"({"version":"1.0","model":{"type":"BPE"}})");
    test::write_file(in / "README.md", "tiny model\n");
    test::write_file(in / "pytorch_model.bin", "unedited weights in another format");
  }
};

class ExportHf : public ::testing::TestWithParam<uint64_t> {};

TEST_P(ExportHf, SameShardingEditedTensorReplacedSideFilesCopied) {
  HfModel hf(GetParam());
  auto w = load_model_weights(hf.in);
  ASSERT_EQ(w.format, "safetensors");
  // The views carry the names stored in the safetensors (Hugging Face names), not GGUF names.
  ASSERT_EQ(w.layers[1].w_down.name, "model.layers.1.mlp.down_proj.weight");
  make_editable(w, kAllEditComponents);
  const auto edited = edit_matrix(w, w.layers[1].w_down);

  const auto out = hf.dir / "out";
  size_t last_done = 0, last_total = 0;
  const auto result = edit::export_model(
      w, out, {.force = false, .metadata = {kParams}, .progress = [&](size_t d, size_t t) { last_done = d, last_total = t; }});
  EXPECT_EQ(result.n_edited_tensors, 4u);

  const auto a = ModelDir::open(hf.in), b = ModelDir::open(out);
  EXPECT_EQ(last_done, a.tensor_names().size());
  EXPECT_EQ(last_total, a.tensor_names().size());
  ASSERT_EQ(b.shards().size(), a.shards().size());
  if (GetParam() < 100000) {
    ASSERT_GT(a.shards().size(), 1u) << "the sharded case must have shards";
  }
  EXPECT_EQ(a.index_path().has_value(), b.index_path().has_value());
  for (size_t s = 0; s < a.shards().size(); ++s) {
    EXPECT_EQ(fs::path(b.shards()[s].display_name()).filename(), fs::path(a.shards()[s].display_name()).filename());
    std::set<std::string> names_a, names_b;
    for (const auto& t : a.shards()[s].tensors()) names_a.insert(t.name);
    for (const auto& t : b.shards()[s].tensors()) names_b.insert(t.name);
    EXPECT_EQ(names_b, names_a) << "shard " << s;
    const auto& meta = b.shards()[s].metadata();
    EXPECT_EQ(meta.at(kParams.first), kParams.second);
    EXPECT_EQ(meta.at("format"), "pt");
    EXPECT_EQ(meta.at("lathe.source"), "tiny.gguf");  // the input shard's own metadata is kept
  }
  for (const auto& name : a.tensor_names()) {
    const auto ta = a.tensor(name), tb = b.tensor(name);
    EXPECT_EQ(tb.info->type, ta.info->type) << name;
    EXPECT_EQ(tb.info->shape, ta.info->shape) << name;
    if (name == "model.layers.1.mlp.down_proj.weight") {
      EXPECT_EQ(span_bytes(tb.data), edited);
      EXPECT_NE(span_bytes(tb.data), span_bytes(ta.data));
    } else {
      EXPECT_EQ(span_bytes(tb.data), span_bytes(ta.data)) << name;
    }
  }
  if (a.index_path()) {
    const auto ia = nlohmann::json::parse(test::read_file(*a.index_path()));
    const auto ib = nlohmann::json::parse(test::read_file(*b.index_path()));
    EXPECT_EQ(ib["weight_map"], ia["weight_map"]);
    EXPECT_EQ(ib["metadata"]["total_size"], ia["metadata"]["total_size"]);
  }
  for (const char* side : {"config.json", "generation_config.json", "tokenizer.json", "README.md"})
    EXPECT_EQ(test::read_file(out / side), test::read_file(hf.in / side)) << side;
  EXPECT_FALSE(fs::exists(out / "pytorch_model.bin")) << "unedited weights in another format must not be copied";
  uint64_t total = 0;
  for (const auto& f : result.files) total += fs::file_size(f);
  EXPECT_EQ(result.bytes, total);

  EXPECT_EQ(view_bytes(load_model_weights(out).layers[1].w_down), edited);
}

INSTANTIATE_TEST_SUITE_P(Sharding, ExportHf, ::testing::Values(uint64_t{5'000'000'000}, uint64_t{40'000}),
                         [](const auto& info) { return std::string(info.param < 100000 ? "Sharded" : "SingleFile"); });

TEST(ExportHfRefusals, InputNonEmptyOutputAFileAndAStaleSingleFileReplaced) {
  HfModel hf(40'000);
  auto w = load_model_weights(hf.in);
  make_editable(w, kAllEditComponents);
  edit_matrix(w, w.layers[0].wo);

  expect_refused<InvalidArgumentError>({hf.in.string(), "is the input model"},
                                       [&] { edit::export_model(w, hf.in, {.force = true, .metadata = {}, .progress = {}}); });

  const auto out = hf.dir / "busy";
  fs::create_directories(out);
  test::write_file(out / "notes.txt", "keep me");
  expect_refused<InvalidArgumentError>({out.string(), "not empty", "--force"}, [&] { edit::export_model(w, out); });
  EXPECT_FALSE(fs::exists(out / "config.json"));
  // A stale single-file model.safetensors (an earlier export) would shadow the sharded export for
  // every loader: with force it is replaced, as are stale shards; other files are kept.
  test::write_file(out / "model.safetensors", "stale single file");
  test::write_file(out / "model-00007-of-00009.safetensors", "stale shard");
  const auto result = edit::export_model(w, out, {.force = true, .metadata = {}, .progress = {}});
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "model-00007-of-00009.safetensors"));
  EXPECT_EQ(test::read_file(out / "notes.txt"), "keep me");
  EXPECT_EQ(view_bytes(load_model_weights(out).layers[0].wo), view_bytes(w.layers[0].wo));
  std::set<std::string> listed;
  for (const auto& entry : fs::directory_iterator(out)) listed.insert(entry.path().filename().string());
  std::set<std::string> expected{"notes.txt"};
  for (const auto& f : result.files) expected.insert(f.filename().string());
  EXPECT_EQ(listed, expected) << "exactly the export's files and the unrelated one, no temporaries";

  const auto file = hf.dir / "a_file";
  test::write_file(file, "x");
  expect_refused<InvalidArgumentError>({file.string(), "not a directory"},
                                       [&] { edit::export_model(w, file, {.force = true, .metadata = {}, .progress = {}}); });
}

}  // namespace
}  // namespace lathe
