// JSON documents read from files (config.json, tokenizer.json, message lists...): one parser
// entry that turns every nlohmann failure into a FormatError naming the file and byte offset.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace lathe {

// Throws FormatError("<file>: JSON at offset N: ...; <remedy>") for a syntax error, a raw NUL byte
// (nlohmann would stop there and accept the prefix) or a value nlohmann cannot hold (a number
// beyond double's range).
nlohmann::json parse_json_text(std::string_view text, const std::string& file, const std::string& remedy);

}  // namespace lathe
