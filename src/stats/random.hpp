// A seeded random source whose draws are the same on every machine and standard library: the
// 64-bit Mersenne Twister (its output sequence is fixed by the C++ standard) with lathe's own
// uniform index draw (std::uniform_int_distribution's algorithm is implementation-defined).
#pragma once

#include <cstdint>
#include <random>

namespace lathe::stats {

class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}
  // Uniform in [0, n) by rejection of the top incomplete range (no modulo bias); n > 0.
  uint64_t index(uint64_t n);

 private:
  std::mt19937_64 engine_;
};

}  // namespace lathe::stats
