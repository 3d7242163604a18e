#include "stats/bootstrap.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>

#include "lathe/error.hpp"
#include "stats/normal.hpp"
#include "stats/random.hpp"

namespace lathe::stats {
namespace {

void check_confidence(double confidence) {
  if (!(confidence > 0 && confidence < 1))
    throw InvalidArgumentError(fmt::format("the confidence level {} is outside (0, 1); use e.g. 0.95", confidence));
}

// Everything a whole bootstrap run needs before it draws: scipy's own rules, said in lathe's words.
void check_run(std::span<const double> sample, const BootstrapOptions& options, std::string_view which) {
  check_confidence(options.confidence);
  if (options.n_resamples == 0) throw InvalidArgumentError("a bootstrap interval needs at least one resample");
  if (options.method == IntervalMethod::Degenerate)
    throw InvalidArgumentError("ask for a BCa or a percentile bootstrap interval ('degenerate' is only a result)");
  if (sample.size() < 2)
    throw InvalidArgumentError(fmt::format("a bootstrap interval needs at least two observations{} (got {}): one value "
                                           "has no spread to resample (scipy.stats.bootstrap refuses it too)",
                                           which, sample.size()));
  for (size_t i = 0; i < sample.size(); ++i)
    if (!std::isfinite(sample[i]))
      throw InvalidArgumentError(fmt::format("observation {}{} is {}: a bootstrap interval needs finite values",
                                             i + 1, which, sample[i]));
}

bool all_equal(std::span<const double> values) {
  return std::all_of(values.begin(), values.end(), [&](double v) { return v == values.front(); });
}

BootstrapInterval degenerate(double estimate, double confidence) {
  return {.estimate = estimate, .low = estimate, .high = estimate, .confidence = confidence,
          .method = IntervalMethod::Degenerate, .n_resamples = 0};
}

double standard_deviation(std::span<const double> values) {
  if (values.size() < 2) return 0;
  const double m = mean_of(values);
  double s = 0;
  for (double v : values) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(values.size() - 1));
}

// One sample's terms of the acceleration: sum U^3 / n^3 and sum U^2 / n^2 (Efron & Tibshirani
// (14.15); scipy adds them over the samples of a multi-sample statistic).
std::pair<double, double> acceleration_terms(std::span<const double> jackknife) {
  const double n = static_cast<double>(jackknife.size());
  const double dot = mean_of(jackknife);
  double num = 0, den = 0;
  for (double v : jackknife) {
    const double u = (n - 1) * (dot - v);
    num += u * u * u;
    den += u * u;
  }
  return {num / (n * n * n), den / (n * n)};
}

double jackknife_acceleration(std::span<const std::vector<double>> jackknife_per_sample) {
  double num = 0, den = 0;
  for (const auto& jackknife : jackknife_per_sample) {
    const auto [n3, d2] = acceleration_terms(jackknife);
    num += n3;
    den += d2;
  }
  return den > 0 ? num / (6 * std::pow(den, 1.5)) : 0.0;
}

// The adjusted percentile level of one end: Phi(z0 + (z0 + z) / (1 - a (z0 + z))).
double bca_level(double z0, double a, double z) {
  const double num = z0 + z;
  return normal_cdf(z0 + num / (1 - a * num));
}

// The sorted distribution with the fields every method shares filled in.
BootstrapInterval base_interval(double estimate, std::vector<double>& sorted, double confidence) {
  check_confidence(confidence);
  if (sorted.empty()) throw InvalidArgumentError("a bootstrap interval needs at least one bootstrap statistic");
  std::sort(sorted.begin(), sorted.end());
  return {.estimate = estimate, .confidence = confidence, .standard_error = standard_deviation(sorted),
          .n_resamples = sorted.size()};
}

// The interval `options.method` asks for, from a distribution and the jackknife values.
BootstrapInterval interval_of(double estimate, std::span<const double> distribution,
                              std::span<const std::vector<double>> jackknife_per_sample,
                              const BootstrapOptions& options) {
  if (options.method == IntervalMethod::Percentile)
    return percentile_from_distribution(estimate, distribution, options.confidence);
  return bca_from_distribution(estimate, distribution, jackknife_per_sample, options.confidence);
}

}  // namespace

double quantile_linear(std::span<const double> sorted, double q) {
  if (sorted.empty()) throw InvalidArgumentError("quantile of an empty set of values");
  if (!(q >= 0 && q <= 1)) throw InvalidArgumentError(fmt::format("quantile level {} is outside [0, 1]", q));
  const double h = static_cast<double>(sorted.size() - 1) * q;
  const auto lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= sorted.size()) return sorted.back();
  const double frac = h - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

double fraction_below(std::span<const double> values, double score) {
  size_t below = 0, at_or_below = 0;
  for (double v : values) {
    below += v < score ? 1 : 0;
    at_or_below += v <= score ? 1 : 0;
  }
  return static_cast<double>(below + at_or_below) / (2.0 * static_cast<double>(values.size()));
}

std::string_view interval_method_name(IntervalMethod method) {
  switch (method) {
    case IntervalMethod::Bca: return "BCa";
    case IntervalMethod::Percentile: return "percentile";
    case IntervalMethod::Degenerate: return "degenerate";
  }
  return "?";
}

BootstrapInterval bca_from_distribution(double estimate, std::span<const double> bootstrap,
                                        std::span<const double> jackknife, double confidence) {
  const std::vector<double> one(jackknife.begin(), jackknife.end());
  return bca_from_distribution(estimate, bootstrap, std::span<const std::vector<double>>(&one, 1), confidence);
}

BootstrapInterval bca_from_distribution(double estimate, std::span<const double> bootstrap,
                                        std::span<const std::vector<double>> jackknife_per_sample,
                                        double confidence) {
  if (jackknife_per_sample.empty()) throw InvalidArgumentError("the BCa interval needs the jackknife values of a sample");
  for (const auto& jackknife : jackknife_per_sample)
    if (jackknife.size() < 2) throw InvalidArgumentError("the BCa interval needs at least two jackknife values");
  std::vector<double> sorted(bootstrap.begin(), bootstrap.end());
  BootstrapInterval r = base_interval(estimate, sorted, confidence);
  const double alpha = (1 - confidence) / 2;
  const double below = fraction_below(sorted, estimate);
  double level_low = alpha, level_high = 1 - alpha;
  if (below > 0 && below < 1) {
    r.z0 = normal_quantile(below);
    r.acceleration = jackknife_acceleration(jackknife_per_sample);
    const double z = normal_quantile(alpha);
    level_low = bca_level(r.z0, r.acceleration, z);
    level_high = bca_level(r.z0, r.acceleration, -z);
    r.method = IntervalMethod::Bca;
  } else {
    r.method = IntervalMethod::Percentile;  // z0 would be infinite: no bias correction exists
  }
  r.low = quantile_linear(sorted, level_low);
  r.high = quantile_linear(sorted, level_high);
  return r;
}

BootstrapInterval percentile_from_distribution(double estimate, std::span<const double> bootstrap, double confidence) {
  std::vector<double> sorted(bootstrap.begin(), bootstrap.end());
  BootstrapInterval r = base_interval(estimate, sorted, confidence);
  const double alpha = (1 - confidence) / 2;
  r.method = IntervalMethod::Percentile;
  r.low = quantile_linear(sorted, alpha);
  r.high = quantile_linear(sorted, 1 - alpha);
  return r;
}

double mean_of(std::span<const double> values) {
  if (values.empty()) throw InvalidArgumentError("the mean of an empty set of values");
  double s = 0;
  for (double v : values) s += v;
  return s / static_cast<double>(values.size());
}

double median_of(std::span<const double> values) {
  if (values.empty()) throw InvalidArgumentError("the median of an empty set of values");
  std::vector<double> v(values.begin(), values.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(mid), v.end());
  if (v.size() % 2 == 1) return v[mid];
  const double upper = v[mid];
  const double lower = *std::max_element(v.begin(), v.begin() + static_cast<long>(mid));
  return (lower + upper) / 2;
}

std::vector<double> jackknife_values(std::span<const double> sample, const Statistic& statistic) {
  std::vector<double> out, rest;
  out.reserve(sample.size());
  rest.reserve(sample.size());
  for (size_t i = 0; i < sample.size(); ++i) {
    rest.clear();
    for (size_t j = 0; j < sample.size(); ++j)
      if (j != i) rest.push_back(sample[j]);
    out.push_back(statistic(rest));
  }
  return out;
}

std::vector<double> resample_statistics(std::span<const double> sample, const Statistic& statistic,
                                        size_t n_resamples, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> distribution, resample(sample.size());
  distribution.reserve(n_resamples);
  for (size_t b = 0; b < n_resamples; ++b) {
    for (double& v : resample) v = sample[rng.index(sample.size())];
    distribution.push_back(statistic(resample));
  }
  return distribution;
}

std::vector<double> resample_statistics_two_sample(std::span<const double> first, std::span<const double> second,
                                                   const Statistic& statistic, size_t n_resamples, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> distribution, a(first.size()), b(second.size());
  distribution.reserve(n_resamples);
  for (size_t r = 0; r < n_resamples; ++r) {
    for (double& v : a) v = first[rng.index(first.size())];
    for (double& v : b) v = second[rng.index(second.size())];
    distribution.push_back(statistic(a) - statistic(b));
  }
  return distribution;
}

BootstrapInterval bootstrap_interval(std::span<const double> sample, const Statistic& statistic,
                                     const BootstrapOptions& options) {
  check_run(sample, options, "");
  const double estimate = statistic(sample);
  if (all_equal(sample)) return degenerate(estimate, options.confidence);
  const auto distribution = resample_statistics(sample, statistic, options.n_resamples, options.seed);
  const std::vector<std::vector<double>> jackknife{jackknife_values(sample, statistic)};
  return interval_of(estimate, distribution, jackknife, options);
}

BootstrapInterval bootstrap_paired_interval(std::span<const double> first, std::span<const double> second,
                                            const Statistic& statistic, const BootstrapOptions& options) {
  if (first.size() != second.size())
    throw InvalidArgumentError(fmt::format("paired samples must have the same length (got {} and {})", first.size(),
                                           second.size()));
  std::vector<double> differences(first.size());
  for (size_t i = 0; i < first.size(); ++i) differences[i] = first[i] - second[i];
  return bootstrap_interval(differences, statistic, options);
}

BootstrapInterval bootstrap_two_sample_interval(std::span<const double> first, std::span<const double> second,
                                                const Statistic& statistic, const BootstrapOptions& options) {
  check_run(first, options, " in the first sample");
  check_run(second, options, " in the second sample");
  const double estimate = statistic(first) - statistic(second);
  if (all_equal(first) && all_equal(second)) return degenerate(estimate, options.confidence);
  const auto distribution = resample_statistics_two_sample(first, second, statistic, options.n_resamples, options.seed);
  // scipy's multi-sample jackknife: one sample shortened at a time, the other whole.
  const double whole_first = statistic(first), whole_second = statistic(second);
  std::vector<std::vector<double>> jackknife{jackknife_values(first, statistic), jackknife_values(second, statistic)};
  for (double& v : jackknife[0]) v -= whole_second;
  for (double& v : jackknife[1]) v = whole_first - v;
  return interval_of(estimate, distribution, jackknife, options);
}

BootstrapInterval bootstrap_bca(std::span<const double> sample, const Statistic& statistic,
                                const BootstrapOptions& options) {
  BootstrapOptions bca = options;
  bca.method = IntervalMethod::Bca;
  return bootstrap_interval(sample, statistic, bca);
}

BootstrapInterval bootstrap_bca_mean(std::span<const double> sample, const BootstrapOptions& options) {
  return bootstrap_bca(sample, [](std::span<const double> v) { return mean_of(v); }, options);
}

BootstrapInterval bootstrap_bca_paired_mean_difference(std::span<const double> first, std::span<const double> second,
                                                       const BootstrapOptions& options) {
  BootstrapOptions bca = options;
  bca.method = IntervalMethod::Bca;
  return bootstrap_paired_interval(first, second, [](std::span<const double> v) { return mean_of(v); }, bca);
}

}  // namespace lathe::stats
