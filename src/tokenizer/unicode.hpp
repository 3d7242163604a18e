// UTF-8 helpers for the tokenizer: validation with U+FFFD replacement, character boundaries,
// the GPT-2 byte <-> unicode map used by byte-level BPE, and Unicode normalization (ICU).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lathe::tokenizer {

// Length in bytes of the valid UTF-8 sequence starting at text[pos], or 0 when the bytes there are
// not a complete, well-formed sequence (overlong forms, surrogates and values above U+10FFFF are
// ill-formed).
size_t utf8_sequence_length(std::string_view text, size_t pos) noexcept;

// Whether `text` is entirely well-formed UTF-8.
bool is_valid_utf8(std::string_view text) noexcept;

// `text` with every ill-formed subsequence replaced by U+FFFD, one replacement per maximal
// subpart (the Unicode "best practice" that Python's bytes.decode("utf-8", "replace") follows).
std::string replace_invalid_utf8(std::string_view text);

// Decodes the code point at text[pos] (which must start a valid sequence of length `len`).
char32_t decode_code_point(std::string_view text, size_t pos, size_t len) noexcept;
void append_utf8(std::string& out, char32_t cp);

// Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_unicode_whitespace(char32_t cp) noexcept;

// GPT-2's reversible map from the 256 byte values to printable code points ("Ġ" for space...).
struct ByteLevelMap {
  std::array<std::string, 256> byte_to_text;  // UTF-8 of the code point each byte maps to
  // Inverse, indexed by code point (all mapped code points are below 0x144); -1 when unmapped.
  std::array<int16_t, 0x144> code_point_to_byte;
};
const ByteLevelMap& byte_level_map();

enum class NormalForm { NFC, NFD, NFKC, NFKD };
// `text` (valid UTF-8) in the given normal form. Pure-ASCII text is returned unchanged quickly.
std::string normalize_unicode(std::string_view text, NormalForm form);

}  // namespace lathe::tokenizer
