// The temporaries lathe writes on the way to an output ("OUT.tmp.PID" files, staging directories)
// and their cleanup:
//  * every live temporary is registered; SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGPIPE (those whose
//    action is still the default when the first temporary is registered) remove the registered
//    temporaries, then the signal is raised again with its default action, so the process still
//    ends as the signal says (exit status, shell behaviour);
//  * a later run sweeps "NAME.tmp.PID" leftovers of processes that are gone (SIGKILL, power loss)
//    for the names it is about to write.
// The signal handler only calls async-signal-safe functions (unlink, open, getdents64, unlinkat,
// rmdir, close, sigaction, raise).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace lathe {

// "<path>.tmp.<pid of this process>"
std::filesystem::path temporary_path_for(const std::filesystem::path& path);

// Registers a path to be removed (a file, or a directory with everything in it) if a catchable
// termination signal ends the process while the registration is alive. The owner removes the path
// itself in the normal course; destroying the registration only forgets it. At most
// kMaxTemporaries are registered at once (more are not covered by the handler, only by the sweep).
class TemporaryRegistration {
 public:
  enum class Kind { File, Directory };
  static constexpr int kMaxTemporaries = 64;

  TemporaryRegistration() = default;
  TemporaryRegistration(const std::filesystem::path& path, Kind kind);
  ~TemporaryRegistration() { reset(); }
  TemporaryRegistration(TemporaryRegistration&& other) noexcept;
  TemporaryRegistration& operator=(TemporaryRegistration&& other) noexcept;
  TemporaryRegistration(const TemporaryRegistration&) = delete;
  TemporaryRegistration& operator=(const TemporaryRegistration&) = delete;

  void reset() noexcept;  // forget the path now
  bool active() const noexcept { return slot_ >= 0; }

 private:
  int slot_ = -1;
};

// While one is alive, the termination signals above are held back: the handler notes the signal
// and it takes effect (cleanup, then the default action) when the last SignalDeferral ends. For
// short sequences that must not stop half-way (the renames that put an export in place).
class SignalDeferral {
 public:
  SignalDeferral();
  ~SignalDeferral();
  SignalDeferral(const SignalDeferral&) = delete;
  SignalDeferral& operator=(const SignalDeferral&) = delete;
};

// Whether a process with this id exists (kill(pid, 0) succeeds or is refused for permission).
bool process_alive(long pid) noexcept;

// "<name>.tmp.<digits>" -> the pid, else -1.
long temporary_owner(const std::string& entry_name, const std::string& name);

// Removes the entries "<name>.tmp.<pid>" of `dir` (files or directories), for each of `names`,
// whose pid is not this process and not a live process. Best effort: an entry that cannot be
// removed is skipped. Returns the paths removed.
std::vector<std::filesystem::path> sweep_stale_temporaries(const std::filesystem::path& dir,
                                                           const std::vector<std::string>& names);

// Milliseconds to pause after the first bytes of the AtomicFileWriter temporary `temporary` are
// written: LATHE_TEST_WRITE_PAUSE_MS, for temporaries whose path contains
// LATHE_TEST_WRITE_PAUSE_PATH when that is set; 0 when unset. Only the tests set them, to interrupt
// a write at a known point.
unsigned test_write_pause_ms(const std::string& temporary) noexcept;

}  // namespace lathe
