// Bootstrap confidence intervals, computed as scipy.stats.bootstrap (scipy 1.17) computes them:
// the percentile interval and the bias-corrected and accelerated (BCa) interval (Efron 1987,
// "Better bootstrap confidence intervals", JASA 82(397); Efron & Tibshirani 1993, An Introduction
// to the Bootstrap, sections 13.3, 14.3 and 22.4), of a statistic of one sample, of paired samples
// (the statistic of the differences) and of two independent samples (statistic(first) -
// statistic(second), each sample resampled on its own).
//
//   percentile: bounds = the bootstrap distribution's quantiles at alpha and 1 - alpha,
//               alpha = (1 - confidence) / 2
//   BCa:        z0     = Phi^-1(fraction of bootstrap statistics below the estimate, ties half)
//               a      = sum_j sum_i U_ji^3 / n_j^3 / (6 (sum_j sum_i U_ji^2 / n_j^2)^1.5),
//                        U_ji = (n_j - 1)(mean_i theta_ji - theta_ji), theta_ji the statistic
//                        with observation i of sample j left out (the other samples whole):
//                        for one sample Efron & Tibshirani's (14.15), for two scipy's
//                        multi-sample jackknife
//               level  = Phi(z0 + (z0 + z) / (1 - a (z0 + z))) for z = Phi^-1(alpha), -z
//               bounds = the bootstrap distribution's quantiles at those levels
// Quantiles interpolate linearly between order statistics (numpy's and scipy.stats.quantile's
// default, Hyndman & Fan type 7).
//
// Degenerate cases, decided here rather than returning NaN as scipy does:
//  * fewer than two observations in a sample: InvalidArgumentError (scipy raises too);
//  * every observation of every sample equal: the statistic cannot vary, the interval is
//    [v, v] (Degenerate);
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

// What an interval is: asked for (Bca, Percentile) or decided by the data (Degenerate, and
// Percentile when BCa's bias correction is infinite).
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
// The same with the jackknife values of each sample of a multi-sample statistic.
BootstrapInterval bca_from_distribution(double estimate, std::span<const double> bootstrap,
                                        std::span<const std::vector<double>> jackknife_per_sample,
                                        double confidence);

// The percentile interval from a given bootstrap distribution (any order).
BootstrapInterval percentile_from_distribution(double estimate, std::span<const double> bootstrap, double confidence);

struct BootstrapOptions {
  size_t n_resamples = 10000;
  double confidence = 0.95;
  uint64_t seed = 0;
  IntervalMethod method = IntervalMethod::Bca;  // Bca or Percentile; Degenerate is only a result
};

// A statistic of one sample (the values of a resample, in drawing order).
using Statistic = std::function<double(std::span<const double>)>;

// The mean, summed in order: what every interval of lathe ablate-eval is of.
double mean_of(std::span<const double> values);
// The median as numpy's: the middle value, or the mean of the two middle values for even n.
double median_of(std::span<const double> values);

// The statistic with each observation left out in turn (n values, in sample order).
std::vector<double> jackknife_values(std::span<const double> sample, const Statistic& statistic);

// The bootstrap distribution: resample b draws n indices from Rng(seed) in order, b = 0, 1, ...
// (stats::Rng: the same on every machine for a seed).
std::vector<double> resample_statistics(std::span<const double> sample, const Statistic& statistic,
                                        size_t n_resamples, uint64_t seed);
// Two independent samples: resample b draws first.size() indices into `first`, then
// second.size() into `second`, and records statistic(first') - statistic(second').
std::vector<double> resample_statistics_two_sample(std::span<const double> first, std::span<const double> second,
                                                   const Statistic& statistic, size_t n_resamples, uint64_t seed);

// The interval (options.method) of `statistic` over `sample`. InvalidArgumentError for fewer
// than two observations, no resamples, a confidence outside (0, 1) or method Degenerate.
BootstrapInterval bootstrap_interval(std::span<const double> sample, const Statistic& statistic,
                                     const BootstrapOptions& options);
// Paired samples (first[i] and second[i] measured on the same unit): the interval of
// statistic(first - second), resampling pairs (scipy's paired=True with the statistic of x - y).
// InvalidArgumentError when the lengths differ.
BootstrapInterval bootstrap_paired_interval(std::span<const double> first, std::span<const double> second,
                                            const Statistic& statistic, const BootstrapOptions& options);
// Independent samples: the interval of statistic(first) - statistic(second), each resampled on
// its own (scipy's paired=False with two samples); BCa's acceleration from both jackknifes.
BootstrapInterval bootstrap_two_sample_interval(std::span<const double> first, std::span<const double> second,
                                                const Statistic& statistic, const BootstrapOptions& options);

// The BCa interval whatever options.method says (lathe ablate-eval's intervals).
BootstrapInterval bootstrap_bca(std::span<const double> sample, const Statistic& statistic,
                                const BootstrapOptions& options);
BootstrapInterval bootstrap_bca_mean(std::span<const double> sample, const BootstrapOptions& options);
// The BCa interval of mean(first - second) for paired samples.
BootstrapInterval bootstrap_bca_paired_mean_difference(std::span<const double> first, std::span<const double> second,
                                                       const BootstrapOptions& options);

}  // namespace lathe::stats
