// The statistics room against scipy 1.17.1 and statsmodels 0.15.0 (tests/oracle/stats_oracle.py):
// normal quantiles and McNemar p-values to 1e-12; the BCa formula exactly, by giving scipy the
// same bootstrap distribution; the whole bootstrap (lathe's resampling vs scipy's) within
// Monte-Carlo error.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "common/test_support.hpp"
#include "stats/bootstrap.hpp"
#include "stats/mcnemar.hpp"
#include "stats/normal.hpp"
#include "stats/random.hpp"

namespace lathe::stats {
namespace {

using nlohmann::json;

json ask_oracle(const std::string& command, const json& input) {
  test::TempDir dir("stats_oracle");
  const auto path = dir / "input.json";
  test::write_file(path, input.dump());
  const auto r = test::run_oracle("stats_oracle.py", {command, path.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json::object();
}

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

}  // namespace
}  // namespace lathe::stats
