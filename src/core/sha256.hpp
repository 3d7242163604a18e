// SHA-256 (FIPS 180-4), for identifying content: the ablation journal's fingerprints of a model and
// its prompt files (a prompt file's digest equals `sha256sum FILE`). Not constant-time; not for secrets.
// Written here rather than taken from OpenSSL's libcrypto so that lathe needs no crypto library (the
// GPU machines' image lacks its headers, as it lacks PCRE2's); checked against the NIST vectors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace lathe {

class Sha256 {
 public:
  Sha256();
  void update(std::span<const uint8_t> bytes);
  void update(std::string_view text);
  // The digest of everything passed to update(); the object must not be updated afterwards.
  std::array<uint8_t, 32> finish();
  // finish() as 64 lower-case hex digits.
  std::string finish_hex();

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// The hex digest of `bytes`.
std::string sha256_hex(std::span<const uint8_t> bytes);

}  // namespace lathe
