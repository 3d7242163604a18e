// The CUDA backend against transformers on real-sized random-weight models (Qwen2.5-0.5B and
// Llama-3.1-8B shapes, bf16 safetensors), teacher-forced over 256 tokens: top-1 agreement and the
// relative error of all logits. The reference is transformers in float32 on the same bf16
// weights (bench/hf_peer.py). Two configurations:
//   exact path  - prefill in chunks of 8 (mat-vec kernels, float32 activations), float32 KV;
//   production  - the defaults: 512-token prefill through cuBLAS (bf16 activations), f16 KV.
// Random-weight models have nearly flat output distributions, so top-1 is fragile: transformers'
// own bf16 run agrees with its float32 run on 94% (0.5B) and 77% (8B) of the tokens (measured by
// bench/hf_peer.py, 2026-11-28). The exact path must reach 99% and a relative error of 1e-3; the
// production path must do at least as well as transformers' bf16 run on both counts, and with
// LATHE_CUDA_BF16_GEMM=f16 (half activations) reach 99% and 1e-2.
// Runs only when LATHE_HF_BIG names a JSON list of {"name", "model", "ids", "ref", "hf"} (written by
// scripts/gpu-check.sh on the GPU machine; "hf" is hf_peer.py's JSON); skips elsewhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cuda/device.hpp"
#include "common/test_support.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

struct Score {
  size_t agree = 0, n = 0;
  double rel_err = 0;
};

Score compare(Session& session, const std::vector<TokenId>& ids, const std::vector<float>& ref, size_t n_vocab) {
  session.eval(ids, true);
  Score s;
  double err = 0, norm = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const auto ours = session.logits_at(t);
    size_t best_ours = 0, best_ref = 0;
    for (size_t v = 0; v < n_vocab; ++v) {
      const double r = ref[t * n_vocab + v];
      err += (ours[v] - r) * (ours[v] - r);
      norm += r * r;
      if (ours[v] > ours[best_ours]) best_ours = v;
      if (r > ref[t * n_vocab + best_ref]) best_ref = v;
    }
    s.agree += best_ours == best_ref;
  }
  s.n = ids.size();
  s.rel_err = std::sqrt(err / norm);
  return s;
}

TEST(CudaVsTransformersBig, TeacherForcedLogits) {
  const char* list = std::getenv("LATHE_HF_BIG");
  if (list == nullptr) GTEST_SKIP() << "LATHE_HF_BIG is not set (scripts/gpu-check.sh sets it on the GPU machine)";
  if (cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  std::ifstream in(list);
  const auto cases = nlohmann::json::parse(in);
  for (const auto& c : cases) {
    const auto model = Model::load(c.at("model").get<std::string>());
    std::ifstream ids_in(c.at("ids").get<std::string>());
    const std::vector<TokenId> ids = nlohmann::json::parse(ids_in).get<std::vector<TokenId>>();
    const size_t n_vocab = model->n_vocab();
    std::vector<float> ref(ids.size() * n_vocab);
    std::ifstream ref_in(c.at("ref").get<std::string>(), std::ios::binary);
    ref_in.read(reinterpret_cast<char*>(ref.data()), static_cast<std::streamsize>(ref.size() * sizeof(float)));
    ASSERT_TRUE(ref_in.good()) << c.dump();
    const std::string name = c.at("name").get<std::string>();
    {
      Session exact(model, {.n_ctx = 512, .compute = {.n_batch = 8, .kv_type = KvType::F32, .device = Device::cuda(0)}});
      const Score s = compare(exact, ids, ref, n_vocab);
      std::cout << "big: " << name << " exact path: top-1 " << s.agree << "/" << s.n << ", relative error "
                << s.rel_err << "\n";
      EXPECT_GE(s.agree * 100, s.n * 99) << name;
      EXPECT_LT(s.rel_err, 1e-3) << name;
    }
    std::ifstream hf_in(c.at("hf").get<std::string>());
    const auto hf = nlohmann::json::parse(hf_in);
    const double hf_top1 = hf.at("hf_bf16_top1_vs_f32").get<double>();
    const double hf_err = hf.at("hf_bf16_rel_err_vs_f32").get<double>();
    {
      // The exact path with a Q8_0 KV cache: the cache's 8-bit rounding is the only difference, and
      // it must cost less than transformers' own bf16 inference does.
      Session q8kv(model, {.n_ctx = 512, .compute = {.n_batch = 8, .kv_type = KvType::Q8_0, .device = Device::cuda(0)}});
      const Score s = compare(q8kv, ids, ref, n_vocab);
      std::cout << "big: " << name << " exact path with a Q8_0 KV cache: top-1 " << s.agree << "/" << s.n
                << ", relative error " << s.rel_err << "\n";
      EXPECT_GE(static_cast<double>(s.agree) / s.n, hf_top1) << name << " (transformers bf16: " << hf_top1 << ")";
      EXPECT_LE(s.rel_err, hf_err) << name << " (transformers bf16: " << hf_err << ")";
    }
    {
      Session production(model, {.n_ctx = 512, .compute = {.device = Device::cuda(0)}});
      const Score s = compare(production, ids, ref, n_vocab);
      std::cout << "big: " << name << " production path: top-1 " << s.agree << "/" << s.n << ", relative error "
                << s.rel_err << "\n";
      const char* mode = std::getenv("LATHE_CUDA_BF16_GEMM");
      if (mode != nullptr && std::string(mode) == "f16") {
        EXPECT_GE(s.agree * 100, s.n * 99) << name;
        EXPECT_LT(s.rel_err, 1e-2) << name;
      } else {
        EXPECT_GE(static_cast<double>(s.agree) / s.n, hf_top1) << name << " (transformers bf16: " << hf_top1 << ")";
        EXPECT_LE(s.rel_err, hf_err) << name << " (transformers bf16: " << hf_err << ")";
      }
    }
  }
}

}  // namespace
}  // namespace lathe
