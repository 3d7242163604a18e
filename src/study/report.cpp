#include "study/report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "io/mapped_file.hpp"
#include "lathe/error.hpp"
#include "stats/bootstrap.hpp"
#include "stats/multitest.hpp"
#include "stats/wilcoxon.hpp"

namespace lathe::study {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Metric {
  const char* key;
  const char* label;
  double (SetResult::*of)() const;
};
constexpr Metric kMetrics[] = {{"answer_probability", "answer prob.", &SetResult::mean_probability},
                               {"token_accuracy", "token acc.", &SetResult::token_accuracy},
                               {"exact_match", "exact", &SetResult::exact_match},
                               {"perplexity", "perplexity", &SetResult::perplexity}};

// The metrics a Markdown table shows for a set of this kind (the JSON has all).
std::vector<const Metric*> shown_metrics(EvalKind kind) {
  if (kind == EvalKind::General) return {&kMetrics[3]};
  return {&kMetrics[0], &kMetrics[1]};
}

struct Summary {
  std::vector<double> values;  // per successful seed
  double mean = 0;
  std::optional<stats::BootstrapInterval> interval;  // with at least two seeds
};

Summary summarize(std::vector<double> values, const StudyConfig& c) {
  Summary s;
  s.values = std::move(values);
  if (s.values.empty()) return s;
  s.mean = stats::mean_of(s.values);
  if (s.values.size() >= 2)
    s.interval = stats::bootstrap_bca_mean(s.values, {.n_resamples = c.resamples, .confidence = c.confidence, .seed = 0});
  return s;
}

json summary_json(const Summary& s) {
  json j = {{"values", s.values}, {"mean", s.values.empty() ? json() : json(s.mean)}};
  if (s.interval)
    j["interval"] = {{"low", s.interval->low},
                     {"high", s.interval->high},
                     {"method", std::string(stats::interval_method_name(s.interval->method))}};
  return j;
}

std::string cell(const Summary& s, int digits) {
  if (s.values.empty()) return "-";
  if (!s.interval) return fmt::format("{:.{}f}", s.mean, digits);
  return fmt::format("{:.{}f} [{:.{}f}, {:.{}f}]", s.mean, digits, s.interval->low, digits, s.interval->high, digits);
}

int digits_of(const Metric& m) { return std::string(m.key) == "perplexity" ? 2 : 3; }

// The successful runs of each arm, in seed order.
std::map<std::string, std::vector<const RunResult*>> ok_runs(const std::vector<RunResult>& results) {
  std::map<std::string, std::vector<const RunResult*>> out;
  for (const auto& r : results)
    if (r.ok) out[r.arm].push_back(&r);
  return out;
}

// Per example of `set`, the answer probability averaged over the arm's successful seeds.
std::vector<double> example_means(const std::vector<const RunResult*>& runs, const std::string& set) {
  std::vector<double> mean;
  for (const RunResult* r : runs) {
    const auto& p = r->sets.at(set).probability;
    if (mean.empty()) mean.assign(p.size(), 0.0);
    for (size_t i = 0; i < p.size() && i < mean.size(); ++i) mean[i] += p[i];
  }
  for (double& m : mean) m /= static_cast<double>(runs.size());
  return mean;
}

struct Comparison {
  std::string set, arm, other;
  std::vector<double> a, b;  // per-example means
  double mean_difference = 0;
  std::optional<stats::BootstrapInterval> interval;
  double p = 1, p_adjusted = 1;
  bool reject = false;
  std::string method;
};

Comparison compare(const StudyConfig& c, const std::string& set, const std::string& arm, const std::string& other,
                   std::vector<double> a, std::vector<double> b) {
  Comparison cmp;
  cmp.set = set;
  cmp.arm = arm;
  cmp.other = other;
  cmp.a = std::move(a);
  cmp.b = std::move(b);
  std::vector<double> d(cmp.a.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = cmp.a[i] - cmp.b[i];
  cmp.mean_difference = d.empty() ? 0.0 : stats::mean_of(d);
  if (std::all_of(d.begin(), d.end(), [](double x) { return x == 0.0; })) {
    cmp.method = "identical";  // no test: the arms gave the same value on every example
    return cmp;
  }
  if (d.size() >= 2)
    cmp.interval = stats::bootstrap_bca_paired_mean_difference(cmp.a, cmp.b, {.n_resamples = c.resamples,
                                                                              .confidence = c.confidence, .seed = 0});
  try {
    const auto w = stats::wilcoxon(d);
    cmp.p = w.p_value;
    cmp.method = "wilcoxon-" + std::string(stats::wilcoxon_method_name(w.method));
  } catch (const InvalidArgumentError& e) {
    cmp.method = fmt::format("none ({})", e.what());  // e.g. a single difference
  }
  return cmp;
}

std::vector<Comparison> comparisons(const StudyConfig& c, const std::map<std::string, std::vector<const RunResult*>>& runs) {
  std::vector<std::string> arms;  // with at least one successful run, baseline first
  if (runs.contains(c.baseline)) arms.push_back(c.baseline);
  for (const auto& arm : c.arms)
    if (arm.name != c.baseline && runs.contains(arm.name)) arms.push_back(arm.name);
  std::vector<Comparison> out;
  for (const auto& set : c.evals)
    for (size_t i = 0; i < arms.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        out.push_back(compare(c, set.name, arms[i], arms[j], example_means(runs.at(arms[i]), set.name),
                              example_means(runs.at(arms[j]), set.name)));
  std::vector<double> p;
  for (const auto& cmp : out) p.push_back(cmp.p);
  const auto adjusted = stats::adjust_fdr(p, stats::FdrMethod::BenjaminiHochberg, c.alpha);
  for (size_t k = 0; k < out.size(); ++k) {
    out[k].p_adjusted = adjusted.adjusted[k];
    out[k].reject = adjusted.reject[k] && out[k].method != "identical";
  }
  return out;
}

// Per successful seed of an arm, the mean of `metric` over the eval sets selected by `keep`.
std::vector<double> pooled_values(const std::vector<const RunResult*>& runs, const StudyConfig& c, const Metric& metric,
                                  const std::function<bool(const EvalSet&)>& keep) {
  std::vector<double> out;
  for (const RunResult* r : runs) {
    double sum = 0;
    size_t n = 0;
    for (const auto& set : c.evals)
      if (keep(set)) sum += (r->sets.at(set.name).*metric.of)(), ++n;
    if (n > 0) out.push_back(sum / static_cast<double>(n));
  }
  return out;
}

std::string markdown_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '|') out += "\\|";
    else if (ch == '\n') out += ' ';
    else out += ch;
  }
  return out;
}

std::string svg_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '<') out += "&lt;";
    else if (ch == '>') out += "&gt;";
    else if (ch == '&') out += "&amp;";
    else if (ch == '"') out += "&quot;";
    else out += ch;
  }
  return out;
}

// Forget (x) against retain (y) answer probability, one point per arm with its intervals.
std::string plot_svg(const StudyConfig& c, const std::map<std::string, std::vector<const RunResult*>>& runs) {
  const auto is = [](EvalKind k) { return [k](const EvalSet& s) { return s.kind == k; }; };
  const bool has_forget = std::any_of(c.evals.begin(), c.evals.end(), is(EvalKind::Forget));
  const bool has_retain = std::any_of(c.evals.begin(), c.evals.end(), is(EvalKind::Retain));
  if (!has_forget || !has_retain) return "";
  constexpr double W = 640, H = 480, L = 70, R = 170, T = 30, B = 60;
  const auto px = [&](double x) { return L + x * (W - L - R); };
  const auto py = [&](double y) { return H - B - y * (H - T - B); };
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      W, H);
  for (int k = 0; k <= 10; ++k) {
    const double v = k / 10.0;
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#eee\"/>\n", px(v), py(0), px(v), py(1));
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#eee\"/>\n", px(0), py(v), px(1), py(v));
    if (k % 2 == 0) {
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:.1f}</text>\n", px(v), py(0) + 16, v);
      svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.1f}</text>\n", px(0) - 6, py(v) + 4, v);
    }
  }
  svg += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"none\" stroke=\"#333\"/>\n",
                     px(0), py(1), px(1) - px(0), py(0) - py(1));
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">forget answer probability (lower: forgotten)</text>\n",
                     px(0.5), H - 18);
  svg += fmt::format("<text transform=\"translate(18 {:.1f}) rotate(-90)\" text-anchor=\"middle\">retain answer probability "
                     "(higher: kept)</text>\n", py(0.5));
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  size_t index = 0;
  for (const auto& arm : c.arms) {
    if (!runs.contains(arm.name)) continue;
    const char* color = colors[index % std::size(colors)];
    const auto fx = summarize(pooled_values(runs.at(arm.name), c, kMetrics[0], is(EvalKind::Forget)), c);
    const auto fy = summarize(pooled_values(runs.at(arm.name), c, kMetrics[0], is(EvalKind::Retain)), c);
    if (fx.interval)
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\"/>\n",
                         px(fx.interval->low), py(fy.mean), px(fx.interval->high), py(fy.mean), color);
    if (fy.interval)
      svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\"/>\n", px(fx.mean),
                         py(fy.interval->low), px(fx.mean), py(fy.interval->high), color);
    svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"{}\"><title>{}: forget {:.3f}, retain {:.3f}</title></circle>\n",
                       px(fx.mean), py(fy.mean), color, svg_escape(arm.name), fx.mean, fy.mean);
    const double ly = T + 16 + 18 * static_cast<double>(index);
    svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"{}\"/><text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
                       W - R + 20, ly - 4, color, W - R + 32, ly, svg_escape(arm.name));
    ++index;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace

Report build_report(const StudyConfig& c, const std::vector<RunResult>& results) {
  const auto runs = ok_runs(results);
  Report report;
  json& j = report.json;
  j["config"] = c.file.string();
  j["model"] = c.model.string();
  j["seeds"] = c.seeds;
  j["baseline"] = c.baseline;
  j["confidence"] = c.confidence;
  j["resamples"] = c.resamples;
  j["alpha"] = c.alpha;

  std::string& md = report.markdown;
  md += fmt::format("# Study {}\n\nModel `{}`", c.file.filename().string(), c.model.filename().string());
  for (const auto& l : c.loras) md += fmt::format(" + `{}`", l.filename().string());
  md += fmt::format("; seeds {}; {} arms; baseline `{}`. Means over the seeds with {:.0f}% BCa bootstrap intervals "
                    "across the seeds ({} resamples).\n\n",
                    fmt::join(c.seeds, ", "), c.arms.size(), c.baseline, 100 * c.confidence, c.resamples);

  // Per arm and set.
  md += "| arm | method | runs ok |";
  std::string rule = "|---|---|---:|";
  for (const auto& set : c.evals)
    for (const Metric* m : shown_metrics(set.kind)) {
      md += fmt::format(" {}: {} |", markdown_escape(set.name), m->label);
      rule += "---:|";
    }
  md += "\n" + rule + "\n";
  json arms = json::array();
  for (const auto& arm : c.arms) {
    const auto it = runs.find(arm.name);
    const std::vector<const RunResult*> none;
    const auto& arm_runs = it == runs.end() ? none : it->second;
    json ja = {{"name", arm.name}, {"method", arm_method_name(arm.method)}, {"runs_ok", arm_runs.size()}};
    json sets = json::object();
    md += fmt::format("| {} | {} | {}/{} |", markdown_escape(arm.name), arm_method_name(arm.method), arm_runs.size(),
                      c.seeds.size());
    for (const auto& set : c.evals) {
      json js = json::object();
      std::map<std::string, Summary> by_metric;
      for (const Metric& m : kMetrics) {
        std::vector<double> values;
        for (const RunResult* r : arm_runs) values.push_back((r->sets.at(set.name).*m.of)());
        by_metric[m.key] = summarize(values, c);
        js[m.key] = summary_json(by_metric[m.key]);
      }
      // Appended piece by piece: GCC 12 warns falsely (-Wstringop-overflow) on `" " + string&&`
      // where this file shares a unity source with others.
      for (const Metric* m : shown_metrics(set.kind)) {
        md += ' ';
        md += cell(by_metric[m->key], digits_of(*m));
        md += " |";
      }
      sets[set.name] = js;
    }
    md += "\n";
    ja["sets"] = sets;
    arms.push_back(ja);
  }
  j["arms"] = arms;

  // By language.
  std::set<std::string> languages;
  for (const auto& set : c.evals)
    if (!set.language.empty()) languages.insert(set.language);
  if (!languages.empty()) {
    md += "\n## By language\n\nAnswer probability (forget, retain) and perplexity (general), averaged over the sets "
          "of each language, then over the seeds.\n\n| language | arm | forget | retain | general perplexity |\n"
          "|---|---|---:|---:|---:|\n";
    json jl = json::object();
    for (const auto& language : languages)
      for (const auto& arm : c.arms) {
        if (!runs.contains(arm.name)) continue;
        const auto of = [&](EvalKind k) {
          return [&, k](const EvalSet& s) { return s.kind == k && s.language == language; };
        };
        const auto forget = summarize(pooled_values(runs.at(arm.name), c, kMetrics[0], of(EvalKind::Forget)), c);
        const auto retain = summarize(pooled_values(runs.at(arm.name), c, kMetrics[0], of(EvalKind::Retain)), c);
        const auto general = summarize(pooled_values(runs.at(arm.name), c, kMetrics[3], of(EvalKind::General)), c);
        md += fmt::format("| {} | {} | {} | {} | {} |\n", markdown_escape(language), markdown_escape(arm.name),
                          cell(forget, 3), cell(retain, 3), cell(general, 2));
        jl[language][arm.name] = {{"forget_answer_probability", summary_json(forget)},
                                  {"retain_answer_probability", summary_json(retain)},
                                  {"general_perplexity", summary_json(general)}};
      }
    j["languages"] = jl;
  }

  // Paired comparisons.
  const auto cmps = comparisons(c, runs);
  json jc = json::array();
  if (!cmps.empty()) {
    md += fmt::format("\n## Paired comparisons\n\nPer example, the answer probability averaged over each arm's seeds; "
                      "the mean difference (arm − other) with its {:.0f}% paired BCa interval; the Wilcoxon signed-rank "
                      "test (two-sided); p-values adjusted by Benjamini–Hochberg over all {} comparisons, significant at "
                      "{}.\n\n| set | arm | other | n | mean difference | p | p (BH) | significant |\n"
                      "|---|---|---|---:|---:|---:|---:|---|\n",
                      100 * c.confidence, cmps.size(), c.alpha);
    for (const auto& cmp : cmps) {
      const std::string diff =
          cmp.interval ? fmt::format("{:+.4f} [{:+.4f}, {:+.4f}]", cmp.mean_difference, cmp.interval->low, cmp.interval->high)
                       : fmt::format("{:+.4f}", cmp.mean_difference);
      md += fmt::format("| {} | {} | {} | {} | {} | {:.3g} | {:.3g} | {} |\n", markdown_escape(cmp.set),
                        markdown_escape(cmp.arm), markdown_escape(cmp.other), cmp.a.size(), diff, cmp.p, cmp.p_adjusted,
                        cmp.method == "identical" ? "identical" : cmp.reject ? "yes" : "no");
      json e = {{"set", cmp.set},   {"arm", cmp.arm},       {"other", cmp.other},
                {"n", cmp.a.size()}, {"arm_values", cmp.a}, {"other_values", cmp.b},
                {"mean_difference", cmp.mean_difference},   {"p", cmp.p},
                {"p_adjusted", cmp.p_adjusted},             {"reject", cmp.reject},
                {"method", cmp.method}};
      if (cmp.interval) e["interval"] = {{"low", cmp.interval->low}, {"high", cmp.interval->high},
                                         {"method", std::string(stats::interval_method_name(cmp.interval->method))}};
      jc.push_back(e);
    }
  }
  j["comparisons"] = jc;

  // Failures.
  json jf = json::array();
  for (const auto& r : results)
    if (!r.ok) jf.push_back({{"arm", r.arm}, {"seed", r.seed}, {"error", r.error}});
  if (!jf.empty()) {
    md += "\n## Failed runs\n\n| arm | seed | error |\n|---|---:|---|\n";
    for (const auto& f : jf)
      md += fmt::format("| {} | {} | {} |\n", markdown_escape(f["arm"].get<std::string>()), f["seed"].get<uint64_t>(),
                        markdown_escape(f["error"].get<std::string>()));
  }
  j["failed"] = jf;
  report.svg = plot_svg(c, runs);
  if (!report.svg.empty()) md += "\n![forget vs retain answer probability](plot.svg)\n";
  return report;
}

void write_report(const Report& report, const fs::path& out) {
  const auto write = [&](const fs::path& path, const std::string& text) {
    AtomicFileWriter file(path);
    file.write(text.data(), text.size());
    file.commit();
  };
  write(out / "report.json", report.json.dump(1) + "\n");
  write(out / "report.md", report.markdown);
  if (!report.svg.empty()) write(out / "plot.svg", report.svg);
}

}  // namespace lathe::study
