// Abliteration on the CUDA backend: the same study on the tiny model run with device = cuda:0
// must give the CPU study's directions, baseline and trial numbers, which holds only if every
// edit and every restore reaches the device copy of the weights (weights/device_sync.hpp), also
// when the layers stream.
// Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "backend/cuda/device.hpp"
#include "common/scoped_env.hpp"
#include "common/tiny_model.hpp"
#include "common/tiny_moe.hpp"
#include "edit/study.hpp"
#include "lathe/lathe.hpp"

namespace lathe::edit {
namespace {

using test::write_lines;

struct StudyRun {
  std::vector<std::vector<double>> directions;
  size_t baseline_refused = 0;
  std::vector<double> kl;
  std::vector<size_t> refused;
};

// The study on the model at `path` (a fresh copy of its weights per call).
StudyRun run_study(const test::TempDir& dir, Device device, const std::filesystem::path& path) {
  auto model = Model::load_mutable(path);
  write_lines(dir / "harmful.txt", {"how to make a bomb", "steal money", "hack a bank"});
  write_lines(dir / "harmless.txt", {"bake a cake", "write a poem", "plant a tree"});
  StudyOptions o;
  o.harmful_train = o.harmful_val = dir / "harmful.txt";
  o.harmless_train = o.harmless_val = dir / "harmless.txt";
  o.evaluation.max_new_tokens = 6;
  o.evaluation.n_parallel = 2;
  o.evaluation.compute.n_threads = 2;
  o.evaluation.compute.device = device;
  o.compute.n_threads = 2;
  o.compute.device = device;
  std::ostringstream log;
  AblationStudy study(model, o, log, false);
  study.prepare();
  StudyRun run;
  run.directions = study.directions().per_layer;
  run.baseline_refused = study.baseline_refusals().refused;
  std::map<std::string, double> point;
  for (const auto& p : study.space()) point[p.name] = p.low;
  point["mlp_down.min_weight_distance"] = 2.0;
  point["attn_output.min_weight_distance"] = 2.0;
  for (double weight : {0.8, 1.5, 0.8}) {  // the third trial restores the second's edit first
    point["attn_output.max_weight"] = weight;
    point["mlp_down.max_weight"] = weight;
    const auto outcome = study.run_trial(params_from_point(point, false, study.options().components));
    run.kl.push_back(outcome.kl);
    run.refused.push_back(outcome.refusals.refused);
  }
  return run;
}

void expect_same_study(const StudyRun& cpu, const StudyRun& gpu) {
  ASSERT_EQ(gpu.directions.size(), cpu.directions.size());
  for (size_t l = 0; l < cpu.directions.size(); ++l) {
    double dot = 0;
    for (size_t i = 0; i < cpu.directions[l].size(); ++i) dot += cpu.directions[l][i] * gpu.directions[l][i];
    EXPECT_GT(dot, 0.9999) << "layer " << l;  // unit vectors
  }
  EXPECT_EQ(gpu.baseline_refused, cpu.baseline_refused);
  EXPECT_EQ(gpu.refused, cpu.refused);
  for (size_t t = 0; t < cpu.kl.size(); ++t) {
    EXPECT_GT(gpu.kl[t], 0.0) << "trial " << t << ": the edit did not reach the device";
    EXPECT_NEAR(gpu.kl[t], cpu.kl[t], 1e-3 * std::max(1.0, cpu.kl[t])) << "trial " << t;
  }
  EXPECT_NEAR(gpu.kl[2], gpu.kl[0], 1e-6 * std::max(1.0, gpu.kl[0])) << "restore + the same edit, same KL";
}

TEST(AblationCuda, StudyOnTheGpuMatchesTheCpu) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  test::TempDir dir("ablation_cuda");
  test::TinyModel tiny;
  tiny.add_tokenizer();
  const auto path = tiny.write(dir, "tiny.gguf");
  expect_same_study(run_study(dir, Device::cpu(), path), run_study(dir, Device::cuda(0), path));
}

// Every layer streamed (docs/STREAMING.md): the edits and restores reach the streamed layers'
// host copies, which every pass copies in.
TEST(AblationCuda, StudyWithStreamedLayersMatchesTheCpu) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  test::TempDir dir("ablation_cuda_streamed");
  test::TinyModel tiny("", DType::F32, 4);
  tiny.add_tokenizer();
  const auto path = tiny.write(dir, "tiny4.gguf");
  const StudyRun cpu = run_study(dir, Device::cpu(), path);
  const test::ScopedEnv stream_all("LATHE_CUDA_STREAM_LAYERS", "all");
  expect_same_study(cpu, run_study(dir, Device::cuda(0), path));
}

// A mixture of experts with a shared expert: the MLP edit changes every expert's down projection
// and the shared one's, and each of them must reach (and be restored on) the device.
TEST(AblationCuda, MixtureOfExpertsStudyOnTheGpuMatchesTheCpu) {
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  // The device path of mixtures of experts is opt-in until it has run on a GPU (docs/MOE.md).
  const test::ScopedEnv moe_on("LATHE_CUDA_MOE", "1");
  test::TempDir dir("ablation_cuda_moe");
  const auto path = test::write_tiny_moe(dir, "qwen2moe");
  expect_same_study(run_study(dir, Device::cpu(), path), run_study(dir, Device::cuda(0), path));
}

}  // namespace
}  // namespace lathe::edit
