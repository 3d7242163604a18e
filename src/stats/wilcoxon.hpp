// The Wilcoxon signed-rank test, computed as scipy.stats.wilcoxon (scipy 1.17) with its defaults
// (zero_method='wilcox', correction=False, method='auto'):
//   zero differences are dropped; the other n_r differences are ranked by |d| (ties get their
//   average rank); r_plus = sum of the ranks of d > 0, r_minus of d < 0; the reported statistic
//   is min(r_plus, r_minus) for the two-sided test and r_plus for the one-sided ones.
// The p-value, by scipy's rule on the n differences (zeros included):
//   * n > 50: the normal approximation, z = (r_plus - n_r(n_r + 1)/4) / se,
//     se = sqrt((n_r(n_r + 1)(2 n_r + 1) - sum_ties(t^3 - t) / 2) / 24),
//     two-sided p = 2 Phi(-|z|), less Phi(z), greater Phi(-z);
//   * n <= 50 with no ties and no zeros: the exact null distribution of r_plus (each of the 2^n
//     sign patterns equally likely; counted exactly), two-sided p = min(1, 2 min(P(R <= r),
//     P(R >= r))), less P(R <= r), greater P(R >= r);
//   * n <= 13 with ties or zeros: the exact permutation distribution of r_plus over the 2^n sign
//     flips (scipy.stats.permutation_test, exact since 2^13 < its 9999 resamples);
//   * 13 < n <= 50 with ties or zeros: the normal approximation.
// Degenerate data: every difference zero gives p = 1 where scipy enumerates (n <= 13) and an
// InvalidArgumentError where scipy returns NaN (the normal approximation has no variance); fewer
// than one difference, or a single zero difference, is an InvalidArgumentError as in scipy.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "stats/alternative.hpp"

namespace lathe::stats {

enum class WilcoxonMethod { Exact, Permutation, Normal };
std::string_view wilcoxon_method_name(WilcoxonMethod method);

struct WilcoxonResult {
  double statistic = 0;       // min(r_plus, r_minus) two-sided, r_plus one-sided (as scipy)
  double r_plus = 0, r_minus = 0;
  double p_value = 1;
  WilcoxonMethod method = WilcoxonMethod::Exact;
  double z = 0;               // (r_plus - mean) / se; 0 unless Normal
  size_t n = 0, n_zero = 0;   // differences, and how many of them are 0
  bool has_ties = false;      // equal |d| among the non-zero differences
};

// P(R <= k) for the signed-rank statistic R of n differences without ties (2^n sign patterns);
// exact (integer counts) for n <= 62. Used for the exact p-value.
double signed_rank_cdf(uint64_t k, unsigned n);

// The test of the differences `d` (e.g. first - second of paired samples). InvalidArgumentError
// for no difference, a non-finite one, or the degenerate cases above.
WilcoxonResult wilcoxon(std::span<const double> d, Alternative alternative = Alternative::TwoSided);
// Paired samples: the test of first[i] - second[i]; InvalidArgumentError when the lengths differ.
WilcoxonResult wilcoxon_paired(std::span<const double> first, std::span<const double> second,
                               Alternative alternative = Alternative::TwoSided);

}  // namespace lathe::stats
