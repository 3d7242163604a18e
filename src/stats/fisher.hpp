// Fisher's exact test of a 2x2 contingency table
//
//          outcome yes   outcome no
//   group 1      a            b
//   group 2      c            d
//
// computed as scipy.stats.fisher_exact (scipy 1.17): conditional on the margins, a follows the
// hypergeometric distribution P(X = x) = C(a + b, x) C(c + d, a + c - x) / C(n, a + c),
// n = a + b + c + d, x from max(0, a + c - c - d) to min(a + b, a + c). The p-values:
//   less:      P(X <= a)
//   greater:   P(X >= a)
//   two-sided: the sum of P(X = x) over every x with P(X = x) <= P(X = a) (1 + 1e-14), scipy's
//              relative tolerance for theoretically equal probabilities; 1 when a is a mode
// The statistic is the sample odds ratio a d / (b c) (scipy's: the unconditional maximum
// likelihood estimate), +inf when b c = 0. A table with a zero row or column sum gives odds ratio
// NaN and p = 1, as scipy returns.
#pragma once

#include <cstdint>

#include "stats/alternative.hpp"

namespace lathe::stats {

struct FisherResult {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  double odds_ratio = 0;  // a d / (b c); +inf when b c = 0; NaN when a margin is 0
  double p_value = 1;
};

// InvalidArgumentError when the total exceeds 10^9 (the summation runs over up to that many
// table values; the counts of any real evaluation are far smaller).
FisherResult fisher_exact(uint64_t a, uint64_t b, uint64_t c, uint64_t d,
                          Alternative alternative = Alternative::TwoSided);

}  // namespace lathe::stats
