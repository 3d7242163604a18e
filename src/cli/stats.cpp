// lathe stats bootstrap|permutation|adjust|mcnemar|fisher|wilcoxon: the statistics room
// (src/stats/) on files of numbers, one per line (stats/number_file.hpp), for evaluation results
// produced anywhere. Every method equals a scipy/statsmodels function; docs/STATISTICS.md has the
// formulas. Human-readable output by default, one JSON object with --json.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "lathe/error.hpp"
#include "stats/alternative.hpp"
#include "stats/bootstrap.hpp"
#include "stats/fisher.hpp"
#include "stats/mcnemar.hpp"
#include "stats/multitest.hpp"
#include "stats/number_file.hpp"
#include "stats/permutation.hpp"
#include "stats/wilcoxon.hpp"

namespace lathe::cli {
namespace {

// Keys in the order written: the JSON reads like the human output.
using json = nlohmann::ordered_json;

// Resamples and the work they cost: enough for any interval's Monte-Carlo error to be negligible,
// and a bound on the run time (at the work limit, about 15 s for a mean and 30 s for a median on
// one core).
constexpr uint64_t kMaxResamples = 10'000'000;
constexpr uint64_t kMinBootstrapResamples = 100;
constexpr double kMaxWork = 1e9;  // resamples x observations

// A number for JSON: NaN and infinities have no JSON form and become null.
json number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string show(double v) {
  if (std::isnan(v)) return "undefined";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{:.6g}", v);
}

// CLI11 reads unsigned options with strtoull, which wraps "-1" and accepts octal; main.cpp's
// strict check reaches only the top-level commands, so these nested ones get the same here.
CLI::Option* strict_unsigned(CLI::Option* option) {
  option->transform(CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t value = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, value, 10);
        if (text.empty() || ec == std::errc::invalid_argument || ptr != end)
          return fmt::format("'{}' is not a whole decimal number >= 0", text);
        if (ec == std::errc::result_out_of_range) return fmt::format("{} is out of range (far too large)", text);
        text = std::to_string(value);
        return {};
      },
      ""));
  return option;
}

// The flag's range, before any file is read.
void check_resamples(uint64_t resamples, uint64_t minimum) {
  if (resamples < minimum || resamples > kMaxResamples)
    throw InvalidArgumentError(fmt::format("--resamples {} is out of range: it must be in {}..{}", resamples, minimum,
                                           kMaxResamples));
}

// The work it asks for, once the files are read.
void check_work(uint64_t resamples, size_t observations) {
  if (static_cast<double>(resamples) * static_cast<double>(observations) > kMaxWork)
    throw InvalidArgumentError(fmt::format("--resamples {} over {} observations is {:.3g} draws, above the limit of "
                                           "1e9; use fewer resamples",
                                           resamples, observations,
                                           static_cast<double>(resamples) * static_cast<double>(observations)));
}

void check_confidence(double confidence) {
  if (!(confidence > 0 && confidence < 1))
    throw InvalidArgumentError(fmt::format("--confidence {} is outside (0, 1); use e.g. 0.95", confidence));
}

stats::Alternative parse_alternative_flag(const std::string& text) {
  try {
    return stats::parse_alternative(text);
  } catch (const InvalidArgumentError&) {
    throw InvalidArgumentError(fmt::format("--alternative '{}' is not known: use two-sided, less or greater", text));
  }
}

// The second sample of a two-sample command: --paired FILE2 or --two-sample FILE2.
struct SecondSample {
  std::string paired, two_sample;
  bool any() const { return !paired.empty() || !two_sample.empty(); }
};

void check_paired_lengths(const stats::NumberColumn& a, const stats::NumberColumn& b) {
  if (a.values.size() != b.values.size())
    throw InvalidArgumentError(fmt::format("--paired: {} has {} values but {} has {}; paired samples need one value "
                                           "per unit in each file, in the same order",
                                           a.source, a.values.size(), b.source, b.values.size()));
}

std::vector<double> differences(const stats::NumberColumn& a, const stats::NumberColumn& b) {
  check_paired_lengths(a, b);
  std::vector<double> d(a.values.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = a.values[i] - b.values[i];
  return d;
}

void print_json(const json& j) { fmt::print("{}\n", j.dump(2)); }

// ---------------------------------------------------------------------------------- bootstrap

struct BootstrapArgs {
  std::string file, statistic = "mean", method = "bca";
  SecondSample second;
  uint64_t resamples = 10000, seed = 0;
  double confidence = 0.95;
  bool json = false;
};

stats::Statistic parse_statistic(const std::string& name) {
  if (name == "mean") return [](std::span<const double> v) { return stats::mean_of(v); };
  if (name == "median") return [](std::span<const double> v) { return stats::median_of(v); };
  throw InvalidArgumentError(fmt::format("--statistic '{}' is not known: use mean or median", name));
}

stats::IntervalMethod parse_interval_method(const std::string& name) {
  if (name == "bca") return stats::IntervalMethod::Bca;
  if (name == "percentile") return stats::IntervalMethod::Percentile;
  throw InvalidArgumentError(fmt::format("--method '{}' is not known: use bca or percentile", name));
}

int run_bootstrap(const BootstrapArgs& a) {
  const auto statistic = parse_statistic(a.statistic);
  const stats::BootstrapOptions options{.n_resamples = a.resamples, .confidence = a.confidence, .seed = a.seed,
                                        .method = parse_interval_method(a.method)};
  check_confidence(a.confidence);
  check_resamples(a.resamples, kMinBootstrapResamples);
  const auto first = stats::read_numbers(a.file);
  std::optional<stats::NumberColumn> second;
  if (a.second.any()) second = stats::read_numbers(a.second.paired.empty() ? a.second.two_sample : a.second.paired);
  check_work(a.resamples, first.values.size() + (second ? second->values.size() : 0));
  std::string design = "one-sample", what = fmt::format("{} of {}", a.statistic, first.source);
  stats::BootstrapInterval r;
  if (!second) {
    r = stats::bootstrap_interval(first.values, statistic, options);
  } else if (!a.second.paired.empty()) {
    check_paired_lengths(first, *second);
    design = "paired";
    what = fmt::format("{} of {} - {}", a.statistic, first.source, second->source);
    r = stats::bootstrap_paired_interval(first.values, second->values, statistic, options);
  } else {
    design = "two-sample";
    what = fmt::format("{0}({1}) - {0}({2})", a.statistic, first.source, second->source);
    r = stats::bootstrap_two_sample_interval(first.values, second->values, statistic, options);
  }
  if (a.json) {
    print_json({{"test", "bootstrap"}, {"design", design}, {"statistic", a.statistic}, {"file", first.source},
                {"second_file", second ? json(second->source) : json(nullptr)}, {"n", first.values.size()},
                {"n_second", second ? json(second->values.size()) : json(nullptr)}, {"estimate", number(r.estimate)},
                {"low", number(r.low)}, {"high", number(r.high)}, {"confidence", r.confidence},
                {"method", std::string(stats::interval_method_name(r.method))}, {"requested_method", a.method},
                {"n_resamples", r.n_resamples}, {"seed", a.seed}, {"standard_error", number(r.standard_error)},
                {"z0", number(r.z0)}, {"acceleration", number(r.acceleration)}});
    return 0;
  }
  const std::string n = design == "two-sample"
                            ? fmt::format("independent samples, n = {} and {}", first.values.size(), second->values.size())
                            : fmt::format("{}n = {}", design == "paired" ? "paired, " : "", first.values.size());
  fmt::print("{} ({}): {}\n", what, n, show(r.estimate));
  fmt::print("{:g}% {} interval: [{}, {}]\n", r.confidence * 100, stats::interval_method_name(r.method), show(r.low),
             show(r.high));
  if (r.method == stats::IntervalMethod::Degenerate) {
    fmt::print("every value is the same: the statistic cannot vary, no resampling done\n");
    return 0;
  }
  fmt::print("{} resamples, seed {}; bootstrap standard error {}", r.n_resamples, a.seed, show(r.standard_error));
  if (r.method == stats::IntervalMethod::Bca) fmt::print("; z0 = {}, acceleration = {}", show(r.z0), show(r.acceleration));
  fmt::print("\n");
  if (r.method == stats::IntervalMethod::Percentile && options.method == stats::IntervalMethod::Bca)
    fmt::print("(every resample fell on one side of the estimate: BCa's bias correction is infinite, so this is the "
               "percentile interval)\n");
  return 0;
}

std::pair<CLI::App*, Runner> add_bootstrap(CLI::App& parent) {
  auto a = std::make_shared<BootstrapArgs>();
  auto* cmd = parent.add_subcommand("bootstrap", "Bootstrap confidence interval (BCa or percentile) of a mean or "
                                                 "median, of paired differences or of two independent samples");
  cmd->add_option("file", a->file, "Numbers, one per line (blank lines and # comments skipped)")->required();
  auto* paired = cmd->add_option("--paired", a->second.paired, "Second file: the interval of statistic(FILE - FILE2), "
                                                               "line i of each file measured on the same unit");
  cmd->add_option("--two-sample", a->second.two_sample,
                  "Second file: the interval of statistic(FILE) - statistic(FILE2), independent samples")
      ->excludes(paired);
  cmd->add_option("--statistic", a->statistic, "mean or median")->capture_default_str();
  cmd->add_option("--method", a->method, "bca or percentile")->capture_default_str();
  strict_unsigned(cmd->add_option("--resamples", a->resamples, "Bootstrap resamples (100..10000000)"))
      ->capture_default_str();
  cmd->add_option("--confidence", a->confidence, "Confidence level, in (0, 1)")->capture_default_str();
  strict_unsigned(cmd->add_option("--seed", a->seed, "Seed (the same interval on every machine)"))->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_bootstrap(*a); }};
}

// -------------------------------------------------------------------------------- permutation

struct PermutationArgs {
  std::string file, alternative = "two-sided";
  SecondSample second;
  uint64_t resamples = 9999, seed = 0;
  bool json = false;
};

int run_permutation(const PermutationArgs& a) {
  const stats::PermutationOptions options{.n_resamples = a.resamples, .seed = a.seed,
                                          .alternative = parse_alternative_flag(a.alternative)};
  check_resamples(a.resamples, 1);
  const auto first = stats::read_numbers(a.file);
  std::optional<stats::NumberColumn> second;
  if (a.second.any()) second = stats::read_numbers(a.second.paired.empty() ? a.second.two_sample : a.second.paired);
  check_work(a.resamples, first.values.size() + (second ? second->values.size() : 0));
  std::string design = "sign-flip", what = fmt::format("mean of {}", first.source);
  stats::PermutationResult r;
  if (!second) {
    r = stats::permutation_test_sign_flip(first.values, options);
  } else if (!a.second.paired.empty()) {
    design = "paired";
    what = fmt::format("mean of {} - {} (paired, sign flips)", first.source, second->source);
    r = stats::permutation_test_sign_flip(differences(first, *second), options);
  } else {
    design = "two-sample";
    what = fmt::format("mean({}) - mean({}) (independent samples, label shuffles)", first.source, second->source);
    r = stats::permutation_test_two_sample(first.values, second->values, options);
  }
  if (a.json) {
    print_json({{"test", "permutation"}, {"design", design}, {"file", first.source},
                {"second_file", second ? json(second->source) : json(nullptr)}, {"n", first.values.size()},
                {"n_second", second ? json(second->values.size()) : json(nullptr)},
                {"statistic", number(r.statistic)}, {"p_value", r.p_value}, {"alternative", a.alternative},
                {"exact", r.exact}, {"n_arrangements", r.n_arrangements}, {"n_evaluated", r.n_evaluated},
                {"count_less_or_equal", r.count_less}, {"count_greater_or_equal", r.count_greater}, {"seed", a.seed}});
    return 0;
  }
  fmt::print("permutation test of the {}: observed {}\n", what, show(r.statistic));
  if (r.exact)
    fmt::print("p = {} ({}, exact over all {} arrangements)\n", show(r.p_value), a.alternative, r.n_arrangements);
  else
    fmt::print("p = {} ({}, Monte-Carlo: {} random arrangements, seed {}, p = (b + 1) / (m + 1))\n", show(r.p_value),
               a.alternative, r.n_evaluated, a.seed);
  return 0;
}

std::pair<CLI::App*, Runner> add_permutation(CLI::App& parent) {
  auto a = std::make_shared<PermutationArgs>();
  auto* cmd = parent.add_subcommand("permutation", "Permutation test of a mean difference: sign flips (one file, or "
                                                   "--paired) or label shuffles (--two-sample), exact when small");
  cmd->add_option("file", a->file, "Numbers, one per line (alone: differences, tested for mean 0)")->required();
  auto* paired = cmd->add_option("--paired", a->second.paired, "Second file: sign-flip test of FILE - FILE2");
  cmd->add_option("--two-sample", a->second.two_sample, "Second file: label-shuffle test of mean(FILE) - mean(FILE2)")
      ->excludes(paired);
  cmd->add_option("--alternative", a->alternative, "two-sided, less or greater")->capture_default_str();
  strict_unsigned(cmd->add_option("--resamples", a->resamples,
                                  "Random arrangements (1..10000000); every arrangement is enumerated when there are "
                                  "at most this many"))
      ->capture_default_str();
  strict_unsigned(cmd->add_option("--seed", a->seed, "Seed of the Monte-Carlo arrangements"))->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_permutation(*a); }};
}

// ------------------------------------------------------------------------------------- adjust

struct AdjustArgs {
  std::string file, method;
  double alpha = 0.05;
  bool json = false;
};

int run_adjust(const AdjustArgs& a) {
  stats::FdrMethod method{};
  try {
    method = stats::parse_fdr_method(a.method);
  } catch (const InvalidArgumentError&) {
    throw InvalidArgumentError(fmt::format("--method '{}' is not known: use bh (Benjamini-Hochberg) or by "
                                           "(Benjamini-Yekutieli)",
                                           a.method));
  }
  if (!(a.alpha > 0 && a.alpha < 1))
    throw InvalidArgumentError(fmt::format("--alpha {} is outside (0, 1); use e.g. 0.05", a.alpha));
  const auto p = stats::read_numbers(a.file);
  for (size_t i = 0; i < p.values.size(); ++i)
    if (!(p.values[i] >= 0 && p.values[i] <= 1))
      throw InvalidArgumentError(fmt::format("{}: line {}: {} is not a p-value (outside [0, 1])", p.source, p.lines[i],
                                             p.values[i]));
  const auto r = stats::adjust_fdr(p.values, method, a.alpha);
  const size_t rejected = static_cast<size_t>(std::count(r.reject.begin(), r.reject.end(), true));
  const std::string name = method == stats::FdrMethod::BenjaminiHochberg ? "Benjamini-Hochberg" : "Benjamini-Yekutieli";
  if (a.json) {
    json rows = json::array();
    for (size_t i = 0; i < p.values.size(); ++i)
      rows.push_back({{"line", p.lines[i]}, {"p", p.values[i]}, {"adjusted", r.adjusted[i]}, {"reject", bool(r.reject[i])}});
    print_json({{"test", "adjust"}, {"method", std::string(stats::fdr_method_name(method))}, {"alpha", a.alpha},
                {"file", p.source}, {"n", p.values.size()}, {"rejected", rejected}, {"p_values", rows}});
    return 0;
  }
  fmt::print("{:>6}  {:>12}  {:>12}  {}\n", "line", "p", "adjusted", "reject");
  for (size_t i = 0; i < p.values.size(); ++i)
    fmt::print("{:>6}  {:>12}  {:>12}  {}\n", p.lines[i], show(p.values[i]), show(r.adjusted[i]),
               r.reject[i] ? "yes" : "no");
  fmt::print("{} at FDR level {:g}: {} of {} rejected\n", name, a.alpha, rejected, p.values.size());
  return 0;
}

std::pair<CLI::App*, Runner> add_adjust(CLI::App& parent) {
  auto a = std::make_shared<AdjustArgs>();
  auto* cmd = parent.add_subcommand("adjust", "False discovery rate adjustment of p-values (Benjamini-Hochberg or "
                                              "Benjamini-Yekutieli)");
  cmd->add_option("file", a->file, "p-values, one per line")->required();
  cmd->add_option("--method", a->method, "bh or by")->required();
  cmd->add_option("--alpha", a->alpha, "FDR level of the reject decisions")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_adjust(*a); }};
}

// ------------------------------------------------------------------------------------ mcnemar

// "N1,N2,..." as exactly `count` whole numbers >= 0.
std::vector<uint64_t> parse_counts(const std::string& text, size_t count, const std::string& flag,
                                   const std::string& shape) {
  std::vector<uint64_t> out;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string field = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    uint64_t v = 0;
    const auto [ptr, ec] = std::from_chars(field.data(), field.data() + field.size(), v, 10);
    if (field.empty() || ec != std::errc() || ptr != field.data() + field.size())
      throw InvalidArgumentError(fmt::format("{} '{}': '{}' is not a whole number >= 0; give {}", flag, text, field,
                                             shape));
    out.push_back(v);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.size() != count)
    throw InvalidArgumentError(fmt::format("{} '{}' has {} numbers; give {}", flag, text, out.size(), shape));
  return out;
}

struct McNemarArgs {
  std::string file, paired, table;
  bool json = false;
};

// Outcomes of a 0/1 file: anything else is an error naming the file and line.
void check_binary(const stats::NumberColumn& c) {
  for (size_t i = 0; i < c.values.size(); ++i)
    if (c.values[i] != 0 && c.values[i] != 1)
      throw InvalidArgumentError(fmt::format("{}: line {}: {} is not an outcome; McNemar's test needs 0 or 1 on each "
                                             "line",
                                             c.source, c.lines[i], c.values[i]));
}

int run_mcnemar(const McNemarArgs& a) {
  uint64_t both = 0, neither = 0, b = 0, c = 0;
  const bool from_files = !a.file.empty();
  if (from_files == !a.table.empty())
    throw InvalidArgumentError("mcnemar takes either FILE --paired FILE2 (0/1 outcomes per unit) or --table b,c "
                               "(the discordant counts), not both and not neither");
  if (from_files) {
    if (a.paired.empty()) throw InvalidArgumentError("mcnemar FILE needs --paired FILE2: the second outcome per unit");
    const auto first = stats::read_numbers(a.file), second = stats::read_numbers(a.paired);
    check_binary(first);
    check_binary(second);
    check_paired_lengths(first, second);
    for (size_t i = 0; i < first.values.size(); ++i) {
      const bool x = first.values[i] == 1, y = second.values[i] == 1;
      (x ? (y ? both : b) : (y ? c : neither)) += 1;
    }
  } else {
    const auto counts = parse_counts(a.table, 2, "--table", "b,c: the units with outcome 1 only in the first, and 1 "
                                                            "only in the second");
    b = counts[0];
    c = counts[1];
  }
  const auto r = stats::mcnemar_exact(b, c);
  if (a.json) {
    print_json({{"test", "mcnemar"}, {"b", b}, {"c", c}, {"both", from_files ? json(both) : json(nullptr)},
                {"neither", from_files ? json(neither) : json(nullptr)}, {"p_value", r.p_value},
                {"alternative", "two-sided"}, {"exact", true}});
    return 0;
  }
  fmt::print("McNemar exact test: b = {} (1 only in the first), c = {} (1 only in the second)", b, c);
  if (from_files) fmt::print("; {} both, {} neither", both, neither);
  fmt::print("\np = {} (two-sided, exact binomial)\n", show(r.p_value));
  return 0;
}

std::pair<CLI::App*, Runner> add_mcnemar(CLI::App& parent) {
  auto a = std::make_shared<McNemarArgs>();
  auto* cmd = parent.add_subcommand("mcnemar", "McNemar's exact test of paired 0/1 outcomes");
  cmd->add_option("file", a->file, "0/1 outcomes under the first condition, one unit per line");
  cmd->add_option("--paired", a->paired, "0/1 outcomes of the same units under the second condition");
  cmd->add_option("--table", a->table, "b,c: the discordant counts instead of files");
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_mcnemar(*a); }};
}

// ------------------------------------------------------------------------------------- fisher

struct FisherArgs {
  std::string table, alternative = "two-sided";
  bool json = false;
};

int run_fisher(const FisherArgs& a) {
  const auto alternative = parse_alternative_flag(a.alternative);
  const auto t = parse_counts(a.table, 4, "--table", "a,b,c,d: the 2x2 table [[a, b], [c, d]] row by row");
  const auto r = stats::fisher_exact(t[0], t[1], t[2], t[3], alternative);
  if (a.json) {
    print_json({{"test", "fisher"}, {"table", {{t[0], t[1]}, {t[2], t[3]}}}, {"odds_ratio", number(r.odds_ratio)},
                {"p_value", r.p_value}, {"alternative", a.alternative}});
    return 0;
  }
  fmt::print("Fisher exact test of [[{}, {}], [{}, {}]]\n", t[0], t[1], t[2], t[3]);
  fmt::print("odds ratio = {}{}\n", show(r.odds_ratio),
             std::isnan(r.odds_ratio) ? " (a row or column sums to 0)" : "");
  fmt::print("p = {} ({})\n", show(r.p_value), a.alternative);
  return 0;
}

std::pair<CLI::App*, Runner> add_fisher(CLI::App& parent) {
  auto a = std::make_shared<FisherArgs>();
  auto* cmd = parent.add_subcommand("fisher", "Fisher's exact test of a 2x2 table");
  cmd->add_option("--table", a->table, "a,b,c,d: the table [[a, b], [c, d]], row by row")->required();
  cmd->add_option("--alternative", a->alternative, "two-sided, less or greater")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_fisher(*a); }};
}

// ----------------------------------------------------------------------------------- wilcoxon

struct WilcoxonArgs {
  std::string file, paired, alternative = "two-sided";
  bool json = false;
};

int run_wilcoxon(const WilcoxonArgs& a) {
  const auto alternative = parse_alternative_flag(a.alternative);
  const auto first = stats::read_numbers(a.file);
  std::optional<stats::NumberColumn> second;
  if (!a.paired.empty()) second = stats::read_numbers(a.paired);
  const auto r = second ? stats::wilcoxon(differences(first, *second), alternative)
                        : stats::wilcoxon(first.values, alternative);
  const std::string what = second ? fmt::format("{} - {}", first.source, second->source) : first.source;
  if (a.json) {
    print_json({{"test", "wilcoxon"}, {"file", first.source}, {"second_file", second ? json(second->source) : json(nullptr)},
                {"n", r.n}, {"n_zero", r.n_zero}, {"has_ties", r.has_ties}, {"statistic", r.statistic},
                {"r_plus", r.r_plus}, {"r_minus", r.r_minus}, {"p_value", r.p_value}, {"alternative", a.alternative},
                {"method", std::string(stats::wilcoxon_method_name(r.method))},
                {"z", r.method == stats::WilcoxonMethod::Normal ? json(r.z) : json(nullptr)}});
    return 0;
  }
  fmt::print("Wilcoxon signed-rank test of {} (n = {}{})\n", what, r.n,
             r.n_zero > 0 ? fmt::format(", {} zero difference(s) dropped", r.n_zero) : "");
  fmt::print("statistic = {} ({}); r+ = {}, r- = {}\n", show(r.statistic),
             alternative == stats::Alternative::TwoSided ? "min(r+, r-)" : "r+", show(r.r_plus), show(r.r_minus));
  fmt::print("p = {} ({}, {}{})\n", show(r.p_value), a.alternative, stats::wilcoxon_method_name(r.method),
             r.method == stats::WilcoxonMethod::Normal ? fmt::format(", z = {}", show(r.z)) : "");
  return 0;
}

std::pair<CLI::App*, Runner> add_wilcoxon(CLI::App& parent) {
  auto a = std::make_shared<WilcoxonArgs>();
  auto* cmd = parent.add_subcommand("wilcoxon", "Wilcoxon signed-rank test of differences (as scipy.stats.wilcoxon)");
  cmd->add_option("file", a->file, "Numbers, one per line (alone: the differences)")->required();
  cmd->add_option("--paired", a->paired, "Second file: the test of FILE - FILE2");
  cmd->add_option("--alternative", a->alternative, "two-sided, less or greater")->capture_default_str();
  cmd->add_flag("--json", a->json, "Print one JSON object");
  return {cmd, [a] { return run_wilcoxon(*a); }};
}

}  // namespace

Runner add_stats(CLI::App& app) {
  auto* cmd = app.add_subcommand("stats", "Statistics of evaluation results: bootstrap intervals, permutation, "
                                          "McNemar, Fisher and Wilcoxon tests, FDR adjustment");
  // Words CLI11 cannot place are kept (allow_extras) so that the error can name them: a test
  // that does not exist, or an argument too many (CLI11 would only say "a subcommand is required").
  // Set after the tests are added: subcommands inherit it, and they must refuse what they cannot use.
  std::vector<std::pair<CLI::App*, Runner>> subcommands{add_bootstrap(*cmd), add_permutation(*cmd), add_adjust(*cmd),
                                                        add_mcnemar(*cmd),   add_fisher(*cmd),      add_wilcoxon(*cmd)};
  cmd->allow_extras();
  return [cmd, subcommands] {
    const std::string tests = "bootstrap, permutation, adjust, mcnemar, fisher or wilcoxon (see `lathe stats --help`)";
    const auto extras = cmd->remaining(true);
    for (const auto& [sub, run] : subcommands) {
      if (!sub->parsed()) continue;
      if (!extras.empty())
        throw InvalidArgumentError(fmt::format("lathe stats {}: unexpected argument '{}'; see `lathe stats {} --help`",
                                               sub->get_name(), extras.front(), sub->get_name()));
      return run();
    }
    if (!extras.empty()) throw InvalidArgumentError(fmt::format("lathe stats has no test '{}': use {}", extras.front(), tests));
    throw InvalidArgumentError("lathe stats needs a test: " + tests);
  };
}

}  // namespace lathe::cli
