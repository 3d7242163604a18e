// SHA-256 against the FIPS 180-4 / NIST test vectors, fed whole and in odd-sized pieces.
#include "core/sha256.hpp"

#include <gtest/gtest.h>

#include <string>

namespace lathe {
namespace {

std::string hex_in_pieces(const std::string& text, size_t piece) {
  Sha256 h;
  for (size_t i = 0; i < text.size(); i += piece) h.update(std::string_view(text).substr(i, piece));
  return h.finish_hex();
}

TEST(Sha256, NistVectors) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {std::string(1000000, 'a'), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
  };
  for (const auto& [text, digest] : cases) {
    EXPECT_EQ(sha256_hex({reinterpret_cast<const uint8_t*>(text.data()), text.size()}), digest) << text.size();
    for (size_t piece : {1, 7, 63, 64, 65, 1000}) EXPECT_EQ(hex_in_pieces(text, piece), digest) << piece;
  }
}

TEST(Sha256, EveryLengthAroundTheBlockBoundaryDiffers) {
  std::string previous;
  for (size_t n = 50; n < 140; ++n) {
    const std::string digest = hex_in_pieces(std::string(n, 'x'), 13);
    EXPECT_EQ(digest.size(), 64u);
    EXPECT_NE(digest, previous) << n;
    EXPECT_EQ(digest, hex_in_pieces(std::string(n, 'x'), 64)) << n;
    previous = digest;
  }
}

}  // namespace
}  // namespace lathe
