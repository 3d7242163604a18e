#include "stats/mcnemar.hpp"

#include <algorithm>
#include <cmath>

namespace lathe::stats {
namespace {

// C(n, k) / 2^n for k <= n / 2 as mantissa * 2^exponent, renormalized after every factor.
double binomial_pmf_half(uint64_t k, uint64_t n) {
  double mantissa = 1;
  long exponent = 0;
  for (uint64_t i = 1; i <= k; ++i) {
    mantissa *= static_cast<double>(n - k + i) / static_cast<double>(i);
    int e = 0;
    mantissa = std::frexp(mantissa, &e);
    exponent += e;
  }
  return std::ldexp(mantissa, static_cast<int>(std::max<long>(exponent - static_cast<long>(n), -100000)));
}

}  // namespace

double binomial_cdf_half(uint64_t k, uint64_t n) {
  if (k >= n) return 1.0;
  if (2 * k > n) return 1.0 - binomial_cdf_half(n - k - 1, n);  // the complement's tail is the small one
  // Terms below pmf(k) relative to it: r_{i-1} = r_i * i / (n - i + 1), each factor < 1 here.
  double sum = 0, ratio = 1;
  for (uint64_t i = k;; --i) {
    sum += ratio;
    if (i == 0 || ratio < sum * 1e-18) break;
    ratio *= static_cast<double>(i) / static_cast<double>(n - i + 1);
  }
  return binomial_pmf_half(k, n) * sum;
}

McNemarResult mcnemar_exact(uint64_t b, uint64_t c) {
  McNemarResult r{.b = b, .c = c, .p_value = 1};
  if (b + c == 0) return r;
  r.p_value = std::min(1.0, 2 * binomial_cdf_half(std::min(b, c), b + c));
  return r;
}

}  // namespace lathe::stats
