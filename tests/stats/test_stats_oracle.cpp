// The statistics room against scipy 1.17.1 and statsmodels 0.15.0 (tests/oracle/stats_oracle.py):
// normal quantiles and McNemar p-values to 1e-12; the BCa and percentile intervals (one sample,
// paired, two samples; mean and median) to 1e-12 by giving scipy lathe's own bootstrap
// distribution; the whole bootstrap (lathe's resampling vs scipy's) within Monte-Carlo error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "common/test_support.hpp"
#include "stats/stats_oracle.hpp"
#include "stats/bootstrap.hpp"
#include "stats/mcnemar.hpp"
#include "stats/normal.hpp"
#include "stats/random.hpp"

namespace lathe::stats {
namespace {

using nlohmann::json;

using test_oracle::ask_oracle;

// |got - want| <= tol * max(1, |want|): relative for large values, absolute near zero.
void expect_close(double got, double want, double tol, const std::string& what) {
  EXPECT_LE(std::abs(got - want), tol * std::max(1.0, std::abs(want))) << what << ": lathe " << got << ", oracle "
                                                                       << want;
}

TEST(StatsOracle, NormalQuantileAndCdfMatchScipy) {
  std::vector<double> ps{1e-300, 1e-200, 1e-50, 1e-16, 1e-10, 1e-5, 0.001, 0.01, 0.02424, 0.02425, 0.02426,
                         0.025, 0.05, 0.1, 0.25, 0.4999999, 0.5, 0.5000001, 0.75, 0.9, 0.95, 0.975, 0.97575,
                         0.99, 0.999999, 1 - 1e-12, 1 - 1e-16};
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < 200; ++i) ps.push_back(u(gen));
  for (int i = 0; i < 50; ++i) ps.push_back(std::pow(10.0, -300 * u(gen)));
  std::vector<double> xs{-37, -20, -8, -5, -1.96, -1, -1e-3, 0, 1e-3, 0.5, 1, 1.96, 3, 8};
  for (int i = 0; i < 100; ++i) xs.push_back(-10 + 20 * u(gen));
  const json got = ask_oracle("normal", {{"p", ps}, {"x", xs}});
  ASSERT_EQ(got["ppf"].size(), ps.size());
  for (size_t i = 0; i < ps.size(); ++i)
    expect_close(normal_quantile(ps[i]), got["ppf"][i].get<double>(), 1e-12, "ppf(" + std::to_string(ps[i]) + ")");
  for (size_t i = 0; i < xs.size(); ++i) {
    // Relative in the tails, where the CDF is tiny (down to Phi(-37) ~ 6e-300: below that the
    // result is subnormal and scipy returns 0). 3e-13, not less: scipy's ndtr itself is off by
    // 1.1e-13 at -37 (erfc of a rounded argument; mpmath's value is in test_stats.cpp, which holds
    // lathe's CDF to 4e-16 of it).
    const double want = got["cdf"][i].get<double>();
    EXPECT_LE(std::abs(normal_cdf(xs[i]) - want), 3e-13 * want) << "cdf(" << xs[i] << ")";
  }
}

TEST(StatsOracle, McNemarMatchesStatsmodels) {
  std::vector<std::pair<uint64_t, uint64_t>> tables;
  for (uint64_t b = 0; b <= 40; ++b)
    for (uint64_t c = 0; c <= 40; c += (b < 10 ? 1 : 3)) tables.emplace_back(b, c);
  for (auto t : std::vector<std::pair<uint64_t, uint64_t>>{{100, 140}, {300, 230}, {0, 900}, {450, 450}, {1000, 1090},
                                                            {5, 2000}, {2500, 2600}})
    tables.push_back(t);
  json input = {{"tables", json::array()}};
  for (auto [b, c] : tables) input["tables"].push_back({b, c});
  const json got = ask_oracle("mcnemar", input);
  ASSERT_EQ(got["p"].size(), tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    const double want = got["p"][i].get<double>();
    const double p = mcnemar_exact(tables[i].first, tables[i].second).p_value;
    // Relative: the small p-values of large tables are compared in their own digits.
    EXPECT_LE(std::abs(p - want), 1e-12 * want) << "b=" << tables[i].first << " c=" << tables[i].second << ": lathe "
                                                << p << ", statsmodels " << want;
  }
}

struct Sample {
  std::string name;
  std::vector<double> values;
};

std::vector<Sample> samples() {
  std::mt19937_64 gen(11);
  std::normal_distribution<double> normal(2.0, 1.5);
  std::exponential_distribution<double> exp(4.0);
  std::bernoulli_distribution coin(0.3);
  Sample n{"normal n=30", {}}, e{"exponential n=60 (KL-like, skewed)", {}}, b{"binary n=39 (refusals)", {}},
      s{"tiny n=5", {0.1, 0.4, 0.35, 2.0, 0.02}};
  for (int i = 0; i < 30; ++i) n.values.push_back(normal(gen));
  for (int i = 0; i < 60; ++i) e.values.push_back(exp(gen) * exp(gen) * 10);
  for (int i = 0; i < 39; ++i) b.values.push_back(coin(gen) ? 1.0 : 0.0);
  return {n, e, b, s};
}

TEST(StatsOracle, BcaFormulaMatchesScipyOnTheSameBootstrapDistribution) {
  json input = {{"cases", json::array()}};
  std::vector<BootstrapInterval> mine;
  for (const auto& sample : samples()) {
    for (double confidence : {0.95, 0.8}) {
      Rng rng(17);
      std::vector<double> boot, jack, resample(sample.values.size());
      for (int b = 0; b < 3000; ++b) {
        for (double& v : resample) v = sample.values[rng.index(sample.values.size())];
        boot.push_back(mean_of(resample));
      }
      for (size_t i = 0; i < sample.values.size(); ++i) {
        auto rest = sample.values;
        rest.erase(rest.begin() + static_cast<long>(i));
        jack.push_back(mean_of(rest));
      }
      mine.push_back(bca_from_distribution(mean_of(sample.values), boot, jack, confidence));
      input["cases"].push_back({{"data", sample.values}, {"bootstrap", boot}, {"confidence", confidence}});
    }
  }
  const json got = ask_oracle("bca_formula", input);
  ASSERT_EQ(got["cases"].size(), mine.size());
  EXPECT_EQ(got["scipy_version"], "1.17.1");
  for (size_t i = 0; i < mine.size(); ++i) {
    const auto& r = mine[i];
    ASSERT_EQ(r.method, IntervalMethod::Bca) << i;
    for (const char* who : {"scipy", "formula"}) {
      const json& o = got["cases"][i][who];
      const std::string what = std::string(who) + " case " + std::to_string(i);
      expect_close(r.low, o["low"].get<double>(), 1e-12, what + " low");
      expect_close(r.high, o["high"].get<double>(), 1e-12, what + " high");
      expect_close(r.acceleration, o["acceleration"].get<double>(), 1e-12, what + " acceleration");
    }
    expect_close(r.z0, got["cases"][i]["formula"]["z0"].get<double>(), 1e-12, "z0 case " + std::to_string(i));
  }
}

TEST(StatsOracle, WholeBootstrapAgreesWithScipyWithinMonteCarloError) {
  // Different resampling streams: the ends differ by Monte-Carlo error only. With B = 100000
  // resamples each, an end's standard error is about sqrt(a (1 - a) / B) / phi(z_a) ~ 0.0085
  // bootstrap standard errors (a = 0.025), 0.012 for the difference of two independent runs;
  // the tolerance, 0.06 standard errors, is five of those. Only the continuous samples: the
  // bootstrap distribution of a binary or tiny sample is discrete, so its quantile jumps a whole
  // step when the level crosses a plateau, and no smooth Monte-Carlo bound holds (the formula
  // test above covers those samples exactly).
  const size_t n_resamples = 100000;
  json input = {{"cases", json::array()}};
  std::vector<BootstrapInterval> mine;
  auto all = samples();
  all.resize(2);
  for (size_t i = 0; i < all.size(); ++i) {
    mine.push_back(bootstrap_bca_mean(all[i].values, {.n_resamples = n_resamples, .confidence = 0.95, .seed = i}));
    input["cases"].push_back({{"data", all[i].values}, {"confidence", 0.95}, {"n_resamples", n_resamples}, {"seed", i}});
  }
  // Paired: the exponential sample against a shrunken, noisy copy of itself.
  std::vector<double> first = all[1].values, second;
  std::mt19937_64 gen(4);
  std::normal_distribution<double> noise(0, 0.05);
  for (double v : first) second.push_back(0.7 * v + noise(gen));
  mine.push_back(bootstrap_bca_paired_mean_difference(first, second, {.n_resamples = n_resamples, .seed = 99}));
  input["cases"].push_back({{"data", first}, {"paired_with", second}, {"confidence", 0.95}, {"n_resamples", n_resamples},
                            {"seed", 99}});
  const json got = ask_oracle("bootstrap", input);
  ASSERT_EQ(got["cases"].size(), mine.size());
  for (size_t i = 0; i < mine.size(); ++i) {
    const json& o = got["cases"][i];
    const double se = o["standard_error"].get<double>();
    ASSERT_GT(se, 0) << i;
    EXPECT_NEAR(mine[i].standard_error, se, 0.02 * se) << "case " << i;
    EXPECT_NEAR(mine[i].low, o["low"].get<double>(), 0.06 * se) << "case " << i << " low";
    EXPECT_NEAR(mine[i].high, o["high"].get<double>(), 0.06 * se) << "case " << i << " high";
  }
}

// ------------------------------------------------------- intervals from lathe's distribution

struct Design {
  std::string name;            // for messages
  std::vector<double> x, y;    // y empty: one sample
  bool paired = false;
};

std::vector<Design> designs() {
  std::mt19937_64 gen(23);
  std::normal_distribution<double> normal(1.0, 2.0);
  std::exponential_distribution<double> exp(2.0);
  std::uniform_int_distribution<int> small(0, 4);
  std::bernoulli_distribution coin(0.3);
  auto fill = [&](size_t n, auto&& draw) {
    std::vector<double> v(n);
    for (double& x : v) x = draw();
    return v;
  };
  const auto norm30 = fill(30, [&] { return normal(gen); });
  const auto exp60 = fill(60, [&] { return exp(gen) * exp(gen); });
  const auto ties25 = fill(25, [&] { return static_cast<double>(small(gen)); });
  const auto ties25b = fill(25, [&] { return static_cast<double>(small(gen)); });
  const auto bin39 = fill(39, [&] { return coin(gen) ? 1.0 : 0.0; });
  const auto big500 = fill(500, [&] { return normal(gen); });
  auto noisy = [&](const std::vector<double>& v) {
    std::vector<double> out;
    for (double x : v) out.push_back(0.8 * x + 0.3 * normal(gen));
    return out;
  };
  const std::vector<double> tiny5{0.1, 0.4, 0.35, 2.0, 0.02}, two{0.3, 1.7}, three{2.0, -1.0, 0.5};
  return {{"normal n=30", norm30, {}, false},
          {"skewed n=60", exp60, {}, false},
          {"ties n=25", ties25, {}, false},
          {"binary n=39", bin39, {}, false},
          {"tiny n=5", tiny5, {}, false},
          {"n=2", two, {}, false},
          {"n=3", three, {}, false},
          {"normal n=500", big500, {}, false},
          {"paired normal n=30", norm30, noisy(norm30), true},
          {"paired skewed n=60", exp60, noisy(exp60), true},
          {"paired ties n=25", ties25, ties25b, true},
          {"paired n=2", two, std::vector<double>{0.1, 0.2}, true},
          {"paired n=3", three, std::vector<double>{1.0, 1.0, 1.0}, true},
          {"two-sample normal 30 / skewed 60", norm30, exp60, false},
          {"two-sample ties 25 / 25", ties25, ties25b, false},
          {"two-sample binary 39 / tiny 5", bin39, tiny5, false},
          {"two-sample n=2 / n=3", two, three, false}};
}

// lathe's distribution for a design, drawn exactly as the interval functions draw it.
std::vector<double> distribution_of(const Design& d, const Statistic& f, size_t n_resamples, uint64_t seed) {
  if (d.y.empty()) return resample_statistics(d.x, f, n_resamples, seed);
  if (!d.paired) return resample_statistics_two_sample(d.x, d.y, f, n_resamples, seed);
  std::vector<double> diff;
  for (size_t i = 0; i < d.x.size(); ++i) diff.push_back(d.x[i] - d.y[i]);
  return resample_statistics(diff, f, n_resamples, seed);
}

BootstrapInterval interval_of(const Design& d, const Statistic& f, const BootstrapOptions& options) {
  if (d.y.empty()) return bootstrap_interval(d.x, f, options);
  return d.paired ? bootstrap_paired_interval(d.x, d.y, f, options) : bootstrap_two_sample_interval(d.x, d.y, f, options);
}

json oracle_case(const Design& d, const std::string& statistic, IntervalMethod method, double confidence) {
  json c = {{"data", d.x}, {"statistic", statistic}, {"confidence", confidence},
            {"method", method == IntervalMethod::Bca ? "BCa" : "percentile"}};
  if (!d.y.empty()) c[d.paired ? "paired_with" : "two_sample_with"] = d.y;
  return c;
}

TEST(StatsOracle, IntervalsMatchScipyOnLathesBootstrapDistribution) {
  // scipy.stats.bootstrap(n_resamples=0, bootstrap_result=<lathe's distribution>) runs its own
  // jackknife (the multi-sample one for two samples), z0, acceleration and quantiles on the very
  // resamples lathe drew: every end must agree to 1e-12, deterministically.
  const size_t n_resamples = 2000;
  const std::pair<std::string, Statistic> statistics[] = {{"mean", mean_of}, {"median", median_of}};
  struct Job {
    size_t design;
    size_t statistic;
    IntervalMethod method;
    double confidence;
    uint64_t seed;
  };
  const auto all = designs();
  std::vector<Job> jobs;
  json input = {{"cases", json::array()}};
  for (size_t d = 0; d < all.size(); ++d)
    for (size_t s = 0; s < 2; ++s)
      for (IntervalMethod m : {IntervalMethod::Bca, IntervalMethod::Percentile})
        for (double confidence : {0.95, 0.8}) {
          const uint64_t seed = jobs.size();
          jobs.push_back({d, s, m, confidence, seed});
          json c = oracle_case(all[d], statistics[s].first, m, confidence);
          c["distribution"] = distribution_of(all[d], statistics[s].second, n_resamples, seed);
          input["cases"].push_back(c);
        }
  const json got = ask_oracle("bootstrap_given", input);
  ASSERT_EQ(got["cases"].size(), jobs.size());
  EXPECT_EQ(got["scipy_version"], "1.17.1");
  size_t compared = 0, scipy_nan = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto& job = jobs[j];
    const std::string what = all[job.design].name + " " + statistics[job.statistic].first + " " +
                             (job.method == IntervalMethod::Bca ? "BCa" : "percentile") + " " +
                             std::to_string(job.confidence);
    const auto r = interval_of(all[job.design], statistics[job.statistic].second,
                               {.n_resamples = n_resamples, .confidence = job.confidence, .seed = job.seed,
                                .method = job.method});
    const json& o = got["cases"][j];
    if (o["low"].is_null() || o["high"].is_null()) {
      // scipy's NaN: z0 infinite (lathe falls back to the percentile interval) or a flat
      // jackknife (0/0 acceleration; lathe takes a = 0). Only BCa can get there.
      ++scipy_nan;
      EXPECT_EQ(job.method, IntervalMethod::Bca) << what;
      EXPECT_TRUE(r.method == IntervalMethod::Percentile || r.acceleration == 0.0) << what;
      continue;
    }
    ++compared;
    EXPECT_EQ(r.method, job.method) << what;
    EXPECT_EQ(r.n_resamples, n_resamples) << what;
    expect_close(r.low, o["low"].get<double>(), 1e-12, what + " low");
    expect_close(r.high, o["high"].get<double>(), 1e-12, what + " high");
    expect_close(r.standard_error, o["standard_error"].get<double>(), 1e-12, what + " standard error");
  }
  EXPECT_GT(compared, jobs.size() * 9 / 10);
  EXPECT_LE(scipy_nan, jobs.size() / 10);
}

// The largest gap between neighbouring distinct values of `atoms` around v: how far a quantile of
// a discrete bootstrap distribution can jump when Monte-Carlo noise carries it over one atom.
double atom_gap_near(std::vector<double> atoms, double v) {
  std::sort(atoms.begin(), atoms.end());
  atoms.erase(std::unique(atoms.begin(), atoms.end()), atoms.end());
  const auto above = std::lower_bound(atoms.begin(), atoms.end(), v);
  double gap = 0;
  for (auto it = above == atoms.begin() ? above : above - 1; it + 1 < atoms.end() && it <= above + 1; ++it)
    gap = std::max(gap, *(it + 1) - *it);
  return gap;
}

TEST(StatsOracle, PercentileMedianAndTwoSampleAgreeWithScipyWithinMonteCarloError) {
  // lathe's and scipy's own resampling, B = 100000 each: as in the test above, an end's
  // Monte-Carlo standard error is about 0.0085 bootstrap standard errors at a = 0.025, 0.012 for
  // the difference of two runs; the bound is 0.06 standard errors (five of those). The median's
  // bootstrap distribution is discrete (odd n: its atoms are the data values), so there the
  // bound adds the gap between the atoms next to each end (the quantile can move one atom).
  const size_t n_resamples = 100000;
  std::mt19937_64 gen(31);
  std::normal_distribution<double> normal(0.5, 1.0);
  std::exponential_distribution<double> exp(1.0);
  std::vector<double> a(201), b(80), c(51), c2(51);
  for (double& v : a) v = normal(gen);
  for (double& v : b) v = exp(gen);
  for (double& v : c) v = exp(gen);
  for (double& v : c2) v = exp(gen) * 0.5;
  struct Run {
    Design design;
    std::string statistic;
    IntervalMethod method;
  };
  const std::vector<Run> runs{
      {{"normal n=201", a, {}, false}, "mean", IntervalMethod::Percentile},
      {{"normal n=201", a, {}, false}, "median", IntervalMethod::Bca},
      {{"normal n=201", a, {}, false}, "median", IntervalMethod::Percentile},
      {{"paired skewed n=51", c, c2, true}, "median", IntervalMethod::Bca},
      {{"two-sample normal 201 / skewed 80", a, b, false}, "mean", IntervalMethod::Bca},
      {{"two-sample normal 201 / skewed 80", a, b, false}, "mean", IntervalMethod::Percentile},
  };
  json input = {{"cases", json::array()}};
  std::vector<BootstrapInterval> mine;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Statistic f = runs[i].statistic == "mean" ? Statistic(mean_of) : Statistic(median_of);
    mine.push_back(interval_of(runs[i].design, f, {.n_resamples = n_resamples, .confidence = 0.95, .seed = 50 + i,
                                                   .method = runs[i].method}));
    json c = oracle_case(runs[i].design, runs[i].statistic, runs[i].method, 0.95);
    c["n_resamples"] = n_resamples;
    c["seed"] = 50 + i;
    input["cases"].push_back(c);
  }
  const json got = ask_oracle("bootstrap", input);
  ASSERT_EQ(got["cases"].size(), runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const json& o = got["cases"][i];
    const std::string what = runs[i].design.name + " " + runs[i].statistic + " " +
                             std::string(interval_method_name(runs[i].method));
    const double se = o["standard_error"].get<double>();
    ASSERT_GT(se, 0) << what;
    EXPECT_NEAR(mine[i].standard_error, se, 0.02 * se) << what;
    std::vector<double> atoms;  // the values a median of the resampled data can take
    if (runs[i].statistic == "median") {
      if (runs[i].design.paired)
        for (size_t k = 0; k < c.size(); ++k) atoms.push_back(runs[i].design.x[k] - runs[i].design.y[k]);
      else
        atoms = runs[i].design.x;
    }
    for (const char* end : {"low", "high"}) {
      const double want = o[end].get<double>(), got_end = std::string(end) == "low" ? mine[i].low : mine[i].high;
      const double bound = 0.06 * se + (atoms.empty() ? 0.0 : atom_gap_near(atoms, want));
      EXPECT_NEAR(got_end, want, bound) << what << " " << end;
    }
  }
}

}  // namespace
}  // namespace lathe::stats
