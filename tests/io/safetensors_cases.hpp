// Hand-built safetensors files for the io tests: a byte builder, the malformed cases (shared by the
// unit test, which checks lathe's error, and the oracle test, which checks the reference also
// refuses them), and a small SHA-256 to compare tensor bytes with the Python peer.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
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

// SHA-256 (FIPS 180-4), hex digest.
inline std::string sha256_hex(const uint8_t* data, size_t size) {
  static constexpr std::array<uint32_t, 64> k{
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
      0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
      0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
      0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
      0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
      0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  std::array<uint32_t, 8> h{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::vector<uint8_t> msg(data, data + size);
  msg.push_back(0x80);
  while (msg.size() % 64 != 56) msg.push_back(0);
  const uint64_t bits = static_cast<uint64_t>(size) * 8;
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  const auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t block = 0; block < msg.size(); block += 64) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t{msg[block + 4 * i]} << 24) | (uint32_t{msg[block + 4 * i + 1]} << 16) |
             (uint32_t{msg[block + 4 * i + 2]} << 8) | uint32_t{msg[block + 4 * i + 3]};
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, hh] = h;
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  std::string hex;
  char buf[9];
  for (uint32_t v : h) {
    std::snprintf(buf, sizeof(buf), "%08x", v);
    hex += buf;
  }
  return hex;
}

}  // namespace lathe::test
