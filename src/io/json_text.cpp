#include "io/json_text.hpp"

#include <fmt/format.h>

#include "lathe/error.hpp"

namespace lathe {

nlohmann::json parse_json_text(std::string_view text, const std::string& file, const std::string& remedy) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    throw FormatError(file, "JSON", nul, "contains a NUL byte, which JSON does not allow", remedy);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    throw FormatError(file, "JSON", e.byte > 0 ? e.byte - 1 : 0, fmt::format("not valid JSON ({})", e.what()), remedy);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file, "JSON", 0, fmt::format("holds a value lathe cannot represent ({})", e.what()), remedy);
  }
}

}  // namespace lathe
