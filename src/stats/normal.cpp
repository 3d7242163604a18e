#include "stats/normal.hpp"

#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numbers>

#include "lathe/error.hpp"

namespace lathe::stats {
namespace {

// Peter J. Acklam's algorithm for the lower half (0 < p <= 0.5).
double acklam_lower(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  constexpr double p_low = 0.02425;
  if (p < p_low) {
    const double q = std::sqrt(-2 * std::log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
           ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double q = p - 0.5;
  const double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// One Halley step on f(x) = Phi(x) - p: with u = f / phi(x), x <- x - u / (1 + x u / 2).
double halley_refine(double x, double p) {
  const double e = normal_cdf(x) - p;
  const double u = e * std::sqrt(2 * std::numbers::pi) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

}  // namespace

double normal_cdf(double x) {
  // erfc(w), w = -x / sqrt(2): in the far tails a rounding of w by one ulp changes the result by
  // ~2 w^2 ulp (2e-13 at x = -37), so w is carried as hi + lo (1/sqrt(2) as two doubles, the
  // product's error by fma) and erfc(hi + lo) = erfc(hi) - lo * 2/sqrt(pi) exp(-hi^2).
  constexpr double inv_sqrt2_hi = 0.7071067811865476, inv_sqrt2_lo = -4.833646656726457e-17;
  const double hi = -x * inv_sqrt2_hi;
  const double lo = std::fma(-x, inv_sqrt2_hi, -hi) - x * inv_sqrt2_lo;
  const double slope = 2 / std::sqrt(std::numbers::pi) * std::exp(-hi * hi);
  return 0.5 * (std::erfc(hi) - lo * slope);
}

double normal_quantile(double p) {
  if (!(p >= 0 && p <= 1))
    throw InvalidArgumentError(fmt::format("normal_quantile: probability {} is outside [0, 1]", p));
  if (p == 0) return -std::numeric_limits<double>::infinity();
  if (p == 1) return std::numeric_limits<double>::infinity();
  if (p > 0.5) return -normal_quantile(1 - p);
  if (p == 0.5) return 0.0;
  return halley_refine(acklam_lower(p), p);
}

}  // namespace lathe::stats
