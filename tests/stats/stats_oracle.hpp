// The statistics tests' oracle: tests/oracle/stats_oracle.py (scipy and statsmodels) asked one
// command with a JSON input, its JSON answer back (an empty object, and a test failure, when the
// script fails).
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "common/test_support.hpp"

namespace lathe::stats::test_oracle {

inline nlohmann::json ask_oracle(const std::string& command, const nlohmann::json& input) {
  test::TempDir dir("stats_oracle");
  const auto path = dir / "input.json";
  test::write_file(path, input.dump());
  const auto r = test::run_oracle("stats_oracle.py", {command, path.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
}

}  // namespace lathe::stats::test_oracle
