// Every public header was compiled on its own (see CMakeLists.txt here: the build of the generated
// units is the check that each is self-contained); this test checks that none was left out.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

namespace lathe_public_headers {

// The headers whose generated unit is linked in; each unit registers itself during static
// initialization, so the set lives in a function (initialized on first use, in any order).
std::set<std::string>& compiled_headers() {
  static std::set<std::string> headers;
  return headers;
}

void compiled(const char* header) { compiled_headers().insert(header); }

}  // namespace lathe_public_headers

namespace {

TEST(PublicHeaders, EveryHeaderIsCompiledAlone) {
  std::set<std::string> on_disk;
  const auto dir = std::filesystem::path(LATHE_TEST_SOURCE_DIR) / "include" / "lathe";
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".hpp") on_disk.insert(entry.path().filename().string());
  ASSERT_FALSE(on_disk.empty()) << "no headers found in " << dir;
  EXPECT_EQ(lathe_public_headers::compiled_headers(), on_disk)
      << "a header in " << dir << " has no self-contained unit; rebuild (the glob in tests/include/CMakeLists.txt runs at build time)";
}

}  // namespace
