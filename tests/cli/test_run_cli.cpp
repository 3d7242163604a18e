// `lathe run`, `lathe chat` and `lathe bench` end to end through the CLI binary on the default
// model: repeatability (greedy and seeded), chat turns through a pipe, bench's JSON, and the
// `error:` exit for bad input. Token counts stay small: these runs share a slow CPU.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#include "io/gguf.hpp"

namespace lathe::test {
namespace {

CommandResult lathe_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args);
}

// Single-quoted for sh, so that any path survives.
std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  out += '\'';
  return out;
}

// `lathe chat` with `input` on stdin (a pipe, through sh).
CommandResult chat(const std::string& input, const std::vector<std::string>& extra_args = {},
                   const std::string& n_predict = "12") {
  TempDir dir("chat");
  const auto input_file = dir / "input.txt";
  write_file(input_file, input);
  std::string command = "exec ";
  command += shell_quote(cli_path().string());
  command += " chat -m ";
  command += shell_quote(default_model().string());
  command += " --temp 0 -n ";
  command += n_predict;
  for (const auto& arg : extra_args) {
    command += ' ';
    command += shell_quote(arg);
  }
  command += " < ";
  command += shell_quote(input_file.string());
  return run_command({"/bin/sh", "-c", command});
}

std::vector<std::string> run_args(const std::vector<std::string>& extra, const std::string& n_predict = "12") {
  std::vector<std::string> args{"run", "-m", default_model().string(), "-p", "The three primary colors are",
                                "-n", n_predict, "--no-display-prompt"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(CliRun, GreedyRunsAreIdentical) {
  LATHE_REQUIRE_MODEL();
  const auto first = lathe_cli(run_args({"--temp", "0"}));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const auto second = lathe_cli(run_args({"--temp", "0"}));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_EQ(first.out, second.out);
  EXPECT_GT(first.out.size(), 5u) << "some text was generated";
  // The statistics line goes to stderr, never into the text.
  EXPECT_NE(first.err.find("generated: 12 tokens"), std::string::npos) << first.err;
  EXPECT_EQ(first.out.find("tok/s"), std::string::npos);
}

TEST(CliRun, DisplaysThePromptUnlessAskedNotTo) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"run", "-m", default_model().string(), "-p", "Hello there", "-n", "2", "--temp", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Hello there", 0), 0u) << r.out;
}

TEST(CliRun, SeedMakesSampledRunsRepeatable) {
  LATHE_REQUIRE_MODEL();
  const std::vector<std::string> sampled{"--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0"};
  auto with_seed = [&](const std::string& seed) {
    auto args = run_args(sampled);
    args.insert(args.end(), {"--seed", seed});
    return lathe_cli(args);
  };
  const auto a = with_seed("1234");
  const auto b = with_seed("1234");
  const auto c = with_seed("98765");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(a.out, b.out);
  // At temperature 1.5 with every filter off, 12 tokens from another seed are all but certain to
  // differ; this guards against --seed being ignored.
  EXPECT_NE(a.out, c.out);
  EXPECT_EQ(a.err.find("repeat this run with --seed"), std::string::npos) << "a given seed is not announced";
}

TEST(CliRun, RandomSeedIsPrintedAndRepeatsTheRun) {
  LATHE_REQUIRE_MODEL();
  const auto first = lathe_cli(run_args({"--temp", "1.5"}, "6"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string marker = "--seed ";
  const auto at = first.err.find(marker);
  ASSERT_NE(at, std::string::npos) << first.err;
  const size_t begin = at + marker.size();
  const std::string seed = first.err.substr(begin, first.err.find_first_not_of("0123456789", begin) - begin);
  ASSERT_FALSE(seed.empty()) << first.err;
  const auto again = lathe_cli(run_args({"--temp", "1.5", "--seed", seed}, "6"));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(first.out, again.out);
}

TEST(CliRun, ChatFlagUsesTheTemplate) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"run", "-m", default_model().string(), "-p", "Hi", "--chat", "--system", "Be brief.", "-n",
                            "2", "--temp", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // SmolLM2's template (ChatML) shows up in the displayed prompt.
  EXPECT_NE(r.out.find("<|im_start|>system\nBe brief.<|im_end|>"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), std::string::npos) << r.out;
}

TEST(CliRun, BadInputExitsWithError) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  const std::vector<std::vector<std::string>> cases = {
      {"run", "-m", (source_dir() / "models" / "no-such-model.gguf").string(), "-p", "x"},
      {"run", "-m", model, "-p", ""},
      {"run", "-m", model},
      {"run", "-m", model, "-p", "x", "-n", "-1"},
      {"run", "-m", model, "-p", "x", "--temp", "-1"},
      {"run", "-m", model, "-p", "x", "--top-p", "0"},
      {"run", "-m", model, "-p", "x", "--top-p", "1.5"},
      {"run", "-m", model, "-p", "x", "--min-p", "2"},
      {"run", "-m", model, "-p", "x", "--repeat-penalty", "0"},
      {"run", "-m", model, "-p", "x", "-c", "-5"},
      {"run", "-m", model, "-p", "x", "--kv-type", "q8"},
      {"run", "-m", model, "-p", "x", "--system", "s"},  // --system without --chat
      {"run", "-m", model, "-p", "one two three four five six seven eight nine ten", "-c", "8"},  // no room
      {"chat", "-m", model, "--top-p", "0"},
      {"bench", "-m", model, "-r", "0"},
      {"bench", "-m", model, "-p", "-1"},
  };
  for (const auto& args : cases) {
    const auto r = lathe_cli(args);
    std::string line;
    for (const auto& a : args) line += a + " ";
    EXPECT_NE(r.exit_code, 0) << line;
    // A random seed may be announced first; the error is a line of its own.
    EXPECT_TRUE(r.err.rfind("error: ", 0) == 0 || r.err.find("\nerror: ") != std::string::npos) << line << "\n" << r.err;
  }
  const auto context = lathe_cli({"run", "-m", model, "-p", "one two three four five six seven eight nine ten", "-c", "8"});
  EXPECT_NE(context.err.find("the context (-c/--ctx-size 8)"), std::string::npos) << context.err;
  EXPECT_NE(context.err.find("--truncate"), std::string::npos) << context.err;
  EXPECT_TRUE(context.out.empty()) << context.out;  // nothing echoed before the checks
  const auto top_p = lathe_cli({"run", "-m", model, "-p", "x", "--top-p", "1.5"});
  EXPECT_NE(top_p.err.find("--top-p"), std::string::npos) << top_p.err;
}

// -n is "at most": a context too small for prompt + -n (also the default -n 128) generates until
// it is full, and says so on stderr.
TEST(CliRun, GenerationStopsWhenTheContextIsFull) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  const auto r = lathe_cli({"run", "-m", model, "-p", "x", "-n", "50", "-c", "8", "--temp", "0", "--no-display-prompt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // "x" is one token (no BOS for this model), so 7 tokens fit; unless the model ended its text.
  if (r.err.find("generated: 7 tokens") != std::string::npos) {
    EXPECT_NE(r.err.find("stopped: the context (-c/--ctx-size 8) is full after 7 generated tokens, fewer than "
                         "-n/--n-predict 50"),
              std::string::npos)
        << r.err;
  }
  const auto default_n = lathe_cli({"run", "-m", model, "-p", "Once upon a time", "-c", "16", "--temp", "0",
                                    "--no-display-prompt"});
  ASSERT_EQ(default_n.exit_code, 0) << default_n.err;
  EXPECT_NE(default_n.err.find("-n/--n-predict 128"), std::string::npos) << default_n.err;
  EXPECT_NE(default_n.err.find("is full"), std::string::npos) << default_n.err;
}

// Far more threads than CPUs (each pass's loops then wait for threads the OS has not scheduled):
// a short greedy run still finishes promptly with the same text as one thread, after a warning
// that names the flag and the CPU count. Before the thread pool handed a loop's indices to
// whichever thread runs, `-t 1000` took about a minute per token on 2 CPUs: the 120 s bound
// catches that, and is far above a normal run's few seconds.
TEST(CliRun, ManyMoreThreadsThanCpusWarnsAndStillFinishes) {
  LATHE_REQUIRE_MODEL();
  const auto one = lathe_cli(run_args({"--temp", "0", "-t", "1"}, "6"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.err.find("warning: -t/--threads"), std::string::npos) << one.err;
  auto args = run_args({"--temp", "0", "-t", "1000"}, "6");
  args.insert(args.begin(), cli_path().string());
  const auto many = run_command(args, std::chrono::seconds(120));
  ASSERT_FALSE(many.timed_out) << many.err;
  ASSERT_EQ(many.exit_code, 0) << many.err;
  EXPECT_EQ(many.out, one.out);
  EXPECT_NE(many.err.find("warning: -t/--threads 1000 is more than the"), std::string::npos) << many.err;
}

TEST(CliRun, TruncateKeepsTheEndOfALongPrompt) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  const auto r = lathe_cli({"run", "-m", model, "-p", "one two three four five six seven eight", "-n", "4", "-c", "8",
                            "--temp", "0", "--truncate", "--no-display-prompt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prompt: 4 tokens"), std::string::npos) << r.err;
  // It says how many tokens it dropped (8 words are 8 tokens here).
  EXPECT_NE(r.err.find("--truncate: dropped the first 4 of the prompt's 8 tokens (kept the last 4)"), std::string::npos)
      << r.err;
  // The displayed prompt is what the model saw.
  const auto shown = lathe_cli({"run", "-m", model, "-p", "one two three four five six seven eight", "-n", "4", "-c",
                                "8", "--temp", "0", "--truncate"});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(shown.out.rfind(" five six seven eight", 0), 0u) << shown.out;
  // -n as large as the context: --truncate keeps one prompt token and generates until it is full.
  const auto big_n = lathe_cli({"run", "-m", model, "-p", "one two three four five six seven eight", "-n", "100",
                                "-c", "8", "--temp", "0", "--truncate", "--no-display-prompt"});
  ASSERT_EQ(big_n.exit_code, 0) << big_n.err;
  EXPECT_NE(big_n.err.find("dropped the first 7 of the prompt's 8 tokens"), std::string::npos) << big_n.err;
}

TEST(CliChat, TwoTurnsThenResetThroughAPipe) {
  LATHE_REQUIRE_MODEL();
  const auto one = chat("Hi\n", {"--verbose"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_GT(one.out.size(), 1u);
  // Two turns: the first reply is the same as alone, a second one follows, and the second turn
  // evaluates only the new tokens (the first turn's prompt and reply stay in the KV cache).
  const auto two = chat("Hi\nWhat is the capital of France?\n", {"--verbose"});
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(two.out.rfind(one.out, 0), 0u) << two.out;
  EXPECT_GT(two.out.size(), one.out.size() + 1);
  EXPECT_NE(two.err.find("[turn 1: 0 prompt tokens reused"), std::string::npos) << two.err;
  const auto turn2 = two.err.find("[turn 2: ");
  ASSERT_NE(turn2, std::string::npos) << two.err;
  EXPECT_GT(std::stoi(two.err.substr(turn2 + 9)), 10) << two.err;
  // /reset forgets the conversation: the same question gets the same first reply, from scratch.
  const auto reset = chat("Hi\n/reset\nHi\n", {"--verbose"});
  ASSERT_EQ(reset.exit_code, 0) << reset.err;
  EXPECT_EQ(reset.out, one.out + one.out);
  EXPECT_NE(reset.err.find("[turn 2: 0 prompt tokens reused"), std::string::npos) << reset.err;
  // /exit stops reading; blank lines are skipped.
  const auto exit = chat("\nHi\n/exit\nWhat is the capital of France?\n");
  ASSERT_EQ(exit.exit_code, 0) << exit.err;
  EXPECT_EQ(exit.out, one.out);
}

TEST(CliChat, FullContextIsReportedNotFatal) {
  LATHE_REQUIRE_MODEL();
  // 40 tokens of context: the first turn fits (about 31 prompt tokens with the default system
  // message), the longer second one does not; the chat says so and carries on to /reset. A piped
  // session whose turn failed exits non-zero at its end.
  const auto r = chat("Hi\nPlease tell me a long story about dragons and castles and knights\n/reset\nHi\n",
                      {"-c", "40"}, "4");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("/reset"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("-c/--ctx-size 40"), std::string::npos) << r.err;
  // Both "Hi" turns were answered, the same way (the session went on after the failed turn).
  ASSERT_EQ(r.out.size() % 2, 0u) << r.out;
  ASSERT_GT(r.out.size(), 2u) << r.out;
  EXPECT_EQ(r.out.substr(0, r.out.size() / 2), r.out.substr(r.out.size() / 2)) << r.out;
  // Without a failed turn the same session exits 0.
  const auto ok = chat("Hi\n/reset\nHi\n", {"-c", "40"}, "4");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// Lines starting with / are lathe's: /help lists the commands, an unknown one is answered by
// lathe (never sent to the model) and fails a piped session; // sends a message starting with /.
TEST(CliChat, SlashCommandsAreLathes) {
  LATHE_REQUIRE_MODEL();
  const auto help = chat("/help\n/quit\nHi\n");
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_TRUE(help.out.empty()) << help.out;  // /quit ended the session before "Hi"
  for (const char* command : {"/help", "/reset", "/exit", "/quit"})
    EXPECT_NE(help.err.find(command), std::string::npos) << command << "\n" << help.err;
  const auto unknown = chat("/frobnicate now\n", {"--verbose"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.err;
  EXPECT_TRUE(unknown.out.empty()) << unknown.out;
  EXPECT_NE(unknown.err.find("error: /frobnicate is not a command of lathe chat"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("/help"), std::string::npos) << unknown.err;
  EXPECT_EQ(unknown.err.find("[turn"), std::string::npos) << unknown.err;
  const auto escaped = chat("//frobnicate\n", {"--verbose"}, "2");
  EXPECT_EQ(escaped.exit_code, 0) << escaped.err;
  EXPECT_NE(escaped.err.find("[turn 1:"), std::string::npos) << escaped.err;
}

// `lathe chat` with pipes on stdin, stdout and stderr, driven step by step.
class ChatProcess {
 public:
  explicit ChatProcess(const std::vector<std::string>& extra) {
    std::vector<std::string> argv{cli_path().string(), "chat", "-m", default_model().string(), "--temp", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    int in[2], out[2], err[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0 || ::pipe(err) != 0) throw std::runtime_error("pipe failed");
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      for (int fd : {in[0], in[1], out[0], out[1], err[0], err[1]}) ::close(fd);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    in_ = in[1];
    out_ = out[0];
    err_ = err[0];
  }
  ~ChatProcess() {
    if (in_ >= 0) ::close(in_);
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
    ::close(err_);
  }

  void write_line(const std::string& line) {
    const std::string text = line + "\n";
    ASSERT_EQ(::write(in_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  void close_stdin() {
    ::close(in_);
    in_ = -1;
  }
  void interrupt() { ::kill(pid_, SIGINT); }

  // Reads until `done` holds for (stdout, stderr), the streams end, or the deadline passes.
  bool read_until(const std::function<bool()>& done, std::chrono::seconds timeout = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
      if (::poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000))) < 0) return false;
      bool open = false;
      for (int i = 0; i < 2; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP)) == 0) {
          open = true;
          continue;
        }
        char buffer[4096];
        const ssize_t n = ::read(fds[i].fd, buffer, sizeof(buffer));
        if (n > 0) {
          (i == 0 ? out : err).append(buffer, static_cast<size_t>(n));
          open = true;
        }
      }
      if (!open) return done();
    }
    return true;
  }
  // The exit status, or -1 when it does not end within the timeout.
  int wait(std::chrono::seconds timeout = std::chrono::seconds(120)) {
    read_until([] { return false; }, timeout);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string out, err;

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1, err_ = -1;
  bool exited_ = false;
};

// Ctrl-C while a reply streams stops that reply, not the session: the next line gets its answer.
// At the prompt, Ctrl-C ends the session (exit 0, like end of input).
TEST(CliChat, CtrlCStopsTheReplyNotTheSession) {
  LATHE_REQUIRE_MODEL();
  ChatProcess chat({"-n", "2000", "--verbose"});
  chat.write_line("Write a very long story about a dragon, with many chapters.");
  ASSERT_TRUE(chat.read_until([&] { return chat.out.size() >= 8; })) << chat.err;
  chat.interrupt();
  ASSERT_TRUE(chat.read_until([&] { return chat.err.find("[turn 1:") != std::string::npos; })) << chat.err;
  EXPECT_NE(chat.err.find("(reply stopped"), std::string::npos) << chat.err;
  // The first reply ended well before -n 2000 tokens.
  const auto generated = chat.err.find(" generated, ", chat.err.find("[turn 1:"));
  ASSERT_NE(generated, std::string::npos) << chat.err;
  const auto evaluated = chat.err.rfind(", ", generated - 1);
  EXPECT_LT(std::stoi(chat.err.substr(evaluated + 2)), 500) << chat.err;
  // The session goes on: the next line gets a reply (stopped the same way, to keep the test short).
  const size_t first_reply = chat.out.size();
  chat.write_line("Tell me another one, about a knight.");
  ASSERT_TRUE(chat.read_until([&] { return chat.out.size() >= first_reply + 8; })) << chat.err;
  chat.interrupt();
  ASSERT_TRUE(chat.read_until([&] { return chat.err.find("[turn 2:") != std::string::npos; })) << chat.err;
  EXPECT_NE(chat.err.find("(reply stopped", chat.err.find("[turn 1:")), std::string::npos) << chat.err;
  // Now at the prompt: Ctrl-C ends the session.
  chat.interrupt();
  EXPECT_EQ(chat.wait(std::chrono::seconds(60)), 0) << chat.err;
  EXPECT_EQ(chat.err.find("error"), std::string::npos) << chat.err;
}

TEST(CliChat, ModelWithoutTemplateIsAClearError) {
  LATHE_REQUIRE_MODEL();
  // The default model minus its tokenizer.chat_template key.
  TempDir dir("no-template");
  const auto source = gguf::File::open(default_model());
  gguf::Writer writer;
  writer.set_alignment(static_cast<uint32_t>(source.alignment()));
  for (const auto& [key, value] : source.metadata())
    if (key != "tokenizer.chat_template" && key != "general.alignment") writer.set(key, value);
  for (const auto& tensor : source.tensors())
    writer.add_tensor(tensor.name, tensor.type, tensor.shape, source.tensor_data(tensor));
  const auto stripped = dir / "no-template.gguf";
  writer.write(stripped);

  const auto chat = lathe_cli({"chat", "-m", stripped.string()});
  EXPECT_EQ(chat.exit_code, 1);
  EXPECT_EQ(chat.err.rfind("error: ", 0), 0u) << chat.err;
  EXPECT_NE(chat.err.find("no chat template"), std::string::npos) << chat.err;
  const auto run = lathe_cli({"run", "-m", stripped.string(), "-p", "Hi", "--chat", "--temp", "0"});
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("no chat template"), std::string::npos) << run.err;
  // The same file still completes plain text.
  const auto plain = lathe_cli({"run", "-m", stripped.string(), "-p", "Hi", "-n", "2", "--temp", "0"});
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
}

TEST(CliBench, JsonHasBothTests) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"bench", "-m", default_model().string(), "-p", "8", "-n", "4", "-r", "2", "--json", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["test"], "pp8");
  EXPECT_EQ(json[0]["n_prompt"], 8);
  EXPECT_EQ(json[1]["test"], "tg4");
  EXPECT_EQ(json[1]["n_gen"], 4);
  for (const auto& test : json) {
    EXPECT_EQ(test["backend"], "cpu");
    EXPECT_EQ(test["threads"], 1);
    EXPECT_EQ(test["reps"], 2);
    EXPECT_EQ(test["format"], "gguf");
    EXPECT_EQ(test["weight_type"], "Q4_1");
    EXPECT_GT(test["n_params"].get<uint64_t>(), 100'000'000u);
    EXPECT_GT(test["model_bytes"].get<uint64_t>(), 50'000'000u);
    ASSERT_EQ(test["samples_ts"].size(), 2u);
    for (const auto& v : test["samples_ts"]) EXPECT_GT(v.get<double>(), 0.0);
    EXPECT_GT(test["avg_ts"].get<double>(), 0.0);
    EXPECT_GE(test["stddev_ts"].get<double>(), 0.0);
  }
}

// -d fills the context before each test: the tests are named after the depth, and the context
// must hold the depth plus the longer test.
TEST(CliBench, DepthFillsTheContextFirst) {
  LATHE_REQUIRE_MODEL();
  const std::string model = default_model().string();
  const auto r = lathe_cli({"bench", "-m", model, "-p", "4", "-n", "3", "-d", "40", "-c", "44", "-r", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto json = nlohmann::json::parse(r.out);
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["test"], "pp4 @ d40");
  EXPECT_EQ(json[1]["test"], "tg3 @ d40");
  for (const auto& test : json) EXPECT_EQ(test["n_depth"], 40);
  const auto small = lathe_cli({"bench", "-m", model, "-p", "4", "-n", "3", "-d", "40", "-c", "43", "-r", "1"});
  EXPECT_NE(small.exit_code, 0);
  EXPECT_NE(small.err.find("--ctx-size 43"), std::string::npos) << small.err;
  EXPECT_NE(small.err.find("44"), std::string::npos) << small.err;
  const auto negative = lathe_cli({"bench", "-m", model, "-d", "-1"});
  EXPECT_NE(negative.exit_code, 0);
  EXPECT_NE(negative.err.find("-d/--depth"), std::string::npos) << negative.err;
}

TEST(CliBench, TableAndSkippedTests) {
  LATHE_REQUIRE_MODEL();
  const auto r = lathe_cli({"bench", "-m", default_model().string(), "-p", "0", "-n", "2", "-r", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("| model | size | params | backend | threads | test | t/s |\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("| tg2 | "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("| pp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" ± "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lathe::test
