// The SAE gate's device path (SaeGate::prepare_device / apply_on_device, the kernels of
// backend/cuda/sae_gate.cu) against its CPU path (SaeGate::apply), for every architecture and
// normalization lathe reads, both edit kinds and both clamp modes. Skips without a device
// (scripts/gpu-check.sh runs it).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/memory.hpp"
#include "common/require_gpu.hpp"
#include "edit/sae.hpp"
#include "sae_test_support.hpp"

namespace lathe::edit {
namespace {

struct Case {
  std::string architecture, normalization;
  int64_t d_in, d_sae;
  std::string features;
  bool clamp_everywhere;
};

std::vector<float> random_rows(int64_t n_rows, int64_t d_in, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> rows(static_cast<size_t>(n_rows * d_in));
  for (auto& v : rows) v = normal(rng);
  return rows;
}

// Runs the gate's device path over `rows` (uploaded, gated, downloaded).
std::vector<float> gate_on_device(SaeGate& gate, const std::vector<float>& rows, int64_t n_rows, int64_t d_in) {
  EXPECT_TRUE(gate.prepare_device(0, n_rows));
  cuda::DeviceBuffer dev(rows.size() * sizeof(float), "test rows");
  cuda::check(cudaMemcpy(dev.data(), rows.data(), rows.size() * sizeof(float), cudaMemcpyHostToDevice), "upload");
  gate.apply_on_device(dev.as<float>(), n_rows, d_in, nullptr);
  std::vector<float> out(rows.size());
  cuda::check(cudaDeviceSynchronize(), "the SAE gate kernels");
  cuda::check(cudaMemcpy(out.data(), dev.data(), rows.size() * sizeof(float), cudaMemcpyDeviceToHost), "download");
  return out;
}

TEST(SaeGateCuda, DeviceGateMatchesTheCpuGate) {
  LATHE_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {"standard", "none", 64, 256, "3:2.5,17,40*0.5,200:-1", false},
      {"standard", "constant_norm_rescale", 96, 300, "0:4,1*2,299", true},
      {"jumprelu", "layer_norm", 64, 256, "5:3,6*3,7,8:-2", false},
      {"jumprelu", "none", 576, 2048, "10:8,11*0.25,2047", true},
      {"topk", "none", 64, 512, "1:5,2*2,3,511:1", false},
      {"topk", "layer_norm", 128, 1024, "0:3,100*4,1023", true},
  };
  test::TempDir dir("sae_cuda");
  int index = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.architecture + " " + c.normalization + " " + c.features);
    test::TestSae spec;
    spec.architecture = c.architecture;
    spec.d_in = c.d_in;
    spec.d_sae = c.d_sae;
    spec.k = c.d_sae / 8;
    spec.enc_scale = 3.0f;  // enough active features for the edits to matter
    spec.cfg_extra = {{"normalize_activations", c.normalization}};
    const auto path = dir / ("sae" + std::to_string(index++));
    test::write_test_sae(path, spec);
    auto sae = std::make_shared<const Sae>(load_sae(path));
    // 70 rows: more than topk's 64-row chunk on the device.
    for (int64_t n_rows : {1, 7, 70}) {
      const auto rows = random_rows(n_rows, c.d_in, static_cast<uint32_t>(n_rows));
      SaeGate cpu(sae, parse_sae_features(c.features, "test"), {.clamp_everywhere = c.clamp_everywhere});
      SaeGate gpu(sae, parse_sae_features(c.features, "test"), {.clamp_everywhere = c.clamp_everywhere});
      auto expected = rows;
      cpu.apply(expected.data(), n_rows, c.d_in);
      const auto got = gate_on_device(gpu, rows, n_rows, c.d_in);
      double err = 0, norm = 0, change = 0;
      for (size_t i = 0; i < rows.size(); ++i) {
        err += (double(got[i]) - expected[i]) * (double(got[i]) - expected[i]);
        norm += double(expected[i]) * expected[i];
        change += (double(expected[i]) - rows[i]) * (double(expected[i]) - rows[i]);
      }
      EXPECT_LT(err / norm, 1e-10) << n_rows << " rows";
      // (With 70 rows some edited feature is active somewhere, whatever the architecture.)
      if (n_rows == 70) {
        EXPECT_GT(change / norm, 1e-4) << "the edits changed too little to test anything";
      }
      EXPECT_EQ(gpu.rows_changed_on_device(), cpu.rows_changed_on_host()) << n_rows << " rows";
      EXPECT_EQ(gpu.rows_changed_on_host(), 0u);
      // Rows the CPU gate left alone are left bit for bit on the device too.
      for (int64_t r = 0; r < n_rows; ++r) {
        const size_t at = static_cast<size_t>(r * c.d_in);
        if (std::equal(expected.begin() + at, expected.begin() + at + c.d_in, rows.begin() + at)) {
          EXPECT_TRUE(std::equal(got.begin() + at, got.begin() + at + c.d_in, rows.begin() + at)) << "row " << r;
        }
      }
    }
  }
}

// Edits that leave every feature as it is (scale 1) change nothing, bit for bit, and count no row.
TEST(SaeGateCuda, IdentityEditsLeaveRowsBitForBit) {
  LATHE_REQUIRE_GPU();
  test::TempDir dir("sae_cuda_same");
  for (std::string arch : {"standard", "jumprelu", "topk"}) {
    test::TestSae spec;
    spec.architecture = arch;
    spec.d_in = 64;
    spec.d_sae = 128;
    spec.k = 16;
    test::write_test_sae(dir / arch, spec);
    auto sae = std::make_shared<const Sae>(load_sae(dir / arch));
    SaeGate gate(sae, parse_sae_features("0*1,1*1,2*1,127*1", "test"), {});
    const auto rows = random_rows(9, 64, 3);
    EXPECT_EQ(gate_on_device(gate, rows, 9, 64), rows) << arch;
    EXPECT_EQ(gate.rows_changed(), 0u) << arch;
  }
}

}  // namespace
}  // namespace lathe::edit
