// Scalar conversions between float32 and the two 16-bit float formats found in model files.
//
// They reproduce the Python peers bit for bit, because lathe's outputs are checked against them:
//   - f32_to_f16 is numpy's `astype(np.float16)` (npy_floatbits_to_halfbits): round to nearest,
//     ties to even, overflow to a signed infinity, subnormal halves, and NaN keeping the top 10
//     bits of its payload (a payload that would become 0 turns into 1 so the NaN stays a NaN).
//   - f16_to_f32 is numpy's `astype(np.float32)` on halves: exact, NaN payload kept.
//   - f32_to_bf16 is gguf-py's BF16.quantize_blocks (= ggml_compute_fp32_to_bf16): any NaN is
//     made quiet keeping its sign and top payload bits, everything else rounds to nearest even
//     (finite values near the top overflow to infinity).
//   - bf16_to_f32 widens by shifting the bits up 16.
#pragma once

#include <bit>
#include <cstdint>

namespace lathe {

constexpr uint16_t f32_to_f16(float value) noexcept {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;

  if (magnitude > 0x7f800000u) {  // NaN
    auto payload = static_cast<uint16_t>((magnitude & 0x007fffffu) >> 13);
    if (payload == 0) payload = 1;
    return static_cast<uint16_t>(sign | 0x7c00u | payload);
  }
  // 65520 (0x477ff000) is the tie between the largest half, 65504 (odd mantissa), and 65536:
  // it and everything above round to infinity.
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);

  uint32_t kept;       // the bits that survive, already in half layout
  uint32_t dropped;    // the bits shifted out
  uint32_t halfway;    // value of `dropped` that is exactly half a unit in the last place
  if (magnitude < 0x38800000u) {  // below 2^-14: a subnormal half (or zero)
    if (magnitude < 0x33000000u) return sign;  // below 2^-25 rounds to zero
    // value = mantissa * 2^(exponent - 150); a subnormal half counts units of 2^-24.
    const uint32_t exponent = magnitude >> 23;
    const uint32_t mantissa = (magnitude & 0x007fffffu) | 0x00800000u;
    const uint32_t shift = 126u - exponent;  // 14 ... 24
    kept = mantissa >> shift;
    dropped = mantissa & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1u);
  } else {
    const uint32_t rebiased = magnitude - 0x38000000u;  // exponent bias 127 -> 15
    kept = rebiased >> 13;
    dropped = rebiased & 0x1fffu;
    halfway = 0x1000u;
  }
  // A carry out of the mantissa correctly bumps the exponent (and may reach min normal / inf).
  if (dropped > halfway || (dropped == halfway && (kept & 1u) != 0)) ++kept;
  return static_cast<uint16_t>(sign | kept);
}

constexpr float f16_to_f32(uint16_t half) noexcept {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1fu;
  const uint32_t mantissa = half & 0x03ffu;
  if (exponent == 0x1fu) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24 is exact in float32.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(magnitude));
  }
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

constexpr uint16_t f32_to_bf16(float value) noexcept {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) bits = (bits & 0xffff0000u) | (64u << 16);  // quiet NaN
  const uint64_t rounded = (static_cast<uint64_t>(bits) + (0x7fffu + ((bits >> 16) & 1u))) >> 16;
  return static_cast<uint16_t>(rounded);
}

constexpr float bf16_to_f32(uint16_t bf16) noexcept {
  return std::bit_cast<float>(static_cast<uint32_t>(bf16) << 16);
}

}  // namespace lathe
