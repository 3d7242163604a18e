// Running the lathe binary in the background from a test: start it with arguments and extra
// environment (optionally as the unprivileged user nobody), watch it, signal it, wait for it with
// a timeout. For tests of interruption (SIGINT/SIGTERM/SIGKILL mid-run) and of what a running
// command has written so far.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

extern char** environ;

namespace lathe::test {

struct Spawned {
  pid_t pid = -1;
  std::filesystem::path out_log, err_log;
};

// Starts lathe with `args`, extra environment variables, output to log files in `logs`;
// optionally as the unprivileged user nobody (for read-only directories when the tests run as root).
inline Spawned spawn(const std::vector<std::string>& args, const TempDir& logs,
              const std::map<std::string, std::string>& env = {}, bool as_nobody = false) {
  static int counter = 0;
  Spawned s;
  s.out_log = logs / ("out" + std::to_string(counter) + ".log");
  s.err_log = logs / ("err" + std::to_string(counter++) + ".log");
  // Everything the child needs is built before fork: it only redirects, drops privileges and execs.
  std::vector<std::string> argv_strings{cli_path().string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    if (!env.count(entry.substr(0, entry.find('=')))) env_strings.push_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string out_path = s.out_log.string(), err_path = s.err_log.string();

  s.pid = ::fork();
  if (s.pid < 0) throw std::runtime_error("fork failed");
  if (s.pid == 0) {
    const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (out < 0 || err < 0) _exit(125);
    ::dup2(out, 1);
    ::dup2(err, 2);
    // The default actions, whatever the test runner set (a shell's background job ignores SIGINT).
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    if (as_nobody && (::setgid(65534) != 0 || ::setuid(65534) != 0)) _exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  return s;
}

struct Finished {
  int status = 0;
  std::string out, err;
  std::chrono::milliseconds elapsed{0};
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
  int signal() const { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }
};

inline Finished wait_for(const Spawned& s, std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), std::chrono::seconds timeout = std::chrono::seconds{300}) {
  Finished f;
  for (;;) {
    const pid_t r = ::waitpid(s.pid, &f.status, WNOHANG);
    if (r == s.pid) break;
    if (std::chrono::steady_clock::now() - start > timeout) {
      ::kill(s.pid, SIGKILL);
      ::waitpid(s.pid, &f.status, 0);
      f.err = "[test] killed after the timeout\n";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  f.elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  f.out = read_file(s.out_log);
  f.err += read_file(s.err_log);
  return f;
}

}  // namespace lathe::test
