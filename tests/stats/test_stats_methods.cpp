// The hypothesis tests, the FDR adjustment and the number files of the statistics room on their
// own: values worked out by hand, the degenerate inputs (n = 1, all equal, all zero, zero
// margins), every error and its message. The comparisons with scipy/statsmodels over many inputs
// are in test_stats_methods_oracle.cpp.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "common/test_support.hpp"
#include "lathe/error.hpp"
#include "stats/alternative.hpp"
#include "stats/fisher.hpp"
#include "stats/multitest.hpp"
#include "stats/number_file.hpp"
#include "stats/permutation.hpp"
#include "stats/wilcoxon.hpp"

namespace lathe::stats {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ------------------------------------------------------------------------------- number files

TEST(NumberFile, SkipsBlankLinesAndCommentsAndKeepsLineNumbers) {
  const auto c = parse_numbers("# header\n0.5\n\n  -3 \r\n+2e-1 # trailing\n\t7\n", "in.txt");
  EXPECT_EQ(c.values, (std::vector<double>{0.5, -3, 0.2, 7}));
  EXPECT_EQ(c.lines, (std::vector<size_t>{2, 4, 5, 6}));
  EXPECT_EQ(c.source, "in.txt");
  EXPECT_EQ(parse_numbers("1\n2", "x").values.size(), 2u);  // no final newline
}

TEST(NumberFile, RefusesBadLinesNamingFileAndLine) {
  test::expect_error<FormatError>([] { parse_numbers("1\n2\nabc\n", "scores.txt"); },
                                  {"scores.txt", "line 3", "'abc'", "one number on each line"});
  test::expect_error<FormatError>([] { parse_numbers("1 2\n", "f"); }, {"line 1", "'1 2'"});
  test::expect_error<FormatError>([] { parse_numbers("0.1\nnan\n", "p.txt"); }, {"p.txt", "line 2", "not a finite"});
  test::expect_error<FormatError>([] { parse_numbers("inf\n", "f"); }, {"line 1", "not a finite"});
  test::expect_error<FormatError>([] { parse_numbers("1e999\n", "f"); }, {"line 1", "not a finite"});
  test::expect_error<FormatError>([] { parse_numbers("+-1\n", "f"); }, {"line 1", "'+-1'"});
  test::expect_error<FormatError>([] { parse_numbers("0x10\n", "f"); }, {"line 1", "'0x10'"});
  test::expect_error<FormatError>([] { parse_numbers("# only a comment\n\n", "empty.txt"); },
                                  {"empty.txt", "no number"});
  test::expect_error<FormatError>([] { parse_numbers("1\n\x01\x02\n", "f"); }, {"line 2", "\\x01"});
}

TEST(NumberFile, ReadsFilesAndNamesTheMissingOne) {
  test::TempDir dir("number_file");
  test::write_file(dir / "a.txt", "1\n2.5\n");
  EXPECT_EQ(read_numbers(dir / "a.txt").values, (std::vector<double>{1, 2.5}));
  test::expect_error<IoError>([&] { read_numbers(dir / "missing.txt"); }, {"missing.txt", "cannot open"});
  test::expect_error<IoError>([&] { read_numbers(dir.path()); }, {"is a directory"});
}

// -------------------------------------------------------------------------------- alternative

TEST(Alternative, ParsesScipysNames) {
  EXPECT_EQ(parse_alternative("two-sided"), Alternative::TwoSided);
  EXPECT_EQ(parse_alternative("less"), Alternative::Less);
  EXPECT_EQ(parse_alternative("greater"), Alternative::Greater);
  test::expect_error<InvalidArgumentError>([] { parse_alternative("bigger"); }, {"'bigger'", "two-sided, less"});
}

// ------------------------------------------------------------------------------------- BH, BY

TEST(Fdr, HandComputedValues) {
  // BH, m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> raw 0.04, 0.04, 0.04, 0.5 (p m / i), monotone.
  const std::vector<double> p{0.03, 0.5, 0.01, 0.02};
  const auto bh = adjust_fdr(p, FdrMethod::BenjaminiHochberg, 0.05);
  EXPECT_DOUBLE_EQ(bh.adjusted[0], 0.04);
  EXPECT_DOUBLE_EQ(bh.adjusted[1], 0.5);
  EXPECT_DOUBLE_EQ(bh.adjusted[2], 0.04);
  EXPECT_DOUBLE_EQ(bh.adjusted[3], 0.04);
  EXPECT_EQ(bh.reject, (std::vector<bool>{true, false, true, true}));
  // BY multiplies by H_4 = 25/12 (capped at 1).
  const auto by = adjust_fdr(p, FdrMethod::BenjaminiYekutieli, 0.05);
  EXPECT_DOUBLE_EQ(by.adjusted[0], 0.04 * 25 / 12);
  EXPECT_EQ(by.adjusted[1], 1.0);
  EXPECT_EQ(by.reject, (std::vector<bool>{false, false, false, false}));  // 0.01 > 0.05 / 4 / H_4
  // The step-up: 0.04 (rank 3 of 3, threshold 0.05) rescues the smaller ones above their own.
  const auto up = adjust_fdr(std::vector<double>{0.04, 0.035, 0.04}, FdrMethod::BenjaminiHochberg, 0.05);
  EXPECT_EQ(up.reject, (std::vector<bool>{true, true, true}));
}

TEST(Fdr, DegenerateInputs) {
  EXPECT_TRUE(adjust_fdr(std::vector<double>{}, FdrMethod::BenjaminiHochberg).adjusted.empty());
  const auto one = adjust_fdr(std::vector<double>{0.03}, FdrMethod::BenjaminiYekutieli, 0.05);
  EXPECT_EQ(one.adjusted, (std::vector<double>{0.03}));  // m = 1: nothing to adjust
  EXPECT_EQ(one.reject, (std::vector<bool>{true}));
  const auto edges = adjust_fdr(std::vector<double>{0, 1, 1}, FdrMethod::BenjaminiHochberg);
  EXPECT_EQ(edges.adjusted, (std::vector<double>{0, 1, 1}));
}

TEST(Fdr, RefusesNaNAndOutOfRangeNamingThePosition) {
  test::expect_error<InvalidArgumentError>(
      [] { adjust_fdr(std::vector<double>{0.1, 0.2, kNaN}, FdrMethod::BenjaminiHochberg); }, {"p-value 3", "nan"});
  test::expect_error<InvalidArgumentError>(
      [] { adjust_fdr(std::vector<double>{1.5}, FdrMethod::BenjaminiHochberg); }, {"p-value 1", "1.5", "[0, 1]"});
  test::expect_error<InvalidArgumentError>(
      [] { adjust_fdr(std::vector<double>{0.2, -0.1}, FdrMethod::BenjaminiYekutieli); }, {"p-value 2", "-0.1"});
  test::expect_error<InvalidArgumentError>(
      [] { adjust_fdr(std::vector<double>{0.2}, FdrMethod::BenjaminiHochberg, 1.0); }, {"alpha = 1", "(0, 1)"});
  test::expect_error<InvalidArgumentError>([] { parse_fdr_method("holm"); }, {"'holm'", "bh", "by"});
  EXPECT_EQ(parse_fdr_method("fdr_by"), FdrMethod::BenjaminiYekutieli);
}

// ------------------------------------------------------------------------------------- Fisher

TEST(Fisher, HandComputedValues) {
  // [[3, 0], [0, 3]]: P(a = 3) = 1 / C(6, 3) = 1/20; the other tail's a = 0 is as likely.
  const auto r = fisher_exact(3, 0, 0, 3);
  EXPECT_DOUBLE_EQ(r.p_value, 0.1);
  EXPECT_EQ(r.odds_ratio, std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(fisher_exact(3, 0, 0, 3, Alternative::Greater).p_value, 0.05);
  EXPECT_DOUBLE_EQ(fisher_exact(3, 0, 0, 3, Alternative::Less).p_value, 1.0);
  // [[1, 1], [1, 1]]: a is the mode, p = 1; odds ratio 1.
  EXPECT_EQ(fisher_exact(1, 1, 1, 1).p_value, 1.0);
  EXPECT_EQ(fisher_exact(1, 1, 1, 1).odds_ratio, 1.0);
  // [[2, 1], [1, 2]]: P(a) for a = 0..3 is 1, 9, 9, 1 over 20; a = 2 ties the mode: p = 1.
  EXPECT_EQ(fisher_exact(2, 1, 1, 2).p_value, 1.0);
  EXPECT_DOUBLE_EQ(fisher_exact(2, 1, 1, 2, Alternative::Greater).p_value, 10.0 / 20);
  EXPECT_DOUBLE_EQ(fisher_exact(2, 1, 1, 2).odds_ratio, 4.0);
}

TEST(Fisher, ZeroMarginsGiveNaNOddsRatioAndPOne) {
  for (auto [a, b, c, d] : {std::array<uint64_t, 4>{0, 0, 3, 4}, {0, 3, 0, 4}, {5, 0, 2, 0}, {0, 0, 0, 0}}) {
    const auto r = fisher_exact(a, b, c, d);
    EXPECT_TRUE(std::isnan(r.odds_ratio));
    EXPECT_EQ(r.p_value, 1.0);
  }
  test::expect_error<InvalidArgumentError>([] { fisher_exact(600'000'000, 600'000'000, 1, 1); }, {"10^9"});
}

// ----------------------------------------------------------------------------------- Wilcoxon

TEST(Wilcoxon, ExactDistributionByHand) {
  // Subsets of {1, 2, 3} sum to 0, 1, 2, 3, 3, 4, 5, 6: P(R <= 3) = 5/8.
  EXPECT_DOUBLE_EQ(signed_rank_cdf(3, 3), 5.0 / 8);
  EXPECT_DOUBLE_EQ(signed_rank_cdf(0, 10), 1.0 / 1024);
  EXPECT_EQ(signed_rank_cdf(55, 10), 1.0);
  const auto r = wilcoxon(std::vector<double>{1, 2, 3});
  EXPECT_EQ(r.method, WilcoxonMethod::Exact);
  EXPECT_EQ(r.r_plus, 6);
  EXPECT_EQ(r.statistic, 0);  // min(r+, r-)
  EXPECT_DOUBLE_EQ(r.p_value, 0.25);
  EXPECT_DOUBLE_EQ(wilcoxon(std::vector<double>{1, 2, 3}, Alternative::Greater).p_value, 0.125);
  EXPECT_EQ(wilcoxon(std::vector<double>{1, 2, 3}, Alternative::Greater).statistic, 6);
  EXPECT_EQ(wilcoxon(std::vector<double>{-2}).p_value, 1.0);  // n = 1: both patterns as extreme
}

TEST(Wilcoxon, MethodFollowsScipysRule) {
  std::vector<double> distinct(50);
  for (size_t i = 0; i < distinct.size(); ++i) distinct[i] = (i % 2 ? -1.0 : 1.0) * static_cast<double>(i + 1);
  EXPECT_EQ(wilcoxon(distinct).method, WilcoxonMethod::Exact);
  distinct.push_back(51);
  EXPECT_EQ(wilcoxon(distinct).method, WilcoxonMethod::Normal);  // n > 50
  std::vector<double> tied(13, 1.0);
  tied[0] = -1.0;
  EXPECT_EQ(wilcoxon(tied).method, WilcoxonMethod::Permutation);
  EXPECT_TRUE(wilcoxon(tied).has_ties);
  tied.push_back(2.0);
  EXPECT_EQ(wilcoxon(tied).method, WilcoxonMethod::Normal);  // ties and n > 13
  const auto zeros = wilcoxon(std::vector<double>{0, 1, 2});
  EXPECT_EQ(zeros.method, WilcoxonMethod::Permutation);
  EXPECT_EQ(zeros.n_zero, 1u);
  EXPECT_EQ(zeros.r_plus, 3);  // ranks of 1 and 2 among the non-zero differences
}

TEST(Wilcoxon, DegenerateInputs) {
  // All zero: every sign flip gives r+ = 0, p = 1 (scipy enumerates up to 13).
  const auto zeros = wilcoxon(std::vector<double>(13, 0.0));
  EXPECT_EQ(zeros.p_value, 1.0);
  EXPECT_EQ(zeros.n_zero, 13u);
  test::expect_error<InvalidArgumentError>([] { wilcoxon(std::vector<double>(14, 0.0)); },
                                           {"every difference is zero", "no variance"});
  test::expect_error<InvalidArgumentError>([] { wilcoxon(std::vector<double>{0.0}); }, {"single zero difference"});
  test::expect_error<InvalidArgumentError>([] { wilcoxon(std::vector<double>{}); }, {"at least one difference"});
  test::expect_error<InvalidArgumentError>([] { wilcoxon(std::vector<double>{1, kNaN}); }, {"difference 2", "nan"});
  test::expect_error<InvalidArgumentError>(
      [] { wilcoxon_paired(std::vector<double>{1, 2}, std::vector<double>{1}); }, {"same length", "2 and 1"});
}

// -------------------------------------------------------------------------------- permutation

TEST(Permutation, HandComputedExactValues) {
  // Sign flips of {1, 2, 3}: the observed mean 2 is the largest of 8 equally likely means.
  const auto r = permutation_test_sign_flip(std::vector<double>{1, 2, 3}, {});
  EXPECT_TRUE(r.exact);
  EXPECT_EQ(r.n_arrangements, 8u);
  EXPECT_EQ(r.count_greater, 1u);
  EXPECT_DOUBLE_EQ(r.statistic, 2.0);
  EXPECT_DOUBLE_EQ(r.p_value, 0.25);
  // {1, 2} vs {3, 4}: observed -2 is the smallest of C(4, 2) = 6 splits.
  const auto t = permutation_test_two_sample(std::vector<double>{1, 2}, std::vector<double>{3, 4}, {});
  EXPECT_EQ(t.n_arrangements, 6u);
  EXPECT_DOUBLE_EQ(t.statistic, -2.0);
  EXPECT_DOUBLE_EQ(t.p_value, 2.0 / 6);
  const auto less = permutation_test_two_sample(std::vector<double>{1, 2}, std::vector<double>{3, 4},
                                                {.alternative = Alternative::Less});
  EXPECT_DOUBLE_EQ(less.p_value, 1.0 / 6);
  // Paired = the sign-flip test of the differences.
  const auto paired = permutation_test_paired(std::vector<double>{2, 4, 6}, std::vector<double>{1, 2, 3}, {});
  EXPECT_DOUBLE_EQ(paired.p_value, 0.25);
}

TEST(Permutation, ExactUpToTheResampleCountThenMonteCarloNeverZero) {
  std::vector<double> d(13);
  for (size_t i = 0; i < d.size(); ++i) d[i] = 1.0 + static_cast<double>(i);
  EXPECT_TRUE(permutation_test_sign_flip(d, {}).exact);  // 2^13 = 8192 <= 9999
  d.push_back(14);
  EXPECT_FALSE(permutation_test_sign_flip(d, {}).exact);  // 2^14 > 9999
  while (d.size() < 30) d.push_back(1.0 + static_cast<double>(d.size()));
  const auto mc = permutation_test_sign_flip(d, {.n_resamples = 999, .seed = 4});
  EXPECT_FALSE(mc.exact);
  EXPECT_EQ(mc.n_evaluated, 999u);
  // Every difference positive: a random flip reaches the observed mean with probability 2^-30,
  // so none of the 999 does, yet p = (0 + 1) / (999 + 1) per tail, never 0.
  EXPECT_EQ(mc.count_greater, 0u);
  EXPECT_DOUBLE_EQ(mc.p_value, 2.0 / 1000);
  EXPECT_DOUBLE_EQ(permutation_test_sign_flip(d, {.n_resamples = 999, .alternative = Alternative::Greater}).p_value,
                   1.0 / 1000);
  // Seeded: the same draws for the same seed.
  EXPECT_EQ(permutation_test_sign_flip(d, {.n_resamples = 999, .seed = 4, .alternative = Alternative::Less}).p_value,
            permutation_test_sign_flip(d, {.n_resamples = 999, .seed = 4, .alternative = Alternative::Less}).p_value);
}

TEST(Permutation, DegenerateInputsAndErrors) {
  // All values equal: every arrangement gives the observed statistic, p = 1.
  EXPECT_EQ(permutation_test_two_sample(std::vector<double>{0.1, 0.1, 0.1}, std::vector<double>{0.1, 0.1}, {}).p_value,
            1.0);
  EXPECT_EQ(permutation_test_sign_flip(std::vector<double>{0, 0, 0}, {}).p_value, 1.0);
  test::expect_error<InvalidArgumentError>([] { permutation_test_sign_flip(std::vector<double>{1}, {}); },
                                           {"at least two values", "got 1"});
  test::expect_error<InvalidArgumentError>(
      [] { permutation_test_two_sample(std::vector<double>{1, 2}, std::vector<double>{3}, {}); },
      {"in the second sample", "got 1"});
  test::expect_error<InvalidArgumentError>(
      [] { permutation_test_sign_flip(std::vector<double>{1, 2}, {.n_resamples = 0}); }, {"at least one resample"});
  test::expect_error<InvalidArgumentError>(
      [] { permutation_test_sign_flip(std::vector<double>{1, std::numeric_limits<double>::infinity()}, {}); },
      {"value 2", "inf"});
  test::expect_error<InvalidArgumentError>(
      [] { permutation_test_paired(std::vector<double>{1, 2}, std::vector<double>{1, 2, 3}, {}); }, {"same length"});
}

TEST(Permutation, BinomialCoefficientSaturates) {
  EXPECT_EQ(binomial_coefficient_saturating(5, 2), 10u);
  EXPECT_EQ(binomial_coefficient_saturating(64, 32), 1832624140942590534ull);
  EXPECT_EQ(binomial_coefficient_saturating(100, 50), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(binomial_coefficient_saturating(3, 5), 0u);
  EXPECT_EQ(binomial_coefficient_saturating(7, 0), 1u);
}

}  // namespace
}  // namespace lathe::stats
