// The report of an unlearning study, from its results alone (so a finished journal can be
// reported again without running anything):
//  * per arm and eval set, each metric's mean over the seeds with a BCa bootstrap interval across
//    the seeds (stats/bootstrap.hpp, as scipy.stats.bootstrap; degenerate when every seed gave the
//    same value, absent with a single seed);
//  * paired comparisons per eval set, each arm against the baseline and every two other arms
//    against each other: per example, the answer probability averaged over the arm's seeds, the
//    mean difference with its paired BCa interval and the Wilcoxon signed-rank test (two-sided,
//    as scipy.stats.wilcoxon); all p-values of the study adjusted together by Benjamini-Hochberg
//    (as statsmodels' multipletests 'fdr_bh'). A pair whose every difference is zero has no test
//    (p = 1, method "identical");
//  * the same means broken down by the eval sets' language;
//  * failed runs with their errors.
// Written as report.json (every number, the per-example means the tests saw included, so an
// independent script can recompute them), report.md and plot.svg (forget vs retain answer
// probability per arm, with the intervals).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "study/config.hpp"
#include "study/runner.hpp"

namespace lathe::study {

struct Report {
  nlohmann::json json;
  std::string markdown;
  std::string svg;  // empty when the study has no forget or no retain set
};

Report build_report(const StudyConfig& config, const std::vector<RunResult>& results);

// OUT/report.json, OUT/report.md, OUT/plot.svg, each replaced atomically.
void write_report(const Report& report, const std::filesystem::path& out);

}  // namespace lathe::study
