// Every backward op of the training pass (src/train/ops.hpp) against finite differences of its
// forward in float64, on random inputs of odd sizes (llm.c's discipline); and the float32 ops
// against the float64 ones. With L(x) = sum(dy . f(x)) for a random dy, the backward's dx must be
// dL/dx: central differences of the double forward, step 1e-5, agree to ~1e-8 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "core/quant.hpp"
#include "core/rope.hpp"
#include "lathe/error.hpp"
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
