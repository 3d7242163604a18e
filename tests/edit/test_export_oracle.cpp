// The exports read by the reference readers: gguf-py (tests/oracle/gguf_dump.py) sees the input's
// metadata in order plus the new string key, the same tensors, and identical data (crc32) for
// every tensor but the edited one; python safetensors (tests/oracle/safetensors_oracle.py) sees
// each exported shard's __metadata__ with the new key and identical data (sha256) except the edit.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "edit/export.hpp"
#include "io/model_dir.hpp"
#include "lathe/convert.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json oracle(const std::string& script, const std::vector<std::string>& args) {
  const auto r = test::run_oracle(script, args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return json::parse(r.out);
}

// Negates every value of a float32 matrix in place.
void negate(ModelWeights& w, const MatrixView& view) {
  auto bytes = writable_bytes(w, view);
  for (size_t i = 0; i + 4 <= bytes.size(); i += 4) bytes[i + 3] ^= 0x80;
}

TEST(ExportOracle, GgufPyReadsTheExport) {
  test::TempDir dir("export_oracle_gguf");
  test::TinyModel tiny;
  const auto in = tiny.write(dir, "tiny.gguf");
  auto w = load_model_weights(in);
  make_editable(w, kAllEditComponents);
  negate(w, w.layers[0].w_down);
  const auto out = dir / "out.gguf";
  edit::export_model(w, out, {.force = false, .metadata = {{"lathe.ablation.params", "{\"k\":1}"}}, .progress = {}});

  const auto a = oracle("gguf_dump.py", {in.string()}), b = oracle("gguf_dump.py", {out.string()});
  auto expected_meta = a["metadata"];
  expected_meta.push_back({{"key", "lathe.ablation.params"}, {"type", "STRING"}, {"value", "{\"k\":1}"}});
  EXPECT_EQ(b["metadata"], expected_meta);
  ASSERT_EQ(b["tensors"].size(), a["tensors"].size());
  for (size_t i = 0; i < a["tensors"].size(); ++i) {
    const auto &ta = a["tensors"][i], &tb = b["tensors"][i];
    EXPECT_EQ(tb["name"], ta["name"]);
    EXPECT_EQ(tb["type"], ta["type"]);
    EXPECT_EQ(tb["shape"], ta["shape"]);
    if (ta["name"] == "blk.0.ffn_down.weight")
      EXPECT_NE(tb["crc32"], ta["crc32"]);
    else
      EXPECT_EQ(tb["crc32"], ta["crc32"]) << ta["name"];
  }
}

TEST(ExportOracle, PythonSafetensorsReadsTheExportedShards) {
  test::TempDir dir("export_oracle_hf");
  test::TinyModel tiny;
  const auto gguf_path = tiny.write(dir, "tiny.gguf");
  ConvertOptions options;
  options.out_dir = (dir / "hf").string();
  options.max_shard_bytes = 60'000;
  convert_gguf_to_hf(gguf_path.string(), options);
  auto w = load_model_weights(dir / "hf");
  make_editable(w, kAllEditComponents);
  negate(w, w.layers[1].wo);
  const auto out = dir / "out";
  edit::export_model(w, out, {.force = false, .metadata = {{"lathe.ablation.params", "{\"k\":2}"}}, .progress = {}});

  const auto in_dir = ModelDir::open(dir / "hf");
  ASSERT_GT(in_dir.shards().size(), 1u);
  size_t edited_seen = 0;
  for (const auto& shard : in_dir.shards()) {
    const auto name = fs::path(shard.display_name()).filename();
    const auto a = oracle("safetensors_oracle.py", {"describe", shard.display_name()});
    const auto b = oracle("safetensors_oracle.py", {"describe", (out / name).string()});
    EXPECT_EQ(b["metadata"]["lathe.ablation.params"], "{\"k\":2}");
    EXPECT_EQ(b["metadata"]["format"], "pt");
    ASSERT_EQ(b["tensors"].size(), a["tensors"].size()) << name;
    for (size_t i = 0; i < a["tensors"].size(); ++i) {
      const auto &ta = a["tensors"][i], &tb = b["tensors"][i];
      EXPECT_EQ(tb["name"], ta["name"]);
      EXPECT_EQ(tb["shape"], ta["shape"]);
      if (ta["name"] == "model.layers.1.self_attn.o_proj.weight") {
        EXPECT_NE(tb["sha256"], ta["sha256"]);
        ++edited_seen;
      } else {
        EXPECT_EQ(tb["sha256"], ta["sha256"]) << ta["name"];
      }
    }
  }
  EXPECT_EQ(edited_seen, 1u);
}

}  // namespace
}  // namespace lathe
