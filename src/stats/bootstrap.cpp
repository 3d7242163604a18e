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

double standard_deviation(std::span<const double> values) {
  if (values.size() < 2) return 0;
  const double m = mean_of(values);
  double s = 0;
  for (double v : values) s += (v - m) * (v - m);
  return std::sqrt(s / static_cast<double>(values.size() - 1));
}

// Efron & Tibshirani (14.15): the skewness of the jackknife influence values.
double jackknife_acceleration(std::span<const double> jackknife) {
  const double n = static_cast<double>(jackknife.size());
  const double dot = mean_of(jackknife);
  double num = 0, den = 0;
  for (double v : jackknife) {
    const double u = (n - 1) * (dot - v);
    num += u * u * u;
    den += u * u;
  }
  num /= n * n * n;
  den /= n * n;
  return den > 0 ? num / (6 * std::pow(den, 1.5)) : 0.0;
}

// The adjusted percentile level of one end: Phi(z0 + (z0 + z) / (1 - a (z0 + z))).
double bca_level(double z0, double a, double z) {
  const double num = z0 + z;
  return normal_cdf(z0 + num / (1 - a * num));
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
  check_confidence(confidence);
  if (bootstrap.empty()) throw InvalidArgumentError("the BCa interval needs at least one bootstrap statistic");
  if (jackknife.size() < 2) throw InvalidArgumentError("the BCa interval needs at least two jackknife values");
  std::vector<double> sorted(bootstrap.begin(), bootstrap.end());
  std::sort(sorted.begin(), sorted.end());
  BootstrapInterval r{.estimate = estimate, .confidence = confidence, .standard_error = standard_deviation(sorted),
                      .n_resamples = sorted.size()};
  const double alpha = (1 - confidence) / 2;
  const double below = fraction_below(sorted, estimate);
  double level_low = alpha, level_high = 1 - alpha;
  if (below > 0 && below < 1) {
    r.z0 = normal_quantile(below);
    r.acceleration = jackknife_acceleration(jackknife);
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

double mean_of(std::span<const double> values) {
  if (values.empty()) throw InvalidArgumentError("the mean of an empty set of values");
  double s = 0;
  for (double v : values) s += v;
  return s / static_cast<double>(values.size());
}

BootstrapInterval bootstrap_bca(std::span<const double> sample, const Statistic& statistic,
                                const BootstrapOptions& options) {
  check_confidence(options.confidence);
  if (sample.empty()) throw InvalidArgumentError("a bootstrap interval needs at least one observation");
  if (options.n_resamples == 0) throw InvalidArgumentError("a bootstrap interval needs at least one resample");
  const double estimate = statistic(sample);
  if (std::all_of(sample.begin(), sample.end(), [&](double v) { return v == sample.front(); }))
    return {.estimate = estimate, .low = estimate, .high = estimate, .confidence = options.confidence,
            .method = IntervalMethod::Degenerate, .n_resamples = 0};
  Rng rng(options.seed);
  std::vector<double> distribution, resample(sample.size());
  distribution.reserve(options.n_resamples);
  for (size_t b = 0; b < options.n_resamples; ++b) {
    for (double& v : resample) v = sample[rng.index(sample.size())];
    distribution.push_back(statistic(resample));
  }
  return bca_from_distribution(estimate, distribution, jackknife_values(sample, statistic), options.confidence);
}

BootstrapInterval bootstrap_bca_mean(std::span<const double> sample, const BootstrapOptions& options) {
  return bootstrap_bca(sample, [](std::span<const double> v) { return mean_of(v); }, options);
}

BootstrapInterval bootstrap_bca_paired_mean_difference(std::span<const double> first, std::span<const double> second,
                                                       const BootstrapOptions& options) {
  if (first.size() != second.size())
    throw InvalidArgumentError(fmt::format("paired samples must have the same length (got {} and {})", first.size(),
                                           second.size()));
  std::vector<double> differences(first.size());
  for (size_t i = 0; i < first.size(); ++i) differences[i] = first[i] - second[i];
  return bootstrap_bca_mean(differences, options);
}

}  // namespace lathe::stats
