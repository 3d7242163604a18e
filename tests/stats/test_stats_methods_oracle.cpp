// The hypothesis tests and FDR adjustment of the statistics room against scipy 1.17.1 and
// statsmodels 0.15.0 (tests/oracle/stats_oracle.py), on many generated inputs: ties, zeros,
// n = 1, 2, 3, large n, every alternative. Deterministic results (Fisher, Wilcoxon, exact
// permutation tests, BH/BY) must agree to 1e-12 (relative, with a floor of 1e-300 where a p-value
// reaches the subnormal range); Monte-Carlo permutation p-values must lie within five standard
// errors of scipy's exact ones.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <fmt/format.h>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "stats/stats_oracle.hpp"
#include "lathe/error.hpp"
#include "stats/fisher.hpp"
#include "stats/multitest.hpp"
#include "stats/permutation.hpp"
#include "stats/wilcoxon.hpp"

namespace lathe::stats {
namespace {

using nlohmann::json;

using test_oracle::ask_oracle;

constexpr double kTol = 1e-12;

// p-values: relative, with a floor for the subnormal range (where relative error means nothing).
void expect_p(double got, double want, const std::string& what) {
  EXPECT_LE(std::abs(got - want), kTol * want + 1e-300) << what << ": lathe " << got << ", oracle " << want;
}

// Other values: relative for large values, absolute near zero.
void expect_value(double got, double want, const std::string& what) {
  EXPECT_LE(std::abs(got - want), kTol * std::max(1.0, std::abs(want))) << what << ": lathe " << got << ", oracle "
                                                                        << want;
}

const Alternative kAlternatives[] = {Alternative::TwoSided, Alternative::Less, Alternative::Greater};

std::string describe(const std::vector<double>& v) {
  std::string s = "n=" + std::to_string(v.size()) + " [";
  for (size_t i = 0; i < std::min<size_t>(v.size(), 8); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + (v.size() > 8 ? ", ...]" : "]");
}

// ------------------------------------------------------------------------------------- Fisher

std::vector<std::array<uint64_t, 4>> fisher_tables() {
  std::vector<std::array<uint64_t, 4>> tables;
  for (uint64_t a = 0; a <= 5; ++a)  // every small table, zero margins included
    for (uint64_t b = 0; b <= 5; ++b)
      for (uint64_t c = 0; c <= 5; ++c)
        for (uint64_t d = 0; d <= 5; ++d) tables.push_back({a, b, c, d});
  std::mt19937_64 gen(21);
  auto u = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(gen); };
  for (int i = 0; i < 200; ++i) tables.push_back({u(0, 60), u(0, 60), u(0, 60), u(0, 60)});
  for (int i = 0; i < 100; ++i) tables.push_back({u(0, 3), u(50, 500), u(0, 20), u(100, 1000)});  // rare events
  for (int i = 0; i < 40; ++i) tables.push_back({u(500, 5000), u(500, 5000), u(500, 5000), u(500, 5000)});
  for (int i = 0; i < 20; ++i) tables.push_back({u(0, 30), u(2000, 20000), u(2000, 20000), u(0, 30)});
  // Symmetric hypergeometric distributions: the other tail holds probabilities equal to the
  // observed one in theory, which scipy's 1e-14 relative tolerance must catch.
  for (uint64_t m : {4, 10, 31, 200, 1001})
    for (uint64_t k : {uint64_t{0}, uint64_t{1}, m / 4, m / 2 - 1}) tables.push_back({k, m - k, m - k, k});
  return tables;
}

TEST(StatsMethodsOracle, FisherExactMatchesScipy) {
  const auto tables = fisher_tables();
  json input = {{"tables", json::array()}};
  for (const auto& t : tables) input["tables"].push_back(t);
  const json got = ask_oracle("fisher", input);
  ASSERT_EQ(got["tables"].size(), tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    const auto& [a, b, c, d] = tables[i];
    const std::string what = fmt::format("table [[{}, {}], [{}, {}]]", a, b, c, d);
    const json& o = got["tables"][i];
    for (Alternative alt : kAlternatives) {
      const auto r = fisher_exact(a, b, c, d, alt);
      expect_p(r.p_value, o[std::string(alternative_name(alt))].get<double>(),
               what + " " + std::string(alternative_name(alt)));
      if (o["odds_ratio"] == "nan") EXPECT_TRUE(std::isnan(r.odds_ratio)) << what;
      else if (o["odds_ratio"] == "inf") EXPECT_EQ(r.odds_ratio, std::numeric_limits<double>::infinity()) << what;
      else expect_value(r.odds_ratio, o["odds_ratio"].get<double>(), what + " odds ratio");
    }
  }
}

// ----------------------------------------------------------------------------------- Wilcoxon

// Differences of many kinds and sizes: around each of scipy's switch points (13/14, 50/51).
std::vector<std::vector<double>> wilcoxon_inputs() {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal(0.3, 1.0);
  std::uniform_int_distribution<int> small_int(-3, 3);
  std::vector<std::vector<double>> out;
  for (size_t n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 20, 25, 30, 40, 49, 50, 51, 52, 60, 80, 100, 200, 500,
                   1000, 3000}) {
    std::vector<double> continuous(n), ints(n), halves(n), with_zeros(n), positive(n), zeros(n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      continuous[i] = normal(gen);
      ints[i] = small_int(gen);                                  // ties and zeros
      halves[i] = (small_int(gen) >= 0 ? 1 : -1) * (0.5 + std::abs(small_int(gen)));  // ties, no zeros
      with_zeros[i] = i % 4 == 1 ? 0.0 : normal(gen);            // zeros, no ties
      positive[i] = 0.01 * static_cast<double>(i + 1);           // every difference positive: extreme p
    }
    for (auto* v : {&continuous, &ints, &halves, &with_zeros, &positive, &zeros}) out.push_back(*v);
  }
  return out;
}

// scipy enumerates the sign flips of a sample with ties or zeros in Python (seconds at n = 13):
// from n = 9 on, the two-sided test only, which is the default and takes both tails.
std::vector<Alternative> alternatives_for(size_t n) {
  if (n >= 9 && n <= 13) return {Alternative::TwoSided};
  return {std::begin(kAlternatives), std::end(kAlternatives)};
}

TEST(StatsMethodsOracle, WilcoxonMatchesScipy) {
  const auto inputs = wilcoxon_inputs();
  json input = {{"cases", json::array()}};
  for (const auto& d : inputs)
    for (Alternative alt : alternatives_for(d.size()))
      input["cases"].push_back({{"d", d}, {"alternative", alternative_name(alt)}});
  const json got = ask_oracle("wilcoxon", input);
  ASSERT_EQ(got["cases"].size(), input["cases"].size());
  size_t k = 0, by_method[3] = {0, 0, 0};
  for (const auto& d : inputs) {
    for (Alternative alt : alternatives_for(d.size())) {
      const json& o = got["cases"][k++];
      const std::string what = describe(d) + " " + std::string(alternative_name(alt));
      if (o.contains("error") || o["p"].is_null()) {
        // scipy refuses the input (a single zero) or returns NaN (every difference zero, normal
        // approximation): lathe says so with an error.
        EXPECT_THROW(wilcoxon(d, alt), InvalidArgumentError) << what;
        continue;
      }
      const auto r = wilcoxon(d, alt);
      ++by_method[static_cast<int>(r.method)];
      expect_value(r.statistic, o["statistic"].get<double>(), what + " statistic");
      expect_p(r.p_value, o["p"].get<double>(), what + " p (" + std::string(wilcoxon_method_name(r.method)) + ")");
    }
  }
  // Every branch of scipy's rule was exercised.
  EXPECT_GT(by_method[static_cast<int>(WilcoxonMethod::Exact)], 50u);
  EXPECT_GT(by_method[static_cast<int>(WilcoxonMethod::Permutation)], 40u);
  EXPECT_GT(by_method[static_cast<int>(WilcoxonMethod::Normal)], 50u);
}

// -------------------------------------------------------------------------------- permutation

struct PermutationCase {
  bool sign_flip = true;
  std::vector<double> x, y;
  uint64_t n_resamples = 9999;
};

// Values on a grid of quarters (ties, zeros; every sum exact) or continuous, in many sizes.
std::vector<double> draw(std::mt19937_64& gen, size_t n, int kind, double shift) {
  std::normal_distribution<double> normal(shift, 1.0);
  std::uniform_int_distribution<int> grid(-4, 4);
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    switch (kind) {
      case 0: v[i] = normal(gen); break;
      case 1: v[i] = grid(gen) / 4.0 + std::round(shift * 4) / 4; break;
      case 2: v[i] = 0.5; break;                                    // all equal
      default: v[i] = i == 0 ? 40.0 : normal(gen); break;           // one outlier
    }
  }
  return v;
}

std::vector<PermutationCase> exact_permutation_cases() {
  std::mt19937_64 gen(3);
  std::vector<PermutationCase> cases;
  for (size_t n = 2; n <= 16; ++n)
    for (int kind = 0; kind < (n <= 13 ? 4 : 2); ++kind) {
      // Up to 13, scipy's default 9999 resamples are already exact; above, ask for every one.
      const uint64_t resamples = n <= 13 ? 9999 : uint64_t{1} << n;
      cases.push_back({true, draw(gen, n, kind, 0.4), {}, resamples});
    }
  const std::pair<size_t, size_t> sizes[] = {{2, 2}, {2, 3}, {3, 2}, {3, 3}, {4, 6}, {5, 5}, {7, 3}, {6, 8}, {10, 5}, {8, 8}};
  for (auto [n1, n2] : sizes)
    for (int kind = 0; kind < 4; ++kind) {
      const uint64_t resamples = std::max<uint64_t>(9999, binomial_coefficient_saturating(n1 + n2, n1));
      cases.push_back({false, draw(gen, n1, kind, 0.6), draw(gen, n2, kind == 3 ? 0 : kind, 0.0), resamples});
    }
  return cases;
}

PermutationResult run(const PermutationCase& c, const PermutationOptions& options) {
  return c.sign_flip ? permutation_test_sign_flip(c.x, options) : permutation_test_two_sample(c.x, c.y, options);
}

json oracle_case(const PermutationCase& c, Alternative alt, std::optional<uint64_t> resamples) {
  json j = {{"design", c.sign_flip ? "sign_flip" : "two_sample"}, {"x", c.x}, {"alternative", alternative_name(alt)},
            {"n_resamples", resamples ? json(*resamples) : json(nullptr)}};
  if (!c.sign_flip) j["y"] = c.y;
  return j;
}

TEST(StatsMethodsOracle, ExactPermutationTestsMatchScipy) {
  const auto cases = exact_permutation_cases();
  json input = {{"cases", json::array()}};
  // scipy enumerates in Python: above 2^13 sign patterns, the two-sided test only.
  auto alternatives = [](const PermutationCase& c) {
    return c.sign_flip && c.x.size() > 13 ? std::vector<Alternative>{Alternative::TwoSided}
                                          : std::vector<Alternative>(std::begin(kAlternatives), std::end(kAlternatives));
  };
  for (const auto& c : cases)
    for (Alternative alt : alternatives(c)) input["cases"].push_back(oracle_case(c, alt, c.n_resamples));
  const json got = ask_oracle("permutation", input);
  ASSERT_EQ(got["cases"].size(), input["cases"].size());
  size_t k = 0;
  for (const auto& c : cases) {
    for (Alternative alt : alternatives(c)) {
      const json& o = got["cases"][k++];
      const std::string what = std::string(c.sign_flip ? "sign flip " : "two-sample ") + describe(c.x) +
                               (c.sign_flip ? "" : " vs " + describe(c.y)) + " " + std::string(alternative_name(alt));
      ASSERT_TRUE(o["exact"].get<bool>()) << what;
      const auto r = run(c, {.n_resamples = c.n_resamples, .seed = 0, .alternative = alt});
      EXPECT_TRUE(r.exact) << what;
      EXPECT_EQ(r.n_evaluated, o["n_null"].get<uint64_t>()) << what;
      expect_value(r.statistic, o["statistic"].get<double>(), what + " statistic");
      expect_p(r.p_value, o["p"].get<double>(), what + " p");
    }
  }
}

TEST(StatsMethodsOracle, MonteCarloPermutationPValuesAreWithinFiveStandardErrorsOfScipysExact) {
  // lathe draws m = 10000 arrangements (fewer than the 2^15 = 32768 sign patterns or the
  // C(17, 8) = 24310 splits, so it samples); scipy enumerates all of them. The Monte-Carlo p of a
  // tail with probability q has standard error sqrt(q (1 - q) / m), twice that for the two-sided
  // p = 2 min(tails); the bound is five of those plus the (b + 1) / (m + 1) offset, 2 / (m + 1).
  const uint64_t m = 10000;
  std::mt19937_64 gen(9);
  std::vector<PermutationCase> cases;
  for (double shift : {0.0, 0.3, 0.6, 0.9}) {
    cases.push_back({true, draw(gen, 15, 0, shift), {}, m});
    cases.push_back({false, draw(gen, 8, 0, shift), draw(gen, 9, 0, 0.0), m});
  }
  json input = {{"cases", json::array()}};
  for (const auto& c : cases)
    for (Alternative alt : kAlternatives) input["cases"].push_back(oracle_case(c, alt, std::nullopt));
  const json got = ask_oracle("permutation", input);
  ASSERT_EQ(got["cases"].size(), cases.size() * 3);
  size_t k = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    for (Alternative alt : kAlternatives) {
      const json& o = got["cases"][k++];
      ASSERT_TRUE(o["exact"].get<bool>());
      const auto r = run(cases[i], {.n_resamples = m, .seed = 100 + i, .alternative = alt});
      ASSERT_FALSE(r.exact);
      EXPECT_EQ(r.n_evaluated, m);
      const double want = o["p"].get<double>();
      const double tail = alt == Alternative::TwoSided ? want / 2 : want;
      const double se = (alt == Alternative::TwoSided ? 2 : 1) * std::sqrt(tail * (1 - tail) / static_cast<double>(m));
      EXPECT_NEAR(r.p_value, want, 5 * se + 2.0 / static_cast<double>(m + 1))
          << "case " << i << " " << alternative_name(alt);
      EXPECT_GE(r.p_value, 1.0 / static_cast<double>(m + 1));
    }
  }
}

// ------------------------------------------------------------------------------------- BH, BY

std::vector<std::vector<double>> p_value_sets() {
  std::mt19937_64 gen(13);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<std::vector<double>> sets;
  for (size_t m : {1, 2, 3, 4, 5, 10, 50, 100, 1000, 10000}) {
    std::vector<double> uniform(m), mixed(m), tied(m), edges(m);
    for (size_t i = 0; i < m; ++i) {
      uniform[i] = u(gen);
      mixed[i] = i % 5 == 0 ? std::pow(u(gen), 8) : u(gen);    // some true effects
      tied[i] = std::round(u(gen) * 100) / 100;                // ties, zeros, ones
      edges[i] = i % 3 == 0 ? 0.0 : (i % 3 == 1 ? 1.0 : 1e-300 * static_cast<double>(i));
    }
    for (auto* v : {&uniform, &mixed, &tied, &edges}) sets.push_back(*v);
  }
  sets.push_back({0.0125, 0.025, 0.0375, 0.05});  // at BH's thresholds for alpha 0.05
  sets.push_back({0.05, 0.05, 0.05, 0.05});
  return sets;
}

TEST(StatsMethodsOracle, BenjaminiHochbergAndYekutieliMatchStatsmodels) {
  const auto sets = p_value_sets();
  struct Job {
    size_t set;
    FdrMethod method;
    double alpha;
  };
  std::vector<Job> jobs;
  json input = {{"cases", json::array()}};
  for (size_t s = 0; s < sets.size(); ++s)
    for (FdrMethod method : {FdrMethod::BenjaminiHochberg, FdrMethod::BenjaminiYekutieli})
      for (double alpha : {0.05, 0.1, 0.25}) {
        jobs.push_back({s, method, alpha});
        input["cases"].push_back({{"p", sets[s]},
                                  {"method", method == FdrMethod::BenjaminiHochberg ? "fdr_bh" : "fdr_by"},
                                  {"alpha", alpha}});
      }
  const json got = ask_oracle("fdr", input);
  ASSERT_EQ(got["cases"].size(), jobs.size());
  size_t rejections = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto& p = sets[jobs[j].set];
    const auto r = adjust_fdr(p, jobs[j].method, jobs[j].alpha);
    const json& o = got["cases"][j];
    const std::string what = std::string(fdr_method_name(jobs[j].method)) + " alpha " +
                             std::to_string(jobs[j].alpha) + " " + describe(p);
    ASSERT_EQ(o["adjusted"].size(), p.size()) << what;
    for (size_t i = 0; i < p.size(); ++i) {
      expect_p(r.adjusted[i], o["adjusted"][i].get<double>(), what + " adjusted #" + std::to_string(i));
      EXPECT_EQ(r.reject[i], o["reject"][i].get<bool>()) << what << " reject #" << i;
      rejections += r.reject[i] ? 1 : 0;
    }
  }
  EXPECT_GT(rejections, 100u);  // the reject flags were tested both ways
}

}  // namespace
}  // namespace lathe::stats
