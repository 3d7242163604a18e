// The standard normal distribution: its CDF and its inverse, accurate to a few units in the last
// place, which the BCa interval needs (its percentile levels pass through both).
#pragma once

namespace lathe::stats {

// Phi(x) = P(Z <= x) for Z ~ N(0, 1), through std::erfc (no cancellation in either tail).
double normal_cdf(double x);

// Phi^-1(p): -inf at 0, +inf at 1; InvalidArgumentError for p outside [0, 1] or NaN.
// Acklam's rational approximation (relative error 1.15e-9) refined by one Halley step on
// erfc; the upper half is computed as -Phi^-1(1 - p) (1 - p is exact there) so that the
// refinement works on a tail probability, never on one close to 1.
double normal_quantile(double p);

}  // namespace lathe::stats
