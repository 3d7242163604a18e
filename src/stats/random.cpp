#include "stats/random.hpp"

#include <limits>

#include "lathe/error.hpp"

namespace lathe::stats {

uint64_t Rng::index(uint64_t n) {
  if (n == 0) throw InvalidArgumentError("Rng::index: the range is empty (n = 0)");
  // The largest multiple of n that fits: draws at or above it would favour small indices.
  const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x = engine_();
  while (x >= limit) x = engine_();
  return x % n;
}

}  // namespace lathe::stats
