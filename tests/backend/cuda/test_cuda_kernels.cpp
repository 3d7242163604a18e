// Every CUDA kernel against the CPU reference on random inputs of awkward sizes (odd row counts,
// tokens that are not a power of two, head sizes 48/64/96/128, grouped-query ratios 1/3/4/7),
// like llama.cpp's test-backend-ops. Bounds are on the normalized mean squared error:
//   exact ops (gathers, norms, RoPE, attention in float32):   1e-9
//   mat-vec on float activations:                             1e-9
//   mat-vec on 8-bit activations (Q8_0/Q4_0/Q4_1, as ggml):   2e-4
//   cuBLAS products on half / bfloat16 activations:            2e-5 / 2e-4
// Skips without a CUDA device; scripts/gpu-check.sh runs it on the GPU machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "backend/cpu/ops.hpp"
#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "common/test_support.hpp"
#include "cuda_test_support.hpp"
#include "lathe/error.hpp"
#include "lathe/sampling.hpp"

namespace lathe::cuda {
namespace {

using test::nmse;
using test::random_floats;
using test::to_device;
using test::to_host;

const DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                           DType::Q4_K, DType::Q6_K, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q5_K};

// Types without a native kernel were rounded to F16 at upload: their weights differ from the
// reference by half's rounding (2^-11 relative).
double matvec_bound(DType stored) {
  if (matvec_reads_q8(device_type(stored))) return 2e-4;
  return is_native_device_type(stored) ? 1e-9 : 1e-6;
}

// y[t][r] = sum_c W[r][c] x[t][c] in double.
std::vector<double> reference_product(const std::vector<double>& w, int64_t rows, int64_t cols,
                                      const std::vector<float>& x, int n) {
  std::vector<double> y(static_cast<size_t>(n * rows));
  for (int t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[t * cols + c];
      y[t * rows + r] = s;
    }
  return y;
}

// Runs the mat-vec (one target) on n tokens, quantizing x for the 8-bit types as the forward pass
// does; with `norm`, RMSNorm fused as the forward pass fuses it.
std::vector<float> run_matvec(const DeviceMatrix& m, const std::vector<float>& x, int n,
                              const std::vector<float>* norm = nullptr, Epilogue ep = Epilogue::Store,
                              const DeviceMatrix* up = nullptr, MatvecLayout layout = {}) {
  auto dx = to_device(x);
  DeviceBuffer dn = norm != nullptr ? to_device(*norm) : DeviceBuffer();
  DeviceBuffer dy(sizeof(float) * n * m.rows, "y"), q8(n * m.cols, "q8"), ds(sizeof(float) * n * m.cols / 16, "ds");
  MatvecInput in;
  in.x = dx.as<float>();
  in.ldx = m.cols;
  in.norm = dn.as<float>();
  in.eps = 1e-5f;
  if (matvec_reads_q8(m.type)) {
    quantize_q8(in.x, m.cols, n, static_cast<int>(m.cols), q8.as<int8_t>(), ds.as<float>(), nullptr, in.norm, in.eps);
    in.q8 = q8.as<int8_t>();
    in.ds = ds.as<float>();
    in.ld_q8 = m.cols;
    in.ld_ds = m.cols / 16;
  }
  MatvecTarget target{m, up != nullptr ? *up : DeviceMatrix{}, dy.as<float>(), m.rows};
  matvec(&target, 1, in, n, ep, nullptr, layout);
  return to_host<float>(dy, static_cast<size_t>(n * m.rows));
}

// x / sqrt(mean(x^2) + eps) * norm per token row, in double (then float, as the product's input).
std::vector<float> reference_rms_norm(const std::vector<float>& x, const std::vector<float>& norm, int n, float eps) {
  const size_t cols = norm.size();
  std::vector<float> out(x.size());
  for (int t = 0; t < n; ++t) {
    double ss = 0;
    for (size_t c = 0; c < cols; ++c) ss += double(x[t * cols + c]) * x[t * cols + c];
    const double inv = 1.0 / std::sqrt(ss / double(cols) + eps);
    for (size_t c = 0; c < cols; ++c) out[t * cols + c] = static_cast<float>(x[t * cols + c] * inv * norm[c]);
  }
  return out;
}

TEST(CudaKernels, MatvecEveryWeightTypeAndTokenCount) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(11);
  const int64_t rows = 67, cols = 512;
  for (DType type : kAllTypes) {
    const auto bytes = test::random_matrix(type, rows, cols, rng);
    const auto m = test::upload_matrix(type, bytes, rows, cols);
    const auto w = test::reference_matrix(type, bytes, rows, cols);
    for (int n : {1, 3, 8}) {
      const auto x = random_floats(static_cast<size_t>(n * cols), rng);
      const auto ref = reference_product(w, rows, cols, x, n);
      for (int rows_per_group : {0, 2, 4}) {  // 67 rows: the last group of 2 or 4 is partial
        const double e = nmse(run_matvec(m.view, x, n, nullptr, Epilogue::Store, nullptr, {0, rows_per_group}), ref);
        EXPECT_LT(e, matvec_bound(type)) << dtype_name(type) << " n=" << n << " rows/group=" << rows_per_group;
      }
    }
  }
}

// RMSNorm fused into the mat-vec (float types) or into the 8-bit rounding (Q8_0/Q4_0/Q4_1) gives
// W rmsnorm(x), with groups of 2 or 4 rows shared among 1, 2 or 4 warps (whose partial sums of
// squares combine).
TEST(CudaKernels, MatvecWithFusedRmsNormMatchesNormThenProduct) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(21);
  for (int64_t cols : {512, 2560}) {
    const int64_t rows = 35;
    for (DType type : kAllTypes) {
      const auto bytes = test::random_matrix(type, rows, cols, rng);
      const auto m = test::upload_matrix(type, bytes, rows, cols);
      const auto w = test::reference_matrix(type, bytes, rows, cols);
      for (int n : {1, 5}) {
        auto x = random_floats(static_cast<size_t>(n * cols), rng);
        for (float& v : x) v *= 7.0f;  // a residual stream far from unit RMS
        const auto g = random_floats(static_cast<size_t>(cols), rng);
        const auto ref = reference_product(w, rows, cols, reference_rms_norm(x, g, n, 1e-5f), n);
        for (int wpg : {0, 1, 2, 4})
          for (int rpg : {2, 4}) {
            const double e = nmse(run_matvec(m.view, x, n, &g, Epilogue::Store, nullptr, {wpg, rpg}), ref);
            EXPECT_LT(e, matvec_bound(type))
                << dtype_name(type) << " cols=" << cols << " n=" << n << " warps/group=" << wpg
                << " rows/group=" << rpg;
          }
      }
    }
  }
  // SwiGLU takes the scaled sums: silu(s Gx) * (s Ux); 49 rows: the last group is partial.
  const int64_t rows = 49, cols = 1024;
  const int n = 3;
  const auto gate_bytes = test::random_matrix(DType::BF16, rows, cols, rng);
  const auto up_bytes = test::random_matrix(DType::BF16, rows, cols, rng);
  const auto gate = test::upload_matrix(DType::BF16, gate_bytes, rows, cols);
  const auto up = test::upload_matrix(DType::BF16, up_bytes, rows, cols);
  const auto x = random_floats(static_cast<size_t>(n * cols), rng), g = random_floats(static_cast<size_t>(cols), rng);
  const auto xn = reference_rms_norm(x, g, n, 1e-5f);
  const auto a = reference_product(test::reference_matrix(DType::BF16, gate_bytes, rows, cols), rows, cols, xn, n);
  const auto b = reference_product(test::reference_matrix(DType::BF16, up_bytes, rows, cols), rows, cols, xn, n);
  std::vector<double> h(a.size());
  for (size_t i = 0; i < a.size(); ++i) h[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
  for (int rpg : {2, 4})
    EXPECT_LT(nmse(run_matvec(gate.view, x, n, &g, Epilogue::SwiGLU, &up.view, {0, rpg}), h), 1e-9)
        << "rows/group=" << rpg;
}

TEST(CudaKernels, MatvecAddSwigluAndThreeTargetsInOneLaunch) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(12);
  const int64_t cols = 256;
  for (DType type : {DType::Q4_0, DType::BF16, DType::Q6_K}) {
    // Three targets of different heights writing interleaved columns of one buffer (Q | K | V).
    const int64_t heights[3] = {64, 24, 24}, width = 112;
    std::vector<test::UploadedMatrix> mats;
    std::vector<std::vector<double>> refs;
    for (int64_t h : heights) {
      const auto bytes = test::random_matrix(type, h, cols, rng);
      mats.push_back(test::upload_matrix(type, bytes, h, cols));
      refs.push_back(test::reference_matrix(type, bytes, h, cols));
    }
    const int n = 5;
    const auto x = random_floats(static_cast<size_t>(n * cols), rng);
    auto dx = to_device(x);
    DeviceBuffer q8(n * cols, "q8"), ds(sizeof(float) * n * cols / 16, "ds");
    MatvecInput in{.x = dx.as<float>(), .ldx = cols};
    if (matvec_reads_q8(mats[0].view.type)) {
      quantize_q8(in.x, cols, n, cols, q8.as<int8_t>(), ds.as<float>(), nullptr);
      in.q8 = q8.as<int8_t>();
      in.ds = ds.as<float>();
      in.ld_q8 = cols;
      in.ld_ds = cols / 16;
    }
    const auto start = random_floats(static_cast<size_t>(n * width), rng);
    std::vector<double> ref(start.begin(), start.end());
    int64_t offset = 0;
    for (int i = 0; i < 3; ++i) {
      const auto part = reference_product(refs[i], heights[i], cols, x, n);
      for (int t = 0; t < n; ++t)
        for (int64_t r = 0; r < heights[i]; ++r) ref[t * width + offset + r] += part[t * heights[i] + r];
      offset += heights[i];
    }
    for (int rpg : {2, 4}) {
      auto dy = to_device(start);
      MatvecTarget targets[3] = {{mats[0].view, {}, dy.as<float>(), width},
                                 {mats[1].view, {}, dy.as<float>() + 64, width},
                                 {mats[2].view, {}, dy.as<float>() + 88, width}};
      matvec(targets, 3, in, n, Epilogue::Add, nullptr, {0, rpg});
      EXPECT_LT(nmse(to_host<float>(dy, ref.size()), ref), matvec_bound(type))
          << dtype_name(type) << " add, rows/group=" << rpg;
    }

    // SwiGLU: silu(gate x) * (up x) with gate = the first matrix, up = another of its shape.
    const auto up_bytes = test::random_matrix(type, 64, cols, rng);
    const auto up = test::upload_matrix(type, up_bytes, 64, cols);
    const auto g = reference_product(refs[0], 64, cols, x, n);
    const auto u = reference_product(test::reference_matrix(type, up_bytes, 64, cols), 64, cols, x, n);
    std::vector<double> h(g.size());
    for (size_t i = 0; i < g.size(); ++i) h[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    for (int rpg : {2, 4}) {
      DeviceBuffer dh(sizeof(float) * n * 64, "h");
      MatvecTarget pair{mats[0].view, up.view, dh.as<float>(), 64};
      matvec(&pair, 1, in, n, Epilogue::SwiGLU, nullptr, {0, rpg});
      EXPECT_LT(nmse(to_host<float>(dh, h.size()), h), 4 * matvec_bound(type))
          << dtype_name(type) << " swiglu, rows/group=" << rpg;
    }
  }
}

// Loads ahead (Q4_0/Q4_1 at one token: two steps' weights loaded before either is multiplied).
// Rows of 80 and 130 steps leave each lane 1 to 5 steps under 1, 2 or 4 warps per group, so that
// pairs end on a single step; the products and SwiGLU match the reference, and equal the path that
// multiplies each step as it loads it bit for bit, since each lane adds its steps in the same order.
TEST(CudaKernels, MatvecQ4LoadsAheadMatchesTheReferenceAndTheOtherPath) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(31);
  const int64_t rows = 37;
  for (DType type : {DType::Q4_0, DType::Q4_1})
    for (int64_t cols : {int64_t{2560}, int64_t{4160}}) {
      const auto gate_bytes = test::random_matrix(type, rows, cols, rng);
      const auto up_bytes = test::random_matrix(type, rows, cols, rng);
      const auto gate = test::upload_matrix(type, gate_bytes, rows, cols);
      const auto up = test::upload_matrix(type, up_bytes, rows, cols);
      const auto x = random_floats(static_cast<size_t>(cols), rng);
      const auto g = reference_product(test::reference_matrix(type, gate_bytes, rows, cols), rows, cols, x, 1);
      const auto u = reference_product(test::reference_matrix(type, up_bytes, rows, cols), rows, cols, x, 1);
      std::vector<double> h(g.size());
      for (size_t i = 0; i < g.size(); ++i) h[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      for (int wpg : {1, 2, 4})
        for (int rpg : {2, 4}) {
          const MatvecLayout ahead{wpg, rpg, 1}, plain{wpg, rpg, -1};
          const std::string where = std::string(dtype_name(type)) + " cols=" + std::to_string(cols) +
                                    " warps/group=" + std::to_string(wpg) + " rows/group=" + std::to_string(rpg);
          const auto y = run_matvec(gate.view, x, 1, nullptr, Epilogue::Store, nullptr, ahead);
          EXPECT_LT(nmse(y, g), matvec_bound(type)) << where;
          EXPECT_EQ(y, run_matvec(gate.view, x, 1, nullptr, Epilogue::Store, nullptr, plain)) << where;
          const auto y_swiglu = run_matvec(gate.view, x, 1, nullptr, Epilogue::SwiGLU, &up.view, ahead);
          EXPECT_LT(nmse(y_swiglu, h), 4 * matvec_bound(type)) << where << " swiglu";
          EXPECT_EQ(y_swiglu, run_matvec(gate.view, x, 1, nullptr, Epilogue::SwiGLU, &up.view, plain))
              << where << " swiglu";
        }
    }
}

TEST(CudaKernels, GemmEveryWeightTypeWithAccumulation) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(13);
  const int64_t rows = 300, cols = 768;
  const int n = 19;
  cudaStream_t stream = nullptr;
  Blas blas(stream);
  DeviceBuffer act16(2 * n * cols, "act16"), w16(2 * 128 * cols, "w16");  // 128-row chunks: several chunks
  GemmScratch scratch{act16.data(), static_cast<size_t>(n * cols), w16.data(), static_cast<size_t>(128 * cols)};
  for (DType type : kAllTypes) {
    const auto bytes = test::random_matrix(type, rows, cols, rng);
    const auto m = test::upload_matrix(type, bytes, rows, cols);
    const auto x = random_floats(static_cast<size_t>(n * cols), rng);
    auto dx = to_device(x);
    const auto start = random_floats(static_cast<size_t>(n * rows), rng);
    auto dy = to_device(start);
    gemm(blas, m.view, dx.as<float>(), cols, n, dy.as<float>(), rows, 1.0f, scratch, stream);
    auto ref = reference_product(test::reference_matrix(type, bytes, rows, cols), rows, cols, x, n);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] += start[i];
    const double bound = m.view.type == DType::F32 ? 1e-9 : m.view.type == DType::BF16 ? 2e-4 : 2e-5;
    EXPECT_LT(nmse(to_host<float>(dy, ref.size()), ref), bound) << dtype_name(type);
  }
}

// Q, K and V (gate and up) share one 16-bit conversion of their input: two products from one
// gemm_input equal two separate ones, and an input prepared for another weight type is refused.
TEST(CudaKernels, GemmInputIsSharedAndCheckedAgainstTheMatrix) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(14);
  const int64_t rows = 96, cols = 256;
  const int n = 12;
  cudaStream_t stream = nullptr;
  Blas blas(stream);
  DeviceBuffer act16(2 * n * cols, "act16"), w16(2 * rows * cols, "w16");
  GemmScratch scratch{act16.data(), static_cast<size_t>(n * cols), w16.data(), static_cast<size_t>(rows * cols)};
  const auto x = random_floats(static_cast<size_t>(n * cols), rng);
  auto dx = to_device(x);
  for (DType type : {DType::BF16, DType::Q8_0}) {
    const auto first_bytes = test::random_matrix(type, rows, cols, rng);
    const auto second_bytes = test::random_matrix(type, rows, cols, rng);
    const auto first = test::upload_matrix(type, first_bytes, rows, cols);
    const auto second = test::upload_matrix(type, second_bytes, rows, cols);
    DeviceBuffer shared_y(sizeof(float) * 2 * n * rows, "shared"), alone_y(sizeof(float) * 2 * n * rows, "alone");
    GemmInput in = gemm_input(first.view, dx.as<float>(), cols, n, scratch, stream);
    gemm(blas, first.view, in, shared_y.as<float>(), 2 * rows, 0.0f, scratch, stream);
    in = gemm_input(second.view, dx.as<float>(), cols, n, scratch, stream, &in);  // reused: no conversion
    gemm(blas, second.view, in, shared_y.as<float>() + rows, 2 * rows, 0.0f, scratch, stream);
    gemm(blas, first.view, dx.as<float>(), cols, n, alone_y.as<float>(), 2 * rows, 0.0f, scratch, stream);
    gemm(blas, second.view, dx.as<float>(), cols, n, alone_y.as<float>() + rows, 2 * rows, 0.0f, scratch, stream);
    const auto shared = to_host<float>(shared_y, static_cast<size_t>(2 * n * rows));
    const auto alone = to_host<float>(alone_y, static_cast<size_t>(2 * n * rows));
    // Same products up to cuBLAS's choice of kernel; a stale or missing conversion is far off.
    EXPECT_LT(nmse(shared, std::vector<double>(alone.begin(), alone.end())), 1e-10) << dtype_name(type);
  }
  const auto f32 = test::upload_matrix(DType::F32, test::random_matrix(DType::F32, rows, cols, rng), rows, cols);
  const auto bf16 = test::upload_matrix(DType::BF16, test::random_matrix(DType::BF16, rows, cols, rng), rows, cols);
  DeviceBuffer y(sizeof(float) * n * rows, "y");
  const GemmInput for_f32 = gemm_input(f32.view, dx.as<float>(), cols, n, scratch, stream);
  EXPECT_THROW(gemm(blas, bf16.view, for_f32, y.as<float>(), rows, 0.0f, scratch, stream), InternalError);
  // Float32 weights read float32 rows: an input written only in 16 bits cannot serve them.
  EXPECT_THROW(gemm(blas, f32.view, gemm_input_written(n, cols, Dtype16::None), y.as<float>(), rows, 0.0f, scratch,
                    stream),
               InternalError);

  // An input a kernel wrote in 16 bits (here the conversion itself) gives the product gemm_input's does.
  DeviceBuffer written_y(sizeof(float) * n * rows, "written"), converted_y(sizeof(float) * n * rows, "converted");
  gemm(blas, bf16.view, dx.as<float>(), cols, n, converted_y.as<float>(), rows, 0.0f, scratch, stream);
  f32_to_bf16(dx.as<float>(), cols, n, static_cast<int>(cols), act16.data(), stream);
  gemm(blas, bf16.view, gemm_input_written(n, cols, Dtype16::BF16), written_y.as<float>(), rows, 0.0f, scratch, stream);
  EXPECT_EQ(to_host<float>(written_y, static_cast<size_t>(n * rows)),
            to_host<float>(converted_y, static_cast<size_t>(n * rows)));
}

TEST(CudaKernels, EmbedAndDequantizeMatchTheReferenceDecoder) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(14);
  const int64_t rows = 41, cols = 512;
  for (DType type : kAllTypes) {
    const auto bytes = test::random_matrix(type, rows, cols, rng);
    const auto m = test::upload_matrix(type, bytes, rows, cols);
    const auto w = test::reference_matrix(type, bytes, rows, cols);
    const std::vector<int32_t> ids = {40, 0, 7, 7, 13};
    auto d_ids = to_device(ids);
    DeviceBuffer out(sizeof(float) * ids.size() * cols, "out");
    embed_rows(m.view, d_ids.as<int32_t>(), static_cast<int>(ids.size()), out.as<float>(), nullptr);
    std::vector<double> ref;
    for (int32_t id : ids) ref.insert(ref.end(), w.begin() + id * cols, w.begin() + (id + 1) * cols);
    // F16-converted types round once more on the device; the others decode exactly.
    const bool converted = !is_native_device_type(type);
    EXPECT_LT(nmse(to_host<float>(out, ref.size()), ref), converted ? 1e-6 : 1e-14) << dtype_name(type);

    // Rows 30..40: 176 or 704 steps, so the last block of 128 steps is partly empty.
    DeviceBuffer half(2 * 11 * cols, "half");
    dequantize_rows_f16(m.view, 30, 11, half.data(), nullptr);
    const auto h = to_host<uint16_t>(half, static_cast<size_t>(11 * cols));
    double worst = 0;
    for (int64_t i = 0; i < 11 * cols; ++i) {
      const double r = w[30 * cols + i];
      worst = std::max(worst, std::abs(lathe::f16_to_f32(h[i]) - r) / std::max(std::abs(r), 1e-3));
    }
    EXPECT_LT(worst, 2e-3) << dtype_name(type);  // within half's rounding (2^-11 relative, twice for converted)
  }
}

TEST(CudaKernels, RmsNormAndSwiglu) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(15);
  const int rows = 5, width = 1000;
  const auto x = random_floats(rows * width, rng, 3.0f);
  const auto weight = random_floats(width, rng);
  auto dx = to_device(x), dw = to_device(weight);
  DeviceBuffer out(sizeof(float) * rows * width, "out");
  rms_norm(dx.as<float>(), width, dw.as<float>(), rows, width, 1e-5f, out.as<float>(), width, nullptr);
  std::vector<double> ref(x.size());
  std::vector<float> row(width);
  for (int r = 0; r < rows; ++r) {
    cpu::rms_norm(x.data() + r * width, weight.data(), width, 1e-5f, row.data());
    for (int i = 0; i < width; ++i) ref[r * width + i] = row[i];
  }
  EXPECT_LT(nmse(to_host<float>(out, ref.size()), ref), 1e-12);

  const int n_ff = 333;
  const auto gu = random_floats(3 * 2 * n_ff, rng, 2.0f);
  auto dgu = to_device(gu);
  DeviceBuffer h(sizeof(float) * 3 * n_ff, "h");
  swiglu(dgu.as<float>(), 3, n_ff, h.as<float>(), nullptr);
  std::vector<double> href;
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < n_ff; ++i) {
      const double g = gu[t * 2 * n_ff + i], u = gu[t * 2 * n_ff + n_ff + i];
      href.push_back(g / (1 + std::exp(-g)) * u);
    }
  EXPECT_LT(nmse(to_host<float>(h, href.size()), href), 1e-12);

  // The 16-bit outputs (prefill: the cuBLAS products' inputs, written directly): the float32
  // results rounded once, so within bfloat16's / half's rounding (2^-9 / 2^-12 relative).
  const auto widen = [](const std::vector<uint16_t>& bits, Dtype16 type) {
    std::vector<float> out;
    for (uint16_t b : bits) out.push_back(type == Dtype16::BF16 ? lathe::bf16_to_f32(b) : lathe::f16_to_f32(b));
    return out;
  };
  // Widths of a multiple of 4 floats take the float4 kernels (1 to 8 float4 per thread), others
  // the scalar ones.
  for (Dtype16 type : {Dtype16::BF16, Dtype16::F16}) {
    const double bound = type == Dtype16::BF16 ? 1e-5 : 1e-7;
    const char* name = type == Dtype16::BF16 ? "bf16" : "f16";
    for (int w : {1000, 1002, 4100, 8192}) {
      const auto xw = random_floats(static_cast<size_t>(rows * w), rng, 3.0f);
      const auto gw = random_floats(static_cast<size_t>(w), rng);
      auto dxw = to_device(xw), dgw = to_device(gw);
      std::vector<double> want(xw.size());
      std::vector<float> r(w);
      for (int i = 0; i < rows; ++i) {
        cpu::rms_norm(xw.data() + i * w, gw.data(), w, 1e-5f, r.data());
        std::copy(r.begin(), r.end(), want.begin() + i * w);
      }
      DeviceBuffer out16(2 * rows * w, "out16");
      rms_norm_16(dxw.as<float>(), w, dgw.as<float>(), rows, w, 1e-5f, out16.data(), type, nullptr);
      EXPECT_LT(nmse(widen(to_host<uint16_t>(out16, want.size()), type), want), bound) << name << " width=" << w;
    }
    for (int f : {333, 336}) {
      const auto guf = random_floats(static_cast<size_t>(3 * 2 * f), rng, 2.0f);
      auto dguf = to_device(guf);
      std::vector<double> want;
      for (int t = 0; t < 3; ++t)
        for (int i = 0; i < f; ++i) {
          const double g = guf[t * 2 * f + i], u = guf[t * 2 * f + f + i];
          want.push_back(g / (1 + std::exp(-g)) * u);
        }
      DeviceBuffer h16(2 * 3 * f, "h16");
      swiglu_16(dguf.as<float>(), 3, f, h16.data(), type, nullptr);
      EXPECT_LT(nmse(widen(to_host<uint16_t>(h16, want.size()), type), want), bound) << name << " n_ff=" << f;
      DeviceBuffer h32(sizeof(float) * 3 * f, "h32");
      swiglu(dguf.as<float>(), 3, f, h32.as<float>(), nullptr);
      EXPECT_LT(nmse(to_host<float>(h32, want.size()), want), 1e-12) << "float n_ff=" << f;
    }
  }
  DeviceBuffer unused(2 * n_ff, "unused");
  EXPECT_THROW(swiglu_16(dgu.as<float>(), 1, n_ff, unused.data(), Dtype16::None, nullptr), InternalError);
}

// A mixture-of-experts block's row moves: gathering the rows routed to an expert from strided
// rows (a copy: equal to the bit), and adding its weighted output rows back. Widths that are not a
// multiple of the block, rows in an odd order.
TEST(CudaKernels, GatherAndScatterAddRowsMatchTheReference) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(31);
  for (int width : {64, 333, 2048}) {
    const int n_rows = 11, ldx = width + 5;
    const std::vector<int32_t> ids = {7, 0, 10, 3, 4};
    const std::vector<float> weights = {0.5f, -1.25f, 2.0f, 0.125f, 1.0f};
    const int n = static_cast<int>(ids.size());
    const auto x = random_floats(n_rows * ldx, rng, 2.0f);
    auto dx = to_device(x), dids = to_device(ids), dweights = to_device(weights);
    DeviceBuffer gathered(sizeof(float) * n * width, "gathered");
    gather_rows(dx.as<float>(), ldx, dids.as<int32_t>(), n, width, gathered.as<float>(), nullptr);
    const auto got = to_host<float>(gathered, static_cast<size_t>(n) * width);
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < width; ++c)
        ASSERT_EQ(got[i * width + c], x[ids[i] * ldx + c]) << "width " << width << " row " << i << " col " << c;

    const auto rows = random_floats(n * width, rng, 1.0f);
    auto drows = to_device(rows);
    scatter_add_rows(drows.as<float>(), dids.as<int32_t>(), dweights.as<float>(), n, width, dx.as<float>(), ldx,
                     nullptr);
    std::vector<double> expected(x.begin(), x.end());
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < width; ++c) expected[ids[i] * ldx + c] += double(weights[i]) * rows[i * width + c];
    // One multiply-add per value (fused or not, as the compiler likes): float32 rounding only.
    EXPECT_LT(nmse(to_host<float>(dx, x.size()), expected), 1e-12) << "width " << width;
  }
}

TEST(CudaKernels, QuantizeQ8RoundsEachBlockToItsScale) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(16);
  const int rows = 3, width = 160;
  auto x = random_floats(rows * width, rng);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
  auto dx = to_device(x);
  DeviceBuffer q8(rows * width, "q8"), ds(sizeof(float) * rows * width / 16, "ds");
  quantize_q8(dx.as<float>(), width, rows, width, q8.as<int8_t>(), ds.as<float>(), nullptr);
  const auto q = to_host<int8_t>(q8, rows * width);
  const auto d = to_host<float>(ds, rows * width / 16);
  for (int b = 0; b < rows * width / 32; ++b) {
    int sum = 0;
    for (int i = 0; i < 32; ++i) {
      EXPECT_LE(std::abs(d[2 * b] * q[b * 32 + i] - x[b * 32 + i]), d[2 * b] / 2 + 1e-6) << b;
      sum += q[b * 32 + i];
    }
    EXPECT_FLOAT_EQ(d[2 * b + 1], d[2 * b] * static_cast<float>(sum));
  }
}

// The fused RMSNorm + 8-bit rounding gives exactly the bytes of rms_norm followed by quantize_q8
// (same sum order), on rows narrower than, equal to and wider than one block of the fused kernel.
TEST(CudaKernels, QuantizeQ8WithNormEqualsNormThenQuantize) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(22);
  for (int width : {64, 256, 896, 4096})
    for (int rows : {1, 5}) {
      auto x = random_floats(static_cast<size_t>(rows * width), rng);
      for (float& v : x) v *= 5.0f;
      const auto g = random_floats(static_cast<size_t>(width), rng);
      auto dx = to_device(x), dg = to_device(g);
      DeviceBuffer xn(sizeof(float) * rows * width, "xn");
      DeviceBuffer q8a(rows * width, "q8"), dsa(sizeof(float) * rows * width / 16, "ds");
      DeviceBuffer q8b(rows * width, "q8"), dsb(sizeof(float) * rows * width / 16, "ds");
      rms_norm(dx.as<float>(), width, dg.as<float>(), rows, width, 1e-6f, xn.as<float>(), width, nullptr);
      quantize_q8(xn.as<float>(), width, rows, width, q8a.as<int8_t>(), dsa.as<float>(), nullptr);
      quantize_q8(dx.as<float>(), width, rows, width, q8b.as<int8_t>(), dsb.as<float>(), nullptr, dg.as<float>(),
                  1e-6f);
      EXPECT_EQ(to_host<int8_t>(q8a, rows * width), to_host<int8_t>(q8b, rows * width)) << width << " x " << rows;
      EXPECT_EQ(to_host<float>(dsa, rows * width / 16), to_host<float>(dsb, rows * width / 16)) << width;
    }
}

// The device argmax picks what the host's argmax_logit (the greedy sampler's pick) picks: the
// first of ties, never NaN or -inf, +inf when present, -1 for a row with nothing else; only the
// first n of each row's ld entries count.
TEST(CudaKernels, ArgmaxMatchesTheHostGreedyPick) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(17);
  const int n = 151936, ld = n + 40, rows = 7;
  auto x = random_floats(static_cast<size_t>(rows) * ld, rng);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  x[100000] = 50.0f;  // row 0: a tie, the first wins
  x[120000] = 50.0f;
  x[n + 3] = 99.0f;  // outside row 0's first n entries: ignored
  x[ld + 5] = 9.0f;  // row 1
  x[ld + 6] = nan;
  for (int i = 0; i < n; ++i) x[2 * ld + i] = i % 2 ? nan : -inf;  // row 2: nothing
  x[3 * ld + 70000] = inf;  // row 3: +inf, twice
  x[3 * ld + 80000] = inf;
  for (int i = 0; i < n; ++i) x[4 * ld + i] = -inf;  // row 4: one finite value among -inf
  x[4 * ld + 151935] = -1e30f;
  // rows 5 and 6: random
  auto dx = to_device(x);
  DeviceBuffer out(sizeof(int32_t) * rows, "out");
  argmax_rows(dx.as<float>(), rows, n, ld, out.as<int32_t>(), nullptr);
  const auto idx = to_host<int32_t>(out, rows);
  const std::vector<int32_t> expected_fixed = {100000, 5, -1, 70000, 151935};
  for (int r = 0; r < rows; ++r) {
    const int32_t host = argmax_logit(std::span<const float>(x.data() + static_cast<size_t>(r) * ld, n));
    if (r < 5) {
      EXPECT_EQ(host, expected_fixed[r]) << "row " << r;
    }
    EXPECT_EQ(idx[r], host) << "row " << r;
  }
}

// ---- RoPE, KV store, attention --------------------------------------------------------------

struct HeadShape {
  int n_head, n_head_kv, head_dim;
};

// A layer buffer of n_ctx rows of row_elements values in `format`, written by the CPU engine's
// store (Q8_0: the gguf-py-exact quantizer of core/quant.hpp).
std::vector<uint8_t> kv_bytes_of(const std::vector<float>& values, KvFormat format, int n_ctx, int row_elements) {
  std::vector<uint8_t> out(kv_layer_bytes(format, static_cast<uint32_t>(n_ctx), row_elements));
  for (int pos = 0; pos < n_ctx; ++pos)
    cpu::kv_store_row(values.data() + static_cast<size_t>(pos) * row_elements, format, out.data(),
                      static_cast<uint32_t>(n_ctx), row_elements, pos);
  return out;
}

// Element `index` of a layer buffer, decoded on the host.
float kv_value_at(const uint8_t* layer, KvFormat format, int n_ctx, int row_elements, int64_t index) {
  switch (format) {
    case KvFormat::F32: {
      float v;
      std::memcpy(&v, layer + 4 * index, 4);
      return v;
    }
    case KvFormat::F16: {
      uint16_t h;
      std::memcpy(&h, layer + 2 * index, 2);
      return lathe::f16_to_f32(h);
    }
    case KvFormat::Q8_0: {
      uint16_t h;
      std::memcpy(&h, layer + kv_q8_scales_offset(static_cast<uint32_t>(n_ctx), row_elements) + 2 * (index / 32), 2);
      return lathe::f16_to_f32(h) * static_cast<float>(static_cast<int8_t>(layer[index]));
    }
  }
  return 0.0f;
}

constexpr KvFormat kFormats[] = {KvFormat::F16, KvFormat::F32, KvFormat::Q8_0};

// Random inputs of RoPE + KV store with every option in use (Q/K/V biases, Q/K norms; partial
// rotation for head size 64, Phi-3 style), on the host for the CPU steps and on the device.
struct RopeInputs {
  int rope_dim = 0;
  bool neox = false;
  RopeTable table;
  std::vector<float> bq, bk, bv, q_norm, k_norm;
  DeviceBuffer d_bq, d_bk, d_bv, d_q_norm, d_k_norm, d_inv_freq;

  RopeInputs(HeadShape hs, bool neox_order, std::mt19937& rng)
      : rope_dim(hs.head_dim == 64 ? 32 : hs.head_dim),
        neox(neox_order),
        table(make_rope_table(neox ? RopeOrder::NeoX : RopeOrder::Normal, rope_dim, 10000.0f, {},
                                   1.0f)),
        bq(random_floats(hs.n_head * hs.head_dim, rng)),
        bk(random_floats(hs.n_head_kv * hs.head_dim, rng)),
        bv(random_floats(hs.n_head_kv * hs.head_dim, rng)),
        q_norm(random_floats(hs.head_dim, rng)),
        k_norm(random_floats(hs.head_dim, rng)),
        d_bq(to_device(bq)),
        d_bk(to_device(bk)),
        d_bv(to_device(bv)),
        d_q_norm(to_device(q_norm)),
        d_k_norm(to_device(k_norm)),
        d_inv_freq(to_device(table.inv_freq)) {}

  // rope_kv's arguments for n tokens of rows qkv (ld floats apart) into the caches k/v[slot].
  RopeKvArgs args(HeadShape hs, float* qkv, int64_t ld, int n, const DeviceBuffer& positions, const DeviceBuffer& slots,
                  void** k_cache, void** v_cache, KvFormat format, int n_ctx) const {
    RopeKvArgs a;
    a.qkv = qkv;
    a.ld = ld;
    a.n_tokens = n;
    a.n_head = hs.n_head;
    a.n_head_kv = hs.n_head_kv;
    a.head_dim = hs.head_dim;
    a.bq = d_bq.as<float>();
    a.bk = d_bk.as<float>();
    a.bv = d_bv.as<float>();
    a.q_norm = d_q_norm.as<float>();
    a.k_norm = d_k_norm.as<float>();
    a.eps = 1e-6f;
    a.inv_freq = d_inv_freq.as<float>();
    a.rope_dim = rope_dim;
    a.neox = neox;
    a.positions = positions.as<int32_t>();
    a.slots = slots.as<int32_t>();
    a.k_cache = k_cache;
    a.v_cache = v_cache;
    a.kv_format = format;
    a.n_ctx = n_ctx;
    return a;
  }
};

TEST(CudaKernels, RopeKvMatchesTheCpuSteps) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(18);
  for (bool neox : {true, false})
    for (KvFormat format : kFormats)
      for (HeadShape hs : {HeadShape{6, 2, 64}, HeadShape{4, 4, 48}}) {
        if (format == KvFormat::Q8_0 && hs.head_dim % 32 != 0) continue;  // refused by the engines
        const int D = hs.head_dim, q_w = hs.n_head * D, kv_w = hs.n_head_kv * D, ld = q_w + 2 * kv_w;
        const int n = 4, n_ctx = 40;
        const RopeInputs in(hs, neox, rng);
        const auto qkv = random_floats(static_cast<size_t>(n * ld), rng);
        const std::vector<int32_t> positions = {0, 5, 39, 17}, slots = {0, 1, 1, 0};
        auto d_qkv = to_device(qkv), d_pos = to_device(positions), d_slots = to_device(slots);
        const size_t cache_bytes = kv_layer_bytes(format, n_ctx, kv_w);
        DeviceBuffer caches(4 * cache_bytes, "caches");
        std::vector<void*> k_tab = {caches.as<uint8_t>(), caches.as<uint8_t>() + cache_bytes};
        std::vector<void*> v_tab = {caches.as<uint8_t>() + 2 * cache_bytes, caches.as<uint8_t>() + 3 * cache_bytes};
        auto d_k = to_device(k_tab), d_v = to_device(v_tab);
        rope_kv(in.args(hs, d_qkv.as<float>(), ld, n, d_pos, d_slots, d_k.as<void*>(), d_v.as<void*>(), format, n_ctx),
                nullptr);

        const auto q_out = to_host<float>(d_qkv, static_cast<size_t>(n * ld));
        const auto cache_host = to_host<uint8_t>(caches, 4 * cache_bytes);
        std::vector<double> q_ref, q_got, k_ref, k_got;
        std::vector<float> q_got_f, k_got_f;
        for (int t = 0; t < n; ++t) {
          std::vector<float> q(qkv.begin() + t * ld, qkv.begin() + t * ld + q_w);
          std::vector<float> k(qkv.begin() + t * ld + q_w, qkv.begin() + t * ld + q_w + kv_w);
          std::vector<float> v(qkv.begin() + t * ld + q_w + kv_w, qkv.begin() + (t + 1) * ld);
          for (int i = 0; i < q_w; ++i) q[i] += in.bq[i];
          for (int i = 0; i < kv_w; ++i) k[i] += in.bk[i], v[i] += in.bv[i];
          for (int h = 0; h < hs.n_head; ++h)
            cpu::rms_norm(q.data() + h * D, in.q_norm.data(), D, 1e-6f, q.data() + h * D);
          for (int h = 0; h < hs.n_head_kv; ++h)
            cpu::rms_norm(k.data() + h * D, in.k_norm.data(), D, 1e-6f, k.data() + h * D);
          cpu::apply_rope(q.data(), hs.n_head, D, positions[t], in.table);
          cpu::apply_rope(k.data(), hs.n_head_kv, D, positions[t], in.table);
          for (int i = 0; i < q_w; ++i) q_ref.push_back(q[i]), q_got_f.push_back(q_out[t * ld + i]);
          const uint8_t* klayer = cache_host.data() + slots[t] * cache_bytes;
          const uint8_t* vlayer = klayer + 2 * cache_bytes;
          for (int i = 0; i < kv_w; ++i) {
            const int64_t at = static_cast<int64_t>(positions[t]) * kv_w + i;
            k_ref.push_back(k[i]), k_got_f.push_back(kv_value_at(klayer, format, n_ctx, kv_w, at));
            k_ref.push_back(v[i]), k_got_f.push_back(kv_value_at(vlayer, format, n_ctx, kv_w, at));
          }
          // V only gains its bias (one float addition, as on the CPU), so its stored bytes must be
          // exactly the CPU engine's store of the same row, in every format.
          std::vector<uint8_t> v_expected(cache_bytes);
          cpu::kv_store_row(v.data(), format, v_expected.data(), n_ctx, kv_w, positions[t]);
          std::vector<uint8_t> v_got(vlayer, vlayer + cache_bytes);
          const int64_t row_at = static_cast<int64_t>(positions[t]) * kv_w;
          if (format == KvFormat::Q8_0) {
            const uint64_t sc = kv_q8_scales_offset(n_ctx, kv_w);
            EXPECT_TRUE(std::equal(v_got.begin() + row_at, v_got.begin() + row_at + kv_w, v_expected.begin() + row_at))
                << "V quants t=" << t;
            EXPECT_TRUE(std::equal(v_got.begin() + sc + row_at / 16, v_got.begin() + sc + (row_at + kv_w) / 16,
                                   v_expected.begin() + sc + row_at / 16))
                << "V scales t=" << t;
          } else {
            const int64_t elem = format == KvFormat::F16 ? 2 : 4;
            EXPECT_TRUE(std::equal(v_got.begin() + row_at * elem, v_got.begin() + (row_at + kv_w) * elem,
                                   v_expected.begin() + row_at * elem))
                << "V bytes t=" << t << " " << kv_format_name(format);
          }
        }
        EXPECT_LT(nmse(q_got_f, q_ref), 1e-10) << "q neox=" << neox << " D=" << D;
        // Rounding of the stored values: half ~1e-7, 8-bit blocks ~1e-4 (relative to the values).
        const double bound = format == KvFormat::F32 ? 1e-10 : format == KvFormat::F16 ? 1e-6 : 3e-4;
        EXPECT_LT(nmse(k_got_f, k_ref), bound) << "kv neox=" << neox << " " << kv_format_name(format) << " D=" << D;
      }
}

// Random caches for two slots, queries, and the CPU answer per (token, head) from attend_one.
struct AttentionCase {
  HeadShape hs;
  KvFormat format;
  int n_ctx;
  std::vector<std::vector<float>> keys, values;  // per slot, n_ctx x kv_w (values as stored)
  std::vector<std::vector<uint8_t>> key_bytes, value_bytes;
  DeviceBuffer cache;
  DeviceBuffer k_tab, v_tab;

  AttentionCase(HeadShape shape, KvFormat kv_format, int ctx, std::mt19937& rng)
      : hs(shape), format(kv_format), n_ctx(ctx) {
    const int kv_w = hs.n_head_kv * hs.head_dim;
    const size_t bytes = kv_layer_bytes(format, n_ctx, kv_w);
    cache = DeviceBuffer(4 * bytes, "cache");
    std::vector<void*> kt, vt;
    for (int s = 0; s < 2; ++s) {
      keys.push_back(random_floats(static_cast<size_t>(n_ctx) * kv_w, rng));
      values.push_back(random_floats(static_cast<size_t>(n_ctx) * kv_w, rng));
      key_bytes.push_back(kv_bytes_of(keys.back(), format, n_ctx, kv_w));
      value_bytes.push_back(kv_bytes_of(values.back(), format, n_ctx, kv_w));
      uint8_t* kp = cache.as<uint8_t>() + (2 * s) * bytes;
      uint8_t* vp = cache.as<uint8_t>() + (2 * s + 1) * bytes;
      check(cudaMemcpy(kp, key_bytes.back().data(), bytes, cudaMemcpyHostToDevice), "k");
      check(cudaMemcpy(vp, value_bytes.back().data(), bytes, cudaMemcpyHostToDevice), "v");
      kt.push_back(kp);
      vt.push_back(vp);
    }
    k_tab = to_device(kt);
    v_tab = to_device(vt);
  }

  std::vector<double> reference(const std::vector<float>& q, int t, int slot, int n_keys) const {
    const int D = hs.head_dim, kv_w = hs.n_head_kv * D, group = hs.n_head / hs.n_head_kv;
    std::vector<double> out;
    std::vector<float> scores(static_cast<size_t>(n_ctx)), o(static_cast<size_t>(D));
    for (int h = 0; h < hs.n_head; ++h) {
      const cpu::KvLayerView layer{.format = format,
                                   .keys = key_bytes[slot].data(),
                                   .values = value_bytes[slot].data(),
                                   .n_ctx = static_cast<uint32_t>(n_ctx),
                                   .row_stride = kv_w};
      cpu::attend_one(q.data() + (static_cast<size_t>(t) * hs.n_head + h) * D, layer, n_keys, (h / group) * D, D,
                      1.0f / std::sqrt(static_cast<float>(D)), scores.data(), o.data());
      out.insert(out.end(), o.begin(), o.end());
    }
    return out;
  }

  AttentionArgs args(const float* q, float* out, int n, const int32_t* pos, const int32_t* slots) const {
    AttentionArgs a;
    a.q = q;
    a.ldq = hs.n_head * hs.head_dim;
    a.out = out;
    a.ldo = hs.n_head * hs.head_dim;
    a.n_tokens = n;
    a.n_head = hs.n_head;
    a.n_head_kv = hs.n_head_kv;
    a.head_dim = hs.head_dim;
    a.scale = 1.0f / std::sqrt(static_cast<float>(hs.head_dim));
    a.positions = pos;
    a.slots = slots;
    a.k_cache = k_tab.as<const void*>();
    a.v_cache = v_tab.as<const void*>();
    a.kv_format = format;
    a.n_ctx = n_ctx;
    return a;
  }
};

// Multi-query 12/1 exceeds the 8 heads a decode block holds: it always runs in sub-groups.
const HeadShape kShapes[] = {{7, 1, 64}, {14, 2, 64}, {8, 8, 128}, {32, 8, 128}, {6, 2, 96}, {4, 2, 48}, {12, 1, 64}};

TEST(CudaKernels, AttentionDecodeSplitsAndGroups) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(19);
  for (HeadShape hs : kShapes)
    for (KvFormat format : kFormats) {
      if (format == KvFormat::Q8_0 && hs.head_dim % 32 != 0) continue;  // refused by the engines
      const int n_ctx = 700;
      AttentionCase c(hs, format, n_ctx, rng);
      const std::vector<int32_t> positions = {0, 37, 699, 300}, slots = {1, 0, 1, 1};
      const int n = static_cast<int>(positions.size()), width = hs.n_head * hs.head_dim;
      const auto q = random_floats(static_cast<size_t>(n * width), rng);
      auto dq = to_device(q), dpos = to_device(positions), dslots = to_device(slots);
      std::vector<double> ref;
      for (int t = 0; t < n; ++t) {
        const auto r = c.reference(q, t, slots[t], positions[t] + 1);
        ref.insert(ref.end(), r.begin(), r.end());
      }
      const int group = hs.n_head / hs.n_head_kv;
      for (int splits : {1, 5, decode_splits(n_ctx, n, hs.n_head_kv, 132)})
        // Whole groups, single heads, sub-groups of 3 (7 heads: 3 + 3 + 1), the automatic choice.
        for (int per_block : {0, 1, 3, decode_heads_per_block(splits, n, hs.n_head_kv, group, 132)}) {
          DeviceBuffer out(sizeof(float) * n * width, "out");
          DeviceBuffer scratch(sizeof(float) * split_scratch_floats(n, hs.n_head, hs.head_dim, splits), "scratch");
          const int split_len = (n_ctx + splits - 1) / splits;
          attention_decode(c.args(dq.as<float>(), out.as<float>(), n, dpos.as<int32_t>(), dslots.as<int32_t>()),
                           splits, split_len, scratch.as<float>(), nullptr, per_block);
          EXPECT_LT(nmse(to_host<float>(out, ref.size()), ref), 1e-10)
              << hs.n_head << "/" << hs.n_head_kv << " D=" << hs.head_dim << " " << kv_format_name(format)
              << " splits=" << splits << " heads/block=" << per_block;
        }
    }
}

// Decode attention that rounds its output for the output projection (AttentionArgs::out_q8) writes
// exactly the bytes quantize_q8 makes of that output, with one split and with merged splits.
TEST(CudaKernels, AttentionDecodeRoundsItsOutput) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(32);
  for (HeadShape hs : {HeadShape{14, 2, 64}, HeadShape{32, 8, 128}, HeadShape{6, 2, 96}}) {
    const int n_ctx = 300;
    AttentionCase c(hs, KvFormat::F16, n_ctx, rng);
    const std::vector<int32_t> positions = {5, 299}, slots = {0, 1};
    const int n = 2, width = hs.n_head * hs.head_dim;
    auto dq = to_device(random_floats(static_cast<size_t>(n * width), rng));
    auto dpos = to_device(positions), dslots = to_device(slots);
    for (int splits : {1, 3}) {
      DeviceBuffer out(sizeof(float) * n * width, "out"), q8(n * width, "q8"), ds(sizeof(float) * n * width / 16, "ds");
      DeviceBuffer q8_ref(n * width, "q8"), ds_ref(sizeof(float) * n * width / 16, "ds");
      DeviceBuffer scratch(sizeof(float) * split_scratch_floats(n, hs.n_head, hs.head_dim, splits), "scratch");
      AttentionArgs a = c.args(dq.as<float>(), out.as<float>(), n, dpos.as<int32_t>(), dslots.as<int32_t>());
      a.out_q8 = {q8.as<int8_t>(), ds.as<float>(), width, width / 16};
      check(cudaMemset(q8.data(), 0x55, n * width), "q8");  // not what the rounding writes
      check(cudaMemset(ds.data(), 0x55, sizeof(float) * n * width / 16), "ds");
      attention_decode(a, splits, (n_ctx + splits - 1) / splits, scratch.as<float>(), nullptr);
      quantize_q8(out.as<float>(), width, n, width, q8_ref.as<int8_t>(), ds_ref.as<float>(), nullptr);
      const std::string what = std::to_string(hs.n_head) + "/" + std::to_string(hs.head_dim) + " splits=" +
                               std::to_string(splits);
      EXPECT_EQ(to_host<int8_t>(q8, n * width), to_host<int8_t>(q8_ref, n * width)) << what;
      EXPECT_EQ(to_host<float>(ds, n * width / 16), to_host<float>(ds_ref, n * width / 16)) << what;
    }
  }
}

// Decode attention with rope_kv's work folded in (AttentionArgs::rope) gives exactly what rope_kv
// followed by decode attention gives: the same output floats and the same cache bytes, in every
// cache format, with one split and several (only the split holding the position stores the row),
// whole groups and sub-groups (whose blocks store the same row), both RoPE orders, partial
// rotation, biases and Q/K norms.
TEST(CudaKernels, AttentionDecodeWithRopeFoldedInEqualsTheTwoLaunches) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(33);
  for (HeadShape hs : {HeadShape{14, 2, 64}, HeadShape{32, 8, 128}, HeadShape{6, 2, 96}, HeadShape{4, 4, 48}})
    for (KvFormat format : kFormats)
      for (bool neox : {true, false}) {
        if (format == KvFormat::Q8_0 && hs.head_dim % 32 != 0) continue;  // refused by the engines
        const int n_ctx = 300, D = hs.head_dim, q_w = hs.n_head * D, kv_w = hs.n_head_kv * D, ld = q_w + 2 * kv_w;
        AttentionCase c(hs, format, n_ctx, rng);
        const size_t layer_bytes = kv_layer_bytes(format, n_ctx, kv_w);
        const auto cache_start = to_host<uint8_t>(c.cache, 4 * layer_bytes);
        const RopeInputs in(hs, neox, rng);
        // One token per sequence, as in decode: positions at the start, the end and inside.
        for (const auto& positions : {std::vector<int32_t>{0, 299}, std::vector<int32_t>{130, 37}}) {
          const std::vector<int32_t> slots = {1, 0};
          const int n = 2;
          const auto qkv = random_floats(static_cast<size_t>(n * ld), rng);
          auto dpos = to_device(positions), dslots = to_device(slots);
          for (int splits : {1, 3})
            for (int per_block : {0, 1}) {
              const auto run = [&](bool folded) {
                check(cudaMemcpy(c.cache.data(), cache_start.data(), cache_start.size(), cudaMemcpyHostToDevice),
                      "cache");
                auto d_qkv = to_device(qkv);
                const RopeKvArgs r = in.args(hs, d_qkv.as<float>(), ld, n, dpos, dslots, c.k_tab.as<void*>(),
                                             c.v_tab.as<void*>(), format, n_ctx);
                DeviceBuffer out(sizeof(float) * n * q_w, "out");
                DeviceBuffer scratch(sizeof(float) * split_scratch_floats(n, hs.n_head, D, splits), "scratch");
                AttentionArgs a = c.args(d_qkv.as<float>(), out.as<float>(), n, dpos.as<int32_t>(),
                                         dslots.as<int32_t>());
                a.ldq = ld;
                if (folded) a.rope = r;
                else rope_kv(r, nullptr);
                attention_decode(a, splits, (n_ctx + splits - 1) / splits, scratch.as<float>(), nullptr, per_block);
                return std::make_pair(to_host<float>(out, static_cast<size_t>(n * q_w)),
                                      to_host<uint8_t>(c.cache, 4 * layer_bytes));
              };
              const auto [out_two, cache_two] = run(false);
              const auto [out_folded, cache_folded] = run(true);
              const std::string what = std::to_string(hs.n_head) + "/" + std::to_string(hs.n_head_kv) +
                                       " D=" + std::to_string(D) + " " + kv_format_name(format) +
                                       " neox=" + std::to_string(neox) + " pos=" + std::to_string(positions[0]) +
                                       " splits=" + std::to_string(splits) +
                                       " heads/block=" + std::to_string(per_block);
              EXPECT_EQ(out_folded, out_two) << what;
              EXPECT_TRUE(cache_folded == cache_two) << what;
              EXPECT_FALSE(cache_folded == cache_start) << what;  // the rows were stored
            }
        }
      }
}

// Several query tiles (64 on tensor cores, 16 on float32 units) and key tiles, a partly filled
// last tile of each, and a prompt that continues a cached one.
TEST(CudaKernels, AttentionPrefillIsCausalFromFirstPos) {
  LATHE_REQUIRE_GPU();
  std::mt19937 rng(20);
  for (HeadShape hs : kShapes)
    for (KvFormat format : kFormats)
      for (int n : {45, 130})
        for (int first_pos : {0, 13, 150}) {
          if (format == KvFormat::Q8_0 && hs.head_dim % 32 != 0) continue;  // refused by the engines
          const int n_ctx = 300, width = hs.n_head * hs.head_dim;
          AttentionCase c(hs, format, n_ctx, rng);
          const auto q = random_floats(static_cast<size_t>(n * width), rng);
          const std::vector<int32_t> slots(n, 1);
          auto dq = to_device(q), dslots = to_device(slots);
          DeviceBuffer out(sizeof(float) * n * width, "out");
          const AttentionArgs args = c.args(dq.as<float>(), out.as<float>(), n, nullptr, dslots.as<int32_t>());
          attention_prefill(args, first_pos, nullptr);
          std::vector<double> ref;
          for (int t = 0; t < n; ++t) {
            const auto r = c.reference(q, t, 1, first_pos + t + 1);
            ref.insert(ref.end(), r.begin(), r.end());
          }
          // Tensor cores round the queries and the softmax weights to half (2^-11 relative).
          const bool tensor_cores = attention_prefill_uses_tensor_cores(args);
          if (format == KvFormat::F32) {
            EXPECT_FALSE(tensor_cores) << "the float32 cache is the exact path";
          } else if (hs.head_dim == 64 || hs.head_dim == 128) {
            EXPECT_TRUE(tensor_cores) << kv_format_name(format) << " D=" << hs.head_dim;
          }
          EXPECT_LT(nmse(to_host<float>(out, ref.size()), ref), tensor_cores ? 1e-5 : 1e-10)
              << hs.n_head << "/" << hs.n_head_kv << " D=" << hs.head_dim << " " << kv_format_name(format)
              << " n=" << n << " first=" << first_pos << (tensor_cores ? " (tensor cores)" : "");
          if (!tensor_cores) {  // the float32 kernel has no 16-bit output: asking for one is a bug
            AttentionArgs bad = args;
            bad.out16 = out.as<void>();
            bad.out16_type = Dtype16::F16;
            EXPECT_THROW(attention_prefill(bad, first_pos, nullptr), InternalError);
            continue;
          }
          // The 16-bit output (the output projection's input) is the float32 output rounded.
          const auto got = to_host<float>(out, ref.size());
          for (Dtype16 type : {Dtype16::F16, Dtype16::BF16}) {
            DeviceBuffer out16(2 * static_cast<size_t>(n) * width, "out16");
            AttentionArgs a16 = args;
            a16.out = nullptr;
            a16.out16 = out16.as<void>();
            a16.out16_type = type;
            attention_prefill(a16, first_pos, nullptr);
            const auto bits = to_host<uint16_t>(out16, got.size());
            size_t differ = 0;
            for (size_t i = 0; i < got.size(); ++i)
              differ += bits[i] != (type == Dtype16::F16 ? lathe::f32_to_f16(got[i]) : lathe::f32_to_bf16(got[i]));
            EXPECT_EQ(differ, 0u) << (type == Dtype16::F16 ? "half" : "bfloat16") << " output, " << hs.n_head << "/"
                                  << hs.n_head_kv << " D=" << hs.head_dim << " " << kv_format_name(format)
                                  << " n=" << n;
          }
        }
}

TEST(CudaKernels, OutOfMemoryIsTypedAndTheDeviceStaysUsable) {
  LATHE_REQUIRE_GPU();
  try {
    DeviceBuffer huge(size_t{1} << 50, "a test allocation of 1 PiB");
    FAIL() << "a 1 PiB allocation succeeded";
  } catch (const OutOfMemoryError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("a test allocation of 1 PiB"), std::string::npos) << message;
    EXPECT_NE(message.find("free of"), std::string::npos) << message;
    EXPECT_NE(message.find("--device cpu"), std::string::npos) << message;
  }
  DeviceBuffer small(1 << 20, "after the failure");
  check(cudaMemset(small.data(), 0, 1 << 20), "memset after an out-of-memory error");
  check(cudaDeviceSynchronize(), "synchronize after an out-of-memory error");
}

}  // namespace
}  // namespace lathe::cuda
