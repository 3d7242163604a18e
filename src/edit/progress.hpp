// A progress line with an ETA for long loops (the trials of `lathe ablate`):
//   label [#####...............] 12/200 ETA 3m12s status
// On a terminal the line is redrawn in place ('\r', padded over the previous text) on every
// update. Elsewhere (logs, pipes) each shown update is its own line, and to keep logs short an
// update is shown only when total <= kEveryUpdateTotal, when at least kLogInterval passed since
// the last shown line, or when done reaches total. finish() ends the line with the total time.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <ostream>
#include <string>
#include <string_view>

namespace lathe::edit {

class ProgressBar {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  static constexpr size_t kEveryUpdateTotal = 50;
  static constexpr std::chrono::seconds kLogInterval{2};
  static constexpr size_t kBarWidth = 20;

  // `now` replaces the steady clock (tests); the ETA is measured from construction.
  ProgressBar(std::string label, size_t total, std::ostream& out, bool is_tty, Clock now = {});

  // A loop resumed at `done` (a training run from its checkpoint): the bar starts there, and the
  // ETA extrapolates from the rate of the steps done since, not as if those were done in no time.
  void resume_at(size_t done);
  // `status` is shown after the ETA; line breaks in it become spaces. done is clamped to total.
  void update(size_t done, std::string_view status);
  // Prints the final state with the elapsed time instead of the ETA and ends the line. Idempotent.
  void finish();

  // "12s", "3m12s", "2h05m"
  static std::string format_duration(double seconds);

 private:
  std::string render(bool final) const;
  void emit(const std::string& line);

  std::string label_;
  size_t total_;
  std::ostream& out_;
  bool is_tty_;
  Clock now_;
  std::chrono::steady_clock::time_point start_, last_shown_;
  size_t done_ = 0;
  size_t resumed_at_ = 0;  // done_ when the timing started
  std::string status_;
  size_t last_width_ = 0;  // TTY: characters drawn last time, to blank leftovers
  bool shown_once_ = false, finished_ = false;
};

}  // namespace lathe::edit
