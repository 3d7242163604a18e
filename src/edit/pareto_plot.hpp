// A self-contained SVG picture of a two-objective study: every completed trial as a grey dot
// (objective 0 on x, objective 1 on y), the Pareto front as red dots joined by a step line and
// labelled with their trial numbers, axes with "nice" (1-2-5) ticks.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "edit/tpe.hpp"

namespace lathe::edit {

// Written atomically (temp file + rename). Text is XML-escaped. Trials without values are left
// out; a study without completed trials gives a plot that says so. Throws InvalidArgumentError
// when a completed trial has fewer than 2 values or a non-finite one, or when `front` names an
// index out of range or a trial without values; IoError when the file cannot be written.
void write_pareto_svg(const std::filesystem::path& out, const std::vector<Trial>& trials, const std::vector<size_t>& front,
                      std::string x_label, std::string y_label, std::string title);

namespace detail {
std::string xml_escape(std::string_view text);
// Tick positions covering [low, high] with a 1-2-5 step, about `target` of them.
std::vector<double> nice_ticks(double low, double high, int target);
}  // namespace detail

}  // namespace lathe::edit
