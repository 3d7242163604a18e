#include "stats/wilcoxon.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numeric>
#include <vector>

#include "lathe/error.hpp"
#include "stats/normal.hpp"

namespace lathe::stats {
namespace {

// scipy's rule (method='auto'): above 50 differences the normal approximation; with ties or
// zeros, exact enumeration of sign flips up to 13 (2^13 < permutation_test's 9999 resamples).
constexpr size_t kExactLimit = 50;
constexpr size_t kPermutationLimit = 13;

// The non-zero differences with the average ranks of their absolute values.
struct Ranked {
  std::vector<double> d, rank;
  double tie_term = 0;  // sum over groups of equal |d| of t^3 - t
  bool has_ties = false;
};

Ranked rank_nonzero(std::span<const double> differences) {
  Ranked r;
  for (double v : differences)
    if (v != 0) r.d.push_back(v);
  std::vector<size_t> order(r.d.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return std::abs(r.d[a]) < std::abs(r.d[b]); });
  r.rank.assign(r.d.size(), 0);
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j < order.size() && std::abs(r.d[order[j]]) == std::abs(r.d[order[i]])) ++j;
    const double t = static_cast<double>(j - i);
    const double average = static_cast<double>(i + 1) + (t - 1) / 2;  // ranks i+1 .. j
    for (size_t k = i; k < j; ++k) r.rank[order[k]] = average;
    r.tie_term += t * t * t - t;
    r.has_ties = r.has_ties || j - i > 1;
    i = j;
  }
  return r;
}

// The sum of the ranks of the differences whose sign, after flipping those in `flips`, is +.
double rank_sum_positive(const Ranked& r, uint64_t flips) {
  double s = 0;
  for (size_t i = 0; i < r.d.size(); ++i)
    if ((r.d[i] > 0) != (((flips >> i) & 1) != 0)) s += r.rank[i];
  return s;
}

// counts[k] = number of subsets of {1..n} summing to k, k = 0..n(n+1)/2.
std::vector<uint64_t> signed_rank_counts(unsigned n) {
  std::vector<uint64_t> counts(static_cast<size_t>(n) * (n + 1) / 2 + 1, 0);
  counts[0] = 1;
  for (unsigned k = 1; k <= n; ++k)
    for (size_t s = static_cast<size_t>(k) * (k + 1) / 2; s >= k; --s) counts[s] += counts[s - k];
  return counts;
}

double p_from_tails(double p_less, double p_greater, Alternative alternative) {
  switch (alternative) {
    case Alternative::Less: return p_less;
    case Alternative::Greater: return p_greater;
    case Alternative::TwoSided: return std::min(1.0, 2 * std::min(p_less, p_greater));
  }
  return 1;
}

// The exact p-value: r_plus is an integer here (no ties).
double exact_p(double r_plus, unsigned n, Alternative alternative) {
  const auto counts = signed_rank_counts(n);
  const auto k = static_cast<uint64_t>(r_plus);
  uint64_t at_most = 0;  // #{R <= k}
  for (uint64_t s = 0; s <= k; ++s) at_most += counts[s];
  const uint64_t at_least = (uint64_t{1} << n) - at_most + counts[k];  // #{R >= k}
  const int exponent = -static_cast<int>(n);
  return p_from_tails(std::ldexp(static_cast<double>(at_most), exponent),
                      std::ldexp(static_cast<double>(at_least), exponent), alternative);
}

// scipy.stats.permutation_test of r_plus over every sign flip (flipping a zero changes nothing,
// so the proportions over the non-zero differences' flips are the same).
double permutation_p(const Ranked& r, double r_plus, Alternative alternative) {
  const double gamma = std::abs(100 * std::numeric_limits<double>::epsilon() * r_plus);
  const uint64_t m = uint64_t{1} << r.d.size();
  uint64_t less = 0, greater = 0;
  for (uint64_t flips = 0; flips < m; ++flips) {
    const double v = rank_sum_positive(r, flips);
    less += v <= r_plus + gamma ? 1 : 0;
    greater += v >= r_plus - gamma ? 1 : 0;
  }
  const double dm = static_cast<double>(m);
  return p_from_tails(static_cast<double>(less) / dm, static_cast<double>(greater) / dm, alternative);
}

double normal_p(const Ranked& r, double r_plus, Alternative alternative, double& z) {
  const auto count = static_cast<double>(r.d.size());
  const double mean = count * (count + 1.) * 0.25;
  const double variance_24 = count * (count + 1.) * (2. * count + 1.) - r.tie_term / 2;
  if (!(variance_24 > 0))
    throw InvalidArgumentError("every difference is zero: the Wilcoxon test's normal approximation has no variance "
                               "(scipy returns NaN); there is nothing to test");
  z = (r_plus - mean) / std::sqrt(variance_24 / 24);
  return p_from_tails(normal_cdf(z), normal_cdf(-z), alternative);
}

}  // namespace

std::string_view wilcoxon_method_name(WilcoxonMethod method) {
  switch (method) {
    case WilcoxonMethod::Exact: return "exact";
    case WilcoxonMethod::Permutation: return "permutation";
    case WilcoxonMethod::Normal: return "normal approximation";
  }
  return "?";
}

double signed_rank_cdf(uint64_t k, unsigned n) {
  if (n > 62) throw InvalidArgumentError(fmt::format("signed_rank_cdf: n = {} is above 62", n));
  const auto counts = signed_rank_counts(n);
  uint64_t at_most = 0;
  for (uint64_t s = 0; s <= k && s < counts.size(); ++s) at_most += counts[s];
  return std::ldexp(static_cast<double>(at_most), -static_cast<int>(n));
}

WilcoxonResult wilcoxon(std::span<const double> d, Alternative alternative) {
  if (d.empty()) throw InvalidArgumentError("the Wilcoxon test needs at least one difference");
  for (size_t i = 0; i < d.size(); ++i)
    if (!std::isfinite(d[i]))
      throw InvalidArgumentError(fmt::format("difference {} is {}: the Wilcoxon test needs finite values", i + 1, d[i]));
  const Ranked r = rank_nonzero(d);
  WilcoxonResult out{.n = d.size(), .n_zero = d.size() - r.d.size(), .has_ties = r.has_ties};
  for (size_t i = 0; i < r.d.size(); ++i) (r.d[i] > 0 ? out.r_plus : out.r_minus) += r.rank[i];
  out.statistic = alternative == Alternative::TwoSided ? std::min(out.r_plus, out.r_minus) : out.r_plus;
  if (d.size() <= kExactLimit && !r.has_ties && out.n_zero == 0) {
    out.method = WilcoxonMethod::Exact;
    out.p_value = exact_p(out.r_plus, static_cast<unsigned>(d.size()), alternative);
  } else if (d.size() <= kPermutationLimit) {
    if (d.size() < 2)
      throw InvalidArgumentError("a single zero difference: the Wilcoxon test has nothing to rank (scipy refuses it "
                                 "too); give at least two differences");
    out.method = WilcoxonMethod::Permutation;
    out.p_value = permutation_p(r, out.r_plus, alternative);
  } else {
    out.method = WilcoxonMethod::Normal;
    out.p_value = normal_p(r, out.r_plus, alternative, out.z);
  }
  return out;
}

WilcoxonResult wilcoxon_paired(std::span<const double> first, std::span<const double> second,
                               Alternative alternative) {
  if (first.size() != second.size())
    throw InvalidArgumentError(fmt::format("paired samples must have the same length (got {} and {})", first.size(),
                                           second.size()));
  std::vector<double> differences(first.size());
  for (size_t i = 0; i < first.size(); ++i) differences[i] = first[i] - second[i];
  return wilcoxon(differences, alternative);
}

}  // namespace lathe::stats
