// Bias-corrected and accelerated (BCa) bootstrap confidence intervals (Efron 1987, "Better
// bootstrap confidence intervals", JASA 82(397); Efron & Tibshirani 1993, An Introduction to the
// Bootstrap, sections 14.3 and 22.4), computed as scipy.stats.bootstrap(method='BCa') does:
//
//   z0     = Phi^-1(fraction of bootstrap statistics below the estimate, ties counting half)
//   a      = sum(U^3) / (6 sum(U^2)^1.5), U_i = (n - 1)(mean of jackknife values - jackknife_i)
//            (the jackknife values: the statistic with observation i left out)
//   level  = Phi(z0 + (z0 + z) / (1 - a (z0 + z))) for z = Phi^-1(alpha), Phi^-1(1 - alpha)
//   bounds = the bootstrap distribution's quantiles at those levels (linear interpolation
//            between order statistics, numpy's and scipy.stats.quantile's default)
//
// Degenerate cases, decided here rather than returning NaN as scipy does:
//  * every observation equal: the statistic cannot vary, the interval is [v, v] (Degenerate);
//  * every bootstrap statistic on one side of the estimate (z0 = +-inf, possible only for tiny
//    or pathological samples): the plain percentile interval, reported as Percentile;
//  * jackknife values all equal (no skewness to measure): a = 0.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

namespace lathe::stats {

// The q-quantile (0 <= q <= 1) of ascending `sorted` values, linearly interpolated at
// (n - 1) q (Hyndman & Fan type 7). InvalidArgumentError for an empty span or q outside [0, 1].
double quantile_linear(std::span<const double> sorted, double q);

// (count(x < score) + count(x <= score)) / (2 n): the 'mean' percentile of score, as a fraction.
double fraction_below(std::span<const double> values, double score);

enum class IntervalMethod { Bca, Percentile, Degenerate };
std::string_view interval_method_name(IntervalMethod method);

struct BootstrapInterval {
  double estimate = 0;      // the statistic of the sample itself
  double low = 0, high = 0;
  double confidence = 0.95;
  IntervalMethod method = IntervalMethod::Bca;
  double z0 = 0, acceleration = 0;  // BCa's bias correction and acceleration (0 unless Bca)
  double standard_error = 0;        // of the bootstrap distribution (n - 1 denominator)
  size_t n_resamples = 0;
};

// The BCa interval from a given bootstrap distribution (any order) and jackknife values: the
// formula alone, so that it can be checked against an oracle fed the same distribution.
// InvalidArgumentError for an empty distribution, fewer than two jackknife values or a confidence
// outside (0, 1).
BootstrapInterval bca_from_distribution(double estimate, std::span<const double> bootstrap,
                                        std::span<const double> jackknife, double confidence);

struct BootstrapOptions {
  size_t n_resamples = 10000;
  double confidence = 0.95;
  uint64_t seed = 0;
};

// A statistic of one sample (the values of a resample, in drawing order).
using Statistic = std::function<double(std::span<const double>)>;

// The BCa interval of `statistic` over `sample`: n_resamples resamples of n observations drawn
// with replacement (stats::Rng, the same on every machine for a seed), jackknife over the sample.
// InvalidArgumentError for an empty sample, no resamples or a confidence outside (0, 1).
BootstrapInterval bootstrap_bca(std::span<const double> sample, const Statistic& statistic,
                                const BootstrapOptions& options);

// The mean, summed in order: what every interval of lathe ablate-eval is of.
double mean_of(std::span<const double> values);
BootstrapInterval bootstrap_bca_mean(std::span<const double> sample, const BootstrapOptions& options);

// Paired samples (first[i] and second[i] measured on the same unit): the interval of
// mean(first - second), resampling pairs; the same as the one-sample interval of the differences.
// InvalidArgumentError when the lengths differ.
BootstrapInterval bootstrap_bca_paired_mean_difference(std::span<const double> first, std::span<const double> second,
                                                       const BootstrapOptions& options);

}  // namespace lathe::stats
