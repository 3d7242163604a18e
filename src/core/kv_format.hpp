// Element formats of the KV cache and their layout in memory, shared by the CPU and CUDA engines.
#pragma once

#include <cstdint>

namespace lathe {

enum class KvFormat : uint8_t { F32, F16, Q8_0 };

// Q8_0 holds ggml's Q8_0 values (blocks of 32: scale d = max|x| / 127 stored as an IEEE half,
// quants round(x / d)), stored split so that both engines read them with aligned wide loads: a
// layer's buffer is n_ctx rows of row_elements int8 quants, then n_ctx rows of row_elements / 32
// half scales. Blocks never straddle heads: Q8_0 needs head_dim % 32 == 0.
constexpr int64_t kKvQ8Block = 32;

constexpr const char* kv_format_name(KvFormat f) noexcept {
  return f == KvFormat::F32 ? "f32" : f == KvFormat::F16 ? "f16" : "q8_0";
}

// Bytes of one layer's keys (or values) for n_ctx positions.
constexpr uint64_t kv_layer_bytes(KvFormat f, uint32_t n_ctx, int64_t row_elements) noexcept {
  const uint64_t elems = uint64_t{n_ctx} * static_cast<uint64_t>(row_elements);
  switch (f) {
    case KvFormat::F32: return elems * 4;
    case KvFormat::F16: return elems * 2;
    case KvFormat::Q8_0: return elems + elems / kKvQ8Block * 2;
  }
  return 0;
}

// Where the half scales of a Q8_0 layer buffer start, in bytes.
constexpr uint64_t kv_q8_scales_offset(uint32_t n_ctx, int64_t row_elements) noexcept {
  return uint64_t{n_ctx} * static_cast<uint64_t>(row_elements);
}

}  // namespace lathe
