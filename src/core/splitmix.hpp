// splitmix64: a portable 64-bit generator and mixer, the same numbers on every standard library
// and machine. The project's seeded draws that must repeat everywhere (SAE training, the TPE
// search's seeds, the SVD start of ablation adapters, LoRA dropout masks) go through it.
#pragma once

#include <cstdint>

namespace lathe {

inline constexpr uint64_t kSplitmixGamma = 0x9e3779b97f4a7c15ull;

// The finalizer: a bijection that scatters nearby inputs over all 64 bits.
inline constexpr uint64_t splitmix64_mix(uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The generator's next value; advances `state`.
inline constexpr uint64_t splitmix64_next(uint64_t& state) noexcept {
  return splitmix64_mix(state += kSplitmixGamma);
}

}  // namespace lathe
