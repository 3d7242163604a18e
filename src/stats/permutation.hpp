// Permutation tests of a difference in means, computed as scipy.stats.permutation_test (scipy
// 1.17) computes them:
//  * sign flip (one sample, or paired samples through their differences d = first - second;
//    scipy's permutation_type='samples'): the statistic mean(s_i d_i) over sign vectors s, 2^n
//    arrangements; under the null hypothesis each difference is as likely + as -;
//  * two independent samples (scipy's permutation_type='independent'): the statistic
//    mean(group 1) - mean(group 2) over the C(n1 + n2, n1) ways to split the pooled values
//    into groups of the original sizes; under the null hypothesis the labels are exchangeable.
//
// Exact or Monte-Carlo, by scipy's rule: every arrangement is enumerated when n_resamples is at
// least their number (so the cost is at most n_resamples statistics of n values), else
// n_resamples arrangements are drawn at random (stats::Rng, the same on every machine).
//
// With gamma = 100 eps |observed| (so that numerically distinct but theoretically equal values
// count as equal), b_less = #{null <= observed + gamma}, b_greater = #{null >= observed - gamma}:
//   exact:        p_less = b_less / m,             p_greater = b_greater / m   (m arrangements,
//                                                                              the identity among them)
//   Monte-Carlo:  p_less = (b_less + 1) / (m + 1), p_greater = (b_greater + 1) / (m + 1)
//                 (m draws; Phipson & Smyth 2010: never 0, a valid p-value)
//   two-sided:    p = min(1, 2 min(p_less, p_greater))
#pragma once

#include <cstdint>
#include <span>

#include "stats/alternative.hpp"

namespace lathe::stats {

struct PermutationOptions {
  uint64_t n_resamples = 9999;  // scipy's default
  uint64_t seed = 0;
  Alternative alternative = Alternative::TwoSided;
};

struct PermutationResult {
  double statistic = 0;  // observed: mean(s d) at s = +1, or mean(first) - mean(second)
  double p_value = 1;
  bool exact = false;
  uint64_t n_arrangements = 0;  // 2^n or C(n1 + n2, n1), UINT64_MAX when larger
  uint64_t n_evaluated = 0;     // null statistics computed: n_arrangements if exact, else n_resamples
  uint64_t count_less = 0, count_greater = 0;  // b_less and b_greater above
};

// C(n, k), UINT64_MAX when it does not fit.
uint64_t binomial_coefficient_saturating(uint64_t n, uint64_t k);

// The sign-flip test of mean(values) = 0 (values symmetric about 0 under the null hypothesis).
// InvalidArgumentError for fewer than two values (scipy refuses them too), a non-finite value or
// n_resamples = 0.
PermutationResult permutation_test_sign_flip(std::span<const double> values, const PermutationOptions& options);
// Paired samples: the sign-flip test of the differences first[i] - second[i].
PermutationResult permutation_test_paired(std::span<const double> first, std::span<const double> second,
                                          const PermutationOptions& options);
// Two independent samples (at least two values each): the label-shuffle test of
// mean(first) - mean(second).
PermutationResult permutation_test_two_sample(std::span<const double> first, std::span<const double> second,
                                              const PermutationOptions& options);

}  // namespace lathe::stats
