#include "edit/pareto_plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "io/mapped_file.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

constexpr double kWidth = 720, kHeight = 480;
constexpr double kLeft = 80, kRight = 30, kTop = 50, kBottom = 60;  // margins around the plot area

struct Range {
  double low, high;
};

// The data range widened by 5% on each side (a flat range by +-0.5 or +-5% of its value), so
// that no dot sits on the frame.
Range padded_range(const std::vector<double>& values) {
  double low = *std::min_element(values.begin(), values.end());
  double high = *std::max_element(values.begin(), values.end());
  if (high <= low) {
    const double pad = low == 0 ? 0.5 : std::abs(low) * 0.05;
    return {low - pad, high + pad};
  }
  const double pad = 0.05 * (high - low);
  return {low - pad, high + pad};
}

// Enough decimals to tell ticks `step` apart.
std::string tick_label(double value, double step) {
  const int decimals = std::max(0, static_cast<int>(std::ceil(-std::log10(step) - 1e-9)));
  if (std::abs(value) < step * 1e-6) value = 0;  // no "-0.00"
  return fmt::format("{:.{}f}", value, decimals);
}

class Canvas {
 public:
  Canvas(Range x, Range y) : x_(x), y_(y) {}
  double px(double value) const { return kLeft + (value - x_.low) / (x_.high - x_.low) * (kWidth - kLeft - kRight); }
  double py(double value) const { return kHeight - kBottom - (value - y_.low) / (y_.high - y_.low) * (kHeight - kTop - kBottom); }

 private:
  Range x_, y_;
};

void draw_axes(std::string& svg, const Canvas& canvas, Range x, Range y, const std::string& x_label, const std::string& y_label) {
  const double x0 = kLeft, x1 = kWidth - kRight, y0 = kHeight - kBottom, y1 = kTop;
  svg += fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="none" stroke="#333"/>)" "\n",
                     x0, y1, x1 - x0, y0 - y1);
  const auto xticks = detail::nice_ticks(x.low, x.high, 6);
  const double xstep = xticks.size() > 1 ? xticks[1] - xticks[0] : 1.0;
  for (double t : xticks) {
    const double p = canvas.px(t);
    svg += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="#333"/>)"
                       R"(<text x="{0:.1f}" y="{3:.1f}" text-anchor="middle">{4}</text>)" "\n",
                       p, y0, y0 + 5, y0 + 20, tick_label(t, xstep));
  }
  const auto yticks = detail::nice_ticks(y.low, y.high, 6);
  const double ystep = yticks.size() > 1 ? yticks[1] - yticks[0] : 1.0;
  for (double t : yticks) {
    const double p = canvas.py(t);
    svg += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{2:.1f}" y2="{1:.1f}" stroke="#333"/>)"
                       R"(<text x="{3:.1f}" y="{4:.1f}" text-anchor="end">{5}</text>)" "\n",
                       x0 - 5, p, x0, x0 - 8, p + 4, tick_label(t, ystep));
  }
  svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">{}</text>)" "\n", (x0 + x1) / 2, kHeight - 15,
                     detail::xml_escape(x_label));
  svg += fmt::format(R"svg(<text x="20" y="{0:.1f}" text-anchor="middle" transform="rotate(-90 20 {0:.1f})">{1}</text>)svg" "\n",
                     (y0 + y1) / 2, detail::xml_escape(y_label));
}

void check_trials(const std::vector<Trial>& trials, const std::vector<size_t>& front) {
  for (const auto& trial : trials) {
    if (!trial.completed()) continue;
    if (trial.values.size() < 2)
      throw InvalidArgumentError(fmt::format("Pareto plot: trial {} has {} objective value(s); the plot needs 2",
                                             trial.number, trial.values.size()));
    if (!std::isfinite(trial.values[0]) || !std::isfinite(trial.values[1]))
      throw InvalidArgumentError(fmt::format("Pareto plot: trial {} has a non-finite objective ({}, {})", trial.number,
                                             trial.values[0], trial.values[1]));
  }
  for (size_t i : front) {
    if (i >= trials.size())
      throw InvalidArgumentError(fmt::format("Pareto plot: front index {} is out of range ({} trials); pass "
                                             "pareto_front(trials)", i, trials.size()));
    if (!trials[i].completed())
      throw InvalidArgumentError(fmt::format("Pareto plot: front index {} (trial {}) has no values; pass "
                                             "pareto_front(trials)", i, trials[i].number));
  }
}

}  // namespace

namespace detail {

std::string xml_escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') out += ' ';
        else out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double low, double high, int target) {
  if (!std::isfinite(low) || !std::isfinite(high) || !(high > low)) return {low};
  const double raw_step = (high - low) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 5.0, 10.0})
    if (factor * magnitude >= raw_step) {
      step = factor * magnitude;
      break;
    }
  std::vector<double> ticks;
  // Multiples of step (not a running sum, which would drift).
  for (double k = std::ceil(low / step); k * step <= high + step * 1e-9 && ticks.size() < 100; k += 1) ticks.push_back(k * step);
  return ticks;
}

}  // namespace detail

void write_pareto_svg(const std::filesystem::path& out, const std::vector<Trial>& trials, const std::vector<size_t>& front,
                      std::string x_label, std::string y_label, std::string title) {
  check_trials(trials, front);
  std::vector<double> xs, ys;
  for (const auto& trial : trials)
    if (trial.completed()) {
      xs.push_back(trial.values[0]);
      ys.push_back(trial.values[1]);
    }

  std::string svg = fmt::format(
      R"(<?xml version="1.0" encoding="UTF-8"?>)" "\n"
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" font-family="sans-serif" font-size="12">)" "\n"
      R"(<rect width="100%" height="100%" fill="white"/>)" "\n"
      R"(<text x="{2:.1f}" y="25" text-anchor="middle" font-size="16">{3}</text>)" "\n",
      kWidth, kHeight, kWidth / 2, detail::xml_escape(title));
  if (xs.empty()) {
    svg += fmt::format(R"(<text x="{:.1f}" y="{:.1f}" text-anchor="middle">no completed trials yet</text>)" "\n", kWidth / 2,
                       kHeight / 2);
  } else {
    const Range x = padded_range(xs), y = padded_range(ys);
    const Canvas canvas(x, y);
    draw_axes(svg, canvas, x, y, x_label, y_label);
    svg += R"(<g fill="#999" fill-opacity="0.7">)" "\n";
    for (size_t i = 0; i < xs.size(); ++i)
      svg += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3"/>)" "\n", canvas.px(xs[i]), canvas.py(ys[i]));
    svg += "</g>\n";

    // The front as a staircase: right along the better point's y, then down to the next point.
    std::vector<size_t> sorted_front = front;
    std::stable_sort(sorted_front.begin(), sorted_front.end(), [&](size_t a, size_t b) {
      return trials[a].values[0] < trials[b].values[0] ||
             (trials[a].values[0] == trials[b].values[0] && trials[a].values[1] < trials[b].values[1]);
    });
    if (!sorted_front.empty()) {
      std::string path;
      for (size_t k = 0; k < sorted_front.size(); ++k) {
        const auto& v = trials[sorted_front[k]].values;
        if (k == 0) path += fmt::format("M{:.1f},{:.1f}", canvas.px(v[0]), canvas.py(v[1]));
        else path += fmt::format(" H{:.1f} V{:.1f}", canvas.px(v[0]), canvas.py(v[1]));
      }
      svg += fmt::format(R"(<path d="{}" fill="none" stroke="#d62728" stroke-width="1.5"/>)" "\n", path);
    }
    svg += R"(<g fill="#d62728">)" "\n";
    for (size_t i : sorted_front) {
      const auto& trial = trials[i];
      svg += fmt::format(R"(<circle cx="{0:.1f}" cy="{1:.1f}" r="4.5"><title>trial {2}: {3}, {4}</title></circle>)"
                         R"(<text x="{5:.1f}" y="{6:.1f}" font-size="10">#{2}</text>)" "\n",
                         canvas.px(trial.values[0]), canvas.py(trial.values[1]), trial.number, trial.values[0],
                         trial.values[1], canvas.px(trial.values[0]) + 6, canvas.py(trial.values[1]) - 6);
    }
    svg += "</g>\n";
  }
  svg += "</svg>\n";

  AtomicFileWriter writer(out);
  writer.write(svg.data(), svg.size());
  writer.commit();
}

}  // namespace lathe::edit
