// Hand-built safetensors files for the io tests: a byte builder, the malformed cases (shared by the
// unit test, which checks lathe's error, and the oracle test, which checks the reference also
// refuses them). Tensor bytes are compared with the Python peer through core/sha256.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lathe/error.hpp"

namespace lathe::test {

// u64 LE length + header text + data bytes.
inline std::string st_bytes(const std::string& header, const std::string& data) {
  std::string out;
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

inline std::string st_bytes_with_length(uint64_t n, const std::string& rest) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + rest;
}

struct MalformedCase {
  std::string name;
  std::string bytes;
  ErrorCode code;
  std::vector<std::string> message_parts;  // each must appear in the error message
  bool reference_rejects = true;           // python safetensors refuses it too
};

inline std::vector<MalformedCase> malformed_cases() {
  const std::string z8(8, '\0');
  // Header offsets below: the data section starts at 8 + header length; a key at header index i
  // is reported at file offset 8 + i.
  const std::string gap_header =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string trailing_header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::string overlap_header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  const std::string beyond_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string dup_header =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  const std::string dup_second_key_offset = std::to_string(8 + dup_header.find("\"a\"", 2));
  std::string deep_header = R"({"a":)" + std::string(100, '[') + std::string(100, ']') + "}";
  return {
      {"header_length_beyond_file", st_bytes_with_length(1000, "{}"), ErrorCode::Format,
       {"header length", "offset 0", "beyond the end"}},
      {"header_length_absurd", st_bytes_with_length(uint64_t{1} << 63, "{}"), ErrorCode::Format,
       {"header length", "offset 0", "9223372036854775808"}},
      {"file_shorter_than_length", std::string(4, '\0'), ErrorCode::Format, {"header length", "offset 0", "4 bytes"}},
      // Parse fails at the '1' where ':' is expected: header index 5, file offset 13.
      {"invalid_json", st_bytes(R"({"a" 1})", ""), ErrorCode::Format, {"header JSON", "offset 13", "not valid JSON"}},
      {"header_not_object", st_bytes("[1]", ""), ErrorCode::Format, {"header JSON", "offset 8", "array"}},
      // nlohmann stops at a NUL and would accept "{}"; JSON has no raw NUL (the reference rejects it).
      {"nul_after_json", st_bytes(std::string("{}\0\0", 4), ""), ErrorCode::Format, {"header JSON", "offset 10", "NUL byte"}},
      // Found by the fuzzer: a number beyond double's range makes nlohmann throw out_of_range.
      {"number_out_of_range", st_bytes(R"({"x":{"dtype":7e777777}})", ""), ErrorCode::Format,
       {"header JSON", "offset 8", "unrepresentable"}},
      // Found by the fuzzer: a NUL, then text that looks like an escaped top-level key.
      {"nul_then_escaped_key",
       st_bytes(std::string("{}\0ata\"a\":{\"d9\\\\\\99pe\":\"BOOL\"}", 30), ""), ErrorCode::Format,
       {"header JSON", "offset 10", "NUL byte"}},
      {"dtype_shape_mismatch", st_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", z8), ErrorCode::Format,
       {"tensor 'w'", "offset 9", "needs 12 bytes", "hold 8"}},
      {"offsets_gap", st_bytes(gap_header, std::string(12, '\0')), ErrorCode::Format,
       {"tensor 'b'", "offset " + std::to_string(8 + gap_header.size() + 4), "4 unused bytes"}},
      {"offsets_trailing_bytes", st_bytes(trailing_header, std::string(6, '\0')), ErrorCode::Format,
       {"tensor 'a'", "offset " + std::to_string(8 + trailing_header.size() + 4), "2 trailing bytes"}},
      {"offsets_overlap", st_bytes(overlap_header, z8), ErrorCode::Format,
       {"tensor 'b'", "offset " + std::to_string(8 + overlap_header.size() + 4), "overlap tensor 'a'"}},
      {"offsets_beyond_file", st_bytes(beyond_header, std::string(4, '\0')), ErrorCode::Format,
       {"tensor 'a'", "offset " + std::to_string(8 + beyond_header.size()), "beyond"}},
      {"offsets_begin_after_end", st_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", std::string(4, '\0')),
       ErrorCode::Format, {"tensor 'a'", "offset 9", "begin 4 is after end 0"}},
      {"unknown_dtype", st_bytes(R"({"q":{"dtype":"Q4","shape":[4],"data_offsets":[0,4]}})", std::string(4, '\0')),
       ErrorCode::Format, {"tensor 'q'", "dtype", "offset 9", "unknown dtype 'Q4'"}},
      {"unsupported_dtype", st_bytes(R"({"f8":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", std::string(4, '\0')),
       ErrorCode::Unsupported, {"tensor 'f8'", "F8_E4M3", "not supported"}, /*reference_rejects=*/false},
      {"duplicate_tensor_names", st_bytes(dup_header, z8), ErrorCode::Format,
       {"tensor 'a'", "offset " + dup_second_key_offset, "appears twice"}},
      {"shape_overflow",
       st_bytes(R"({"big":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,4]}})", std::string(4, '\0')),
       ErrorCode::Format, {"tensor 'big'", "shape", "offset 9", "overflows"}},
      {"missing_data_offsets", st_bytes(R"({"m":{"dtype":"F32","shape":[1]}})", std::string(4, '\0')), ErrorCode::Format,
       {"tensor 'm' field 'data_offsets'", "offset 9", "missing"}},
      {"negative_dimension", st_bytes(R"({"n":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
       ErrorCode::Format, {"tensor 'n' field 'shape'", "offset 9", "-1"}},
      {"metadata_value_not_string",
       st_bytes(R"({"__metadata__":{"k":1},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", std::string(1, '\0')),
       ErrorCode::Format, {"__metadata__ key 'k'", "offset 9", "not a string"}},
      {"nested_too_deep", st_bytes(deep_header, ""), ErrorCode::Format, {"header JSON", "nested deeper"}},
  };
}

}  // namespace lathe::test
