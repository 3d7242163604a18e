// Control vectors against the Python peers: files lathe writes, read by gguf-py's GGUFReader;
// files gguf-py's GGUFWriter writes (as repeng and llama.cpp's tools lay them out), read by lathe;
// the PCA direction against numpy's SVD; and prompt files against Python's json and csv modules.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_support.hpp"
#include "edit/control_vector.hpp"
#include "edit/control_vector_train.hpp"
#include "edit/prompt_file.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using nlohmann::json;
using test::TempDir;

TEST(ControlVectorOracle, GgufPyReadsWhatLatheWrites) {
  TempDir dir("cvec_oracle");
  ControlVector cv;
  cv.n_embd = 16;
  cv.model_hint = "qwen2";
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (uint32_t layer : {1u, 2u, 7u, 23u}) {
    auto& v = cv.directions[layer];
    for (uint32_t i = 0; i < cv.n_embd; ++i) v.push_back(normal(rng));
  }
  write_control_vector(dir / "cv.gguf", cv);
  const auto r = test::run_oracle("control_vector_oracle.py", {"read", (dir / "cv.gguf").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json seen = json::parse(r.out);
  EXPECT_EQ(seen["architecture"], "controlvector");
  EXPECT_EQ(seen["model_hint"], "qwen2");
  EXPECT_EQ(seen["layer_count"], 4);
  ASSERT_EQ(seen["tensors"].size(), 4u);
  size_t k = 0;
  for (const auto& [layer, values] : cv.directions) {
    const json& t = seen["tensors"][k++];
    EXPECT_EQ(t["name"], "direction." + std::to_string(layer));
    EXPECT_EQ(t["type"], "F32");
    EXPECT_EQ(t["shape"], json::array({16}));
    ASSERT_EQ(t["values"].size(), values.size());
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(t["values"][i].get<float>(), values[i]) << t["name"] << i;
  }
}

TEST(ControlVectorOracle, LatheReadsWhatGgufPyWrites) {
  TempDir dir("cvec_oracle");
  const auto path = dir / "py.gguf";
  const auto r = test::run_oracle("control_vector_oracle.py", {"write", path.string(), "12", "1", "4:0.25", "30"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const ControlVector cv = read_control_vector(path);
  EXPECT_EQ(cv.n_embd, 12u);
  EXPECT_EQ(cv.model_hint, "llama");
  ASSERT_EQ(cv.directions.size(), 3u);
  const std::vector<std::pair<uint32_t, double>> seeds{{1, 1.0}, {4, 0.25}, {30, 30.0}};
  for (const auto& [layer, seed] : seeds) {
    const auto& v = cv.directions.at(layer);
    for (size_t i = 0; i < 12; ++i)
      EXPECT_EQ(v[i], static_cast<float>(std::sin(seed * static_cast<double>(i + 1)))) << layer << " " << i;
  }
  // A gguf-py file with direction.0 is refused, as llama.cpp refuses it.
  const auto zero = dir / "zero.gguf";
  ASSERT_EQ(test::run_oracle("control_vector_oracle.py", {"write", zero.string(), "4", "0", "1"}).exit_code, 0);
  EXPECT_THROW(read_control_vector(zero), FormatError);
}

// Differences with a planted dominant direction plus noise; rows x cols, row-major.
std::vector<double> planted(size_t rows, size_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> u(cols);
  for (auto& x : u) x = normal(rng);
  std::vector<double> d(rows * cols);
  for (size_t r = 0; r < rows; ++r) {
    const double a = 3.0 + normal(rng);
    for (size_t c = 0; c < cols; ++c) d[r * cols + c] = a * u[c] + 0.7 * normal(rng);
  }
  return d;
}

void expect_matches_numpy(size_t rows, size_t cols, uint32_t seed) {
  const std::vector<double> d = planted(rows, cols, seed);
  std::vector<double> mean(cols, 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) mean[c] += d[r * cols + c] / static_cast<double>(rows);
  json rows_json = json::array();
  for (size_t r = 0; r < rows; ++r) rows_json.push_back(std::vector<double>(d.begin() + r * cols, d.begin() + (r + 1) * cols));
  TempDir dir("pca_oracle");
  test::write_file(dir / "diffs.json", json{{"rows", rows_json}}.dump());
  const auto r = test::run_oracle("control_vector_oracle.py", {"pca", (dir / "diffs.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json expected = json::parse(r.out);
  const auto ours = principal_direction(d, rows, cols, mean);
  ASSERT_EQ(ours.size(), cols);
  double dot = 0, norm = 0;
  for (size_t c = 0; c < cols; ++c) {
    EXPECT_NEAR(ours[c], expected["direction"][c].get<double>(), 1e-8) << rows << "x" << cols << " element " << c;
    dot += ours[c] * mean[c];
    norm += ours[c] * ours[c];
  }
  EXPECT_NEAR(norm, 1.0, 1e-12);
  EXPECT_GT(dot, 0.0) << "sign aligned with the mean difference";
}

TEST(ControlVectorOracle, PrincipalDirectionMatchesNumpySvd) {
  expect_matches_numpy(6, 40, 1);   // fewer pairs than n_embd: the Gram-matrix path
  expect_matches_numpy(1, 9, 2);    // a single pair: the normalized difference itself
  expect_matches_numpy(50, 7, 3);   // more pairs than n_embd: the D^T D path
  EXPECT_THROW(principal_direction(std::vector<double>(12, 0.0), 3, 4, std::vector<double>(4, 0.0)), InvalidArgumentError);
}

// Prompt files read by Python's json and csv (RFC 4180) modules.
TEST(PromptFileOracle, AgreesWithPythonJsonAndCsv) {
  TempDir dir("prompts");
  struct Case {
    std::string name, format, column, content;
  };
  const std::vector<Case> cases = {
      {"o.csv", "csv", "prompt",
       "id,prompt\r\n1,\"multi\r\nline, \"\"quoted\"\"\"\r\n2,plain text\r\n3,\"\"\r\n4,\"ü 中文 😀\"\r\n"},
      {"o2.csv", "csv", "zzz", "text,other\n\"a,b\",1\nc,2\n"},
      {"o.jsonl", "jsonl", "question",
       "{\"question\": \"q\\t1\", \"prompt\": \"p\"}\n\"bare \\\"string\\\"\"\n{\"instruction\": \"\\ud83d\\ude00\"}\n"},
      {"o.txt", "txt", "prompt", "a\r\n\r\n b \n\tc\t\nlast"},
  };
  for (const auto& c : cases) {
    test::write_file(dir / c.name, c.content);
    const auto r = test::run_oracle("control_vector_oracle.py", {"prompts", (dir / c.name).string(), c.format, c.column});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(read_prompts(dir / c.name, PromptFileOptions{.column = c.column}), nlohmann::json::parse(r.out).get<std::vector<std::string>>()) << c.name;
  }
}

}  // namespace
}  // namespace lathe::edit
