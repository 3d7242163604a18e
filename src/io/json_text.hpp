// JSON documents read from files (config.json, tokenizer.json, message lists...): one parser
// entry that turns every nlohmann failure into a FormatError naming the file and byte offset.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace lathe {

// Throws FormatError("<file>: JSON at offset N: ...; <remedy>") for a syntax error, a raw NUL byte
// (nlohmann would stop there and accept the prefix) or a value nlohmann cannot hold (a number
// beyond double's range). `where` names the part of the file (e.g. "line 12") and `base_offset`
// is where `text` starts in the file, so a piece of a file (one JSON line) reports file offsets.
nlohmann::json parse_json_text(std::string_view text, const std::string& file, const std::string& remedy,
                               const std::string& where = "JSON", uint64_t base_offset = 0);

}  // namespace lathe
