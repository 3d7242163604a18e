#include "io/temp_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

namespace lathe {
namespace {

namespace fs = std::filesystem;

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};

// Slot states: free -> filling (by the registering thread) -> live -> free (unregistered), or
// live -> claimed (by the signal handler, which then removes the path; the process is ending).
enum SlotState : int { kFree = 0, kFilling = 1, kLive = 2, kClaimed = 3 };

struct Slot {
  std::atomic<int> state{kFree};
  bool directory = false;
  char path[PATH_MAX] = {};
};
Slot g_slots[TemporaryRegistration::kMaxTemporaries];
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");

std::atomic<int> g_defer_depth{0};
std::atomic<int> g_pending_signal{0};

// Removes a file or a directory tree with raw system calls only (no allocation): safe in a signal
// handler. Returns whether `name` is gone.
bool remove_tree(int parent_fd, const char* name, int depth) {
  if (::unlinkat(parent_fd, name, 0) == 0 || errno == ENOENT) return true;
  if (depth > 8) return false;
  const int fd = ::openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  alignas(8) char buffer[4096];
  for (bool removed_any = true; removed_any;) {  // passes until one removes nothing
    removed_any = false;
    ::lseek(fd, 0, SEEK_SET);
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buffer, sizeof(buffer));
      if (n <= 0) break;
      for (long offset = 0; offset < n;) {
        const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + offset);
        offset += entry->d_reclen;
        if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
        if (remove_tree(fd, entry->d_name, depth + 1)) removed_any = true;
      }
    }
  }
  ::close(fd);
  return ::unlinkat(parent_fd, name, AT_REMOVEDIR) == 0 || errno == ENOENT;
}

void remove_registered() noexcept {
  for (auto& slot : g_slots) {
    int expected = kLive;
    if (!slot.state.compare_exchange_strong(expected, kClaimed)) continue;
    if (slot.directory) remove_tree(AT_FDCWD, slot.path, 0);
    else ::unlink(slot.path);
  }
}

void raise_with_default_action(int sig) noexcept {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  ::sigaction(sig, &action, nullptr);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  ::raise(sig);  // inside the handler the signal is blocked: it is delivered when the handler returns
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void on_signal(int sig) {
  const int saved_errno = errno;
  if (g_defer_depth.load() > 0) {
    g_pending_signal.store(sig);
    errno = saved_errno;
    return;
  }
  remove_registered();
  raise_with_default_action(sig);
  errno = saved_errno;
}

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : kSignals) {
      struct sigaction previous {};
      if (::sigaction(sig, nullptr, &previous) != 0) continue;
      // Leave alone what someone else chose (SIG_IGN under nohup, a handler of an embedding program).
      if ((previous.sa_flags & SA_SIGINFO) != 0 || previous.sa_handler != SIG_DFL) continue;
      struct sigaction action {};
      action.sa_handler = on_signal;
      sigemptyset(&action.sa_mask);
      for (int other : kSignals) sigaddset(&action.sa_mask, other);
      action.sa_flags = SA_RESTART;
      ::sigaction(sig, &action, nullptr);
    }
  });
}

}  // namespace

fs::path temporary_path_for(const fs::path& path) { return path.string() + ".tmp." + std::to_string(::getpid()); }

TemporaryRegistration::TemporaryRegistration(const fs::path& path, Kind kind) {
  install_handlers();
  std::error_code ec;
  const fs::path absolute = fs::absolute(path, ec);
  const std::string text = (ec ? path : absolute).string();
  if (text.size() >= PATH_MAX) return;
  for (int i = 0; i < kMaxTemporaries; ++i) {
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kFilling)) continue;
    std::memcpy(g_slots[i].path, text.c_str(), text.size() + 1);
    g_slots[i].directory = kind == Kind::Directory;
    g_slots[i].state.store(kLive);
    slot_ = i;
    return;
  }
}

TemporaryRegistration::TemporaryRegistration(TemporaryRegistration&& other) noexcept
    : slot_(std::exchange(other.slot_, -1)) {}

TemporaryRegistration& TemporaryRegistration::operator=(TemporaryRegistration&& other) noexcept {
  if (this != &other) {
    reset();
    slot_ = std::exchange(other.slot_, -1);
  }
  return *this;
}

void TemporaryRegistration::reset() noexcept {
  if (slot_ < 0) return;
  int expected = kLive;
  g_slots[slot_].state.compare_exchange_strong(expected, kFree);  // fails only once the handler claimed it
  slot_ = -1;
}

SignalDeferral::SignalDeferral() {
  install_handlers();
  g_defer_depth.fetch_add(1);
}

SignalDeferral::~SignalDeferral() {
  if (g_defer_depth.fetch_sub(1) != 1) return;
  if (const int sig = g_pending_signal.exchange(0); sig != 0) {
    remove_registered();
    raise_with_default_action(sig);
  }
}

bool process_alive(long pid) noexcept {
  if (pid <= 0 || pid > INT_MAX) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

long temporary_owner(const std::string& entry_name, const std::string& name) {
  const std::string prefix = name + ".tmp.";
  if (entry_name.size() <= prefix.size() || entry_name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = entry_name.substr(prefix.size());
  if (digits.size() > 10) return -1;
  long pid = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    pid = pid * 10 + (c - '0');
  }
  return pid;
}

std::vector<fs::path> sweep_stale_temporaries(const fs::path& dir, const std::vector<std::string>& names) {
  std::vector<fs::path> removed;
  std::error_code ec;
  const fs::path where = dir.empty() ? fs::path(".") : dir;
  for (fs::directory_iterator it(where, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string entry = it->path().filename().string();
    for (const auto& name : names) {
      const long pid = temporary_owner(entry, name);
      if (pid <= 0 || pid == ::getpid() || process_alive(pid)) continue;
      std::error_code remove_ec;
      fs::remove_all(it->path(), remove_ec);
      if (!remove_ec) removed.push_back(it->path());
      break;
    }
  }
  return removed;
}

unsigned test_write_pause_ms(const std::string& temporary) noexcept {
  static const unsigned value = [] {
    const char* text = std::getenv("LATHE_TEST_WRITE_PAUSE_MS");
    return text == nullptr ? 0u : static_cast<unsigned>(std::strtoul(text, nullptr, 10));
  }();
  if (value == 0) return 0;
  const char* filter = std::getenv("LATHE_TEST_WRITE_PAUSE_PATH");
  return filter == nullptr || temporary.find(filter) != std::string::npos ? value : 0;
}

}  // namespace lathe
