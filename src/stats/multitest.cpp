#include "stats/multitest.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "lathe/error.hpp"

namespace lathe::stats {
namespace {

void check_inputs(std::span<const double> p_values, double alpha) {
  if (!(alpha > 0 && alpha < 1))
    throw InvalidArgumentError(fmt::format("the FDR level alpha = {} is outside (0, 1); use e.g. 0.05", alpha));
  for (size_t i = 0; i < p_values.size(); ++i)
    if (!(p_values[i] >= 0 && p_values[i] <= 1))  // NaN fails both comparisons
      throw InvalidArgumentError(fmt::format("p-value {} is {}: a p-value must be a number in [0, 1] (a NaN is a "
                                             "failed test upstream; fix or drop it before adjusting)",
                                             i + 1, p_values[i]));
}

// BY's constant: the harmonic number H_m, smallest terms first (the accurate order).
double harmonic_number(size_t m) {
  double s = 0;
  for (size_t k = m; k >= 1; --k) s += 1.0 / static_cast<double>(k);
  return s;
}

}  // namespace

std::string_view fdr_method_name(FdrMethod method) {
  return method == FdrMethod::BenjaminiHochberg ? "bh" : "by";
}

FdrMethod parse_fdr_method(std::string_view text) {
  if (text == "bh" || text == "fdr_bh") return FdrMethod::BenjaminiHochberg;
  if (text == "by" || text == "fdr_by") return FdrMethod::BenjaminiYekutieli;
  throw InvalidArgumentError(fmt::format("unknown adjustment method '{}': use bh (Benjamini-Hochberg) or by "
                                         "(Benjamini-Yekutieli)",
                                         text));
}

FdrAdjustment adjust_fdr(std::span<const double> p_values, FdrMethod method, double alpha) {
  check_inputs(p_values, alpha);
  const size_t m = p_values.size();
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p_values[a] < p_values[b]; });
  const double c = method == FdrMethod::BenjaminiYekutieli ? harmonic_number(m) : 1.0;
  // statsmodels' ecdf factor (i / m) / c, in its order of operations, so that the reject flags
  // agree exactly at the boundary.
  auto factor = [&](size_t rank) { return static_cast<double>(rank + 1) / static_cast<double>(m) / c; };
  FdrAdjustment out{.adjusted = std::vector<double>(m), .reject = std::vector<bool>(m, false)};
  size_t rejected = 0;  // the step-up: every test up to the last one under its threshold
  for (size_t i = 0; i < m; ++i)
    if (p_values[order[i]] <= factor(i) * alpha) rejected = i + 1;
  double running = 1;  // min over j >= i, from the largest p-value down
  for (size_t i = m; i-- > 0;) {
    running = std::min(running, p_values[order[i]] / factor(i));
    out.adjusted[order[i]] = running;
    out.reject[order[i]] = i < rejected;
  }
  return out;
}

}  // namespace lathe::stats
