// McNemar's exact test of paired binary outcomes (e.g. refused / not refused per prompt under
// two models): only the discordant pairs carry information, and under the null hypothesis each
// falls either way with probability 1/2.
#pragma once

#include <cstdint>

namespace lathe::stats {

// P(X <= k) for X ~ Binomial(n, 1/2), accurate to about k ulp (a running product with the
// binary exponent kept apart, so no overflow or underflow for any n).
double binomial_cdf_half(uint64_t k, uint64_t n);

struct McNemarResult {
  uint64_t b = 0, c = 0;  // discordant pairs: yes/no and no/yes
  double p_value = 1;     // two-sided
};

// The exact two-sided test, as statsmodels' mcnemar(table, exact=True):
// p = min(1, 2 * P(X <= min(b, c))), X ~ Binomial(b + c, 1/2); p = 1 when b + c = 0.
McNemarResult mcnemar_exact(uint64_t b, uint64_t c);

}  // namespace lathe::stats
