// lathe's Hugging Face path against transformers (the reference implementation) on tiny random
// models of every supported architecture: llama, llama with llama3 rope scaling, qwen2 (q/k/v
// biases, tied embeddings), qwen3 (per-head q/k norms, explicit head_dim), phi3 (fused qkv and
// gate_up), and the mixtures of experts mixtral, qwen2moe (shared expert), qwen3moe and olmoe
// (whole-projection q/k norms), one tensor per expert as transformers saves them. float32 weights
// and an F32 KV cache: logits must agree to float rounding. The CUDA backend refuses the mixtures
// of experts unless LATHE_CUDA_MOE=1 turns on their device path (not yet run on a GPU): the cuda
// cases check the refusal, or with the switch the logits (scripts/gpu-check.sh sets it).
// Needs torch + transformers in the oracle Python (the GPU machine has them, scripts/gpu-check.sh
// runs this); skips elsewhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cuda/device.hpp"
#include "common/test_support.hpp"
#include "common/torch_peer.hpp"
#include "lathe/error.hpp"
#include "backend/cuda/switches.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

// (architecture, device): the CPU backend everywhere, the CUDA backend where a GPU exists.
class VsTransformers : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(VsTransformers, LogitsMatch) {
  const std::string arch = std::get<0>(GetParam());
  // "cuda-streamed": every layer streams through two device slots (docs/STREAMING.md).
  const bool streamed = std::get<1>(GetParam()) == "cuda-streamed";
  const Device device = streamed ? Device::cuda(0) : Device::parse(std::get<1>(GetParam()));
  if (device.is_cuda() && cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  if (streamed) setenv("LATHE_CUDA_STREAM_LAYERS", "all", 1);
  struct StreamOff {
    bool on;
    ~StreamOff() {
      if (on) unsetenv("LATHE_CUDA_STREAM_LAYERS");
    }
  } stream_off{streamed};
  test::TempDir dir("hf_tiny_" + arch);
  std::vector<TokenId> ids;
  for (int i = 0; i < 80; ++i) ids.push_back((i * 7919 + 13) % 32000);
  test::write_file(dir / "ids.json", nlohmann::json(ids).dump());
  // transformers from $LATHE_TRANSFORMERS_PYTHON or .venv-peft where there is one, else the
  // oracle Python (the GPU machine's has torch).
  std::string python = test::torch_peer_python("LATHE_TRANSFORMERS_PYTHON");
  if (python.empty()) python = test::oracle_python();
  const auto r = test::run_command({python, (test::source_dir() / "tests" / "oracle" / "hf_tiny_model.py").string(),
                                    "--arch", arch, "--out", (dir / "model").string(), "--tokenizer-dir",
                                    (test::shared_data_dir() / "tokenizers" / "llama2").string(), "--tokens",
                                    (dir / "ids.json").string(), "--logits-out", (dir / "ref.f32").string()},
                                   std::chrono::seconds{540});
  if (r.exit_code == 3) GTEST_SKIP() << "torch/transformers not installed: " << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const auto model = Model::load(dir / "model");
  EXPECT_EQ(model->summary().architecture, arch == "llama3" || arch == "mixtral" ? "llama" : arch);
  const bool moe = arch == "mixtral" || arch.ends_with("moe");
  const SessionOptions options{.n_ctx = 128, .compute = {.n_threads = 2, .kv_type = KvType::F32, .device = device}};
  if (moe && device.is_cuda() && !cuda::turned_on_by_env("LATHE_CUDA_MOE")) {
    test::expect_error<UnsupportedError>([&] { Session(model, options).eval(ids, true); },
                                         {"CUDA backend", "mixture-of-experts", "LATHE_CUDA_MOE=1"});
    return;
  }
  Session session(model, options);
  session.eval(ids, true);
  const size_t n_vocab = model->n_vocab();
  std::vector<float> ref(ids.size() * n_vocab);
  std::ifstream in(dir / "ref.f32", std::ios::binary);
  in.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
  ASSERT_TRUE(in.good());
  double max_diff = 0, max_ref = 0;
  size_t agree = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto ours = session.logits_at(t);
    size_t best_ours = 0, best_ref = 0;
    for (size_t v = 0; v < n_vocab; ++v) {
      const float rv = ref[t * n_vocab + v];
      max_diff = std::max(max_diff, double(std::abs(ours[v] - rv)));
      max_ref = std::max(max_ref, double(std::abs(rv)));
      if (ours[v] > ours[best_ours]) best_ours = v;
      if (rv > ref[t * n_vocab + best_ref]) best_ref = v;
    }
    agree += best_ours == best_ref;
  }
  if (streamed) {
    EXPECT_EQ(session.memory_use().streamed_layers, model->summary().n_layer);
  }
  std::cout << arch << " (" << device.name() << (streamed ? ", streamed" : "") << "): max |diff| " << max_diff << " (max |logit| " << max_ref << "), top-1 " << agree << "/"
            << ids.size() << "\n";
  EXPECT_LE(max_diff, 1e-3 * std::max(1.0, max_ref));
  EXPECT_EQ(agree, ids.size());
}

INSTANTIATE_TEST_SUITE_P(Archs, VsTransformers,
                         ::testing::Combine(::testing::Values("llama", "llama3", "qwen2", "qwen3", "phi3", "mixtral",
                                                              "qwen2moe", "qwen3moe", "olmoe"),
                                            ::testing::Values("cpu", "cuda", "cuda-streamed")),
                         [](const ::testing::TestParamInfo<VsTransformers::ParamType>& info) {
                           std::string name = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;  // e.g. qwen2_cuda_streamed (a --gtest_filter picks a device)
                         });

}  // namespace
}  // namespace lathe
