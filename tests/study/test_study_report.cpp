// The study report from made-up results: the per-seed values are the set metrics, the intervals
// are the stats room's BCa intervals of them, the comparisons cover every pair of arms that ran
// (identical ones untested), failures are listed with their errors, and the tables and the plot
// say what they hold. (Its numbers against scipy/statsmodels: test_study_oracle.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "stats/bootstrap.hpp"
#include "study/report.hpp"
#include "study/study_fixture.hpp"

namespace lathe::study {
namespace {

const nlohmann::json& arm_of(const Report& r, const std::string& name) {
  for (const auto& a : r.json["arms"])
    if (a["name"] == name) return a;
  throw std::runtime_error("no arm " + name);
}

TEST(StudyReport, SeedValuesAreTheSetMetricsAndIntervalsTheirBca) {
  const auto c = test::made_up_config();
  const auto results = test::made_up_results(c);
  const auto report = build_report(c, results);
  const auto& npo = arm_of(report, "npo");
  EXPECT_EQ(npo["runs_ok"], 3);
  std::vector<double> expected;
  for (const auto& r : results)
    if (r.arm == "npo") expected.push_back(r.sets.at("forget").mean_probability());
  const auto& forget = npo["sets"]["forget"]["answer_probability"];
  EXPECT_EQ(forget["values"].get<std::vector<double>>(), expected);
  const auto interval = stats::bootstrap_bca_mean(expected, {.n_resamples = 9999, .confidence = 0.95, .seed = 0});
  EXPECT_DOUBLE_EQ(forget["interval"]["low"].get<double>(), interval.low);
  EXPECT_DOUBLE_EQ(forget["interval"]["high"].get<double>(), interval.high);
  EXPECT_LT(forget["interval"]["low"].get<double>(), forget["mean"].get<double>());
  // base gave the same value for every seed: a degenerate interval, not an error.
  const auto& base = arm_of(report, "base")["sets"]["forget"]["answer_probability"];
  EXPECT_EQ(base["interval"]["method"], "degenerate");
  EXPECT_EQ(base["interval"]["low"], base["interval"]["high"]);
  // Every metric is there for every set.
  for (const char* key : {"answer_probability", "token_accuracy", "exact_match", "perplexity"})
    EXPECT_TRUE(npo["sets"]["general"].contains(key)) << key;
  EXPECT_NEAR(npo["sets"]["general"]["perplexity"]["values"][0].get<double>(),
              results[3].sets.at("general").perplexity(), 1e-12);
}

TEST(StudyReport, ComparisonsCoverEveryPairOfArmsThatRan) {
  const auto c = test::made_up_config();
  const auto report = build_report(c, test::made_up_results(c));
  const auto& cmps = report.json["comparisons"];
  // 4 sets x 3 pairs of the arms that ran (broken never did).
  ASSERT_EQ(cmps.size(), 12u);
  std::set<std::pair<std::string, std::string>> pairs;
  for (const auto& cmp : cmps) {
    pairs.insert({cmp["arm"].get<std::string>(), cmp["other"].get<std::string>()});
    EXPECT_NE(cmp["arm"], "broken");
    EXPECT_EQ(cmp["n"], 12);
    EXPECT_GE(cmp["p_adjusted"].get<double>(), cmp["p"].get<double>());
  }
  EXPECT_EQ(pairs, (std::set<std::pair<std::string, std::string>>{{"npo", "base"}, {"proj", "base"}, {"proj", "npo"}}));
  for (const auto& cmp : cmps) {
    if (cmp["set"] == "general" && cmp["arm"] == "proj" && cmp["other"] == "base") {
      EXPECT_EQ(cmp["method"], "identical");
      EXPECT_EQ(cmp["p"], 1.0);
      EXPECT_FALSE(cmp["reject"].get<bool>());
      EXPECT_FALSE(cmp.contains("interval"));
    }
    if (cmp["set"] == "forget" && cmp["arm"] == "npo" && cmp["other"] == "base") {
      // Every forget example dropped: the exact Wilcoxon p of 12 one-sided signs, 2 / 2^12.
      EXPECT_EQ(cmp["method"], "wilcoxon-exact");
      EXPECT_DOUBLE_EQ(cmp["p"].get<double>(), 2.0 / 4096.0);
      EXPECT_TRUE(cmp["reject"].get<bool>());
      EXPECT_LT(cmp["interval"]["high"].get<double>(), 0.0);
    }
  }
}

TEST(StudyReport, FailuresLanguagesAndPlot) {
  const auto c = test::made_up_config();
  const auto report = build_report(c, test::made_up_results(c));
  ASSERT_EQ(report.json["failed"].size(), 3u);
  EXPECT_EQ(report.json["failed"][0]["error"], "out of luck | seed 1");
  EXPECT_NE(report.markdown.find("## Failed runs"), std::string::npos);
  EXPECT_NE(report.markdown.find("out of luck \\| seed 2"), std::string::npos) << "a | in an error breaks the table";
  EXPECT_NE(report.markdown.find("| broken | unlearn | 0/3 |"), std::string::npos);
  EXPECT_NE(report.markdown.find("## By language"), std::string::npos);
  EXPECT_TRUE(report.json["languages"].contains("es"));
  EXPECT_TRUE(report.json["languages"]["es"].contains("npo"));
  EXPECT_NE(report.svg.find("<svg"), std::string::npos);
  EXPECT_NE(report.svg.find(">npo</text>"), std::string::npos);
  EXPECT_EQ(report.svg.find(">broken</text>"), std::string::npos);
  // Without a retain set there is nothing to plot against.
  const auto no_retain = test::made_up_config(/*with_retain=*/false);
  EXPECT_TRUE(build_report(no_retain, test::made_up_results(no_retain)).svg.empty());
}

TEST(StudyReport, OneSeedHasNoIntervals) {
  auto c = test::made_up_config();
  c.seeds = {5};
  const auto report = build_report(c, test::made_up_results(c));
  EXPECT_FALSE(arm_of(report, "npo")["sets"]["forget"]["answer_probability"].contains("interval"));
  EXPECT_NE(report.markdown.find("| npo | unlearn | 1/1 |"), std::string::npos);
}

}  // namespace
}  // namespace lathe::study
