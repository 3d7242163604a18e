// `lathe cvector` and `--control-vector` end to end on the default model: a control vector made
// from two tiny prompt files changes greedy output at scale 4 and leaves it unchanged at scale 0;
// bad inputs exit with `error:`.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "io/gguf.hpp"

namespace lathe::test {
namespace {

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args);
}

CommandResult greedy_run(const std::vector<std::string>& extra) {
  std::vector<std::string> args{"run", "-m", default_model().string(), "-p", "My favourite season is",
                                "-n", "12", "--temp", "0", "--no-display-prompt"};
  args.insert(args.end(), extra.begin(), extra.end());
  return lathe_cli(args);
}

TEST(CliCvector, MakesAVectorThatSteersRun) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("cvector_cli");
  write_file(dir / "happy.txt", "I feel wonderful, joyful and full of energy!\nWhat a delightful, happy day.\n");
  write_file(dir / "sad.jsonl", "{\"prompt\": \"I feel terrible, hopeless and drained.\"}\n\"What a miserable, sad day.\"\n");
  const auto out = dir / "happy.gguf";
  const auto made = lathe_cli({"cvector", default_model().string(), "--positive", (dir / "happy.txt").string(),
                               "--negative", (dir / "sad.jsonl").string(), "-o", out.string(), "-t", "2"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  EXPECT_NE(made.out.find("wrote"), std::string::npos) << made.out;
  EXPECT_NE(made.err.find("2/2"), std::string::npos) << "progress on stderr: " << made.err;
  const gguf::File file = gguf::File::open(out);
  EXPECT_EQ(file.get("general.architecture").as_string("arch"), "controlvector");
  EXPECT_EQ(file.get("controlvector.model_hint").as_string("hint"), "llama");
  EXPECT_NE(file.find_tensor("direction.1"), nullptr);
  EXPECT_EQ(file.find_tensor("direction.0"), nullptr);

  const auto plain = greedy_run({});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const auto steered = greedy_run({"--control-vector", out.string() + ":4"});
  ASSERT_EQ(steered.exit_code, 0) << steered.err;
  EXPECT_NE(steered.out, plain.out) << "scale 4 changes the greedy continuation";
  const auto zero = greedy_run({"--control-vector", out.string() + ":0"});
  ASSERT_EQ(zero.exit_code, 0) << zero.err;
  EXPECT_EQ(zero.out, plain.out) << "scale 0 adds nothing";
  // +4 and -4 summed cancel. A layer range outside the model's layers would do nothing: it is
  // refused, naming the flag and the model's layers, rather than ignored.
  const auto cancelled = greedy_run({"--control-vector", out.string() + ":4", "--control-vector", out.string() + ":-4"});
  ASSERT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_EQ(cancelled.out, plain.out);
  const auto out_of_range = greedy_run({"--control-vector", out.string() + ":4", "--control-vector-layers", "100-200"});
  EXPECT_EQ(out_of_range.exit_code, 1) << out_of_range.err;
  EXPECT_NE(out_of_range.err.find("--control-vector-layers 100-200"), std::string::npos) << out_of_range.err;
  EXPECT_TRUE(out_of_range.out.empty()) << out_of_range.out;

  // Bad inputs: a missing vector, a range without a vector, unequal prompt counts.
  const auto missing = greedy_run({"--control-vector", (dir / "nope.gguf").string() + ":2"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("error:"), std::string::npos);
  EXPECT_NE(missing.err.find("nope.gguf"), std::string::npos) << missing.err;
  const auto range_only = greedy_run({"--control-vector-layers", "2-4"});
  EXPECT_NE(range_only.exit_code, 0);
  EXPECT_NE(range_only.err.find("--control-vector-layers"), std::string::npos) << range_only.err;
  write_file(dir / "three.txt", "a\nb\nc\n");
  const auto unequal = lathe_cli({"cvector", default_model().string(), "--positive", (dir / "three.txt").string(),
                                  "--negative", (dir / "sad.jsonl").string(), "-o", (dir / "x.gguf").string()});
  EXPECT_NE(unequal.exit_code, 0);
  EXPECT_NE(unequal.err.find("3 prompts"), std::string::npos) << unequal.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.gguf"));
}

}  // namespace
}  // namespace lathe::test
