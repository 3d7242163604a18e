#include "edit/progress.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace lathe::edit {

ProgressBar::ProgressBar(std::string label, size_t total, std::ostream& out, bool is_tty, Clock now)
    : label_(std::move(label)), total_(total), out_(out), is_tty_(is_tty), now_(std::move(now)) {
  if (!now_) now_ = [] { return std::chrono::steady_clock::now(); };
  start_ = last_shown_ = now_();
}

std::string ProgressBar::format_duration(double seconds) {
  const auto s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

std::string ProgressBar::render(bool final) const {
  const double fraction = total_ == 0 ? 1.0 : static_cast<double>(done_) / static_cast<double>(total_);
  const auto filled = static_cast<size_t>(std::floor(fraction * static_cast<double>(kBarWidth)));
  const double elapsed = std::chrono::duration<double>(now_() - start_).count();
  std::string timing;
  if (final) timing = "in " + format_duration(elapsed);
  else if (done_ <= resumed_at_ || elapsed <= 0) timing = "ETA --";  // no rate to extrapolate yet
  else
    timing = "ETA " + format_duration(elapsed / static_cast<double>(done_ - resumed_at_) *
                                      static_cast<double>(total_ - done_));
  std::string line = fmt::format("{} [{}{}] {}/{} {}", label_, std::string(filled, '#'), std::string(kBarWidth - filled, '.'),
                                 done_, total_, timing);
  if (!status_.empty()) line += " " + status_;
  return line;
}

void ProgressBar::emit(const std::string& line) {
  if (is_tty_) {
    // '\r' returns to the line start; spaces blank what a longer previous line left behind.
    out_ << '\r' << line << std::string(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ');
    last_width_ = line.size();
  } else {
    out_ << line << '\n';
  }
  out_.flush();
  last_shown_ = now_();
  shown_once_ = true;
}

void ProgressBar::resume_at(size_t done) {
  done_ = resumed_at_ = std::min(done, total_);
  start_ = now_();
}

void ProgressBar::update(size_t done, std::string_view status) {
  if (finished_) return;
  done_ = std::min(done, total_);
  status_.assign(status);
  std::replace_if(status_.begin(), status_.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  const bool due = is_tty_ || total_ <= kEveryUpdateTotal || done_ == total_ || !shown_once_ ||
                   now_() - last_shown_ >= kLogInterval;
  if (due) emit(render(false));
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  emit(render(true));
  if (is_tty_) {
    out_ << '\n';
    out_.flush();
  }
}

}  // namespace lathe::edit
