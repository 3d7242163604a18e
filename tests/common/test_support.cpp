#include "common/test_support.hpp"
#include "common/torch_peer.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lathe::test {

std::filesystem::path source_dir() { return LATHE_TEST_SOURCE_DIR; }
std::filesystem::path binary_dir() { return LATHE_TEST_BINARY_DIR; }
std::filesystem::path shared_data_dir() { return source_dir() / "data"; }
std::filesystem::path default_model() { return LATHE_TEST_MODEL; }
std::string oracle_python() { return LATHE_TEST_PYTHON; }

std::string torch_peer_python(const char* env_var) {
  if (const char* env = std::getenv(env_var); env != nullptr && *env != '\0') return env;
  const auto venv = source_dir() / ".venv-peft" / "bin" / "python";
  return std::filesystem::exists(venv) ? venv.string() : "";
}
std::filesystem::path cli_path() { return LATHE_TEST_CLI; }

namespace {
// Reads stdout and stderr of `pid` until both close or `deadline` passes; then reaps the child,
// killing it first when the deadline passed.
CommandResult collect(pid_t pid, int out_fd, int err_fd, std::chrono::seconds timeout) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  CommandResult r;
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  int open_fds = 2;
  char buf[65536];
  while (open_fds > 0) {
    int wait_ms = -1;
    if (timeout.count() > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) {
        r.timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<long long>(left, 1000));
    }
    if (::poll(fds, 2, wait_ms) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;  // poll ignores negative descriptors
        --open_fds;
      }
    }
  }
  if (r.timed_out) ::kill(pid, SIGKILL);
  for (const auto& fd : fds)
    if (fd.fd >= 0) ::close(fd.fd);
  int status = 0;
  rusage usage{};
  while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  r.max_rss_kib = static_cast<uint64_t>(usage.ru_maxrss);  // Linux: KiB
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (r.timed_out) r.err += "\n[test harness] killed after " + std::to_string(timeout.count()) + " s without finishing";
  return r;
}
}  // namespace

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  int out_pipe[2], err_pipe[2];
  if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) throw std::runtime_error("pipe failed");
  // argv is built before fork: the child of a multi-threaded process should only exec.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  return collect(pid, out_pipe[0], err_pipe[0], timeout);
}

CommandResult lathe_cli(std::vector<std::string> args, std::chrono::seconds timeout) {
  args.insert(args.begin(), cli_path().string());
  return run_command(args, timeout);
}

void expect_cli_error(const CommandResult& r, const std::vector<std::string>& parts) {
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' not in: " << r.err;
}

CommandResult run_oracle(const std::string& script, const std::vector<std::string>& args,
                         std::chrono::seconds timeout) {
  std::vector<std::string> argv{oracle_python(), (source_dir() / "tests" / "oracle" / script).string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path_ = binary_dir() / "test-tmp" /
          (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1)));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}
TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path.string());
}

void write_lines(const std::filesystem::path& path, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  write_file(path, text);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace lathe::test
