// Every backward op of the training pass (src/train/ops.hpp) against finite differences of its
// forward in float64, on random inputs of odd sizes (llm.c's discipline); and the float32 ops
// against the float64 ones. With L(x) = sum(dy . f(x)) for a random dy, the backward's dx must be
// dL/dx: central differences of the double forward, step 1e-5, agree to ~1e-8 relative.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <string_view>
#include <vector>

#include "backend/cpu/kernels.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "core/rope.hpp"
#include "lathe/error.hpp"
#include "train/gemm_kernels.hpp"
#include "train/ops.hpp"

namespace lathe::train {
namespace {

using Vec = std::vector<double>;

Vec random_vec(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> to_float(const Vec& v) { return {v.begin(), v.end()}; }

// dL/dx by central differences of L(x) = sum(dy . f(x)).
Vec numeric_gradient(const std::function<Vec(const Vec&)>& f, Vec x, const Vec& dy) {
  Vec grad(x.size());
  const double h = 1e-5;
  auto loss = [&](const Vec& at) {
    const Vec y = f(at);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
    return l;
  };
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double up = loss(x);
    x[i] = keep - h;
    const double down = loss(x);
    x[i] = keep;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

// max |a - b| / max |b|: the gradient's error relative to its size.
double relative_error(const Vec& a, const Vec& b) {
  double diff = 0, size = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    size = std::max(size, std::abs(b[i]));
  }
  return size > 0 ? diff / size : diff;
}
double relative_error(const std::vector<float>& a, const Vec& b) { return relative_error(Vec(a.begin(), a.end()), b); }

TEST(TrainOps, RmsNormBackwardIsTheGradient) {
  const int64_t n = 3, d = 37;
  const auto x = random_vec(n * d, 1), dy = random_vec(n * d, 2);
  const auto wd = random_vec(d, 3);
  const auto w = to_float(wd);
  auto forward = [&](const Vec& in) {
    Vec y(in.size()), rstd(n);
    rms_norm_forward(in.data(), w.data(), n, d, 1e-5f, y.data(), rstd.data());
    return y;
  };
  Vec y(n * d), rstd(n), dx(n * d, 0.0);
  rms_norm_forward(x.data(), w.data(), n, d, 1e-5f, y.data(), rstd.data());
  rms_norm_backward(dy.data(), x.data(), w.data(), rstd.data(), n, d, dx.data());
  EXPECT_LT(relative_error(dx, numeric_gradient(forward, x, dy)), 1e-7);
  // float32 against the double reference
  const auto xf = to_float(x), dyf = to_float(dy);
  std::vector<float> yf(n * d), rf(n), dxf(n * d, 0.0f);
  rms_norm_forward(xf.data(), w.data(), n, d, 1e-5f, yf.data(), rf.data());
  rms_norm_backward(dyf.data(), xf.data(), w.data(), rf.data(), n, d, dxf.data());
  EXPECT_LT(relative_error(dxf, dx), 1e-5);
}

TEST(TrainOps, SwigluBackwardIsTheGradientOfBothInputs) {
  const int64_t count = 53;
  const auto g = random_vec(count, 4, 2.0), u = random_vec(count, 5), dh = random_vec(count, 6);
  Vec dg(count), du(count);
  swiglu_backward(dh.data(), g.data(), u.data(), count, dg.data(), du.data());
  auto of_g = [&](const Vec& in) {
    Vec h(count);
    swiglu_forward(in.data(), u.data(), count, h.data());
    return h;
  };
  auto of_u = [&](const Vec& in) {
    Vec h(count);
    swiglu_forward(g.data(), in.data(), count, h.data());
    return h;
  };
  EXPECT_LT(relative_error(dg, numeric_gradient(of_g, g, dh)), 1e-7);
  EXPECT_LT(relative_error(du, numeric_gradient(of_u, u, dh)), 1e-7);
}

// The frozen matrix in each stored type: the gradient is that of the dequantized matrix.
TEST(TrainOps, FrozenLinearBackwardForEveryStoredType) {
  const int64_t out = 7, in = 64, n = 3;
  const auto values = to_float(random_vec(out * in, 7, 0.3));
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1}) {
    SCOPED_TRACE(dtype_name(type));
    const auto bytes = quantize(type, values);
    const MatrixView w{type, bytes.data(), out, in, bytes.size() / out, "w"};
    const auto x = random_vec(n * in, 8), dy = random_vec(n * out, 9);
    auto forward = [&](const Vec& at) {
      Vec y(n * out);
      frozen_linear_forward(w, at.data(), n, y.data());
      return y;
    };
    Vec dx(n * in, 0.0);
    frozen_linear_backward(w, dy.data(), n, dx.data());
    EXPECT_LT(relative_error(dx, numeric_gradient(forward, x, dy)), 1e-7);
    // dx = dy W exactly, with W the dequantized matrix
    const auto deq = dequantize(type, bytes, out * in);
    Vec expect(n * in, 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < out; ++r)
        for (int64_t c = 0; c < in; ++c) expect[t * in + c] += dy[t * out + r] * deq[r * in + c];
    EXPECT_LT(relative_error(dx, expect), 1e-12);
  }
}

// Weights for the float32 products' tests in a stored type: quantize() for the types it writes;
// Q4_K (256-element blocks, decoded by dequantize_row only) from random bytes with small scales.
std::vector<uint8_t> stored_weights(DType type, int64_t rows, int64_t cols, uint32_t seed) {
  if (type != DType::Q4_K) return quantize(type, to_float(random_vec(static_cast<size_t>(rows * cols), seed, 0.3)));
  const auto& info = dtype_info(type);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows * cols / info.block_size * info.block_bytes));
  std::mt19937 rng(seed);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  const uint16_t scale = f32_to_f16(0.002f);
  for (size_t block = 0; block < bytes.size(); block += info.block_bytes)
    for (size_t field : {0, 2}) std::memcpy(&bytes[block + field], &scale, sizeof scale);  // d, dmin
  return bytes;
}

// Runs `body` at every kernel level this CPU has (the float32 products follow the CPU backend's
// level), then goes back to the default.
void at_every_level(const std::function<void(std::string_view)>& body) {
  for (std::string_view level : {"scalar", "avx2"}) {
    if (!cpu::kernels::force_kernel_level(level)) continue;
    SCOPED_TRACE(level);
    EXPECT_EQ(gemm::active_kernels().level, level);
    body(level);
  }
  cpu::kernels::force_kernel_level("");
}

// The float32 frozen products (blocked, train/frozen_gemm.hpp) against the float64 row loops, on
// sizes that leave partial tiles everywhere (rows not a multiple of 6, tokens not of 8 or 16,
// several column units of whole blocks and a last partial one), with and without threads; and
// the same bits whatever the threads.
TEST(TrainOps, FloatFrozenProductsMatchTheReferenceAtEveryLevel) {
  struct Case {
    DType type;
    int64_t out, in;
  };
  const Case cases[] = {{DType::F32, 23, 37},   {DType::F16, 100, 200}, {DType::BF16, 13, 72},
                        {DType::Q8_0, 61, 416}, {DType::Q4_0, 7, 64},   {DType::Q4_1, 131, 608},
                        {DType::Q4_K, 29, 1536}};
  at_every_level([&](std::string_view) {
    for (const Case& c : cases) {
      SCOPED_TRACE(dtype_name(c.type));
      const auto bytes = stored_weights(c.type, c.out, c.in, 21);
      const MatrixView w{c.type, bytes.data(), c.out, c.in, bytes.size() / static_cast<size_t>(c.out), "w"};
      for (int64_t n : {1, 5, 13, 37}) {
        SCOPED_TRACE(n);
        const auto x = random_vec(static_cast<size_t>(n * c.in), 22);
        const auto dy = random_vec(static_cast<size_t>(n * c.out), 23);
        const auto dx0 = random_vec(static_cast<size_t>(n * c.in), 24);  // the backward accumulates
        Vec y(n * c.out), dx = dx0;
        frozen_linear_forward(w, x.data(), n, y.data());
        frozen_linear_backward(w, dy.data(), n, dx.data());
        const auto xf = to_float(x), dyf = to_float(dy);
        std::vector<float> first_y, first_dx;
        for (int threads : {0, 1, 2, 3}) {
          SCOPED_TRACE(threads);
          std::optional<cpu::ThreadPool> pool;
          if (threads > 0) pool.emplace(threads);
          cpu::ThreadPool* p = pool ? &*pool : nullptr;
          std::vector<float> yf(static_cast<size_t>(n * c.out), -1.0f), dxf = to_float(dx0);
          frozen_linear_forward(w, xf.data(), n, yf.data(), p);
          frozen_linear_backward(w, dyf.data(), n, dxf.data(), p);
          EXPECT_LT(relative_error(yf, y), 1e-5);
          EXPECT_LT(relative_error(dxf, dx), 1e-5);
          if (first_y.empty()) {
            first_y = yf;
            first_dx = dxf;
          }
          EXPECT_EQ(yf, first_y);
          EXPECT_EQ(dxf, first_dx);
        }
      }
    }
  });
}

// Matrices of one width on one input in one call (Q, K, V; gate, up), of different stored types
// (so column units of whole 256-element blocks): the same bits as one call per matrix, forward
// and backward, threaded or not; matrices of different widths are refused.
TEST(TrainOps, GroupedFrozenProductsAreTheSingleOnes) {
  const int64_t in = 768, n = 11;
  const DType types[] = {DType::Q4_K, DType::Q8_0, DType::F16};
  const int64_t rows[] = {13, 29, 6};
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<MatrixView> views;
  for (int i = 0; i < 3; ++i) {
    bytes.push_back(stored_weights(types[i], rows[i], in, 50 + i));
    const size_t row_bytes = bytes.back().size() / static_cast<size_t>(rows[i]);
    views.push_back({types[i], bytes.back().data(), rows[i], in, row_bytes, "w"});
  }
  const MatrixView* ws[] = {&views[0], &views[1], &views[2]};
  const auto x = to_float(random_vec(n * in, 53)), dx0 = to_float(random_vec(n * in, 54));
  std::vector<std::vector<float>> dy;
  for (int i = 0; i < 3; ++i) dy.push_back(to_float(random_vec(n * rows[i], 55 + i)));
  at_every_level([&](std::string_view) {
    for (int threads : {0, 2}) {
      SCOPED_TRACE(threads);
      std::optional<cpu::ThreadPool> pool;
      if (threads > 0) pool.emplace(threads);
      cpu::ThreadPool* p = pool ? &*pool : nullptr;
      std::vector<std::vector<float>> single(3), grouped(3);
      std::vector<float> dx_single = dx0, dx_grouped = dx0;
      for (int i = 0; i < 3; ++i) {
        single[i].resize(static_cast<size_t>(n * rows[i]));
        grouped[i].resize(single[i].size());
        frozen_linear_forward(views[i], x.data(), n, single[i].data(), p);
        frozen_linear_backward(views[i], dy[i].data(), n, dx_single.data(), p);
      }
      float* ys[] = {grouped[0].data(), grouped[1].data(), grouped[2].data()};
      const float* dys[] = {dy[0].data(), dy[1].data(), dy[2].data()};
      frozen_linear_forward<float>(ws, x.data(), n, ys, p);
      frozen_linear_backward<float>(ws, dys, n, dx_grouped.data(), p);
      for (int i = 0; i < 3; ++i) EXPECT_EQ(grouped[i], single[i]) << i;
      EXPECT_EQ(dx_grouped, dx_single);
    }
  });
  const auto other = stored_weights(DType::F32, 4, 64, 58);
  const MatrixView narrow{DType::F32, other.data(), 4, 64, 64 * sizeof(float), "narrow"};
  const MatrixView* mixed[] = {&views[0], &narrow};
  std::vector<float> y0(static_cast<size_t>(n * rows[0])), y1(static_cast<size_t>(n * 4));
  float* ys[] = {y0.data(), y1.data()};
  EXPECT_THROW(frozen_linear_forward<float>(mixed, x.data(), n, ys), InvalidArgumentError);
}

// Each level's transpose moves every element where it belongs, tile edges included.
TEST(TrainOps, TransposesAtEveryLevel) {
  at_every_level([](std::string_view) {
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{8, 8}, {1, 5}, {13, 37}, {32, 576}, {19, 8}}) {
      SCOPED_TRACE(testing::Message() << rows << " x " << cols);
      const auto in = to_float(random_vec(static_cast<size_t>(rows * (cols + 3)), 26));  // row stride cols + 3
      std::vector<float> out(static_cast<size_t>(cols * (rows + 5)), -7.0f);            // row stride rows + 5
      gemm::active_kernels().transpose(in.data(), cols + 3, rows, cols, out.data(), rows + 5);
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < rows + 5; ++r)
          ASSERT_EQ(out[c * (rows + 5) + r], r < rows ? in[r * (cols + 3) + c] : -7.0f) << r << ", " << c;
    }
  });
}

// The AVX2 level's own dequantization gives dequantize_row's bits, for whole rows and for the
// block-aligned slices the backward decodes.
TEST(TrainOps, FastDequantizationIsBitExact) {
  const gemm::Kernels* avx2 = gemm::avx2_kernels();
  if (avx2 == nullptr || !cpu::kernels::cpu_has_avx2()) GTEST_SKIP() << "no AVX2 on this machine";
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K}) {
    SCOPED_TRACE(dtype_name(type));
    const int64_t cols = 768;
    const auto bytes = stored_weights(type, 1, cols, 25);
    const auto& info = dtype_info(type);
    for (int64_t first : {int64_t{0}, int64_t{256}}) {
      const int64_t count = cols - first;
      const uint8_t* src = bytes.data() + first / info.block_size * info.block_bytes;
      std::vector<float> expect(static_cast<size_t>(count)), got(static_cast<size_t>(count), -1.0f);
      dequantize_row(type, src, expect.data(), count);
      if (!avx2->dequantize(type, src, got.data(), count)) {
        EXPECT_EQ(type, DType::Q4_K);  // left to dequantize_row
        continue;
      }
      for (int64_t i = 0; i < count; ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(expect[i])) << i;
    }
  }
}

TEST(TrainOps, LoraBackwardGivesTheAdapterAndInputGradients) {
  const int64_t rank = 3, in = 11, out = 9, n = 5;
  const double s = 0.7;
  const auto a = random_vec(rank * in, 10), b = random_vec(out * rank, 11), x = random_vec(n * in, 12);
  const auto dy = random_vec(n * out, 13);
  auto run = [&](const Vec& av, const Vec& bv, const Vec& xv) {
    Vec y(n * out, 0.0), xa(n * rank);
    lora_forward(av.data(), bv.data(), rank, in, out, s, xv.data(), n, y.data(), xa.data());
    return y;
  };
  Vec y(n * out, 0.0), xa(n * rank), da(rank * in, 0.0), db(out * rank, 0.0), dx(n * in, 0.0);
  lora_forward(a.data(), b.data(), rank, in, out, s, x.data(), n, y.data(), xa.data());
  lora_backward(a.data(), b.data(), rank, in, out, s, x.data(), xa.data(), dy.data(), n, da.data(), db.data(),
                dx.data());
  EXPECT_LT(relative_error(da, numeric_gradient([&](const Vec& v) { return run(v, b, x); }, a, dy)), 1e-7);
  EXPECT_LT(relative_error(db, numeric_gradient([&](const Vec& v) { return run(a, v, x); }, b, dy)), 1e-7);
  EXPECT_LT(relative_error(dx, numeric_gradient([&](const Vec& v) { return run(a, b, v); }, x, dy)), 1e-7);
}

// The float32 adapter ops (blocked products, train/frozen_gemm.hpp) against the float64 loops,
// every output accumulating onto values already there.
TEST(TrainOps, FloatLoraMatchesTheReferenceAtEveryLevel) {
  struct Case {
    int64_t rank, in, out, n;
  };
  at_every_level([](std::string_view) {
    for (const Case& c : {Case{3, 11, 9, 5}, Case{8, 100, 37, 13}, Case{1, 64, 7, 1}}) {
      SCOPED_TRACE(c.in);
      const double s = 0.7;
      const auto a = random_vec(c.rank * c.in, 30), b = random_vec(c.out * c.rank, 31);
      const auto x = random_vec(c.n * c.in, 32), dy = random_vec(c.n * c.out, 33);
      const auto y0 = random_vec(c.n * c.out, 34), da0 = random_vec(a.size(), 35), db0 = random_vec(b.size(), 36),
                 dx0 = random_vec(x.size(), 37);
      Vec y = y0, xa(c.n * c.rank), da = da0, db = db0, dx = dx0;
      lora_forward(a.data(), b.data(), c.rank, c.in, c.out, s, x.data(), c.n, y.data(), xa.data());
      lora_backward(a.data(), b.data(), c.rank, c.in, c.out, s, x.data(), xa.data(), dy.data(), c.n, da.data(),
                    db.data(), dx.data());
      const auto af = to_float(a), bf = to_float(b), xf = to_float(x), dyf = to_float(dy);
      auto yf = to_float(y0), daf = to_float(da0), dbf = to_float(db0), dxf = to_float(dx0);
      std::vector<float> xaf(xa.size());
      lora_forward(af.data(), bf.data(), c.rank, c.in, c.out, 0.7f, xf.data(), c.n, yf.data(), xaf.data());
      lora_backward(af.data(), bf.data(), c.rank, c.in, c.out, 0.7f, xf.data(), xaf.data(), dyf.data(), c.n,
                    daf.data(), dbf.data(), dxf.data());
      EXPECT_LT(relative_error(xaf, xa), 1e-5);
      EXPECT_LT(relative_error(yf, y), 1e-5);
      EXPECT_LT(relative_error(daf, da), 1e-5);
      EXPECT_LT(relative_error(dbf, db), 1e-5);
      EXPECT_LT(relative_error(dxf, dx), 1e-5);
    }
  });
}

TEST(TrainOps, RopeBackwardIsTheGradientForBothPairOrders) {
  const int64_t n = 4, heads = 3, head_dim = 10;
  const std::vector<int32_t> positions = {0, 5, 17, 1000};
  for (RopeOrder order : {RopeOrder::Normal, RopeOrder::NeoX}) {
    const auto rope = make_rope_table(order, 8, 10000.0f);  // 8 of 10 dimensions rotate
    const auto x = random_vec(n * heads * head_dim, 14), dy = random_vec(x.size(), 15);
    auto forward = [&](const Vec& in) {
      Vec y = in;
      rope_forward(rope, y.data(), n, heads, head_dim, positions);
      return y;
    };
    Vec dx = dy;
    rope_backward(rope, dx.data(), n, heads, head_dim, positions);
    EXPECT_LT(relative_error(dx, numeric_gradient(forward, x, dy)), 1e-7);
  }
}

TEST(TrainOps, AttentionBackwardIsTheGradientOfQueriesKeysAndValues) {
  const AttentionShape shape{.n = 5, .heads = 4, .kv_heads = 2, .head_dim = 6};
  const size_t q_size = shape.n * shape.heads * shape.head_dim, kv_size = shape.n * shape.kv_heads * shape.head_dim;
  const auto q = random_vec(q_size, 16), k = random_vec(kv_size, 17), v = random_vec(kv_size, 18);
  const auto dout = random_vec(q_size, 19);
  auto run = [&](const Vec& qv, const Vec& kv, const Vec& vv) {
    Vec out(q_size), probs(shape.heads * shape.n * shape.n);
    attention_forward(shape, qv.data(), kv.data(), vv.data(), out.data(), probs.data());
    return out;
  };
  Vec out(q_size), probs(shape.heads * shape.n * shape.n), dq(q_size), dk(kv_size, 0.0), dv(kv_size, 0.0);
  attention_forward(shape, q.data(), k.data(), v.data(), out.data(), probs.data());
  attention_backward(shape, q.data(), k.data(), v.data(), probs.data(), dout.data(), dq.data(), dk.data(), dv.data());
  EXPECT_LT(relative_error(dq, numeric_gradient([&](const Vec& x) { return run(x, k, v); }, q, dout)), 1e-7);
  EXPECT_LT(relative_error(dk, numeric_gradient([&](const Vec& x) { return run(q, x, v); }, k, dout)), 1e-7);
  EXPECT_LT(relative_error(dv, numeric_gradient([&](const Vec& x) { return run(q, k, x); }, v, dout)), 1e-7);
  // Causal: the first token attends to itself only, so its output is its value.
  for (int64_t h = 0; h < shape.heads; ++h)
    for (int64_t i = 0; i < shape.head_dim; ++i)
      EXPECT_NEAR(out[h * shape.head_dim + i], v[(h / 2) * shape.head_dim + i], 1e-12);
  // float32 against the double reference
  const auto qf = to_float(q), kf = to_float(k), vf = to_float(v), df = to_float(dout);
  std::vector<float> of(q_size), pf(probs.size()), dqf(q_size), dkf(kv_size, 0.0f), dvf(kv_size, 0.0f);
  attention_forward(shape, qf.data(), kf.data(), vf.data(), of.data(), pf.data());
  attention_backward(shape, qf.data(), kf.data(), vf.data(), pf.data(), df.data(), dqf.data(), dkf.data(), dvf.data());
  EXPECT_LT(relative_error(dqf, dq), 1e-5);
  EXPECT_LT(relative_error(dkf, dk), 1e-5);
  EXPECT_LT(relative_error(dvf, dv), 1e-5);
  EXPECT_THROW(attention_forward(AttentionShape{.n = 2, .heads = 3, .kv_heads = 2, .head_dim = 4}, q.data(),
                                 k.data(), v.data(), out.data(), probs.data()),
               InvalidArgumentError);
}

// The ops that take a pool split work into rows (attention, cross-entropy) or ranges (SwiGLU)
// that each thread computes whole: the same bits with any number of threads as without a pool.
TEST(TrainOps, ThreadedOpsGiveTheSameBitsAsUnthreaded) {
  const AttentionShape shape{.n = 37, .heads = 6, .kv_heads = 2, .head_dim = 24};
  const size_t q_size = shape.n * shape.heads * shape.head_dim, kv_size = shape.n * shape.kv_heads * shape.head_dim;
  const auto q = to_float(random_vec(q_size, 40)), k = to_float(random_vec(kv_size, 41)),
             v = to_float(random_vec(kv_size, 42)), dout = to_float(random_vec(q_size, 43));
  const int64_t vocab = 301, count = 10007;
  const auto logits = to_float(random_vec(shape.n * vocab, 44, 3.0));
  std::vector<int32_t> targets(static_cast<size_t>(shape.n));
  for (int64_t t = 0; t < shape.n; ++t) targets[t] = t % 5 == 1 ? -1 : static_cast<int32_t>((t * 37) % vocab);
  const auto g = to_float(random_vec(count, 45, 2.0)), u = to_float(random_vec(count, 46)),
             dh = to_float(random_vec(count, 47));
  struct Results {
    std::vector<float> out, probs, dq, dk, dv, dlogits, h, dg, du;
    double loss = 0;
  };
  auto run = [&](cpu::ThreadPool* pool) {
    Results r;
    r.out.resize(q_size);
    r.probs.resize(static_cast<size_t>(shape.heads * shape.n * shape.n));
    r.dq.resize(q_size);
    r.dk.assign(kv_size, 0.0f);
    r.dv.assign(kv_size, 0.0f);
    r.dlogits.resize(logits.size());
    for (auto* v : {&r.h, &r.dg, &r.du}) v->resize(static_cast<size_t>(count));
    attention_forward(shape, q.data(), k.data(), v.data(), r.out.data(), r.probs.data(), pool);
    attention_backward(shape, q.data(), k.data(), v.data(), r.probs.data(), dout.data(), r.dq.data(), r.dk.data(),
                       r.dv.data(), pool);
    r.loss = cross_entropy(logits.data(), shape.n, vocab, targets, r.dlogits.data(), pool);
    swiglu_forward(g.data(), u.data(), count, r.h.data(), pool);
    swiglu_backward(dh.data(), g.data(), u.data(), count, r.dg.data(), r.du.data(), pool);
    return r;
  };
  const Results alone = run(nullptr);
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(threads);
    cpu::ThreadPool pool(threads);
    const Results r = run(&pool);
    EXPECT_EQ(r.out, alone.out);
    EXPECT_EQ(r.probs, alone.probs);
    EXPECT_EQ(r.dq, alone.dq);
    EXPECT_EQ(r.dk, alone.dk);
    EXPECT_EQ(r.dv, alone.dv);
    EXPECT_EQ(r.dlogits, alone.dlogits);
    EXPECT_EQ(r.loss, alone.loss);
    EXPECT_EQ(r.h, alone.h);
    EXPECT_EQ(r.dg, alone.dg);
    EXPECT_EQ(r.du, alone.du);
  }
  // And the pool's cross-entropy is the plain one's.
  std::vector<float> plain(logits.size());
  EXPECT_EQ(cross_entropy(logits.data(), shape.n, vocab, targets, plain.data()), alone.loss);
  EXPECT_EQ(plain, alone.dlogits);
}

TEST(TrainOps, CrossEntropyScoresOnlyTargetedRowsAndIsItsGradient) {
  const int64_t n = 4, vocab = 13;
  const std::vector<int32_t> targets = {3, -1, 12, 0};  // row 1 is a prompt token, not scored
  const auto logits = random_vec(n * vocab, 20, 3.0);
  Vec grad(n * vocab);
  const double loss = cross_entropy(logits.data(), n, vocab, targets, grad.data());
  // The loss by hand: mean over the three scored rows of log-sum-exp minus the target's logit.
  double expect = 0;
  for (int64_t t : {0, 2, 3}) {
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[t * vocab + i]);
    expect += std::log(sum) - logits[t * vocab + targets[t]];
  }
  EXPECT_NEAR(loss, expect / 3, 1e-12);
  Vec scratch(n * vocab);
  auto loss_of = [&](const Vec& z) { return Vec{cross_entropy(z.data(), n, vocab, targets, scratch.data())}; };
  EXPECT_LT(relative_error(grad, numeric_gradient(loss_of, logits, Vec{1.0})), 1e-7);
  for (int64_t i = 0; i < vocab; ++i) EXPECT_EQ(grad[1 * vocab + i], 0.0);
  EXPECT_EQ(cross_entropy(logits.data(), n, vocab, std::vector<int32_t>(n, -1), grad.data()), 0.0);
  EXPECT_THROW(cross_entropy(logits.data(), n, vocab, std::vector<int32_t>{0, 1, 13, 2}, grad.data()),
               InvalidArgumentError);
}

}  // namespace
}  // namespace lathe::train
