#include "io/file_spec.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "lathe/error.hpp"

namespace lathe {
namespace {

std::optional<float> parse_scale(std::string_view text) {
  if (text.starts_with('+')) text.remove_prefix(1);
  // Digits, point, exponent and signs only: "inf" or "nan" after a colon stay part of the path.
  if (text.empty() || text.starts_with('+') || text.find_first_not_of("0123456789.eE+-") != std::string_view::npos)
    return std::nullopt;
  float value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::general);
  if (end != text.data() + text.size()) return std::nullopt;
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<float>::infinity();
  if (ec != std::errc()) return std::nullopt;
  return value;
}

}  // namespace

FileWithScale parse_file_with_scale(std::string_view spec, std::string_view flag) {
  if (spec.empty()) throw InvalidArgumentError(fmt::format("{} is empty; give FILE or FILE:SCALE", flag));
  const size_t colon = spec.rfind(':');
  if (colon != std::string_view::npos) {
    if (const auto scale = parse_scale(spec.substr(colon + 1))) {
      if (colon == 0)
        throw InvalidArgumentError(fmt::format("{} '{}' has a scale but no file; give FILE:SCALE", flag, spec));
      if (!std::isfinite(*scale))
        throw InvalidArgumentError(fmt::format("{} '{}': the scale must be a finite number", flag, spec));
      return {std::filesystem::path(spec.substr(0, colon)), *scale};
    }
  }
  return {std::filesystem::path(spec), 1.0f};
}

}  // namespace lathe
