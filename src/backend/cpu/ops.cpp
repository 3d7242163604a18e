#include "backend/cpu/ops.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>

#include "backend/cpu/vec_kernels.hpp"
#include "core/fp16.hpp"
#include "core/quant.hpp"

namespace lathe::cpu {

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  // Accumulate in double: rows of a few thousand floats lose digits in float sums.
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv_rms * weight[i];
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void softmax_inplace(float* x, int64_t n) {
  float max_value = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) max_value = std::max(max_value, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = (x[i] == -std::numeric_limits<float>::infinity()) ? 0.0f : std::exp(x[i] - max_value);
    sum += x[i];
  }
  const float inv_sum = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv_sum;
}

void apply_rope(float* heads, int32_t n_heads, int32_t head_dim, int64_t pos, const RopeTable& table) {
  const int32_t half = table.rope_dim / 2;
  const double position = static_cast<double>(pos) * table.position_scale;
  // Angles in double: positions reach 10^5 and float angles would drift by whole radians' digits.
  thread_local std::vector<float> cos_table, sin_table;
  cos_table.resize(static_cast<size_t>(half));
  sin_table.resize(static_cast<size_t>(half));
  for (int32_t i = 0; i < half; ++i) {
    const double theta = position * table.inv_freq[static_cast<size_t>(i)];
    cos_table[static_cast<size_t>(i)] = static_cast<float>(std::cos(theta));
    sin_table[static_cast<size_t>(i)] = static_cast<float>(std::sin(theta));
  }
  for (int32_t h = 0; h < n_heads; ++h) {
    float* v = heads + static_cast<int64_t>(h) * head_dim;
    for (int32_t i = 0; i < half; ++i) {
      const int32_t a = table.order == RopeOrder::Normal ? 2 * i : i;
      const int32_t b = table.order == RopeOrder::Normal ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      const float c = cos_table[static_cast<size_t>(i)], s = sin_table[static_cast<size_t>(i)];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

namespace {

// Element i of head-row `at` of a Q8_0 layer buffer: quants are int8, a half scale per 32.
struct Q8Rows {
  const int8_t* quants;
  const uint16_t* scales;
  Q8Rows(const void* layer, uint32_t n_ctx, int64_t row_stride)
      : quants(static_cast<const int8_t*>(layer)),
        scales(reinterpret_cast<const uint16_t*>(static_cast<const uint8_t*>(layer) +
                                                 kv_q8_scales_offset(n_ctx, row_stride))) {}
};

float dot_q8(const float* q, const Q8Rows& rows, int64_t at, int32_t n) {
  float total = 0.0f;
  for (int32_t b = 0; b < n; b += kKvQ8Block) {
    const int8_t* k = rows.quants + at + b;
    float sum = 0.0f;
    for (int32_t i = 0; i < kKvQ8Block; ++i) sum += q[b + i] * static_cast<float>(k[i]);
    total += f16_to_f32(rows.scales[(at + b) / kKvQ8Block]) * sum;
  }
  return total;
}

void axpy_q8(float p, const Q8Rows& rows, int64_t at, float* out, int32_t n) {
  for (int32_t b = 0; b < n; b += kKvQ8Block) {
    const int8_t* v = rows.quants + at + b;
    const float w = p * f16_to_f32(rows.scales[(at + b) / kKvQ8Block]);
    for (int32_t i = 0; i < kKvQ8Block; ++i) out[b + i] += w * static_cast<float>(v[i]);
  }
}

}  // namespace

void attend_one(const float* q, const KvLayerView& kv, int64_t n_keys, int64_t kv_head_offset, int32_t head_dim,
                float scale, float* scores, float* out) {
  const auto& vk = kernels::active_vec_kernels();
  const Q8Rows k8(kv.keys, kv.n_ctx, kv.row_stride), v8(kv.values, kv.n_ctx, kv.row_stride);
  for (int64_t j = 0; j < n_keys; ++j) {
    const int64_t at = j * kv.row_stride + kv_head_offset;
    switch (kv.format) {
      case KvFormat::F32: scores[j] = vk.dot_f32(q, static_cast<const float*>(kv.keys) + at, head_dim); break;
      case KvFormat::F16: scores[j] = vk.dot_f16(q, static_cast<const uint16_t*>(kv.keys) + at, head_dim); break;
      case KvFormat::Q8_0: scores[j] = dot_q8(q, k8, at, head_dim); break;
    }
    scores[j] *= scale;
  }
  softmax_inplace(scores, n_keys);
  std::fill(out, out + head_dim, 0.0f);
  for (int64_t j = 0; j < n_keys; ++j) {
    const int64_t at = j * kv.row_stride + kv_head_offset;
    switch (kv.format) {
      case KvFormat::F32: vk.axpy_f32(scores[j], static_cast<const float*>(kv.values) + at, out, head_dim); break;
      case KvFormat::F16: vk.axpy_f16(scores[j], static_cast<const uint16_t*>(kv.values) + at, out, head_dim); break;
      case KvFormat::Q8_0: axpy_q8(scores[j], v8, at, out, head_dim); break;
    }
  }
}

void kv_store_row(const float* x, KvFormat format, void* layer, uint32_t n_ctx, int64_t row_elements, int64_t pos) {
  const int64_t at = pos * row_elements;
  switch (format) {
    case KvFormat::F32: std::memcpy(static_cast<float*>(layer) + at, x, sizeof(float) * row_elements); return;
    case KvFormat::F16: f32_to_f16_row(x, static_cast<uint16_t*>(layer) + at, row_elements); return;
    case KvFormat::Q8_0: {
      auto* quants = static_cast<uint8_t*>(layer) + at;
      auto* scales = static_cast<uint8_t*>(layer) + kv_q8_scales_offset(n_ctx, row_elements) + at / kKvQ8Block * 2;
      uint8_t block[2 + kKvQ8Block];  // ggml's Q8_0 block: half scale, 32 quants
      for (int64_t b = 0; b < row_elements / kKvQ8Block; ++b) {
        quantize_row(DType::Q8_0, x + b * kKvQ8Block, block, kKvQ8Block);
        std::memcpy(scales + 2 * b, block, 2);
        std::memcpy(quants + b * kKvQ8Block, block + 2, kKvQ8Block);
      }
      return;
    }
  }
}

void f32_to_f16_row(const float* x, uint16_t* out, int64_t n) { kernels::active_vec_kernels().f32_to_f16(x, out, n); }

void f16_to_f32_row(const uint16_t* x, float* out, int64_t n) { kernels::active_vec_kernels().f16_to_f32(x, out, n); }

}  // namespace lathe::cpu
