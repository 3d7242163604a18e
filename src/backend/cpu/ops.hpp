// The element-wise and per-row operations of a transformer block, on float32 rows: RMSNorm,
// SwiGLU, RoPE (normal and NeoX pair orderings, frequency factors for llama3 scaling), softmax
// and single-query attention over a KV cache. Each is checked against a float64 reference in
// tests/backend/test_ops.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/kv_format.hpp"
#include "core/rope.hpp"

namespace lathe::cpu {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]; out may alias x.
void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g); out may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t n, float* out);

// y[i] += x[i]
void add_inplace(float* y, const float* x, int64_t n);

// x[i] = e^(x[i] - max) / sum, over n values (n >= 1). -inf entries give 0.
void softmax_inplace(float* x, int64_t n);

// Rotates n_heads consecutive heads of head_dim floats at position `pos`, in place.
void apply_rope(float* heads, int32_t n_heads, int32_t head_dim, int64_t pos, const RopeTable& table);

// One layer's cached keys and values as attention reads them: rows of `row_stride` elements (row
// j of K/V head g starts at element j * row_stride + g * head_dim) in `format`
// (core/kv_format.hpp); n_ctx locates the scales of a Q8_0 buffer.
struct KvLayerView {
  KvFormat format = KvFormat::F16;
  const void* keys = nullptr;
  const void* values = nullptr;
  uint32_t n_ctx = 0;
  int64_t row_stride = 0;
};

// One query head against keys/values 0..n_keys-1 of a cache layer. `scores` is scratch of n_keys
// floats. out[d] = sum_j softmax(q.k_j * scale)_j * v_j[d].
void attend_one(const float* q, const KvLayerView& kv, int64_t n_keys, int64_t kv_head_offset, int32_t head_dim,
                float scale, float* scores, float* out);

// Stores row_elements floats as row `pos` of a layer buffer of n_ctx rows in `format` (Q8_0:
// quantized exactly as core/quant.hpp's Q8_0, the gguf-py reference).
void kv_store_row(const float* x, KvFormat format, void* layer, uint32_t n_ctx, int64_t row_elements, int64_t pos);

// Converts n floats to IEEE half / back (round to nearest even; F16C when available).
void f32_to_f16_row(const float* x, uint16_t* out, int64_t n);
void f16_to_f32_row(const uint16_t* x, float* out, int64_t n);

}  // namespace lathe::cpu
