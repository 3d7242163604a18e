#include "stats/permutation.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <numeric>
#include <vector>

#include "lathe/error.hpp"
#include "stats/random.hpp"

namespace lathe::stats {
namespace {

constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();

void check_sample(std::span<const double> values, std::string_view which) {
  if (values.size() < 2)
    throw InvalidArgumentError(fmt::format("a permutation test needs at least two values{} (got {}); "
                                           "scipy.stats.permutation_test refuses fewer too",
                                           which, values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw InvalidArgumentError(
          fmt::format("value {}{} is {}: a permutation test needs finite values", i + 1, which, values[i]));
}

void check_options(const PermutationOptions& options) {
  if (options.n_resamples == 0) throw InvalidArgumentError("a permutation test needs at least one resample");
}

// The null statistics counted against the observed one, as scipy counts them.
struct Tally {
  double observed = 0, gamma = 0;
  uint64_t less = 0, greater = 0, evaluated = 0;
  explicit Tally(double obs) : observed(obs), gamma(std::abs(100 * std::numeric_limits<double>::epsilon() * obs)) {}
  void add(double null_value) {
    less += null_value <= observed + gamma ? 1 : 0;
    greater += null_value >= observed - gamma ? 1 : 0;
    ++evaluated;
  }
};

PermutationResult finish(const Tally& t, bool exact, uint64_t n_arrangements, Alternative alternative) {
  const uint64_t adjustment = exact ? 0 : 1;
  const double m = static_cast<double>(t.evaluated + adjustment);
  const double p_less = static_cast<double>(t.less + adjustment) / m;
  const double p_greater = static_cast<double>(t.greater + adjustment) / m;
  double p = 0;
  switch (alternative) {
    case Alternative::Less: p = p_less; break;
    case Alternative::Greater: p = p_greater; break;
    case Alternative::TwoSided: p = 2 * std::min(p_less, p_greater); break;
  }
  return {.statistic = t.observed, .p_value = std::clamp(p, 0.0, 1.0), .exact = exact,
          .n_arrangements = n_arrangements, .n_evaluated = t.evaluated, .count_less = t.less,
          .count_greater = t.greater};
}

// mean(s_i d_i), bit i of `flips` set meaning s_i = -1; summed in index order like the observed.
double flipped_mean(std::span<const double> d, uint64_t flips) {
  double s = 0;
  for (size_t i = 0; i < d.size(); ++i) s += ((flips >> i) & 1) ? -d[i] : d[i];
  return s / static_cast<double>(d.size());
}

// mean(pooled[in group 1]) - mean(the rest), each summed in pooled order.
double split_difference(std::span<const double> pooled, const std::vector<char>& in_first, size_t n_first) {
  double a = 0, b = 0;
  for (size_t i = 0; i < pooled.size(); ++i) (in_first[i] ? a : b) += pooled[i];
  return a / static_cast<double>(n_first) - b / static_cast<double>(pooled.size() - n_first);
}

// The next k-subset of {0..n-1} in lexicographic order; false after the last.
bool next_combination(std::vector<size_t>& c, size_t n) {
  const size_t k = c.size();
  size_t i = k;
  while (i > 0 && c[i - 1] == n - k + i - 1) --i;
  if (i == 0) return false;
  ++c[i - 1];
  for (size_t j = i; j < k; ++j) c[j] = c[j - 1] + 1;
  return true;
}

}  // namespace

uint64_t binomial_coefficient_saturating(uint64_t n, uint64_t k) {
  if (k > n) return 0;
  k = std::min(k, n - k);
  uint64_t c = 1;  // C(n - k + i, i) after step i: an integer every time
  for (uint64_t i = 1; i <= k; ++i) {
    const uint64_t factor = n - k + i;
    const uint64_t g = std::gcd(c, i);
    const uint64_t reduced = c / g, divisor = i / g;  // divisor divides factor once c's share is taken out
    if (reduced > kSaturated / (factor / divisor)) return kSaturated;
    c = reduced * (factor / divisor);
  }
  return c;
}

PermutationResult permutation_test_sign_flip(std::span<const double> values, const PermutationOptions& options) {
  check_sample(values, "");
  check_options(options);
  const uint64_t n_arrangements = values.size() < 64 ? uint64_t{1} << values.size() : kSaturated;
  Tally tally(flipped_mean(values, 0));
  const bool exact = options.n_resamples >= n_arrangements;
  if (exact) {
    for (uint64_t flips = 0; flips < n_arrangements; ++flips) tally.add(flipped_mean(values, flips));
  } else {
    Rng rng(options.seed);
    std::vector<double> signed_values(values.size());
    for (uint64_t r = 0; r < options.n_resamples; ++r) {
      for (size_t i = 0; i < values.size(); ++i) signed_values[i] = rng.index(2) ? -values[i] : values[i];
      double s = 0;
      for (double v : signed_values) s += v;
      tally.add(s / static_cast<double>(values.size()));
    }
  }
  return finish(tally, exact, n_arrangements, options.alternative);
}

PermutationResult permutation_test_paired(std::span<const double> first, std::span<const double> second,
                                          const PermutationOptions& options) {
  if (first.size() != second.size())
    throw InvalidArgumentError(fmt::format("paired samples must have the same length (got {} and {})", first.size(),
                                           second.size()));
  std::vector<double> differences(first.size());
  for (size_t i = 0; i < first.size(); ++i) differences[i] = first[i] - second[i];
  return permutation_test_sign_flip(differences, options);
}

PermutationResult permutation_test_two_sample(std::span<const double> first, std::span<const double> second,
                                              const PermutationOptions& options) {
  check_sample(first, " in the first sample");
  check_sample(second, " in the second sample");
  check_options(options);
  std::vector<double> pooled(first.begin(), first.end());
  pooled.insert(pooled.end(), second.begin(), second.end());
  const size_t n = pooled.size(), k = first.size();
  const uint64_t n_arrangements = binomial_coefficient_saturating(n, k);
  std::vector<char> in_first(n, 0);
  std::fill(in_first.begin(), in_first.begin() + static_cast<long>(k), 1);
  Tally tally(split_difference(pooled, in_first, k));
  const bool exact = options.n_resamples >= n_arrangements;
  if (exact) {
    std::vector<size_t> chosen(k);
    std::iota(chosen.begin(), chosen.end(), size_t{0});
    do {
      std::fill(in_first.begin(), in_first.end(), 0);
      for (size_t i : chosen) in_first[i] = 1;
      tally.add(split_difference(pooled, in_first, k));
    } while (next_combination(chosen, n));
  } else {
    // A partial Fisher-Yates shuffle: its first k positions are a uniform k-subset.
    Rng rng(options.seed);
    std::vector<size_t> order(n);
    for (uint64_t r = 0; r < options.n_resamples; ++r) {
      std::iota(order.begin(), order.end(), size_t{0});
      std::fill(in_first.begin(), in_first.end(), 0);
      for (size_t i = 0; i < k; ++i) {
        std::swap(order[i], order[i + rng.index(n - i)]);
        in_first[order[i]] = 1;
      }
      tally.add(split_difference(pooled, in_first, k));
    }
  }
  return finish(tally, exact, n_arrangements, options.alternative);
}

}  // namespace lathe::stats
