// Shared helpers for lathe's tests: paths into the source/build tree, the default model, running
// Python oracles and the CLI, and temporary directories.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lathe::test {

// Whether this test program runs under AddressSanitizer (the sanitizer build of scripts/test.sh),
// where code runs several times slower: randomized tests take fewer rounds there (the release
// build runs them all), and what ASan cannot do is skipped with the reason.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kUnderAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kUnderAddressSanitizer = true;
#else
inline constexpr bool kUnderAddressSanitizer = false;
#endif
#else
inline constexpr bool kUnderAddressSanitizer = false;
#endif

std::filesystem::path source_dir();
std::filesystem::path binary_dir();
// Test data the project ships: <source>/data (tokenizers with their license notes; see data/README.md).
std::filesystem::path shared_data_dir();
// The default model file; tests that need it call LATHE_REQUIRE_MODEL() first.
std::filesystem::path default_model();
std::string oracle_python();  // "" when not configured
std::filesystem::path cli_path();

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  bool timed_out = false;  // killed at the timeout; err ends with a line saying so
  uint64_t max_rss_kib = 0;  // the command's peak resident memory
};
// Runs argv (no shell), capturing stdout and stderr. A positive `timeout` kills the command when
// it runs longer, so that a hang fails the test with the command's output so far (ctest's own
// timeout kills the whole test and shows nothing the command printed).
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::seconds timeout = {});
// Runs the configured oracle Python on a script under tests/oracle/ with arguments. The default
// timeout stays under ctest's default per-test TIMEOUT (600 s, tests/CMakeLists.txt).
CommandResult run_oracle(const std::string& script, const std::vector<std::string>& args,
                         std::chrono::seconds timeout = std::chrono::seconds{540});

// Runs the lathe binary under test with `args` (no shell), killed after `timeout` (a hang fails
// the test with what the command printed).
CommandResult lathe_cli(std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds{300});
// Expects `r` to be a failed lathe command whose stderr holds "error: " and every one of `parts`.
void expect_cli_error(const CommandResult& r, const std::vector<std::string>& parts);

// A fresh directory under the build tree, removed when the object goes away.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "tmp");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& bytes);
// One line per entry, each ended by '\n' (prompt files and the like).
void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines);

// Expects `body` to throw E whose message contains every one of `parts`.
template <typename E, typename F>
void expect_error(F&& body, const std::vector<std::string>& parts) {
  try {
    body();
    FAIL() << "no exception";
  } catch (const E& e) {
    const std::string message = e.what();
    for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  } catch (const std::exception& e) {
    FAIL() << "wrong exception type: " << e.what();
  }
}
std::string read_file(const std::filesystem::path& path);

}  // namespace lathe::test

// Fails (not skips) when the default model is missing: the README's test command fetches it.
#define LATHE_REQUIRE_MODEL()                                                                      \
  do {                                                                                             \
    if (!std::filesystem::exists(::lathe::test::default_model()))                                  \
      FAIL() << "default model missing at " << ::lathe::test::default_model()                    \
             << "; run scripts/fetch-model.sh";                                                    \
  } while (0)
