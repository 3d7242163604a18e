// False discovery rate adjustment of many p-values, computed as statsmodels'
// multipletests(method='fdr_bh' / 'fdr_by') (statsmodels 0.15):
//   sort the m p-values ascending, p_(1) <= ... <= p_(m); with c = 1 (Benjamini-Hochberg 1995,
//   independent or positively dependent tests) or c = sum_{k=1..m} 1/k (Benjamini-Yekutieli
//   2001, any dependence):
//     adjusted p_(i) = min(1, min_{j >= i} p_(j) m c / j)
//     reject H_(i) for every i <= the largest j with p_(j) <= j alpha / (m c)
// (the adjusted p-values are the FDR levels at which each test would just be rejected; the
// rejected set is the step-up procedure's at level alpha).
#pragma once

#include <span>
#include <string_view>
#include <vector>

namespace lathe::stats {

enum class FdrMethod { BenjaminiHochberg, BenjaminiYekutieli };
std::string_view fdr_method_name(FdrMethod method);  // "bh", "by"
// "bh" or "by" (also statsmodels' "fdr_bh", "fdr_by"); InvalidArgumentError naming `text` otherwise.
FdrMethod parse_fdr_method(std::string_view text);

struct FdrAdjustment {
  std::vector<double> adjusted;  // in input order
  std::vector<bool> reject;      // in input order
};

// InvalidArgumentError naming the p-value (1-based position and value) that is NaN or outside
// [0, 1], or for alpha outside (0, 1). No p-values give empty results.
FdrAdjustment adjust_fdr(std::span<const double> p_values, FdrMethod method, double alpha = 0.05);

}  // namespace lathe::stats
