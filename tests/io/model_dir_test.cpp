#include "io/model_dir.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>

#include "common/scoped_env.hpp"
#include "common/test_support.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

using test::expect_error;

namespace fs = std::filesystem;
namespace st = safetensors;
using test::TempDir;

constexpr const char* kConfig = R"({"model_type":"llama","architectures":["LlamaForCausalLM"],"hidden_size":64,
  "rms_norm_eps":1e-5,"tie_word_embeddings":false,"torch_dtype":"bfloat16","big":18446744073709551615,"nothing":null})";

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 17 + i * 5);
  return v;
}

struct Tensors {
  std::vector<std::vector<uint8_t>> storage;
  st::Writer writer;
  // Five F32 tensors of 16, 24, 32, 8 and 40 bytes, added in this order.
  Tensors() {
    const std::vector<uint64_t> sizes{4, 6, 8, 2, 10};
    storage.reserve(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      storage.push_back(pattern(sizes[i] * 4, static_cast<uint8_t>(i + 1)));
      writer.add_tensor("model.t" + std::to_string(i), DType::F32, {sizes[i]}, storage.back());
    }
    writer.set_metadata("format", "pt");
  }
};

void expect_tensors_match(const ModelDir& model, const Tensors& t) {
  ASSERT_EQ(model.tensor_names().size(), t.storage.size());
  for (size_t i = 0; i < t.storage.size(); ++i) {
    const auto ref = model.tensor("model.t" + std::to_string(i));
    ASSERT_NE(ref.shard, nullptr);
    EXPECT_EQ(ref.info->type, DType::F32);
    EXPECT_EQ(ref.info->shape, (std::vector<uint64_t>{t.storage[i].size() / 4}));
    ASSERT_EQ(ref.data.size(), t.storage[i].size());
    EXPECT_TRUE(std::equal(ref.data.begin(), ref.data.end(), t.storage[i].begin())) << i;
    EXPECT_EQ(ref.shard->metadata().at("format"), "pt");
  }
}

TEST(ModelDir, ShardedWriteReadsBack) {
  TempDir dir("md-sharded");
  test::write_file(dir / "config.json", kConfig);
  Tensors t;
  // 40-byte shards, greedy in order: [16+24], [32+8], [40].
  const auto files = t.writer.write_sharded(dir.path(), 40);
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(files[0].filename(), "model-00001-of-00003.safetensors");
  EXPECT_EQ(files[2].filename(), "model-00003-of-00003.safetensors");
  EXPECT_EQ(files[3].filename(), "model.safetensors.index.json");

  const auto index = nlohmann::json::parse(test::read_file(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 16 + 24 + 32 + 8 + 40);
  EXPECT_EQ(index["weight_map"]["model.t0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.t1"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.t2"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.t3"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["model.t4"], "model-00003-of-00003.safetensors");

  const auto model = ModelDir::open(dir.path());
  EXPECT_EQ(model.shards().size(), 3u);
  ASSERT_TRUE(model.index_path());
  expect_tensors_match(model, t);
  EXPECT_FALSE(model.find_tensor("nope"));
  expect_error<NotFoundError>([&] { model.tensor("nope"); }, {dir.path().string(), "'nope'"});
}

TEST(ModelDir, SingleShardWritesModelSafetensors) {
  TempDir dir("md-single");
  test::write_file(dir / "config.json", kConfig);
  Tensors t;
  const auto files = t.writer.write_sharded(dir.path(), 1'000'000);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename(), "model.safetensors");
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  const auto model = ModelDir::open(dir.path());
  EXPECT_FALSE(model.index_path());
  expect_tensors_match(model, t);
}

TEST(ModelDir, SideFilesAndConfigAccessors) {
  TempDir dir("md-side");
  test::write_file(dir / "config.json", kConfig);
  test::write_file(dir / "generation_config.json", R"({"eos_token_id":[1,2]})");
  test::write_file(dir / "tokenizer.json", "{}");
  test::write_file(dir / "tokenizer_config.json", R"({"chat_template":"{{ x }}"})");
  Tensors t;
  t.writer.write(dir / "model.safetensors");
  const auto model = ModelDir::open(dir.path());
  EXPECT_EQ(model.require_int("hidden_size"), 64);
  EXPECT_DOUBLE_EQ(model.require_number("rms_norm_eps"), 1e-5);
  EXPECT_DOUBLE_EQ(model.require_number("hidden_size"), 64.0);
  EXPECT_EQ(model.require_string("model_type"), "llama");
  EXPECT_FALSE(model.require_bool("tie_word_embeddings"));
  EXPECT_EQ(model.require("architectures")[0], "LlamaForCausalLM");
  EXPECT_EQ(model.find("nothing"), nullptr);
  ASSERT_TRUE(model.generation_config());
  EXPECT_EQ((*model.generation_config())["eos_token_id"][1], 2);
  EXPECT_EQ(model.tokenizer_json_path(), dir / "tokenizer.json");
  ASSERT_TRUE(model.tokenizer_config());
  EXPECT_EQ((*model.tokenizer_config())["chat_template"], "{{ x }}");

  const std::string config = (dir / "config.json").string();
  expect_error<FormatError>([&] { model.require_int("rms_norm_eps"); }, {config, "rms_norm_eps", "expected an integer"});
  expect_error<FormatError>([&] { model.require_int("big"); }, {config, "big", "fits 64 bits"});
  expect_error<FormatError>([&] { model.require_string("hidden_size"); }, {config, "hidden_size", "expected a string"});
}

TEST(ModelDir, OptionalFilesAbsent) {
  TempDir dir("md-minimal");
  test::write_file(dir / "config.json", R"({"architectures":["X"]})");
  Tensors t;
  t.writer.write(dir / "model.safetensors");
  const auto model = ModelDir::open(dir.path());
  EXPECT_FALSE(model.generation_config());
  EXPECT_FALSE(model.tokenizer_json_path());
  EXPECT_FALSE(model.tokenizer_config_path());
  EXPECT_FALSE(model.tokenizer_config());
}

TEST(ModelDirErrors, ConfigJsonMissing) {
  TempDir dir("md-noconfig");
  Tensors t;
  t.writer.write(dir / "model.safetensors");
  expect_error<NotFoundError>([&] { ModelDir::open(dir.path()); },
                              {(dir / "config.json").string(), "config.json missing", "model.safetensors"});
}

TEST(ModelDirErrors, ConfigJsonMissingRequiredField) {
  TempDir dir("md-field");
  test::write_file(dir / "config.json", R"({"model_type":"llama"})");
  Tensors t;
  t.writer.write(dir / "model.safetensors");
  const auto model = ModelDir::open(dir.path());
  const std::string config = (dir / "config.json").string();
  expect_error<FormatError>([&] { model.require("hidden_size"); }, {config, "hidden_size", "required field missing"});
  expect_error<FormatError>([&] { model.require_int("num_hidden_layers"); }, {config, "num_hidden_layers", "missing"});
}

TEST(ModelDirErrors, ConfigJsonWithoutArchitecture) {
  TempDir dir("md-noarch");
  test::write_file(dir / "config.json", R"({"hidden_size":8})");
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {(dir / "config.json").string(), "model_type", "architectures"});
}

TEST(ModelDirErrors, ConfigJsonInvalid) {
  TempDir dir("md-badjson");
  test::write_file(dir / "config.json", "{\"model_type\": llama}");
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {(dir / "config.json").string(), "offset 15", "not valid JSON"});
}

TEST(ModelDirErrors, ConfigJsonNumberOutOfRange) {
  TempDir dir("md-hugenum");
  test::write_file(dir / "config.json", "{\"model_type\": \"llama\", \"rope_theta\": 1e999}");
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {(dir / "config.json").string(), "cannot represent"});
}

TEST(ModelDirErrors, ConfigJsonWithNulIsNotTruncatedSilently) {
  TempDir dir("md-nul");
  test::write_file(dir / "config.json", std::string("{\"model_type\": \"llama\"}\0garbage", 31));
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {(dir / "config.json").string(), "offset 23", "NUL"});
}

TEST(ModelDirErrors, MissingShardNamedInIndex) {
  TempDir dir("md-noshard");
  test::write_file(dir / "config.json", kConfig);
  Tensors t;
  t.writer.write_sharded(dir.path(), 40);
  fs::remove(dir / "model-00002-of-00003.safetensors");
  expect_error<NotFoundError>([&] { ModelDir::open(dir.path()); },
                              {(dir / "model.safetensors.index.json").string(), "model-00002-of-00003.safetensors", "model.t2"});
}

TEST(ModelDirErrors, IndexTensorAbsentFromShard) {
  TempDir dir("md-absent");
  test::write_file(dir / "config.json", kConfig);
  Tensors t;
  t.writer.write_sharded(dir.path(), 40);
  auto index = nlohmann::json::parse(test::read_file(dir / "model.safetensors.index.json"));
  index["weight_map"]["model.ghost"] = "model-00001-of-00003.safetensors";
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); },
                            {(dir / "model.safetensors.index.json").string(), "model.ghost", "model-00001-of-00003.safetensors"});
}

TEST(ModelDirErrors, TensorInTwoShards) {
  TempDir dir("md-twice");
  test::write_file(dir / "config.json", kConfig);
  const auto data = pattern(8, 1);
  for (const std::string shard : {"a.safetensors", "b.safetensors"}) {
    st::Writer w;
    w.add_tensor("shared", DType::F32, {2}, data);
    w.write(dir / shard);
  }
  // Only shards the index names are opened, so b.safetensors is named for another tensor.
  test::write_file(dir / "model.safetensors.index.json",
                   R"({"metadata":{},"weight_map":{"shared":"a.safetensors","other":"b.safetensors"}})");
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {"b.safetensors", "'shared'", "also in", "a.safetensors"});
}

TEST(ModelDirErrors, IndexShardOutsideDirectory) {
  TempDir dir("md-escape");
  test::write_file(dir / "config.json", kConfig);
  test::write_file(dir / "model.safetensors.index.json", R"({"weight_map":{"w":"../x.safetensors"}})");
  expect_error<FormatError>([&] { ModelDir::open(dir.path()); }, {"model.safetensors.index.json", "weight_map['w']"});
}

TEST(ModelDirErrors, NoWeights) {
  TempDir dir("md-noweights");
  test::write_file(dir / "config.json", kConfig);
  test::write_file(dir / "pytorch_model.bin", "x");
  expect_error<NotFoundError>([&] { ModelDir::open(dir.path()); }, {dir.path().string(), "no weights", "pytorch_model.bin"});
}

TEST(ModelDirErrors, NotADirectory) {
  expect_error<NotFoundError>([&] { ModelDir::open("/nonexistent/model"); }, {"/nonexistent/model", "huggingface-cli"});
}

// A fake hub cache: <cache>/models--org--name/{refs/main, snapshots/<rev>/}.
fs::path make_snapshot(const fs::path& cache, const std::string& repo, const std::string& rev) {
  const fs::path snapshot = cache / repo / "snapshots" / rev;
  fs::create_directories(snapshot);
  test::write_file(snapshot / "config.json", kConfig);
  return snapshot;
}

void write_ref(const fs::path& cache, const std::string& repo, const std::string& content) {
  fs::create_directories(cache / repo / "refs");
  test::write_file(cache / repo / "refs" / "main", content);
}

TEST(ModelDirResolve, ExistingPathIsUsedAsIs) {
  TempDir dir("md-resolve-path");
  EXPECT_EQ(resolve_model_path(dir.path().string()), dir.path());
}

TEST(ModelDirResolve, HubCacheUsesRefsMain) {
  TempDir dir("md-hub");
  const fs::path cache = dir / "hub";
  make_snapshot(cache, "models--acme--tiny-lm", "1111");
  const auto wanted = make_snapshot(cache, "models--acme--tiny-lm", "2222");
  write_ref(cache, "models--acme--tiny-lm", "2222\n");
  test::ScopedEnv hub("HF_HUB_CACHE", cache.string());
  EXPECT_EQ(resolve_model_path("acme/tiny-lm"), wanted);
}

TEST(ModelDirResolve, HubCacheSingleSnapshotWithoutRefs) {
  TempDir dir("md-hub1");
  const auto wanted = make_snapshot(dir / "hub", "models--acme--solo", "abcd");
  test::ScopedEnv hub("HF_HUB_CACHE", (dir / "hub").string());
  EXPECT_EQ(resolve_model_path("acme/solo"), wanted);
}

TEST(ModelDirResolve, HfHomeFallback) {
  TempDir dir("md-hfhome");
  const auto wanted = make_snapshot(dir / "home" / "hub", "models--acme--homed", "beef");
  test::ScopedEnv hub("HF_HUB_CACHE", std::nullopt);
  test::ScopedEnv home("HF_HOME", (dir / "home").string());
  EXPECT_EQ(resolve_model_path("acme/homed"), wanted);
}

TEST(ModelDirResolve, AmbiguousSnapshotsWithoutRefs) {
  TempDir dir("md-hub2");
  make_snapshot(dir / "hub", "models--acme--two", "aaaa");
  make_snapshot(dir / "hub", "models--acme--two", "bbbb");
  test::ScopedEnv hub("HF_HUB_CACHE", (dir / "hub").string());
  expect_error<NotFoundError>([&] { resolve_model_path("acme/two"); }, {"acme/two", "aaaa", "bbbb", "pass the snapshot"});
}

TEST(ModelDirResolve, NotFoundListsPathsTried) {
  TempDir dir("md-hub3");
  fs::create_directories(dir / "hub");
  test::ScopedEnv hub("HF_HUB_CACHE", (dir / "hub").string());
  expect_error<NotFoundError>([&] { resolve_model_path("acme/missing"); },
                              {"acme/missing", (dir / "hub" / "models--acme--missing" / "refs" / "main").string(),
                               "$HF_HUB_CACHE", "huggingface-cli download"});
}

TEST(ModelDirResolve, ResolvedSnapshotOpens) {
  TempDir dir("md-hub4");
  const auto snapshot = make_snapshot(dir / "hub", "models--acme--full", "c0ffee");
  Tensors t;
  t.writer.write(snapshot / "model.safetensors");
  write_ref(dir / "hub", "models--acme--full", "c0ffee");
  test::ScopedEnv hub("HF_HUB_CACHE", (dir / "hub").string());
  const auto model = ModelDir::open(resolve_model_path("acme/full"));
  expect_tensors_match(model, t);
}

}  // namespace
}  // namespace lathe
