#include "io/json_text.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "lathe/error.hpp"

namespace lathe {

nlohmann::json parse_json_text(std::string_view text, const std::string& file, const std::string& remedy,
                               const std::string& where, uint64_t base_offset) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    throw FormatError(file, where, base_offset + nul, "contains a NUL byte, which JSON does not allow", remedy);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    const uint64_t column = e.byte > 0 ? std::min<uint64_t>(e.byte - 1, text.size()) : 0;
    throw FormatError(file, where, base_offset + column, fmt::format("not valid JSON ({})", e.what()), remedy);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file, where, base_offset, fmt::format("holds a value lathe cannot represent ({})", e.what()),
                      remedy);
  }
}

}  // namespace lathe
