// Every element-wise op of the CPU backend against a plain float64 reference on random inputs,
// with odd sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <vector>

#include "backend/cpu/kernels.hpp"
#include "backend/cpu/ops.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"

namespace lathe::cpu {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(Ops, RmsNormMatchesFloat64) {
  for (int64_t n : {1, 7, 64, 576, 1001}) {
    auto x = random_vector(n, 1 + n, 3.0f), w = random_vector(n, 2 + n);
    std::vector<float> out(n);
    rms_norm(x.data(), w.data(), n, 1e-5f, out.data());
    double ss = 0;
    for (auto v : x) ss += double(v) * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], x[i] * inv * w[i], 1e-5 * (1 + std::abs(x[i] * inv * w[i]))) << n;
  }
}

TEST(Ops, RmsNormInPlace) {
  auto x = random_vector(33, 5), w = random_vector(33, 6);
  std::vector<float> expected(33);
  rms_norm(x.data(), w.data(), 33, 1e-6f, expected.data());
  rms_norm(x.data(), w.data(), 33, 1e-6f, x.data());
  EXPECT_EQ(x, expected);
}

TEST(Ops, SiluMulMatchesFloat64) {
  auto g = random_vector(1537, 7, 4.0f), u = random_vector(1537, 8);
  std::vector<float> out(g.size());
  silu_mul(g.data(), u.data(), static_cast<int64_t>(g.size()), out.data());
  for (size_t i = 0; i < g.size(); ++i) {
    const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
    EXPECT_NEAR(out[i], ref, 1e-6 * (1 + std::abs(ref)));
  }
}

TEST(Ops, SoftmaxMatchesFloat64AndHandlesMinusInfinity) {
  auto x = random_vector(517, 9, 10.0f);
  x[3] = -INFINITY;
  auto ref = x;
  softmax_inplace(x.data(), static_cast<int64_t>(x.size()));
  double mx = -INFINITY, sum = 0;
  for (auto v : ref) mx = std::max(mx, double(v));
  for (auto v : ref) sum += std::exp(double(v) - mx);
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_NEAR(x[i], std::exp(double(ref[i]) - mx) / sum, 1e-7);
    total += x[i];
  }
  EXPECT_EQ(x[3], 0.0f);
  EXPECT_NEAR(total, 1.0, 1e-5);
}

// Reference RoPE in float64 for one head.
std::vector<double> rope_reference(const std::vector<float>& head, int rope_dim, double base, int64_t pos, bool neox,
                                   const std::vector<float>& factors) {
  std::vector<double> out(head.begin(), head.end());
  for (int i = 0; i < rope_dim / 2; ++i) {
    double inv = std::pow(base, -2.0 * i / rope_dim);
    if (!factors.empty()) inv /= factors[i];
    // Frequencies are float32 in transformers and llama.cpp alike; at position 1e5 their rounding
    // moves angles by ~1e-3 rad, so the reference rounds them the same way.
    const double th = pos * static_cast<double>(static_cast<float>(inv));
    const int a = neox ? i : 2 * i, b = neox ? i + rope_dim / 2 : 2 * i + 1;
    out[a] = head[a] * std::cos(th) - head[b] * std::sin(th);
    out[b] = head[a] * std::sin(th) + head[b] * std::cos(th);
  }
  return out;
}

TEST(Ops, RopeBothOrdersPartialDimsAndFactors) {
  for (bool neox : {false, true}) {
    for (int rope_dim : {64, 32}) {
      for (int64_t pos : {0, 1, 17, 4095, 100000}) {
        const int head_dim = 64, n_heads = 3;
        std::vector<float> factors;
        if (rope_dim == 32) factors = random_vector(16, 11, 0.2f), std::for_each(factors.begin(), factors.end(), [](float& f) { f = 1 + std::abs(f); });
        auto heads = random_vector(head_dim * n_heads, 10 + pos);
        auto table = make_rope_table(neox ? RopeOrder::NeoX : RopeOrder::Normal, rope_dim, 10000.0f, factors);
        auto rotated = heads;
        apply_rope(rotated.data(), n_heads, head_dim, pos, table);
        for (int h = 0; h < n_heads; ++h) {
          std::vector<float> head(heads.begin() + h * head_dim, heads.begin() + (h + 1) * head_dim);
          auto ref = rope_reference(head, rope_dim, 10000.0, pos, neox, factors);
          for (int d = 0; d < head_dim; ++d)
            ASSERT_NEAR(rotated[h * head_dim + d], ref[d], 2e-4 * (1 + std::abs(ref[d])))
                << "neox=" << neox << " rope_dim=" << rope_dim << " pos=" << pos << " d=" << d;
        }
      }
    }
  }
}

TEST(Ops, Llama3FactorsFollowTheHuggingFaceFormula) {
  // Llama-3.1: factor 8, low 1, high 4, original context 8192, base 500000, head_dim 128.
  auto f = llama3_freq_factors(128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192);
  ASSERT_EQ(f.size(), 64u);
  for (int i = 0; i < 64; ++i) {
    const double inv = std::pow(500000.0, -2.0 * i / 128), wavelen = 2 * std::numbers::pi / inv;
    double scaled;
    if (wavelen < 8192 / 4.0) scaled = inv;
    else if (wavelen > 8192 / 1.0) scaled = inv / 8;
    else {
      const double smooth = (8192 / wavelen - 1) / (4 - 1);
      scaled = (1 - smooth) * inv / 8 + smooth * inv;
    }
    EXPECT_NEAR(f[i], inv / scaled, 1e-5 * inv / scaled) << i;
  }
  EXPECT_FLOAT_EQ(f[0], 1.0f);   // highest frequency untouched
  EXPECT_FLOAT_EQ(f[63], 8.0f);  // lowest frequency divided by the factor
}

// Runs `body` once per kernel level this CPU has (scalar always, avx2 when present).
template <class Body>
void for_each_level(Body body) {
  for (const char* level : {"scalar", "avx2"}) {
    if (!kernels::force_kernel_level(level)) continue;
    SCOPED_TRACE(level);
    body();
  }
  kernels::force_kernel_level("");
}

// The cache layer holds exactly what the reference decoding of its format gives: float32 as is,
// halves through f16_to_f32, Q8_0 through core/quant.hpp's Q8_0 blocks (bit-exact with gguf-py).
std::vector<float> stored_values(const std::vector<float>& x, KvFormat format) {
  if (format == KvFormat::F32) return x;
  if (format == KvFormat::F16) {
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = f16_to_f32(f32_to_f16(x[i]));
    return out;
  }
  return dequantize(DType::Q8_0, quantize(DType::Q8_0, x), static_cast<int64_t>(x.size()));
}

TEST(Ops, AttendOneMatchesFloat64ForEveryCacheFormat) { for_each_level([] {
  const int head_dim = 64, n_kv_heads = 3;
  const int64_t stride = head_dim * n_kv_heads;
  for (int64_t n_keys : {1, 2, 31, 300})
    for (KvFormat format : {KvFormat::F32, KvFormat::F16, KvFormat::Q8_0}) {
      const auto n_ctx = static_cast<uint32_t>(n_keys + 5);  // rows past n_keys stay unread
      auto q = random_vector(head_dim, 20 + n_keys);
      auto k = random_vector(n_ctx * stride, 21 + n_keys), v = random_vector(n_ctx * stride, 22 + n_keys);
      std::vector<uint8_t> k_layer(kv_layer_bytes(format, n_ctx, stride)), v_layer(k_layer.size());
      for (uint32_t pos = 0; pos < n_ctx; ++pos) {
        kv_store_row(k.data() + pos * stride, format, k_layer.data(), n_ctx, stride, pos);
        kv_store_row(v.data() + pos * stride, format, v_layer.data(), n_ctx, stride, pos);
      }
      const auto ks = stored_values(k, format), vs = stored_values(v, format);
      const int g = 2;
      const float scale = 0.125f;
      std::vector<double> s(n_keys);
      double mx = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0;
        for (int d = 0; d < head_dim; ++d) dot += double(q[d]) * ks[j * stride + g * head_dim + d];
        s[j] = dot * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      std::vector<float> scores(n_keys), out(head_dim);
      const KvLayerView layer{.format = format, .keys = k_layer.data(), .values = v_layer.data(), .n_ctx = n_ctx,
                              .row_stride = stride};
      attend_one(q.data(), layer, n_keys, g * head_dim, head_dim, scale, scores.data(), out.data());
      for (int d = 0; d < head_dim; ++d) {
        double ref = 0;
        for (int64_t j = 0; j < n_keys; ++j) ref += s[j] / sum * vs[j * stride + g * head_dim + d];
        EXPECT_NEAR(out[d], ref, 1e-5) << "n_keys=" << n_keys << " " << kv_format_name(format);
      }
    }
}); }

TEST(Ops, HalfConversionRoundTripsEveryFiniteHalf) { for_each_level([] {
  std::vector<uint16_t> all;
  for (uint32_t h = 0; h < 65536; ++h)
    if (std::isfinite(f16_to_f32(static_cast<uint16_t>(h)))) all.push_back(static_cast<uint16_t>(h));
  std::vector<float> f(all.size());
  std::vector<uint16_t> back(all.size());
  f16_to_f32_row(all.data(), f.data(), static_cast<int64_t>(all.size()));
  f32_to_f16_row(f.data(), back.data(), static_cast<int64_t>(all.size()));
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(f[i], f16_to_f32(all[i]));
    // -0 and +0 keep their sign; every other value returns to its bit pattern.
    ASSERT_EQ(back[i], all[i]) << i;
  }
  // Rounding of values between halves: round to nearest, ties to even, like the scalar path.
  auto x = random_vector(1000, 77, 100.0f);
  std::vector<uint16_t> h(x.size());
  f32_to_f16_row(x.data(), h.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(h[i], f32_to_f16(x[i])) << x[i];
}); }

}  // namespace
}  // namespace lathe::cpu
