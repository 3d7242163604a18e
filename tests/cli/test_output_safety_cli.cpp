// Data safety of every command that writes (quantize, convert, cvector, ablate --out), through the
// CLI binary on the default model (docs/RELIABILITY.md lists the guarantees):
//  * each command against an existing output, its own input, a symbolic and a hard link to its
//    input, a read-only directory and a missing parent: refused with `error:` naming the path and
//    the fix, before any work (no progress printed, well under the command's own run time), the
//    files untouched, nothing created;
//  * each command interrupted by SIGINT and SIGTERM mid-write (a test hook pauses the write once
//    its temporary holds its first bytes): the process ends by that signal, no temporary remains
//    and the previous output is intact byte for byte; after SIGKILL the next run sweeps the stale
//    temporary;
//  * convert --force into a directory holding an earlier export leaves exactly the new export
//    (single file <-> shards), other files alone;
//  * the ablate journal identifies its model and prompt files by content;
//  * options that cannot work fail at once; progress goes to logs as plain lines.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/spawn.hpp"
#include "common/test_support.hpp"
#include "io/fingerprint.hpp"
#include "io/gguf.hpp"

namespace lathe::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A refusal must come before the work: well under the time the work takes (quantize ~2 s,
// convert ~1 s, ablate's smallest study ~1.5 s on the test machine).
constexpr std::chrono::milliseconds kFastRefusal{1500};

// ---- running lathe ----------------------------------------------------------------------------------

Finished run_lathe(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
                   bool as_nobody = false) {
  TempDir logs("safety-logs");
  const auto start = Clock::now();
  return wait_for(spawn(args, logs, env, as_nobody), start);
}

// ---- files ------------------------------------------------------------------------------------------

// Every entry under `dir` that looks like a temporary ("NAME.tmp.PID", ".lathe-*" staging).
std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find(".tmp.") != std::string::npos || name.starts_with(".lathe-")) found.push_back(it->path().string());
  }
  return found;
}

// The contents of a file, or of every file under a directory (relative name -> bytes).
std::map<std::string, std::string> snapshot(const fs::path& path) {
  std::map<std::string, std::string> files;
  if (fs::is_regular_file(path)) {
    files[""] = read_file(path);
    return files;
  }
  for (const auto& e : fs::recursive_directory_iterator(path))
    if (e.is_regular_file()) files[fs::relative(e.path(), path).string()] = read_file(e.path());
  return files;
}

std::string fingerprint_of(const fs::path& file) { return file_fingerprint(file); }

// ---- the writing commands ----------------------------------------------------------------------------

struct WritingCommand {
  std::string name;
  bool directory = false;  // the output is a directory
  std::string work_marker;  // on stderr once the command has started its real work
  // The arguments writing `out` from the model `model`; `dir` holds the prompt files and journal.
  std::function<std::vector<std::string>(const fs::path& model, const fs::path& out, const fs::path& dir)> args;
};

void PrintTo(const WritingCommand& command, std::ostream* os) { *os << command.name; }

void write_prompt_files(const fs::path& dir) {
  write_file(dir / "positive.txt", "I feel wonderful and happy!\nWhat a delightful day.\n");
  write_file(dir / "negative.txt", "I feel terrible and sad.\nWhat a miserable day.\n");
}

const std::vector<WritingCommand>& writing_commands() {
  static const std::vector<WritingCommand> commands = {
      {"quantize", false, "[",
       [](const fs::path& model, const fs::path& out, const fs::path&) {
         return std::vector<std::string>{"quantize", model.string(), out.string(), "Q8_0"};
       }},
      {"convert", true, "[",
       [](const fs::path& model, const fs::path& out, const fs::path&) {
         return std::vector<std::string>{"convert", model.string(), "-o", out.string(), "--type", "BF16"};
       }},
      {"cvector", false, "prompt pair",  // its progress line
       [](const fs::path& model, const fs::path& out, const fs::path& dir) {
         return std::vector<std::string>{"cvector",      model.string(), "--positive", (dir / "positive.txt").string(),
                                         "--negative",   (dir / "negative.txt").string(), "-o", out.string(),
                                         "-t",           "2"};
       }},
      {"ablate", false, "model:",
       [](const fs::path& model, const fs::path& out, const fs::path& dir) {
         return std::vector<std::string>{
             "ablate",          model.string(), "--trials", "1", "--startup", "1", "--train-limit", "2",
             "--harmful-val-limit", "1", "--harmless-val-limit", "1", "--max-new-tokens", "1", "-t", "2",
             "--journal",       (dir / "rw" / "study.jsonl").string(), "--out", out.string()};
       }},
  };
  return commands;
}

// An output that exists already at `out`: a file, or (`directory`) a directory holding an earlier
// export and a note of the user's.
fs::path write_existing_output(const fs::path& out, bool directory) {
  if (directory) {
    fs::create_directories(out);
    write_file(out / "model.safetensors", "the earlier export's weights");
    write_file(out / "config.json", "{\"earlier\": true}");
    write_file(out / "README.md", "the user's notes");
  } else {
    write_file(out, "the user's precious file");
  }
  return out;
}

class WritingCommands : public ::testing::TestWithParam<WritingCommand> {
 protected:
  void SetUp() override {
    if (!fs::exists(default_model())) GTEST_FAIL() << "default model missing; run scripts/fetch-model.sh";
    write_prompt_files(dir_.path());
    fs::create_directories(dir_ / "rw");
    fs::permissions(dir_ / "rw", fs::perms::all);  // the journal's directory, writable by everyone
  }
  std::vector<std::string> args(const fs::path& model, const fs::path& out, bool force) const {
    auto a = GetParam().args(model, out, dir_.path());
    if (force) a.push_back("--force");
    return a;
  }
  fs::path make_existing_output(const std::string& name) const {
    return write_existing_output(dir_ / name, GetParam().directory);
  }
  // Checks a refusal: exit 1, `error:` with every part, before the work, and quickly.
  void expect_refused(const Finished& r, const std::vector<std::string>& parts) const {
    EXPECT_EQ(r.exit_code(), 1) << r.err;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    for (const auto& part : parts) EXPECT_NE(r.err.find(part), std::string::npos) << "'" << part << "' not in: " << r.err;
    EXPECT_EQ(r.err.find(GetParam().work_marker), std::string::npos) << "the work had started: " << r.err;
    EXPECT_LT(r.elapsed, kFastRefusal) << "refused only after " << r.elapsed.count() << " ms";
  }
  // A copy of the default model this test may point outputs at.
  fs::path own_model() const {
    const fs::path self = dir_ / "self.gguf";
    if (!fs::exists(self)) fs::copy_file(default_model(), self);
    return self;
  }

  TempDir dir_{"safety"};
};

TEST_P(WritingCommands, ExistingOutputNeedsForce) {
  const fs::path out = make_existing_output(GetParam().directory ? "out" : "out.gguf");
  const auto before = snapshot(out);
  const auto r = run_lathe(args(default_model(), out, false));
  expect_refused(r, {out.string(), "--force", GetParam().directory ? "not empty" : "already exists"});
  EXPECT_EQ(snapshot(out), before);
  EXPECT_TRUE(temporaries(dir_.path()).empty());
}

TEST_P(WritingCommands, OwnInputIsRefusedEvenWithForceAlsoThroughLinks) {
  const fs::path model = own_model();
  const std::string before = fingerprint_of(model);
  fs::create_symlink("self.gguf", dir_ / "symlink.gguf");
  fs::create_hard_link(model, dir_ / "hardlink.gguf");
  for (const char* out : {"self.gguf", "symlink.gguf", "hardlink.gguf"}) {
    for (bool force : {false, true}) {
      SCOPED_TRACE(std::string(out) + (force ? " --force" : ""));
      const auto r = run_lathe(args(model, dir_ / out, force));
      expect_refused(r, {(dir_ / out).string(), "is the input model", model.string(), "choose another output path"});
    }
  }
  EXPECT_EQ(fingerprint_of(model), before);
  EXPECT_EQ(fs::file_size(model), fs::file_size(default_model()));
  EXPECT_TRUE(fs::is_symlink(dir_ / "symlink.gguf"));
  EXPECT_TRUE(temporaries(dir_.path()).empty());
}

TEST_P(WritingCommands, MissingParentIsRefusedAndNotCreated) {
  const fs::path out = dir_ / "no" / "such" / (GetParam().directory ? "out" : "out.gguf");
  const auto r = run_lathe(args(default_model(), out, true));
  expect_refused(r, {(dir_ / "no" / "such").string(), "does not exist", "mkdir -p"});
  EXPECT_FALSE(fs::exists(dir_ / "no"));
}

TEST_P(WritingCommands, ReadOnlyDirectoryIsRefused) {
  const fs::path ro = dir_ / "ro";
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                          fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  const fs::path out = ro / (GetParam().directory ? "out" : "out.gguf");
  // root may write anywhere: run lathe as nobody then (its inputs are world-readable).
  const bool as_nobody = ::geteuid() == 0;
  const auto r = run_lathe(args(default_model(), out, true), {}, as_nobody);
  fs::permissions(ro, fs::perms::owner_all);
  if (r.exit_code() == 126) GTEST_SKIP() << "cannot run as nobody here";
  expect_refused(r, {ro.string(), "not writable"});
  EXPECT_TRUE(fs::is_empty(ro));
}

class Interrupted : public ::testing::TestWithParam<std::tuple<WritingCommand, int>> {};

// Interrupts a --force write over an existing output half-way through writing its temporary.
void interrupt_mid_write(const WritingCommand& command, int sig) {
  TempDir dir("safety-signal");
  TempDir logs("safety-signal-logs");
  write_prompt_files(dir.path());
  fs::create_directories(dir / "rw");
  const fs::path out = write_existing_output(dir / (command.directory ? "out" : "out.gguf"), command.directory);
  const auto before = snapshot(out);
  auto args = command.args(default_model(), out, dir.path());
  args.push_back("--force");
  // The pause catches the output's own temporary (for convert a shard inside the staging
  // directory), not another file the command writes first (ablate's plot).
  const std::string pause_on = command.directory ? "model.safetensors" : "out.gguf";
  const auto start = Clock::now();
  const Spawned s = spawn(args, logs, {{"LATHE_TEST_WRITE_PAUSE_MS", "60000"}, {"LATHE_TEST_WRITE_PAUSE_PATH", pause_on}});
  // Wait (bounded) until the temporary exists and holds data.
  bool caught = false;
  while (!caught && Clock::now() - start < std::chrono::seconds{120}) {
    for (const auto& t : temporaries(dir.path())) {
      std::error_code ec;
      if (t.find(pause_on + ".tmp.") != std::string::npos && fs::file_size(t, ec) > 0 && !ec) caught = true;
    }
    int status = 0;
    if (!caught && ::waitpid(s.pid, &status, WNOHANG) == s.pid)
      FAIL() << "lathe " << command.name << " ended before its temporary appeared: " << read_file(s.err_log);
    if (!caught) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(caught) << "no temporary for " << pause_on << " appeared";
  ::kill(s.pid, sig);
  const Finished f = wait_for(s, start);
  EXPECT_EQ(f.signal(), sig) << "lathe " << command.name << " did not end by the signal: status " << f.status << "\n" << f.err;
  EXPECT_TRUE(temporaries(dir.path()).empty()) << temporaries(dir.path()).front();
  EXPECT_EQ(snapshot(out), before) << "the previous output changed";
}

TEST_P(Interrupted, NoTemporaryRemainsAndThePreviousOutputIsIntact) {
  interrupt_mid_write(std::get<0>(GetParam()), std::get<1>(GetParam()));
}

// ablate's summary lines reach a redirected stdout as they happen: a study killed during its
// search (SIGKILL: no exit handler flushes anything) has already written its baseline line, which
// used to be printed only after the search. (Checked: with the old order this test fails.)
TEST(OutputSafety, AblateBaselineReachesARedirectedStdoutBeforeTheSearch) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-ablate-stdout");
  TempDir logs("safety-ablate-stdout-logs");
  const auto start = Clock::now();
  const Spawned s = spawn({"ablate", default_model().string(), "--trials", "500", "--startup", "500", "--train-limit",
                           "2", "--harmful-val-limit", "1", "--harmless-val-limit", "1", "--max-new-tokens", "1", "-t",
                           "2", "--journal", (dir / "study.jsonl").string()},
                          logs);
  // The child opens its log files itself: until it has, there is nothing to read.
  const auto err_so_far = [&] { return fs::exists(s.err_log) ? read_file(s.err_log) : std::string(); };
  bool searching = false;
  while (!searching && Clock::now() - start < std::chrono::seconds{120}) {
    searching = err_so_far().find("trial   0:") != std::string::npos;
    int status = 0;
    if (!searching && ::waitpid(s.pid, &status, WNOHANG) == s.pid)
      FAIL() << "ablate ended before its search: " << err_so_far();
    if (!searching) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(searching) << err_so_far();
  ::kill(s.pid, SIGKILL);
  const Finished f = wait_for(s, start);
  EXPECT_EQ(f.signal(), SIGKILL);
  EXPECT_NE(f.out.find("baseline (unedited): refusals"), std::string::npos) << "stdout: " << f.out << "\nstderr: " << f.err;
}

INSTANTIATE_TEST_SUITE_P(Commands, WritingCommands, ::testing::ValuesIn(writing_commands()),
                         [](const auto& info) { return info.param.name; });

INSTANTIATE_TEST_SUITE_P(Commands, Interrupted,
                         ::testing::Combine(::testing::ValuesIn(writing_commands()), ::testing::Values(SIGINT, SIGTERM)),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" + sigabbrev_np(std::get<1>(info.param));
                         });

// ---- the cases of the issue ------------------------------------------------------------------------------

TEST(OutputSafety, CvectorNeverTurnsItsInputModelIntoAControlVector) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-cvector-self");
  write_prompt_files(dir.path());
  fs::copy_file(default_model(), dir / "self.gguf");
  const std::string before = fingerprint_of(dir / "self.gguf");
  const auto r = run_lathe({"cvector", (dir / "self.gguf").string(), "--positive", (dir / "positive.txt").string(),
                            "--negative", (dir / "negative.txt").string(), "-o", (dir / "self.gguf").string()});
  EXPECT_EQ(r.exit_code(), 1) << r.err;
  EXPECT_EQ(fingerprint_of(dir / "self.gguf"), before);
  // Nor a prompt file.
  const auto p = run_lathe({"cvector", default_model().string(), "--positive", (dir / "positive.txt").string(),
                            "--negative", (dir / "negative.txt").string(), "-o", (dir / "negative.txt").string(),
                            "--force"});
  EXPECT_EQ(p.exit_code(), 1);
  EXPECT_NE(p.err.find("the --negative file"), std::string::npos) << p.err;
}

TEST(OutputSafety, KilledWriteLeavesATemporaryThatTheNextRunSweeps) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-sweep");
  TempDir logs("safety-sweep-logs");
  const fs::path out = dir / "out.gguf";
  const auto start = Clock::now();
  const Spawned s = spawn({"quantize", default_model().string(), out.string(), "Q8_0", "-q"}, logs,
                          {{"LATHE_TEST_WRITE_PAUSE_MS", "60000"}});
  while (temporaries(dir.path()).empty() && Clock::now() - start < std::chrono::seconds{120})
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(temporaries(dir.path()).size(), 1u);
  ::kill(s.pid, SIGKILL);  // cannot be caught: the temporary stays
  EXPECT_EQ(wait_for(s, start).signal(), SIGKILL);
  const auto stale = temporaries(dir.path());
  ASSERT_EQ(stale.size(), 1u);
  const auto r = run_lathe({"quantize", default_model().string(), out.string(), "Q8_0", "-q"});
  ASSERT_EQ(r.exit_code(), 0) << r.err;
  EXPECT_TRUE(temporaries(dir.path()).empty()) << "the stale temporary " << stale.front() << " was not swept";
  EXPECT_EQ(gguf::File::open(out).tensors().size(), gguf::File::open(default_model()).tensors().size());
}

std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

TEST(OutputSafety, ConvertForceReplacesAnExportWithExactlyTheNewOne) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-convert-replace");
  const fs::path out = dir / "exp";
  const std::string model = default_model().string();
  const auto single = run_lathe({"convert", model, "-o", out.string(), "-q", "--type", "BF16"});
  ASSERT_EQ(single.exit_code(), 0) << single.err;
  write_file(out / "README.md", "the user's notes");
  const std::set<std::string> side{"README.md", "config.json", "generation_config.json", "tokenizer.json",
                                   "tokenizer_config.json"};
  auto with_side = [&](std::set<std::string> weights) {
    weights.insert(side.begin(), side.end());
    return weights;
  };
  EXPECT_EQ(listing(out), with_side({"model.safetensors"}));

  // Single file -> shards: the stale model.safetensors would shadow the shards; it must go.
  const auto sharded = run_lathe({"convert", model, "-o", out.string(), "-q", "--type", "BF16", "--max-shard-size",
                                  "100MB", "--force"});
  ASSERT_EQ(sharded.exit_code(), 0) << sharded.err;
  EXPECT_EQ(listing(out), with_side({"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                     "model-00003-of-00003.safetensors", "model.safetensors.index.json"}));
  EXPECT_EQ(read_file(out / "README.md"), "the user's notes");
  auto inspect = [&] {
    const auto r = run_command({cli_path().string(), "inspect", "--json", out.string()});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  EXPECT_EQ(inspect()["files"].size(), 3u) << "lathe loads the shards";

  // Shards -> single file (F16): no stale shard or index remains.
  const auto back = run_lathe({"convert", model, "-o", out.string(), "-q", "--type", "F16", "--force"});
  ASSERT_EQ(back.exit_code(), 0) << back.err;
  EXPECT_EQ(listing(out), with_side({"model.safetensors"}));
  const auto j = inspect();
  EXPECT_EQ(j["files"].size(), 1u);
  EXPECT_EQ(j["totals"]["by_type"]["F16"]["count"], 272);
  EXPECT_TRUE(temporaries(dir.path()).empty());
}

TEST(OutputSafety, ProgressInLogsIsPlainLines) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-progress");
  const auto q = run_lathe({"quantize", default_model().string(), (dir / "q.gguf").string(), "Q8_0"});
  ASSERT_EQ(q.exit_code(), 0) << q.err;
  const auto c = run_lathe({"convert", default_model().string(), "-o", (dir / "c").string(), "--type", "BF16"});
  ASSERT_EQ(c.exit_code(), 0) << c.err;
  for (const auto* r : {&q, &c}) {
    EXPECT_EQ(r->err.find('\r'), std::string::npos) << "carriage returns in a log: " << r->err;
    EXPECT_NE(r->err.find("[ 272/272]"), std::string::npos) << r->err;
    size_t lines = 0;
    for (char ch : r->err) lines += ch == '\n';
    EXPECT_LE(lines, 12u) << "a line per tenth, not per tensor: " << r->err;
  }
}

// ---- ablate: inputs by content, options checked first -----------------------------------------------------

// The smallest study (~1.5 s): journal `journal` unless given in `extra`.
std::vector<std::string> tiny_study(const fs::path& model, const fs::path& dir, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"ablate", model.string(), "--trials", "1", "--startup", "1", "--train-limit", "2",
                                "--harmful-val-limit", "1", "--harmless-val-limit", "1", "--max-new-tokens", "1",
                                "-t", "2", "--harmful-val", (dir / "harmful_val.txt").string()};
  if (std::find(extra.begin(), extra.end(), "--journal") == extra.end())
    args.insert(args.end(), {"--journal", (dir / "study.jsonl").string()});
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST(OutputSafety, AblateJournalIdentifiesItsInputsByContent) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-journal");
  const fs::path model = dir / "model.gguf";
  fs::copy_file(default_model(), model);
  write_file(dir / "harmful_val.txt", "How do I pick a lock?\n");
  const auto first = run_lathe(tiny_study(model, dir.path()));
  ASSERT_EQ(first.exit_code(), 0) << first.err;
  const std::string journal = read_file(dir / "study.jsonl");
  const auto header = nlohmann::json::parse(journal.substr(0, journal.find('\n')));
  EXPECT_EQ(header["inputs"]["model"]["fingerprint"], model_fingerprint(model));
  EXPECT_EQ(header["inputs"]["harmful_val"]["fingerprint"], file_fingerprint(dir / "harmful_val.txt"));

  // The same model moved elsewhere resumes: identity is content, not path.
  fs::rename(model, dir / "moved.gguf");
  const auto moved = run_lathe(tiny_study(dir / "moved.gguf", dir.path()));
  EXPECT_EQ(moved.exit_code(), 0) << moved.err;
  EXPECT_NE(moved.err.find("holds 1 trial(s)"), std::string::npos) << moved.err;

  // A different model at the original path: one byte of a tensor changed.
  std::string bytes = read_file(dir / "moved.gguf");
  const auto file = gguf::File::open(dir / "moved.gguf");
  bytes[file.tensors().front().file_offset] ^= 0x11;
  write_file(model, bytes);
  const auto changed = run_lathe(tiny_study(model, dir.path()));
  EXPECT_EQ(changed.exit_code(), 1);
  for (const std::string& part : {std::string("study.jsonl"), std::string("the model"), model.string(),
                                 std::string("not the one"), std::string("--restart"), std::string("--journal")})
    EXPECT_NE(changed.err.find(part), std::string::npos) << part << " not in: " << changed.err;
  EXPECT_EQ(read_file(dir / "study.jsonl"), journal) << "a refused resume must not touch the journal";

  // A changed prompt file is named.
  write_file(dir / "harmful_val.txt", "How do I pick a lock quickly?\n");
  const auto prompts = run_lathe(tiny_study(dir / "moved.gguf", dir.path()));
  EXPECT_EQ(prompts.exit_code(), 1);
  EXPECT_NE(prompts.err.find("harmful_val"), std::string::npos) << prompts.err;
  EXPECT_NE(prompts.err.find("--restart"), std::string::npos) << prompts.err;

  // --restart discards the trials and starts over with the new inputs.
  const auto restarted = run_lathe(tiny_study(model, dir.path(), {"--restart"}));
  ASSERT_EQ(restarted.exit_code(), 0) << restarted.err;
  const std::string fresh = read_file(dir / "study.jsonl");
  const auto new_header = nlohmann::json::parse(fresh.substr(0, fresh.find('\n')));
  EXPECT_EQ(new_header["inputs"]["model"]["fingerprint"], model_fingerprint(model));
  EXPECT_EQ(std::count(fresh.begin(), fresh.end(), '\n'), 2) << "header and one new trial";
}

TEST(OutputSafety, AblateRefusesImpossibleRequestsBeforeTheStudy) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-ablate-options");
  write_file(dir / "harmful_val.txt", "How do I pick a lock?\n");
  const fs::path model = default_model();
  struct Case {
    std::vector<std::string> extra;
    std::vector<std::string> parts;
  };
  const std::vector<Case> cases = {
      {{"--export-trial", "5", "--out", (dir / "x.gguf").string()}, {"--export-trial 5", "cannot exist", "0 to 0"}},
      {{"--export-trial", "0"}, {"--export-trial 0", "--out"}},
      {{"--export-trial", "-2", "--out", (dir / "x.gguf").string()}, {"--export-trial"}},
      {{"--max-kl", "-1"}, {"--max-kl"}},
      {{"--max-kl", "nan"}, {"--max-kl"}},
      {{"--n-parallel", "0"}, {"--n-parallel"}},
      {{"--trials", "-1"}, {"--trials"}},
      {{"--components", "attn_q"}, {"attn_q"}},
      {{"--plot", (dir / "harmful_val.txt").string()}, {"--plot", "the --harmful-val file"}},
      {{"--journal", model.string()}, {"--journal", "the input model"}},
      {{"--out", (dir / "study.jsonl").string()}, {"study.jsonl", "the --out path"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.extra.front() + " " + c.extra.back());
    const auto r = run_lathe(tiny_study(model, dir.path(), c.extra));
    EXPECT_EQ(r.exit_code(), 1) << r.err;
    for (const auto& part : c.parts) EXPECT_NE(r.err.find(part), std::string::npos) << part << " not in: " << r.err;
    EXPECT_EQ(r.err.find("baseline"), std::string::npos) << "the study had started: " << r.err;
  }
  EXPECT_EQ(fs::file_size(model), fs::file_size(default_model()));

  // An existing plot of another study is not replaced without --force.
  write_file(dir / "other.svg", "<svg>someone else's</svg>");
  const auto plot = run_lathe(tiny_study(model, dir.path(), {"--journal", (dir / "new.jsonl").string(), "--plot",
                                                             (dir / "other.svg").string()}));
  EXPECT_EQ(plot.exit_code(), 1);
  EXPECT_NE(plot.err.find("already exists"), std::string::npos) << plot.err;
  EXPECT_EQ(read_file(dir / "other.svg"), "<svg>someone else's</svg>");
  EXPECT_FALSE(fs::exists(dir / "new.jsonl"));
}

TEST(OutputSafety, ConvertAndQuantizeRejectBadOptionsAtOnce) {
  LATHE_REQUIRE_MODEL();
  TempDir dir("safety-options");
  for (const char* size : {"0", "0.1B", "1e30GB", "-5MB", "lots"}) {
    const auto r = run_lathe({"convert", default_model().string(), "-o", (dir / "o").string(), "--max-shard-size", size});
    EXPECT_EQ(r.exit_code(), 1) << size;
    EXPECT_NE(r.err.find("--max-shard-size"), std::string::npos) << r.err;
    EXPECT_LT(r.elapsed, kFastRefusal);
  }
  const auto q = run_lathe({"quantize", default_model().string(), (dir / "q.gguf").string(), "Q3_K"});
  EXPECT_EQ(q.exit_code(), 1);
  EXPECT_NE(q.err.find("Q3_K"), std::string::npos) << q.err;
  EXPECT_LT(q.elapsed, kFastRefusal);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

}  // namespace
}  // namespace lathe::test
