// The size flags' parser (cli/format.hpp: --max-shard-size, --max-body-size, --vram-budget):
// binary and decimal units, fractions, and every malformed or out-of-range value refused naming
// the flag.
#include <gtest/gtest.h>

#include <string>

#include "cli/format.hpp"

namespace lathe::cli {
namespace {

TEST(SizeFlag, UnitsAndFractions) {
  constexpr uint64_t kMax = uint64_t{1} << 50;
  EXPECT_EQ(parse_size("123", "--x", kMax), 123u);
  EXPECT_EQ(parse_size("123B", "--x", kMax), 123u);
  EXPECT_EQ(parse_size("512K", "--x", kMax), 512u << 10);
  EXPECT_EQ(parse_size("512KiB", "--x", kMax), 512u << 10);
  EXPECT_EQ(parse_size("32M", "--x", kMax), 32u << 20);
  EXPECT_EQ(parse_size("32m", "--x", kMax), 32u << 20);
  EXPECT_EQ(parse_size("20G", "--x", kMax), uint64_t{20} << 30);
  EXPECT_EQ(parse_size("1.5GiB", "--x", kMax), uint64_t{3} << 29);
  EXPECT_EQ(parse_size("2T", "--x", kMax), uint64_t{2} << 40);
  EXPECT_EQ(parse_size("5GB", "--x", kMax), 5000000000u);
  EXPECT_EQ(parse_size("500MB", "--x", kMax), 500000000u);
  EXPECT_EQ(parse_size("1kB", "--x", kMax), 1000u);
  EXPECT_EQ(parse_size("2.5KB", "--x", kMax), 2500u);
  EXPECT_EQ(parse_size("1.0009K", "--x", kMax), 1024u);  // whole bytes, rounded down
}

TEST(SizeFlag, BadValuesNameTheFlag) {
  for (const char* bad : {"", "0", "0.1B", "-5M", "+5M", "1e3", "1e30GB", "0x10", " 5M", "5 M", "5MM", "lots", ".", "5.5.5",
                          "G", "3Q", "1025", "2K"}) {
    try {
      (void)parse_size(bad, "--vram-budget", 1024);
      ADD_FAILURE() << "'" << bad << "' was accepted";
    } catch (const InvalidArgumentError& e) {
      EXPECT_NE(std::string(e.what()).find("--vram-budget"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(parse_size("1024", "--x", 1024), 1024u);
  EXPECT_EQ(parse_size("1K", "--x", 1024), 1024u);
}

}  // namespace
}  // namespace lathe::cli
