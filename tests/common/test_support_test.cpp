// The test harness's command runner: output capture, exit codes, and the timeout that turns a hung
// oracle into a failure that shows the oracle's output (the VsLlamaCpp tests rely on it).
#include "common/test_support.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace lathe::test {
namespace {

TEST(RunCommand, CapturesBothStreamsAndTheExitCode) {
  const auto r = run_command({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_FALSE(r.timed_out);
}

TEST(RunCommand, KillsACommandPastItsTimeoutAndKeepsWhatItPrinted) {
  const auto start = std::chrono::steady_clock::now();
  const auto r = run_command({"/bin/sh", "-c", "echo started >&2; exec sleep 60"}, std::chrono::seconds{1});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.exit_code, 128 + 9);  // SIGKILL
  EXPECT_NE(r.err.find("started\n"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("killed after 1 s"), std::string::npos) << r.err;
  EXPECT_LT(took, std::chrono::seconds{30});  // a bound on a hang, not a timing measurement
}

TEST(RunCommand, AMissingProgramExitsWith127) {
  const auto r = run_command({"/nonexistent/lathe-test-program"});
  EXPECT_EQ(r.exit_code, 127);
}

}  // namespace
}  // namespace lathe::test
