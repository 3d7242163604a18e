// The data-safety layer under every writing command: output checks (io/output_path.hpp), the
// registry of temporaries and its signal handler, the sweep of stale temporaries
// (io/temp_files.hpp), AtomicFileWriter under signals, the staged directory export that never
// shows a reader a mix of two exports, and content fingerprints (io/fingerprint.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "io/fingerprint.hpp"
#include "io/gguf.hpp"
#include "io/mapped_file.hpp"
#include "io/output_path.hpp"
#include "io/temp_files.hpp"
#include "lathe/convert.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;
using test::expect_error;
using test::read_file;
using test::TempDir;
using test::write_file;
using Kind = OutputRequest::Kind;

std::set<std::string> listing(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// Every path under `dir` whose name holds ".tmp." or starts with ".lathe-".
std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp.") != std::string::npos || name.starts_with(".lathe-")) found.push_back(e.path().string());
  }
  return found;
}

// A process id that is certainly gone: a child that exited and was reaped.
long dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) _exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

// Runs `body` in a child process and returns its wait status.
int in_child(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// ---- output checks -----------------------------------------------------------------------------------

TEST(WeightNames, SafetensorsExportFiles) {
  for (const char* yes : {"model.safetensors", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                          "model-000010-of-000012.safetensors"})
    EXPECT_TRUE(is_safetensors_weight_name(yes)) << yes;
  for (const char* no : {"config.json", "model.gguf", "model-1-of-3.safetensors", "model-00001-of-0000x.safetensors",
                         "adapter_model.safetensors", "model-00001-00003.safetensors", "xmodel.safetensors"})
    EXPECT_FALSE(is_safetensors_weight_name(no)) << no;
}

TEST(SameFile, PathsLinksAndHardLinks) {
  TempDir dir("same_file");
  write_file(dir / "a", "a");
  write_file(dir / "b", "a");
  fs::create_symlink("a", dir / "link");
  fs::create_hard_link(dir / "a", dir / "hard");
  fs::create_directories(dir / "sub");
  EXPECT_TRUE(same_file(dir / "a", dir / "a"));
  EXPECT_TRUE(same_file(dir / "a", dir / "sub" / ".." / "a"));
  EXPECT_TRUE(same_file(dir / "link", dir / "a"));
  EXPECT_TRUE(same_file(dir / "hard", dir / "a"));
  EXPECT_FALSE(same_file(dir / "b", dir / "a"));
  EXPECT_FALSE(same_file(dir / "missing", dir / "a"));
  EXPECT_TRUE(same_file(dir / "missing", dir / "sub" / ".." / "missing"));
}

TEST(CheckOutput, RefusesTheInputAlsoThroughLinksEvenWithForce) {
  TempDir dir("check_input");
  write_file(dir / "model.gguf", "model");
  fs::create_symlink("model.gguf", dir / "link.gguf");
  fs::create_hard_link(dir / "model.gguf", dir / "hard.gguf");
  for (const char* out : {"model.gguf", "link.gguf", "hard.gguf"}) {
    expect_error<InvalidArgumentError>(
        [&] {
          check_output({.flag = "-o", .path = dir / out, .kind = Kind::File, .force = true,
                        .inputs = {{"the input model", dir / "model.gguf"}}, .managed = {}});
        },
        {"-o", (dir / out).string(), "is the input model", "choose another output path"});
  }
  // The input given through the link, the output by its real name.
  expect_error<InvalidArgumentError>(
      [&] {
        check_output({.flag = "-o", .path = dir / "model.gguf", .kind = Kind::File, .force = true,
                      .inputs = {{"the input model", dir / "link.gguf"}}, .managed = {}});
      },
      {"through a link"});
  EXPECT_EQ(read_file(dir / "model.gguf"), "model");
}

TEST(CheckOutput, ExistingOutputsNeedForce) {
  TempDir dir("check_exists");
  write_file(dir / "out.gguf", "precious");
  const OutputRequest file{.flag = "-o", .path = dir / "out.gguf", .kind = Kind::File, .force = false, .inputs = {},
                           .managed = {}};
  expect_error<InvalidArgumentError>([&] { check_output(file); }, {"out.gguf", "already exists", "--force"});
  auto forced = file;
  forced.force = true;
  EXPECT_NO_THROW(check_output(forced));
  // A directory where a file goes, a file where a directory goes.
  fs::create_directories(dir / "d");
  expect_error<InvalidArgumentError>(
      [&] { check_output({.flag = "-o", .path = dir / "d", .kind = Kind::File, .force = true, .inputs = {}, .managed = {}}); },
      {"is a directory"});
  expect_error<InvalidArgumentError>(
      [&] {
        check_output({.flag = "-o", .path = dir / "out.gguf", .kind = Kind::Directory, .force = true, .inputs = {},
                      .managed = {}});
      },
      {"not a directory"});
  // An empty directory is fine without force, a non-empty one is not.
  const OutputRequest directory{.flag = "-o", .path = dir / "d", .kind = Kind::Directory, .force = false, .inputs = {},
                                .managed = {}};
  EXPECT_NO_THROW(check_output(directory));
  write_file(dir / "d" / "notes.txt", "x");
  expect_error<InvalidArgumentError>([&] { check_output(directory); }, {"not empty", "--force", "left alone"});
  expect_error<InvalidArgumentError>(
      [&] { check_output({.flag = "--out", .path = "", .kind = Kind::File, .force = true, .inputs = {}, .managed = {}}); },
      {"--out", "no path"});
}

TEST(CheckOutput, MissingParentIsRefusedAndNotCreated) {
  TempDir dir("check_parent");
  for (auto kind : {Kind::File, Kind::Directory}) {
    expect_error<NotFoundError>(
        [&] {
          check_output({.flag = "-o", .path = dir / "no" / "such" / "out", .kind = kind, .force = false, .inputs = {},
                        .managed = {}});
        },
        {(dir / "no" / "such").string(), "does not exist", "mkdir -p"});
  }
  EXPECT_FALSE(fs::exists(dir / "no"));
  // "new/" is created in its parent, which exists.
  EXPECT_NO_THROW(check_output({.flag = "-o", .path = dir.path() / "new" / "", .kind = Kind::Directory, .force = false,
                                .inputs = {}, .managed = {}}));
  write_file(dir / "file", "x");
  expect_error<InvalidArgumentError>(
      [&] {
        check_output({.flag = "-o", .path = dir / "file" / "out", .kind = Kind::File, .force = false, .inputs = {},
                      .managed = {}});
      },
      {"is not a directory"});
}

TEST(CheckOutput, ReadOnlyDirectoryIsRefused) {
  TempDir dir("check_readonly");
  fs::create_directories(dir / "ro");
  fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                  fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  // root writes anywhere: check as an unprivileged user in a child process then.
  const int status = in_child([&] {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) _exit(3);
    try {
      check_output({.flag = "-o", .path = dir / "ro" / "out.gguf", .kind = Kind::File, .force = false, .inputs = {},
                    .managed = {}});
    } catch (const IoError& e) {
      _exit(std::string(e.what()).find("not writable") != std::string::npos ? 0 : 1);
    } catch (...) {
      _exit(2);
    }
    _exit(4);
  });
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) GTEST_SKIP() << "cannot drop root privileges here";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: wrong message, 2: wrong error, 4: accepted";
  fs::permissions(dir / "ro", fs::perms::owner_all);
}

TEST(CheckOutput, DirectoryExportNeverReplacesAnInputInsideIt) {
  TempDir dir("check_inside");
  fs::create_directories(dir / "out");
  write_file(dir / "out" / "model.safetensors", "input weights");
  write_file(dir / "out" / "config.json", "{}");
  write_file(dir / "out" / "notes.gguf", "another input");
  auto managed = [](std::string_view name) { return name == "config.json"; };
  for (const char* input : {"model.safetensors", "config.json"}) {
    expect_error<InvalidArgumentError>(
        [&] {
          check_output({.flag = "-o", .path = dir / "out", .kind = Kind::Directory, .force = true,
                        .inputs = {{"the input model", dir / "out" / input}}, .managed = managed});
        },
        {"holds the input model", input, "another output directory"});
  }
  EXPECT_NO_THROW(check_output({.flag = "-o", .path = dir / "out", .kind = Kind::Directory, .force = true,
                                .inputs = {{"the input model", dir / "out" / "notes.gguf"}}, .managed = managed}));
  // A file output that would replace a file of an input model directory.
  expect_error<InvalidArgumentError>(
      [&] {
        check_output({.flag = "--plot", .path = dir / "out" / "config.json", .kind = Kind::File, .force = true,
                      .inputs = {{"the input model", dir / "out"}}, .managed = {}});
      },
      {"--plot", "would replace a file of the input model"});
  EXPECT_NO_THROW(check_output({.flag = "--plot", .path = dir / "out" / "plot.svg", .kind = Kind::File, .force = true,
                                .inputs = {{"the input model", dir / "out"}}, .managed = {}}));
}

// ---- temporaries ----------------------------------------------------------------------------------------

TEST(Temporaries, OwnerParsing) {
  EXPECT_EQ(temporary_owner("out.gguf.tmp.123", "out.gguf"), 123);
  EXPECT_EQ(temporary_owner("out.gguf.tmp.", "out.gguf"), -1);
  EXPECT_EQ(temporary_owner("out.gguf.tmp.12a", "out.gguf"), -1);
  EXPECT_EQ(temporary_owner("xout.gguf.tmp.12", "out.gguf"), -1);
  EXPECT_EQ(temporary_owner("out.gguf", "out.gguf"), -1);
  EXPECT_EQ(temporary_path_for("d/x.gguf").string(), "d/x.gguf.tmp." + std::to_string(::getpid()));
}

TEST(Temporaries, SweepRemovesOnlyThoseOfDeadProcessesForTheNamesGiven) {
  TempDir dir("sweep");
  const std::string dead = std::to_string(dead_pid());
  const std::string mine = std::to_string(::getpid());
  write_file(dir / ("out.gguf.tmp." + dead), "stale");
  fs::create_directories(dir / ("exp.tmp." + dead) / "inner");
  write_file(dir / ("exp.tmp." + dead) / "inner" / "shard", "stale");
  write_file(dir / ("out.gguf.tmp." + mine), "ours, live");
  write_file(dir / "out.gguf.tmp.1", "init is alive");
  write_file(dir / ("other.gguf.tmp." + dead), "not a name we write");
  write_file(dir / "out.gguf.tmp.12ab", "not a pid");
  const auto removed = sweep_stale_temporaries(dir.path(), {"out.gguf", "exp"});
  EXPECT_EQ(removed.size(), 2u);
  EXPECT_EQ(listing(dir.path()), (std::set<std::string>{"out.gguf.tmp." + mine, "out.gguf.tmp.1", "other.gguf.tmp." + dead,
                                                        "out.gguf.tmp.12ab"}));
}

class SignalCleanup : public ::testing::TestWithParam<int> {};

TEST_P(SignalCleanup, RegisteredFilesAndDirectoriesAreRemovedAndTheSignalStillEndsTheProcess) {
  TempDir dir("signal");
  const fs::path file = dir / "out.gguf.tmp.x", tree = dir / "stage.tmp.x";
  const int status = in_child([&] {
    write_file(file, "partial");
    fs::create_directories(tree / "a" / "b");
    write_file(tree / "one", "1");
    write_file(tree / "a" / "b" / "two", "2");
    TemporaryRegistration f(file, TemporaryRegistration::Kind::File);
    TemporaryRegistration d(tree, TemporaryRegistration::Kind::Directory);
    ::raise(GetParam());
    _exit(0);  // not reached
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << status;
  EXPECT_EQ(WTERMSIG(status), GetParam());
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(tree));
}

INSTANTIATE_TEST_SUITE_P(Signals, SignalCleanup, ::testing::Values(SIGINT, SIGTERM, SIGHUP),
                         [](const auto& info) { return std::string(sigabbrev_np(info.param)); });

TEST(Temporaries, ForgottenRegistrationsAreLeftAlone) {
  TempDir dir("signal_forgotten");
  const int status = in_child([&] {
    write_file(dir / "kept", "done");
    { TemporaryRegistration r(dir / "kept", TemporaryRegistration::Kind::File); }
    ::raise(SIGTERM);
  });
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(read_file(dir / "kept"), "done");
}

TEST(Temporaries, DeferredSignalActsWhenTheDeferralEnds) {
  TempDir dir("signal_deferred");
  const int status = in_child([&] {
    write_file(dir / "t.tmp.1", "partial");
    TemporaryRegistration r(dir / "t.tmp.1", TemporaryRegistration::Kind::File);
    {
      SignalDeferral hold;
      ::raise(SIGINT);
      write_file(dir / "marker", "the deferred section ran to its end");
    }
    write_file(dir / "after", "must not run");
  });
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGINT);
  EXPECT_TRUE(fs::exists(dir / "marker"));
  EXPECT_FALSE(fs::exists(dir / "after"));
  EXPECT_FALSE(fs::exists(dir / "t.tmp.1"));
}

// ---- AtomicFileWriter ---------------------------------------------------------------------------------

TEST(AtomicFileWriterSafety, InterruptedWriteKeepsTheOldFileAndLeavesNoTemporary) {
  TempDir dir("atomic_signal");
  write_file(dir / "out.gguf", "the user's file");
  for (int sig : {SIGINT, SIGTERM}) {
    const int status = in_child([&] {
      AtomicFileWriter w(dir / "out.gguf");
      w.write("half of the new", 15);
      ::raise(sig);
    });
    ASSERT_TRUE(WIFSIGNALED(status));
    EXPECT_EQ(WTERMSIG(status), sig);
    EXPECT_EQ(read_file(dir / "out.gguf"), "the user's file");
    EXPECT_EQ(listing(dir.path()), std::set<std::string>{"out.gguf"});
  }
}

TEST(AtomicFileWriterSafety, SweepsStaleTemporariesOfItsOutput) {
  TempDir dir("atomic_sweep");
  const std::string stale = "out.gguf.tmp." + std::to_string(dead_pid());
  write_file(dir / stale, std::string(1000, 'x'));
  AtomicFileWriter w(dir / "out.gguf");
  EXPECT_FALSE(fs::exists(dir / stale));
  w.write("new", 3);
  w.commit();
  EXPECT_EQ(read_file(dir / "out.gguf"), "new");
  EXPECT_EQ(listing(dir.path()), std::set<std::string>{"out.gguf"});
}

// ---- StagedDirectory ------------------------------------------------------------------------------------

// An export whose every file starts with its tag ("A" or "B"); the index lists its shards.
void write_export(const fs::path& dir, char tag, size_t n_shards, bool tokenizer) {
  fs::create_directories(dir);
  write_file(dir / "config.json", std::string(1, tag));
  if (tokenizer) write_file(dir / "tokenizer.json", std::string(1, tag));
  if (n_shards == 1) {
    write_file(dir / "model.safetensors", std::string(1, tag));
    return;
  }
  std::string index(1, tag);
  for (size_t i = 1; i <= n_shards; ++i) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", i, n_shards);
    write_file(dir / name, std::string(1, tag));
    index += "," + name;
  }
  write_file(dir / "model.safetensors.index.json", index);
}

// What a loader reading `dir` right now would load: "A", "B", "none" (no weights: it fails) or
// "mix" (weights or configuration of two exports).
std::string reader_sees(const fs::path& dir) {
  std::string weights;
  if (fs::exists(dir / "model.safetensors")) {
    weights = read_file(dir / "model.safetensors");
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const std::string index = read_file(dir / "model.safetensors.index.json");
    weights = index.substr(0, 1);
    size_t pos = 1;
    while (pos < index.size()) {
      const size_t next = index.find(',', pos + 1);
      const std::string shard = index.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
      if (!fs::exists(dir / shard) || read_file(dir / shard) != weights) return "mix";
      pos = next == std::string::npos ? index.size() : next;
    }
  } else {
    return "none";
  }
  if (read_file(dir / "config.json") != weights) return "mix";
  if (fs::exists(dir / "tokenizer.json") && read_file(dir / "tokenizer.json") != weights) return "mix";
  return weights;
}

TEST(StagedDirectorySafety, NewDirectoryAppearsComplete) {
  TempDir dir("staged_new");
  {
    StagedDirectory staged(dir / "exp");
    EXPECT_EQ(staged.staging().parent_path(), dir.path());
    write_export(staged.staging(), 'A', 2, true);
    EXPECT_FALSE(fs::exists(dir / "exp"));
    staged.commit();
  }
  EXPECT_EQ(reader_sees(dir / "exp"), "A");
  EXPECT_EQ(listing(dir.path()), std::set<std::string>{"exp"});
  {
    StagedDirectory slash(dir.path() / "exp2" / "");  // "exp2/"
    write_export(slash.staging(), 'B', 1, false);
    slash.commit();
  }
  EXPECT_EQ(reader_sees(dir / "exp2"), "B");
  fs::remove_all(dir / "exp2");
  {
    StagedDirectory abandoned(dir / "never");
    write_export(abandoned.staging(), 'A', 1, false);
  }  // an exception before commit: nothing stays behind
  EXPECT_EQ(listing(dir.path()), std::set<std::string>{"exp"});
}

struct Replacement {
  size_t old_shards, new_shards;
  bool old_tokenizer, new_tokenizer;
};

class StagedReplace : public ::testing::TestWithParam<Replacement> {};

TEST_P(StagedReplace, ReaderSeesOldNoneOrNewNeverAMixAndExactlyTheNewFilesRemain) {
  const auto p = GetParam();
  TempDir dir("staged_replace");
  const fs::path out = dir / "exp";
  write_export(out, 'A', p.old_shards, p.old_tokenizer);
  // Leftovers of an even older export and unrelated files.
  write_file(out / "model-00009-of-00009.safetensors", "Z");
  write_file(out / "README.md", "keep me");
  fs::create_directories(out / "notes");
  write_file(out / "notes" / "n.txt", "keep me too");

  StagedDirectory staged(out);
  write_export(staged.staging(), 'B', p.new_shards, p.new_tokenizer);
  const auto new_files = listing(staged.staging());
  std::vector<std::string> states{reader_sees(out)};
  staged.commit([](std::string_view name) { return name == "config.json" || name == "tokenizer.json"; },
                [&] { states.push_back(reader_sees(out)); });
  // A, then possibly no weights, then B: never a mix, never back.
  ASSERT_GE(states.size(), 2u);
  EXPECT_EQ(states.front(), "A");
  EXPECT_EQ(states.back(), "B");
  size_t phase = 0;  // 0: A, 1: none, 2: B
  for (const auto& s : states) {
    ASSERT_NE(s, "mix");
    const size_t now = s == "A" ? 0 : s == "none" ? 1 : 2;
    EXPECT_GE(now, phase) << "a reader went back to an earlier state";
    phase = now;
  }
  auto expected = new_files;
  expected.insert({"README.md", "notes"});
  EXPECT_EQ(listing(out), expected);
  EXPECT_EQ(read_file(out / "notes" / "n.txt"), "keep me too");
  EXPECT_TRUE(leftovers(dir.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(Exports, StagedReplace,
                         ::testing::Values(Replacement{1, 3, true, true}, Replacement{3, 1, true, false},
                                           Replacement{2, 4, false, true}, Replacement{1, 1, true, true},
                                           Replacement{4, 2, true, true}),
                         [](const auto& info) {
                           return fmt::format("{}to{}{}", info.param.old_shards, info.param.new_shards,
                                              info.param.new_tokenizer ? "" : "NoTokenizer");
                         });

TEST(StagedDirectorySafety, InterruptedExportLeavesTheOldOneIntact) {
  TempDir dir("staged_signal");
  const fs::path out = dir / "exp";
  write_export(out, 'A', 2, true);
  for (int sig : {SIGINT, SIGTERM}) {
    const int status = in_child([&] {
      StagedDirectory staged(out);
      write_export(staged.staging(), 'B', 3, true);
      AtomicFileWriter w(staged.staging() / "extra.json");
      w.write("{", 1);
      ::raise(sig);
    });
    ASSERT_TRUE(WIFSIGNALED(status));
    EXPECT_EQ(reader_sees(out), "A");
    EXPECT_TRUE(leftovers(dir.path()).empty()) << leftovers(dir.path()).front();
  }
}

TEST(StagedDirectorySafety, StaleStagingOfDeadProcessesIsSwept) {
  TempDir dir("staged_sweep");
  const std::string dead = std::to_string(dead_pid());
  write_export(dir / "exp", 'A', 1, false);
  fs::create_directories(dir / "exp" / (".lathe-staging.tmp." + dead));
  fs::create_directories(dir / ("new.tmp." + dead));
  { StagedDirectory a(dir / "exp"); }
  { StagedDirectory b(dir / "new"); }
  EXPECT_TRUE(leftovers(dir.path()).empty());
}

// ---- fingerprints ---------------------------------------------------------------------------------------

TEST(Fingerprint, ModelFingerprintFollowsContentNotPath) {
  TempDir dir("fingerprint");
  test::TinyModel tiny;
  const auto a = tiny.write(dir, "a.gguf");
  const std::string fp = model_fingerprint(a);
  EXPECT_TRUE(fp.starts_with("sha256:")) << fp;
  EXPECT_EQ(fp.size(), 7u + 64u);
  EXPECT_EQ(model_fingerprint(a), fp);
  fs::copy_file(a, dir / "moved.gguf");
  EXPECT_EQ(model_fingerprint(dir / "moved.gguf"), fp) << "the same content at another path is the same model";

  const auto file = gguf::File::open(a);
  std::string bytes = read_file(a);
  auto changed_at = [&](uint64_t offset) {
    std::string copy = bytes;
    copy[offset] = static_cast<char>(copy[offset] ^ 0x5a);
    write_file(dir / "changed.gguf", copy);
    return model_fingerprint(dir / "changed.gguf");
  };
  // A metadata byte (the architecture string's last letter), the first byte of a tensor's data.
  const uint64_t arch = bytes.find("llama");
  ASSERT_NE(arch, std::string::npos);
  EXPECT_NE(changed_at(arch + 4), fp);
  EXPECT_NE(changed_at(file.tensors().front().file_offset), fp);
  EXPECT_NE(changed_at(file.tensors().back().file_offset + file.tensors().back().n_bytes - 1), fp);

  test::TinyModel other("", DType::Q8_0);
  EXPECT_NE(model_fingerprint(other.write(dir, "q8.gguf")), fp);
}

TEST(Fingerprint, HuggingFaceDirectoryAndFiles) {
  TempDir dir("fingerprint_hf");
  test::TinyModel tiny;
  const auto gguf_path = tiny.write(dir, "tiny.gguf");
  ConvertOptions options;
  options.out_dir = (dir / "hf").string();
  options.max_shard_bytes = 40'000;
  convert_gguf_to_hf(gguf_path.string(), options);
  const std::string fp = model_fingerprint(dir / "hf");
  EXPECT_EQ(model_fingerprint(dir / "hf"), fp);
  EXPECT_NE(fp, model_fingerprint(gguf_path));
  write_file(dir / "hf" / "config.json", read_file(dir / "hf" / "config.json") + " ");
  EXPECT_NE(model_fingerprint(dir / "hf"), fp);

  write_file(dir / "abc.txt", "abc");
  EXPECT_EQ(file_fingerprint(dir / "abc.txt"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_THROW(file_fingerprint(dir / "missing.txt"), NotFoundError);
}

}  // namespace
}  // namespace lathe
