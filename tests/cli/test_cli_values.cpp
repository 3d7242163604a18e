// What the CLI says when the user gets something wrong: every bad value of every option is refused
// with `error: ` naming the flag (no silent wrapping, saturation, clamping or no-op ranges), an
// unknown command says so, a file-system failure is an ordinary error, a failing run prints
// nothing to stdout, messages name only flags that exist (--template), and -c above the model's
// trained context warns. The bad values fail before the model loads where they can, so this stays
// fast.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "edit/control_vector.hpp"

namespace lathe::test {
namespace {

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args, std::chrono::seconds(120));
}

std::string joined(const std::vector<std::string>& args) {
  std::string line;
  for (const auto& a : args) line += a + " ";
  return line;
}

// The error line (a random seed may be announced before it).
bool has_error_line(const std::string& err) {
  return err.rfind("error: ", 0) == 0 || err.find("\nerror: ") != std::string::npos;
}

struct BadValue {
  std::vector<std::string> args;  // after the subcommand's required arguments
  std::string flag;               // the message must name it
};

TEST(CliValues, BadValuesAreRefusedNamingTheFlag) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  const std::vector<std::string> run{"run", "-m", model, "-p", "x"};
  const std::vector<std::string> chat{"chat", "-m", model};
  const std::vector<std::string> bench{"bench", "-m", model};
  const std::vector<BadValue> cases = {
      // -n: negative, beyond int32, and not a decimal integer (CLI11 alone reads "010" as octal 8)
      {{"-n", "-1"}, "--n-predict"},
      {{"-n", "3000000000"}, "--n-predict"},
      {{"-n", "99999999999999999999999"}, "--n-predict"},
      {{"-n", "0x10"}, "--n-predict"},
      {{"-n", "2.5"}, "--n-predict"},
      // -c: negative, above what lathe supports, saturating int64
      {{"-c", "-5"}, "--ctx-size"},
      {{"-c", "5000000"}, "--ctx-size"},
      {{"-c", "99999999999999999999"}, "--ctx-size"},
      {{"-b", "0"}, "--batch-size"},
      {{"-b", "70000"}, "--batch-size"},
      {{"-t", "-1"}, "--threads"},
      {{"-t", "5000"}, "--threads"},
      {{"--device", "cuda:x"}, "--device"},
      {{"--device", "cuda:99999999999"}, "--device"},
      {{"--kv-type", "q8"}, "--kv-type"},
      // sampling: the flag, not SamplingOptions' field names
      {{"--temp", "-1"}, "--temp"},
      {{"--temp", "nan"}, "--temp"},
      {{"--temp", "1e40"}, "--temp"},
      {{"--top-k", "-5"}, "--top-k"},
      {{"--top-k", "99999999999"}, "--top-k"},
      {{"--top-p", "0"}, "--top-p"},
      {{"--top-p", "1.5"}, "--top-p"},
      {{"--min-p", "-0.1"}, "--min-p"},
      {{"--min-p", "2"}, "--min-p"},
      {{"--repeat-penalty", "0"}, "--repeat-penalty"},
      {{"--frequency-penalty", "inf"}, "--frequency-penalty"},
      {{"--presence-penalty", "nan"}, "--presence-penalty"},
      {{"--repeat-last-n", "-2"}, "--repeat-last-n"},
      // the seed is unsigned: -1 must not wrap to 2^64-1, nor a huge value saturate to it
      {{"--seed", "-1"}, "--seed"},
      {{"--seed", "99999999999999999999999"}, "--seed"},
      {{"--system", "s"}, "--system"},      // without --chat
      {{"--template", "t.jinja"}, "--template"},  // without --chat
      {{"--control-vector-layers", "1-2"}, "--control-vector-layers"},  // without --control-vector
      {{"--control-vector", "cv.gguf:1e99"}, "--control-vector"},
  };
  for (const auto& c : cases) {
    auto args = run;
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = lathe_cli(args);
    EXPECT_EQ(r.exit_code, 1) << joined(args) << "\n" << r.err;
    EXPECT_TRUE(has_error_line(r.err)) << joined(args) << "\n" << r.err;
    EXPECT_NE(r.err.find(c.flag), std::string::npos) << joined(args) << "\n" << r.err;
    EXPECT_EQ(r.err.find("internal"), std::string::npos) << joined(args) << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << joined(args) << "\n" << r.out;
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> other = {
      {{"chat", "-m", model, "-n", "0"}, "--n-predict"},  // every reply would be empty
      {{"chat", "-m", model, "--top-k", "-1"}, "--top-k"},
      {{"chat", "-m", model, "--repeat-last-n", "-3"}, "--repeat-last-n"},
      {{"chat", "-m", model, "-c", "9999999"}, "--ctx-size"},
      {{"bench", "-m", model, "-r", "0"}, "--repetitions"},
      {{"bench", "-m", model, "-p", "-1"}, "--n-prompt"},
      {{"bench", "-m", model, "-p", "0", "-n", "0"}, "--n-gen"},  // nothing to measure
      {{"bench", "-m", model, "-n", "0", "--parallel", "4"}, "--parallel"},  // would be skipped
      {{"bench", "-m", model, "--parallel", "513"}, "--parallel"},
      {{"bench", "-m", model, "-p", "2000000"}, "--n-prompt"},
      {{"ablate", model, "--train-limit", "-1"}, "--train-limit"},  // size_t: must not wrap
      {{"ablate", model, "--cache-weights", "5"}, "--cache-weights"},
      {{"ablate", model, "--n-parallel", "5000"}, "--n-parallel"},
      {{"ablate", model, "-t", "-2"}, "--threads"},
  };
  for (const auto& [args, flag] : other) {
    const auto r = lathe_cli(args);
    EXPECT_EQ(r.exit_code, 1) << joined(args) << "\n" << r.err;
    EXPECT_TRUE(has_error_line(r.err)) << joined(args) << "\n" << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << joined(args) << "\n" << r.err;
  }
}

// A leading-zero number is read as the decimal it looks like, not as octal.
TEST(CliValues, LeadingZerosAreDecimal) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"run", "-m", default_model().string(), "-p", "The three primary colors are", "-n", "012",
                            "--temp", "0", "--no-display-prompt", "--verbose"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 12 tokens unless the model ended its text early.
  EXPECT_TRUE(r.err.find("generated: 12 tokens") != std::string::npos ||
              r.err.find("stop: end of generation") != std::string::npos)
      << r.err;
}

// --control-vector-layers is used as given: a range past the model's layers, or one that holds
// none of the vector's directions, is refused rather than clamped or ignored.
TEST(CliValues, ControlVectorLayersOutsideTheVectorAreRefused) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("cv-layers");
  edit::ControlVector cv;
  cv.n_embd = 576;  // the default model's width
  cv.directions[5] = std::vector<float>(cv.n_embd, 0.01f);
  const auto path = (dir / "cv.gguf").string();
  edit::write_control_vector(path, cv);
  const std::string model = default_model().string();
  const auto past = lathe_cli({"run", "-m", model, "-p", "x", "-n", "1", "--control-vector", path,
                               "--control-vector-layers", "3-99"});
  EXPECT_EQ(past.exit_code, 1) << past.err;
  EXPECT_NE(past.err.find("--control-vector-layers 3-99"), std::string::npos) << past.err;
  EXPECT_NE(past.err.find("0..29"), std::string::npos) << past.err;
  const auto none = lathe_cli({"run", "-m", model, "-p", "x", "-n", "1", "--control-vector", path,
                               "--control-vector-layers", "10-12"});
  EXPECT_EQ(none.exit_code, 1) << none.err;
  EXPECT_NE(none.err.find("--control-vector-layers"), std::string::npos) << none.err;
  EXPECT_TRUE(none.out.empty()) << none.out;
  const auto used = lathe_cli({"run", "-m", model, "-p", "x", "-n", "1", "--temp", "0", "--control-vector", path,
                               "--control-vector-layers", "4-6"});
  EXPECT_EQ(used.exit_code, 0) << used.err;
}

TEST(CliValues, UnknownCommandSaysItIsUnknown) {
  const auto r = lathe_cli({"frobnicate", "-m", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("error: unknown command 'frobnicate'", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("run"), std::string::npos) << r.err;  // the commands are listed
}

// A symlink loop (or any other failure the file system reports) is an ordinary error naming the
// path, not an internal error to report.
TEST(CliValues, FileSystemErrorsAreOrdinaryErrors) {
  TempDir dir("fs-loop");
  const auto loop = dir / "loop.gguf";
  std::filesystem::create_symlink(loop, loop);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"run", "-m", loop.string(), "-p", "x"}, {"inspect", loop.string()},
        {"chat", "-m", loop.string()}}) {
    const auto r = lathe_cli(args);
    EXPECT_EQ(r.exit_code, 1) << joined(args) << r.err;
    EXPECT_TRUE(has_error_line(r.err)) << joined(args) << r.err;
    EXPECT_EQ(r.err.find("internal"), std::string::npos) << joined(args) << r.err;
    EXPECT_EQ(r.err.find("please report"), std::string::npos) << joined(args) << r.err;
    EXPECT_NE(r.err.find("loop.gguf"), std::string::npos) << joined(args) << r.err;
    EXPECT_NE(r.err.find("symbolic links"), std::string::npos) << joined(args) << r.err;  // ELOOP's text
    EXPECT_EQ(r.err.find("not found"), std::string::npos) << joined(args) << r.err;
  }
}

// A run that fails its checks writes nothing to stdout: a 100 KB prompt that cannot fit the
// context does not land in a redirected output file.
TEST(CliValues, FailingRunPrintsNothingToStdout) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("big-prompt");
  std::string prompt;
  while (prompt.size() < 100'000) prompt += "The quick brown fox jumps over the lazy dog. ";
  write_file(dir / "prompt.txt", prompt);
  const auto r = lathe_cli({"run", "-m", default_model().string(), "-f", (dir / "prompt.txt").string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out.substr(0, 200);
  EXPECT_NE(r.err.find("-c/--ctx-size"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--truncate"), std::string::npos) << r.err;
  // The same with --chat and a missing --template file: refused before anything is printed.
  const auto t = lathe_cli({"run", "-m", default_model().string(), "-p", "Hi", "--chat", "--template",
                            (dir / "missing.jinja").string()});
  EXPECT_EQ(t.exit_code, 1) << t.err;
  EXPECT_TRUE(t.out.empty()) << t.out;
  EXPECT_NE(t.err.find("missing.jinja"), std::string::npos) << t.err;
}

// A broken chat template's message suggests --template FILE, which run (with --chat) and chat
// accept: a replacement template is used as given.
TEST(CliValues, TemplateFlagReplacesTheModelsTemplate) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("template-flag");
  write_file(dir / "broken.jinja", "{% for m in messages %}{{ m.content }}");
  write_file(dir / "plain.jinja", "[{% for m in messages %}{{ m.role }}: {{ m.content }};{% endfor %}]");
  const std::string model = default_model().string();
  const auto broken = lathe_cli({"run", "-m", model, "-p", "Hi", "--chat", "--template", (dir / "broken.jinja").string()});
  EXPECT_EQ(broken.exit_code, 1) << broken.err;
  EXPECT_NE(broken.err.find("broken.jinja"), std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find("--template FILE"), std::string::npos) << broken.err;
  EXPECT_TRUE(broken.out.empty()) << broken.out;
  const auto plain = lathe_cli({"run", "-m", model, "-p", "Hi", "--chat", "--template", (dir / "plain.jinja").string(),
                                "-n", "1", "--temp", "0"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out.rfind("[user: Hi;]", 0), 0u) << plain.out;
  // lathe chat checks the template before the first turn.
  const auto chat = lathe_cli({"chat", "-m", model, "--template", (dir / "broken.jinja").string()});
  EXPECT_EQ(chat.exit_code, 1) << chat.err;
  EXPECT_NE(chat.err.find("--template FILE"), std::string::npos) << chat.err;
}

// -c above the model's trained context (8192 for the default model) is used, with a warning.
TEST(CliValues, ContextAboveTheTrainedOneWarns) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"run", "-m", default_model().string(), "-p", "Hi", "-n", "1", "--temp", "0", "-c", "10000",
                            "--verbose"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: -c/--ctx-size 10000 is more than the 8192 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("context 10000 tokens"), std::string::npos) << r.err;
  const auto within = lathe_cli({"run", "-m", default_model().string(), "-p", "Hi", "-n", "1", "--temp", "0", "-c", "8192"});
  ASSERT_EQ(within.exit_code, 0) << within.err;
  EXPECT_EQ(within.err.find("warning"), std::string::npos) << within.err;
}

// --vram-budget is for a GPU: on the CPU, or with a value that is not a size, every command that
// runs a model refuses at once, naming the flag (test_engine_budget and test_cuda_stream check
// what it does on a GPU).
TEST(CliValues, VramBudgetIsRefusedOnTheCpuAndWhenNotASize) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
           {"serve", "-m", model, "--port", "0"}, {"run", "-m", model, "-p", "hi", "-n", "1"}, {"bench", "-m", model}}) {
    auto cpu = command;
    cpu.insert(cpu.end(), {"--vram-budget", "8G"});
    const auto refused = lathe_cli(cpu);
    EXPECT_EQ(refused.exit_code, 1) << command[0] << ": " << refused.err;
    EXPECT_NE(refused.err.find("error: --vram-budget 8G applies to a GPU"), std::string::npos) << refused.err;
    auto bad = command;
    bad.insert(bad.end(), {"--device", "cuda", "--vram-budget", "lots"});
    const auto not_size = lathe_cli(bad);
    EXPECT_EQ(not_size.exit_code, 1) << command[0] << ": " << not_size.err;
    EXPECT_NE(not_size.err.find("error: --vram-budget 'lots' is not a size"), std::string::npos) << not_size.err;
  }
}

// --vram-budget is offered by every command that runs a model on a GPU, and not by finetune and
// unlearn, which train on the CPU only.
TEST(CliValues, VramBudgetIsAFlagOfTheGpuCommandsOnly) {
  for (const char* command : {"run", "chat", "bench", "serve", "ablate", "ablate-eval", "cvector", "score"}) {
    const auto help = lathe_cli({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.err;
    EXPECT_NE(help.out.find("--vram-budget"), std::string::npos) << command;
  }
  for (const char* command : {"finetune", "unlearn"}) {
    const auto help = lathe_cli({command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command << ": " << help.err;
    EXPECT_NE(help.out.find("--device"), std::string::npos) << command;  // the help was read
    EXPECT_EQ(help.out.find("--vram-budget"), std::string::npos) << command;
  }
}

// --batch-invariant (a CUDA mode; test_cuda_batch checks what it does there) is accepted by the
// commands that run a model, and on the CPU, always batch-invariant, changes nothing.
TEST(CliValues, BatchInvariantFlagChangesNothingOnTheCpu) {
  LATHE_REQUIRE_MODEL();
  const std::vector<std::string> run{"run", "-m", default_model().string(), "-p", "The three primary colors are",
                                     "-n", "16", "--temp", "0"};
  auto with_flag = run;
  with_flag.push_back("--batch-invariant");
  const auto plain = lathe_cli(run), invariant = lathe_cli(with_flag);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(invariant.exit_code, 0) << invariant.err;
  EXPECT_EQ(invariant.out, plain.out);
  const auto bench = lathe_cli({"bench", "-m", default_model().string(), "-p", "8", "-n", "2", "-r", "1",
                                "--batch-invariant", "--json"});
  ASSERT_EQ(bench.exit_code, 0) << bench.err;
  EXPECT_NE(bench.out.find("\"batch_invariant\": true"), std::string::npos) << bench.out;
}

// --lora on run, chat, bench and serve: a missing file, a model given as an adapter and a bad
// scale are refused before any work, naming the flag or the file.
TEST(CliValues, LoraFlagRefusesFilesThatAreNotAdapters) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"run", "-m", model, "-p", "hi", "-n", "1"}, {"chat", "-m", model},
        {"bench", "-m", model, "-p", "8", "-n", "1", "-r", "1"}, {"serve", "-m", model, "--port", "0"}}) {
    SCOPED_TRACE(command[0]);
    auto with = [&](const std::string& spec) {
      auto args = command;
      args.insert(args.end(), {"--lora", spec});
      return lathe_cli(args);
    };
    const auto missing = with("no-such-adapter.gguf:0.5");
    EXPECT_EQ(missing.exit_code, 1);
    EXPECT_NE(missing.err.find("error: --lora no-such-adapter.gguf: no such adapter file"), std::string::npos)
        << missing.err;
    const auto not_adapter = with(model);
    EXPECT_EQ(not_adapter.exit_code, 1);
    EXPECT_NE(not_adapter.err.find("expected \"adapter\": this is not a LoRA adapter"), std::string::npos)
        << not_adapter.err;
    const auto scale = with(model + ":1e99");
    EXPECT_EQ(scale.exit_code, 1);
    EXPECT_NE(scale.err.find("error: --lora '" + model + ":1e99': the scale must be a finite number"), std::string::npos)
        << scale.err;
  }
}

}  // namespace
}  // namespace lathe::test
