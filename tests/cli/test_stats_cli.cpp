// `lathe stats`: each subcommand on small files, its JSON checked against values from scipy 1.17.1
// / statsmodels 0.15.0 (written out below with the call that gave them) or worked out by hand; the
// human-readable output's lines; and every refusal (bad lines, bad flags, absurd --resamples) as
// "error: ..." naming the file and line or the flag, exit code 1.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_support.hpp"

namespace lathe::test {
namespace {

using nlohmann::json;

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args, std::chrono::seconds{120});
}

json run_json(std::vector<std::string> args) {
  args.push_back("--json");
  const auto r = lathe_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out) : json::object();
}

void expect_error(const CommandResult& r, const std::vector<std::string>& parts) {
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

void expect_contains(const std::string& text, const std::vector<std::string>& parts) {
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "'" << p << "' not in:\n" << text;
}

// a = [0.1, 0.4, 0.35, 2.0, 0.02, 1.1, 0.7], b = [0.05, 0.5, 0.3, 1.5, 0.1, 0.9, 0.8].
struct Files {
  TempDir dir{"stats_cli"};
  std::string a = (dir / "a.txt").string(), b = (dir / "b.txt").string(), p = (dir / "p.txt").string();
  Files() {
    write_file(a, "# scores of model A\n0.1\n0.4\n0.35\n\n2.0\n0.02  # an outlier-ish one\n1.1\n0.7\n");
    write_file(b, "0.05\n0.5\n0.3\n1.5\n0.1\n0.9\n0.8\n");
    write_file(p, "0.01\n0.04\n0.03\n0.5\n0.0001\n");
  }
  std::string write(const std::string& name, const std::string& text) const {
    write_file(dir / name, text);
    return (dir / name).string();
  }
};

TEST(StatsCli, WilcoxonAndPermutationMatchScipy) {
  Files f;
  // scipy.stats.wilcoxon(a, b): statistic 12.0, pvalue 0.8125 (exact); alternative='greater' 0.40625.
  const json w = run_json({"stats", "wilcoxon", f.a, "--paired", f.b});
  EXPECT_EQ(w["statistic"].get<double>(), 12.0);
  EXPECT_DOUBLE_EQ(w["p_value"].get<double>(), 0.8125);
  EXPECT_EQ(w["method"], "exact");
  EXPECT_DOUBLE_EQ(run_json({"stats", "wilcoxon", f.a, "--paired", f.b, "--alternative", "greater"})["p_value"].get<double>(),
                   0.40625);
  // scipy.stats.permutation_test((a - b,), mean, permutation_type='samples').pvalue = 0.5 (exact, 2^7).
  const json sign = run_json({"stats", "permutation", f.a, "--paired", f.b});
  EXPECT_DOUBLE_EQ(sign["p_value"].get<double>(), 0.5);
  EXPECT_EQ(sign["exact"], true);
  EXPECT_EQ(sign["n_arrangements"], 128);
  // permutation_test((a, b), mean(x) - mean(y)): statistic 0.07428571428571429, pvalue
  // 0.8333333333333334 over all C(14, 7) = 3432 splits.
  const json two = run_json({"stats", "permutation", f.a, "--two-sample", f.b});
  EXPECT_NEAR(two["statistic"].get<double>(), 0.07428571428571429, 1e-15);
  EXPECT_DOUBLE_EQ(two["p_value"].get<double>(), 0.8333333333333334);
  EXPECT_EQ(two["n_arrangements"], 3432);
  // Monte-Carlo when --resamples is below the number of splits: p = (b + 1) / (m + 1) > 0.
  const json mc = run_json({"stats", "permutation", f.a, "--two-sample", f.b, "--resamples", "999", "--seed", "3"});
  EXPECT_EQ(mc["exact"], false);
  EXPECT_EQ(mc["n_evaluated"], 999);
  const double b = std::min(mc["count_less_or_equal"].get<double>(), mc["count_greater_or_equal"].get<double>());
  EXPECT_DOUBLE_EQ(mc["p_value"].get<double>(), std::min(1.0, 2 * (b + 1) / 1000));
  EXPECT_NEAR(mc["p_value"].get<double>(), 0.8333, 0.12);  // within 5 standard errors of scipy's exact p
  expect_error(lathe_cli({"stats", "permutation", f.a, "--resamples", "0"}), {"--resamples 0", "1..10000000"});
  expect_error(lathe_cli({"stats", "permutation", f.write("one.txt", "3\n")}), {"at least two values", "got 1"});
  expect_error(lathe_cli({"stats", "permutation", f.a, "--alternative", "both"}), {"--alternative 'both'"});
}

TEST(StatsCli, AdjustMatchesStatsmodels) {
  Files f;
  // statsmodels multipletests([0.01, 0.04, 0.03, 0.5, 0.0001], method='fdr_bh' / 'fdr_by').
  const std::vector<double> bh{0.024999999999999998, 0.049999999999999996, 0.049999999999999996, 0.5, 0.0005};
  const std::vector<bool> bh_reject{true, true, true, false, true};
  const std::vector<double> by{0.05708333333333333, 0.11416666666666667, 0.11416666666666665, 1.0,
                               0.0011416666666666667};
  const json r = run_json({"stats", "adjust", f.p, "--method", "bh"});
  ASSERT_EQ(r["p_values"].size(), 5u);
  EXPECT_EQ(r["rejected"], 4);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(r["p_values"][i]["adjusted"].get<double>(), bh[i], 1e-12 * bh[i]) << i;
    EXPECT_EQ(r["p_values"][i]["reject"].get<bool>(), bh_reject[i]) << i;
    EXPECT_EQ(r["p_values"][i]["line"].get<size_t>(), i + 1);
  }
  const json y = run_json({"stats", "adjust", f.p, "--method", "by", "--alpha", "0.05"});
  EXPECT_EQ(y["rejected"], 1);
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(y["p_values"][i]["adjusted"].get<double>(), by[i], 1e-12 * by[i]) << i;
  const auto text = lathe_cli({"stats", "adjust", f.p, "--method", "by"});
  EXPECT_EQ(text.exit_code, 0) << text.err;
  expect_contains(text.out, {"line", "adjusted", "reject", "0.0001", "yes", "Benjamini-Yekutieli", "1 of 5 rejected"});
}

TEST(StatsCli, AdjustRefusesNaNAndOutOfRangeNamingTheLine) {
  Files f;
  expect_error(lathe_cli({"stats", "adjust", f.write("nan.txt", "0.1\nnan\n"), "--method", "bh"}),
               {"nan.txt", "line 2", "not a finite number"});
  expect_error(lathe_cli({"stats", "adjust", f.write("big.txt", "0.1\n\n# c\n1.5\n"), "--method", "bh"}),
               {"big.txt", "line 4", "1.5", "outside [0, 1]"});
  expect_error(lathe_cli({"stats", "adjust", f.p, "--method", "holm"}), {"--method 'holm'", "bh", "by"});
  expect_error(lathe_cli({"stats", "adjust", f.p}), {"--method"});
  expect_error(lathe_cli({"stats", "adjust", f.p, "--method", "bh", "--alpha", "0"}), {"--alpha 0", "(0, 1)"});
}

TEST(StatsCli, McNemarFromFilesOrTable) {
  Files f;
  // first 1,1,0,0,1,0,1,1 / second 1,0,0,1,0,0,0,0: b = 4, c = 1, both 1, neither 2;
  // p = 2 P(X <= 1), X ~ Bin(5, 1/2) = 2 * 6/32 = 0.375.
  const auto x = f.write("x.txt", "1\n1\n0\n0\n1\n0\n1\n1\n"), y = f.write("y.txt", "1\n0\n0\n1\n0\n0\n0\n0\n");
  const json r = run_json({"stats", "mcnemar", x, "--paired", y});
  EXPECT_EQ(r["b"], 4);
  EXPECT_EQ(r["c"], 1);
  EXPECT_EQ(r["both"], 1);
  EXPECT_EQ(r["neither"], 2);
  EXPECT_DOUBLE_EQ(r["p_value"].get<double>(), 0.375);
  EXPECT_DOUBLE_EQ(run_json({"stats", "mcnemar", "--table", "1,7"})["p_value"].get<double>(), 18.0 / 256);
  expect_error(lathe_cli({"stats", "mcnemar", f.write("z.txt", "1\n0\n2\n"), "--paired", y}),
               {"z.txt", "line 3", "0 or 1"});
  expect_error(lathe_cli({"stats", "mcnemar", x, "--paired", f.write("short.txt", "1\n0\n")}),
               {"x.txt has 8 values", "short.txt has 2"});
  expect_error(lathe_cli({"stats", "mcnemar"}), {"--table b,c", "not both and not neither"});
  expect_error(lathe_cli({"stats", "mcnemar", x}), {"--paired FILE2"});
  expect_error(lathe_cli({"stats", "mcnemar", "--table", "1,2,3"}), {"--table '1,2,3'", "3 numbers"});
  expect_error(lathe_cli({"stats", "mcnemar", "--table", "1,-2"}), {"'-2' is not a whole number"});
}

TEST(StatsCli, FisherMatchesScipy) {
  // scipy.stats.fisher_exact([[8, 2], [1, 5]]): statistic 20.0, pvalue 0.034965034965034975;
  // alternative='less' 0.9991258741258742, 'greater' 0.024475524475524483.
  const json r = run_json({"stats", "fisher", "--table", "8,2,1,5"});
  EXPECT_DOUBLE_EQ(r["odds_ratio"].get<double>(), 20.0);
  EXPECT_NEAR(r["p_value"].get<double>(), 0.034965034965034975, 1e-12 * 0.035);
  EXPECT_NEAR(run_json({"stats", "fisher", "--table", "8,2,1,5", "--alternative", "less"})["p_value"].get<double>(),
              0.9991258741258742, 1e-12);
  EXPECT_NEAR(run_json({"stats", "fisher", "--table", "8,2,1,5", "--alternative", "greater"})["p_value"].get<double>(),
              0.024475524475524483, 1e-12 * 0.025);
  // A zero margin: scipy's (nan, 1.0); JSON has no NaN, so null.
  const json z = run_json({"stats", "fisher", "--table", "0,0,3,4"});
  EXPECT_TRUE(z["odds_ratio"].is_null());
  EXPECT_EQ(z["p_value"], 1.0);
  const auto text = lathe_cli({"stats", "fisher", "--table", "3,0,0,3"});
  expect_contains(text.out, {"[[3, 0], [0, 3]]", "odds ratio = inf", "p = 0.1 (two-sided)"});
  expect_error(lathe_cli({"stats", "fisher", "--table", "1,2,3"}), {"--table", "a,b,c,d"});
  expect_error(lathe_cli({"stats", "fisher", "--table", "8,2,1,5", "--alternative", "sideways"}),
               {"--alternative 'sideways'"});
}

TEST(StatsCli, BootstrapIntervalsByHand) {
  Files f;
  // [0, 1]: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so with 10000
  // resamples the 2.5% and 97.5% quantiles are 0 and 1 for either method (BCa: z0 ~ 0, a = 0 by
  // symmetry); the estimate is 1/2.
  const auto ab = f.write("01.txt", "0\n1\n");
  for (const char* method : {"bca", "percentile"}) {
    const json r = run_json({"stats", "bootstrap", ab, "--method", method});
    EXPECT_EQ(r["estimate"], 0.5);
    EXPECT_EQ(r["low"], 0.0) << method;
    EXPECT_EQ(r["high"], 1.0) << method;
    EXPECT_EQ(r["n_resamples"], 10000);
    EXPECT_EQ(r["method"], std::string(method) == "bca" ? "BCa" : "percentile");
  }
  // Two samples: [0, 1] - [5, 5]: the estimate -4.5, the interval [0, 1] - 5.
  const auto fives = f.write("55.txt", "5\n5\n");
  const json two = run_json({"stats", "bootstrap", ab, "--two-sample", fives, "--method", "percentile"});
  EXPECT_EQ(two["design"], "two-sample");
  EXPECT_EQ(two["estimate"], -4.5);
  EXPECT_EQ(two["low"], -5.0);
  EXPECT_EQ(two["high"], -4.0);
  // Paired: a - b has median 0.05 (sorted differences -0.1, -0.1, -0.08, 0.05, 0.05, 0.2, 0.5).
  const json paired = run_json({"stats", "bootstrap", f.a, "--paired", f.b, "--statistic", "median"});
  EXPECT_EQ(paired["design"], "paired");
  EXPECT_NEAR(paired["estimate"].get<double>(), 0.05, 1e-15);
  EXPECT_LE(paired["low"].get<double>(), paired["estimate"].get<double>());
  EXPECT_GE(paired["high"].get<double>(), paired["estimate"].get<double>());
  // Every value equal: the point interval, no resampling.
  const json same = run_json({"stats", "bootstrap", f.write("same.txt", "0.25\n0.25\n0.25\n")});
  EXPECT_EQ(same["method"], "degenerate");
  EXPECT_EQ(same["low"], 0.25);
  EXPECT_EQ(same["high"], 0.25);
  // The mean of a: 4.67 / 7; seeded, so the same interval twice.
  const auto once = lathe_cli({"stats", "bootstrap", f.a, "--seed", "9", "--confidence", "0.9"});
  const auto twice = lathe_cli({"stats", "bootstrap", f.a, "--seed", "9", "--confidence", "0.9"});
  EXPECT_EQ(once.out, twice.out);
  expect_contains(once.out, {"mean of", "a.txt (n = 7): 0.667143", "90% BCa interval: [", "10000 resamples, seed 9",
                             "acceleration"});
}

TEST(StatsCli, BootstrapRefusesBadInput) {
  Files f;
  expect_error(lathe_cli({"stats", "bootstrap", f.write("bad.txt", "1\n2\nthree\n")}),
               {"bad.txt", "line 3", "'three'", "not a number"});
  expect_error(lathe_cli({"stats", "bootstrap", (f.dir / "missing.txt").string()}), {"missing.txt", "cannot open"});
  expect_error(lathe_cli({"stats", "bootstrap", f.write("one.txt", "4\n")}), {"at least two observations", "got 1"});
  expect_error(lathe_cli({"stats", "bootstrap", f.write("empty.txt", "# nothing\n")}), {"empty.txt", "no number"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--resamples", "5"}), {"--resamples 5", "100..10000000"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--resamples", "20000000"}), {"--resamples 20000000", "100..10000000"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--resamples", "-1"}), {"--resamples", "-1"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--confidence", "1.5"}), {"--confidence 1.5", "(0, 1)"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--statistic", "mode"}), {"--statistic 'mode'", "mean or median"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--method", "basic"}), {"--method 'basic'", "bca or percentile"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--paired", f.p}), {"a.txt has 7 values", "p.txt has 5"});
  expect_error(lathe_cli({"stats", "bootstrap", f.a, "--paired", f.b, "--two-sample", f.b}), {"--paired", "--two-sample"});
  // The work bound: resamples x observations <= 1e9.
  std::string many;
  for (int i = 0; i < 200; ++i) many += std::to_string(i % 7) + "\n";
  expect_error(lathe_cli({"stats", "bootstrap", f.write("many.txt", many), "--resamples", "5000001"}),
               {"--resamples 5000001 over 200 observations", "1e9"});
}

TEST(StatsCli, NeedsATest) {
  expect_error(lathe_cli({"stats"}), {"stats"});
  expect_error(lathe_cli({"stats", "ttest"}), {"no test 'ttest'", "bootstrap, permutation"});
  expect_error(lathe_cli({"stats", "fisher", "--table", "1,2,3,4", "extra"}), {"extra"});
  expect_error(lathe_cli({"stats", "wilcoxon", "a.txt", "b.txt"}), {"b.txt"});
  const auto help = lathe_cli({"stats", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  expect_contains(help.out, {"bootstrap", "permutation", "adjust", "mcnemar", "fisher", "wilcoxon"});
}

}  // namespace
}  // namespace lathe::test
