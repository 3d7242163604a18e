#include "train/ops.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <type_traits>
#include <vector>

#include "core/quant.hpp"
#include "lathe/error.hpp"
#include "train/frozen_gemm.hpp"

namespace lathe::train {
namespace {

// Row r of a frozen matrix as T values.
template <class T>
void matrix_row(const MatrixView& w, int64_t r, std::vector<float>& scratch, std::vector<T>& row) {
  scratch.resize(static_cast<size_t>(w.cols));
  dequantize_row(w.type, w.data + static_cast<size_t>(r) * w.row_bytes, scratch.data(), w.cols);
  row.assign(scratch.begin(), scratch.end());
}

template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// The rotation of one pair of a head at `position`, applied with `sign` = +1 (forward) or -1
// (its inverse, the backward).
template <class T>
void rotate(const RopeTable& rope, T* x, int64_t n, int64_t heads, int64_t head_dim,
            std::span<const int32_t> positions, double sign) {
  if (static_cast<int64_t>(positions.size()) != n)
    throw InvalidArgumentError(fmt::format("rope: {} positions for {} rows", positions.size(), n));
  if (rope.rope_dim > head_dim || rope.rope_dim % 2 != 0)
    throw InvalidArgumentError(fmt::format("rope: rope_dim {} does not fit head_dim {}", rope.rope_dim, head_dim));
  const int64_t half = rope.rope_dim / 2;
  for (int64_t t = 0; t < n; ++t) {
    const double position = static_cast<double>(positions[t]) * rope.position_scale;
    for (int64_t i = 0; i < half; ++i) {
      // Angles in double, as the inference pass computes them (backend/cpu/ops.cpp).
      const double theta = position * rope.inv_freq[static_cast<size_t>(i)];
      const T c = static_cast<T>(std::cos(theta)), s = static_cast<T>(sign * std::sin(theta));
      const int64_t a = rope.order == RopeOrder::Normal ? 2 * i : i;
      const int64_t b = rope.order == RopeOrder::Normal ? 2 * i + 1 : i + half;
      for (int64_t h = 0; h < heads; ++h) {
        T* v = x + (t * heads + h) * head_dim;
        const T x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
      }
    }
  }
}

// sum a[i] * b[i] as eight interleaved partial sums added pairwise at the end: the compiler
// vectorizes it (a single running sum is a chain it must keep in order).
template <class T>
T dot(const T* a, const T* b, int64_t count) {
  T part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    for (int j = 0; j < 8; ++j) part[j] += a[i + j] * b[i + j];
  for (; i < count; ++i) part[i % 8] += a[i] * b[i];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

// body(first, end) over [0, count) in chunks of `grain` that the pool's threads claim as they come
// free (rows of attention cost more the later they are: a fixed split would be uneven). Each
// index is computed by one call whichever thread makes it, so results do not depend on threads.
void split(cpu::ThreadPool* pool, int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (pool == nullptr || pool->size() == 1 || count < 2 * grain) {
    if (count > 0) body(0, count);
    return;
  }
  std::atomic<int64_t> next{0};
  pool->run([&](int, int) {
    for (int64_t first = next.fetch_add(grain); first < count; first = next.fetch_add(grain))
      body(first, std::min(count, first + grain));
  });
}

void check_attention(const AttentionShape& s) {
  if (s.n < 1 || s.heads < 1 || s.kv_heads < 1 || s.head_dim < 1 || s.heads % s.kv_heads != 0)
    throw InvalidArgumentError(fmt::format("attention: n {}, heads {}, kv_heads {}, head_dim {}: heads must be a "
                                           "positive multiple of kv_heads",
                                           s.n, s.heads, s.kv_heads, s.head_dim));
}

}  // namespace

template <class T>
void rms_norm_forward(const T* x, const float* w, int64_t n, int64_t d, float eps, T* y, T* rstd) {
  for (int64_t t = 0; t < n; ++t) {
    const T* xr = x + t * d;
    double sum = 0;
    for (int64_t i = 0; i < d; ++i) sum += double(xr[i]) * xr[i];
    const T r = static_cast<T>(1.0 / std::sqrt(sum / static_cast<double>(d) + eps));
    rstd[t] = r;
    for (int64_t i = 0; i < d; ++i) y[t * d + i] = xr[i] * r * w[i];
  }
}

template <class T>
void rms_norm_backward(const T* dy, const T* x, const float* w, const T* rstd, int64_t n, int64_t d, T* dx) {
  for (int64_t t = 0; t < n; ++t) {
    const T* xr = x + t * d;
    const T* g = dy + t * d;
    double dot = 0;  // sum(w . dy . x)
    for (int64_t i = 0; i < d; ++i) dot += double(w[i]) * g[i] * xr[i];
    const T r = rstd[t];
    const T k = static_cast<T>(dot * double(r) * r * r / static_cast<double>(d));
    for (int64_t i = 0; i < d; ++i) dx[t * d + i] += r * w[i] * g[i] - xr[i] * k;
  }
}

template <class T>
void swiglu_forward(const T* g, const T* u, int64_t count, T* h, cpu::ThreadPool* pool) {
  split(pool, count, 4096, [&](int64_t first, int64_t end) {
    for (int64_t i = first; i < end; ++i) h[i] = g[i] * sigmoid(g[i]) * u[i];
  });
}

template <class T>
void swiglu_backward(const T* dh, const T* g, const T* u, int64_t count, T* dg, T* du, cpu::ThreadPool* pool) {
  split(pool, count, 4096, [&](int64_t first, int64_t end) {
    for (int64_t i = first; i < end; ++i) {
      const T sg = sigmoid(g[i]);
      du[i] = dh[i] * g[i] * sg;
      dg[i] = dh[i] * u[i] * sg * (T(1) + g[i] * (T(1) - sg));
    }
  });
}

template <class T>
void frozen_linear_forward(const MatrixView& w, const T* x, int64_t n, T* y, cpu::ThreadPool* pool) {
  // float32 (training) takes the blocked product; float64 (the tests' reference) these loops.
  if constexpr (std::is_same_v<T, float>) {
    frozen_gemm_forward(w, x, n, y, pool);
    return;
  }
  auto rows = [&](int64_t first, int64_t end) {
    std::vector<float> scratch;
    std::vector<T> row;
    for (int64_t r = first; r < end; ++r) {
      matrix_row(w, r, scratch, row);
      for (int64_t t = 0; t < n; ++t) {
        const T* xr = x + t * w.cols;
        T sum = 0;
        for (int64_t c = 0; c < w.cols; ++c) sum += row[c] * xr[c];
        y[t * w.rows + r] = sum;
      }
    }
  };
  if (pool)
    pool->parallel_for(w.rows, 8, rows);
  else
    rows(0, w.rows);
}

template <class T>
void frozen_linear_backward(const MatrixView& w, const T* dy, int64_t n, T* dx, cpu::ThreadPool* pool) {
  if constexpr (std::is_same_v<T, float>) {
    frozen_gemm_backward(w, dy, n, dx, pool);
    return;
  }
  auto columns = [&](int64_t first, int64_t end) {
    std::vector<float> scratch;
    std::vector<T> row;
    for (int64_t r = 0; r < w.rows; ++r) {
      matrix_row(w, r, scratch, row);
      for (int64_t t = 0; t < n; ++t) {
        const T g = dy[t * w.rows + r];
        if (g == T(0)) continue;
        T* dxr = dx + t * w.cols;
        for (int64_t c = first; c < end; ++c) dxr[c] += g * row[c];
      }
    }
  };
  if (pool && w.cols >= 2 * 64)
    pool->parallel_for(w.cols, 64, columns);
  else
    columns(0, w.cols);
}

template <class T>
void frozen_linear_forward(std::span<const MatrixView* const> w, const T* x, int64_t n,
                           std::span<std::type_identity_t<T>* const> y, cpu::ThreadPool* pool) {
  if constexpr (std::is_same_v<T, float>) {
    frozen_gemm_forward(w, x, n, y, pool);
  } else {
    if (w.size() != y.size())
      throw InvalidArgumentError(fmt::format("frozen_linear_forward: {} matrices, {} outputs", w.size(), y.size()));
    for (size_t i = 0; i < w.size(); ++i) frozen_linear_forward(*w[i], x, n, y[i], pool);
  }
}

template <class T>
void frozen_linear_backward(std::span<const MatrixView* const> w, std::span<const std::type_identity_t<T>* const> dy,
                            int64_t n, T* dx, cpu::ThreadPool* pool) {
  if constexpr (std::is_same_v<T, float>) {
    frozen_gemm_backward(w, dy, n, dx, pool);
  } else {
    if (w.size() != dy.size())
      throw InvalidArgumentError(fmt::format("frozen_linear_backward: {} matrices, {} gradients", w.size(), dy.size()));
    for (size_t i = 0; i < w.size(); ++i) frozen_linear_backward(*w[i], dy[i], n, dx, pool);
  }
}

template <class T>
void lora_forward(const T* a, const T* b, int64_t rank, int64_t in, int64_t out, T s, const T* x, int64_t n, T* y,
                  T* xa) {
  if constexpr (std::is_same_v<T, float>) {
    lora_gemm_forward(a, b, rank, in, out, s, x, n, y, xa);
    return;
  }
  for (int64_t t = 0; t < n; ++t) {
    const T* xr = x + t * in;
    T* u = xa + t * rank;
    for (int64_t k = 0; k < rank; ++k) {
      T sum = 0;
      for (int64_t c = 0; c < in; ++c) sum += a[k * in + c] * xr[c];
      u[k] = sum;
    }
    for (int64_t r = 0; r < out; ++r) {
      T sum = 0;
      for (int64_t k = 0; k < rank; ++k) sum += b[r * rank + k] * u[k];
      y[t * out + r] += s * sum;
    }
  }
}

template <class T>
void lora_backward(const T* a, const T* b, int64_t rank, int64_t in, int64_t out, T s, const T* x, const T* xa,
                   const T* dy, int64_t n, T* da, T* db, T* dx) {
  if constexpr (std::is_same_v<T, float>) {
    lora_gemm_backward(a, b, rank, in, out, s, x, xa, dy, n, da, db, dx);
    return;
  }
  std::vector<T> du(static_cast<size_t>(rank));
  for (int64_t t = 0; t < n; ++t) {
    const T* g = dy + t * out;
    const T* u = xa + t * rank;
    const T* xr = x + t * in;
    // y = s B u, u = A x: dB = s dy u^T, du = s B^T dy, dA = du x^T, dx = A^T du.
    std::fill(du.begin(), du.end(), T(0));
    for (int64_t r = 0; r < out; ++r) {
      const T sg = s * g[r];
      for (int64_t k = 0; k < rank; ++k) {
        db[r * rank + k] += sg * u[k];
        du[k] += sg * b[r * rank + k];
      }
    }
    for (int64_t k = 0; k < rank; ++k) {
      for (int64_t c = 0; c < in; ++c) {
        da[k * in + c] += du[k] * xr[c];
        dx[t * in + c] += du[k] * a[k * in + c];
      }
    }
  }
}

template <class T>
void rope_forward(const RopeTable& rope, T* x, int64_t n, int64_t heads, int64_t head_dim,
                  std::span<const int32_t> positions) {
  rotate(rope, x, n, heads, head_dim, positions, +1.0);
}

template <class T>
void rope_backward(const RopeTable& rope, T* dx, int64_t n, int64_t heads, int64_t head_dim,
                   std::span<const int32_t> positions) {
  rotate(rope, dx, n, heads, head_dim, positions, -1.0);
}

template <class T>
void attention_forward(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out, T* probs,
                       cpu::ThreadPool* pool) {
  check_attention(shape);
  const int64_t n = shape.n, hd = shape.head_dim, group = shape.heads / shape.kv_heads;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(hd)));
  // One query row (head h, token t): its softmax row and its output.
  auto row = [&](int64_t h, int64_t t) {
    const int64_t g = h / group;
    const T* qt = q + (t * shape.heads + h) * hd;
    T* p = probs + (h * n + t) * n;
    T max = -INFINITY;
    for (int64_t s = 0; s <= t; ++s) {
      p[s] = dot(qt, k + (s * shape.kv_heads + g) * hd, hd) * scale;
      max = std::max(max, p[s]);
    }
    double sum = 0;
    for (int64_t s = 0; s <= t; ++s) {
      p[s] = std::exp(p[s] - max);
      sum += p[s];
    }
    std::fill(p + t + 1, p + n, T(0));
    T* o = out + (t * shape.heads + h) * hd;
    std::fill(o, o + hd, T(0));
    for (int64_t s = 0; s <= t; ++s) {
      p[s] = static_cast<T>(p[s] / sum);
      const T* vs = v + (s * shape.kv_heads + g) * hd;
      for (int64_t i = 0; i < hd; ++i) o[i] += p[s] * vs[i];
    }
  };
  split(pool, shape.heads * n, 8, [&](int64_t first, int64_t end) {
    for (int64_t r = first; r < end; ++r) row(r / n, r % n);
  });
}

// In two passes that each split into independent rows: per query row (h, t) the softmax's
// gradient ds and dq; then per key row (kv head g, token s) dk and dv, which collect from every
// query row of g's heads at or after s. Each sum adds its terms in the order of the one-pass loop
// over h, t, s (heads ascending, then tokens).
template <class T>
void attention_backward(const AttentionShape& shape, const T* q, const T* k, const T* v, const T* probs,
                        const T* dout, T* dq, T* dk, T* dv, cpu::ThreadPool* pool) {
  check_attention(shape);
  const int64_t n = shape.n, hd = shape.head_dim, group = shape.heads / shape.kv_heads;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(hd)));
  std::vector<T> ds(static_cast<size_t>(shape.heads * n * n));  // dscore, laid out as probs
  auto query_row = [&](int64_t h, int64_t t, std::vector<T>& dp) {
    const int64_t g = h / group;
    const T* p = probs + (h * n + t) * n;
    const T* go = dout + (t * shape.heads + h) * hd;
    // out = sum_s p_s v_s: dp_s = dout . v_s. Softmax: dscore_s = p_s (dp_s - sum p dp).
    T weighted = 0;  // sum_s p_s dp_s
    for (int64_t s = 0; s <= t; ++s) {
      dp[static_cast<size_t>(s)] = dot(go, v + (s * shape.kv_heads + g) * hd, hd);
      weighted += p[s] * dp[static_cast<size_t>(s)];
    }
    // score_s = scale q_t . k_s: dq_t = sum_s dscore_s scale k_s.
    T* d = ds.data() + (h * n + t) * n;
    T* dqt = dq + (t * shape.heads + h) * hd;
    std::fill(dqt, dqt + hd, T(0));
    for (int64_t s = 0; s <= t; ++s) {
      d[s] = p[s] * (dp[static_cast<size_t>(s)] - weighted) * scale;
      const T* ks = k + (s * shape.kv_heads + g) * hd;
      for (int64_t i = 0; i < hd; ++i) dqt[i] += d[s] * ks[i];
    }
  };
  split(pool, shape.heads * n, 8, [&](int64_t first, int64_t end) {
    std::vector<T> dp(static_cast<size_t>(n));
    for (int64_t r = first; r < end; ++r) query_row(r / n, r % n, dp);
  });
  // dv_s += sum p_(t,s) dout_t and dk_s += sum dscore_(t,s) q_t over the group's query rows.
  auto key_row = [&](int64_t g, int64_t s) {
    T* dvs = dv + (s * shape.kv_heads + g) * hd;
    T* dks = dk + (s * shape.kv_heads + g) * hd;
    for (int64_t h = g * group; h < (g + 1) * group; ++h)
      for (int64_t t = s; t < n; ++t) {
        const T p = probs[(h * n + t) * n + s], d = ds[static_cast<size_t>((h * n + t) * n + s)];
        const T* go = dout + (t * shape.heads + h) * hd;
        const T* qt = q + (t * shape.heads + h) * hd;
        for (int64_t i = 0; i < hd; ++i) {
          dvs[i] += p * go[i];
          dks[i] += d * qt[i];
        }
      }
  };
  split(pool, shape.kv_heads * n, 8, [&](int64_t first, int64_t end) {
    for (int64_t r = first; r < end; ++r) key_row(r / n, r % n);
  });
}

template <class T>
double log_sum_exp(const T* z, int64_t vocab) {
  const double max = *std::max_element(z, z + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(z[i]) - max);
  return max + std::log(sum);
}

template <class T>
double cross_entropy(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, T* dlogits,
                     cpu::ThreadPool* pool) {
  if (static_cast<int64_t>(targets.size()) != n)
    throw InvalidArgumentError(fmt::format("cross_entropy: {} targets for {} rows", targets.size(), n));
  int64_t scored = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (targets[t] >= vocab || targets[t] < -1)
      throw InvalidArgumentError(fmt::format("cross_entropy: target {} of row {} is outside the vocabulary (0..{}, "
                                             "or -1 for a row not scored)",
                                             targets[t], t, vocab - 1));
    scored += targets[t] >= 0;
  }
  const double inv = scored > 0 ? 1.0 / static_cast<double>(scored) : 0.0;
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  // One row: exp(z - max) is computed once, kept in dlogits while summing, then scaled.
  auto row = [&](int64_t t) {
    T* d = dlogits + t * vocab;
    if (targets[t] < 0) {
      std::fill(d, d + vocab, T(0));
      return;
    }
    const T* z = logits + t * vocab;
    const double max = *std::max_element(z, z + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double e = std::exp(double(z[i]) - max);
      sum += e;
      d[i] = static_cast<T>(e);
    }
    row_loss[static_cast<size_t>(t)] = max + std::log(sum) - z[targets[t]];
    const double factor = inv / sum;
    for (int64_t i = 0; i < vocab; ++i) d[i] = static_cast<T>(double(d[i]) * factor);
    d[targets[t]] -= static_cast<T>(inv);
  };
  split(pool, n, 1, [&](int64_t first, int64_t end) {
    for (int64_t t = first; t < end; ++t) row(t);
  });
  double loss = 0;
  for (double l : row_loss) loss += l;
  return loss * inv;
}

template <class T>
double cross_entropy(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, T* dlogits) {
  return cross_entropy(logits, n, vocab, targets, dlogits, nullptr);
}

#define LATHE_TRAIN_OPS(T)                                                                                            \
  template void rms_norm_forward<T>(const T*, const float*, int64_t, int64_t, float, T*, T*);                         \
  template void rms_norm_backward<T>(const T*, const T*, const float*, const T*, int64_t, int64_t, T*);              \
  template void swiglu_forward<T>(const T*, const T*, int64_t, T*, cpu::ThreadPool*);                               \
  template void swiglu_backward<T>(const T*, const T*, const T*, int64_t, T*, T*, cpu::ThreadPool*);                \
  template void frozen_linear_forward<T>(const MatrixView&, const T*, int64_t, T*, cpu::ThreadPool*);                \
  template void frozen_linear_backward<T>(const MatrixView&, const T*, int64_t, T*, cpu::ThreadPool*);               \
  template void frozen_linear_forward<T>(std::span<const MatrixView* const>, const T*, int64_t, std::span<T* const>, \
                                         cpu::ThreadPool*);                                                           \
  template void frozen_linear_backward<T>(std::span<const MatrixView* const>, std::span<const T* const>, int64_t,   \
                                          T*, cpu::ThreadPool*);                                                      \
  template void lora_forward<T>(const T*, const T*, int64_t, int64_t, int64_t, T, const T*, int64_t, T*, T*);        \
  template void lora_backward<T>(const T*, const T*, int64_t, int64_t, int64_t, T, const T*, const T*, const T*,     \
                                 int64_t, T*, T*, T*);                                                                \
  template void rope_forward<T>(const RopeTable&, T*, int64_t, int64_t, int64_t, std::span<const int32_t>);          \
  template void rope_backward<T>(const RopeTable&, T*, int64_t, int64_t, int64_t, std::span<const int32_t>);         \
  template void attention_forward<T>(const AttentionShape&, const T*, const T*, const T*, T*, T*,                   \
                                     cpu::ThreadPool*);                                                               \
  template void attention_backward<T>(const AttentionShape&, const T*, const T*, const T*, const T*, const T*, T*,   \
                                      T*, T*, cpu::ThreadPool*);                                                      \
  template double log_sum_exp<T>(const T*, int64_t);                                                                 \
  template double cross_entropy<T>(const T*, int64_t, int64_t, std::span<const int32_t>, T*);                       \
  template double cross_entropy<T>(const T*, int64_t, int64_t, std::span<const int32_t>, T*, cpu::ThreadPool*);

LATHE_TRAIN_OPS(float)
LATHE_TRAIN_OPS(double)

}  // namespace lathe::train
