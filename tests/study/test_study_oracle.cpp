// The study report's numbers against scipy and statsmodels (tests/oracle/study_oracle.py, the
// script that also checks real studies): a made-up study's journal and report written as
// `lathe study` writes them, then recomputed independently from the journal alone. Also shows
// that the check fails when one number of the report is off.
#include <gtest/gtest.h>

#include <fstream>

#include "common/test_support.hpp"
#include "study/report.hpp"
#include "study/study_fixture.hpp"

namespace lathe::study {
namespace {

void write_study(const std::filesystem::path& dir, const StudyConfig& c, const std::vector<RunResult>& results,
                 const Report& report) {
  std::ofstream journal(dir / "journal.jsonl");
  journal << nlohmann::json{{"lathe_study", 1}}.dump() << "\n";
  for (const auto& r : results) journal << to_json(r).dump() << "\n";
  journal.close();
  write_report(report, dir);
  (void)c;
}

TEST(StudyOracle, ReportEqualsScipyAndStatsmodels) {
  const auto c = test::made_up_config();
  const auto results = test::made_up_results(c);
  const auto report = build_report(c, results);
  lathe::test::TempDir dir("study_oracle");
  write_study(dir.path(), c, results, report);
  const auto ok = lathe::test::run_oracle("study_oracle.py", {dir.path().string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("12 comparisons"), std::string::npos) << ok.out;

  // One adjusted p-value off by a little: the check must see it.
  auto broken = report;
  broken.json["comparisons"][3]["p_adjusted"] = broken.json["comparisons"][3]["p_adjusted"].get<double>() * (1 + 1e-9);
  write_study(dir.path(), c, results, broken);
  const auto bad = lathe::test::run_oracle("study_oracle.py", {dir.path().string()});
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
  EXPECT_NE(bad.err.find("BH-adjusted"), std::string::npos) << bad.err;

  // An interval moved by 0.3 of its values' spread: outside the Monte-Carlo bound.
  broken = report;
  for (auto& arm : broken.json["arms"])
    if (arm["name"] == "npo") {
      auto& s = arm["sets"]["forget"]["answer_probability"];
      const auto v = s["values"].get<std::vector<double>>();
      const double spread = *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end());
      s["interval"]["low"] = s["interval"]["low"].get<double>() - 0.3 * spread;
    }
  write_study(dir.path(), c, results, broken);
  const auto moved = lathe::test::run_oracle("study_oracle.py", {dir.path().string()});
  EXPECT_EQ(moved.exit_code, 1) << moved.out << moved.err;
  EXPECT_NE(moved.err.find("npo forget answer_probability interval"), std::string::npos) << moved.err;
}

}  // namespace
}  // namespace lathe::study
