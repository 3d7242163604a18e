#include "server/metrics.hpp"

#include <fmt/format.h>

namespace lathe::server {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  std::lock_guard lock(mutex_);
  counts_[i] += 1;
  sum_ += value;
  count_ += 1;
}

std::string Histogram::text(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mutex_);
  std::string out = fmt::format("# HELP {0} {1}\n# TYPE {0} histogram\n", name, help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  cumulative += counts_.back();
  out += fmt::format("{0}_bucket{{le=\"+Inf\"}} {1}\n{0}_sum {2}\n{0}_count {3}\n", name, cumulative, sum_, count_);
  return out;
}

namespace {

std::string metric(const char* name, const char* type, const char* help, auto value) {
  return fmt::format("# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}\n", name, help, type, value);
}

}  // namespace

std::string Metrics::text() const {
  std::string out;
  out += metric("lathe_requests_running", "gauge", "Requests generating (holding a sequence slot).", running.load());
  out += metric("lathe_requests_waiting", "gauge", "Requests queued for a free slot.", waiting.load());
  out += "# HELP lathe_requests_total Finished generation requests by outcome.\n# TYPE lathe_requests_total counter\n";
  out += fmt::format("lathe_requests_total{{outcome=\"ok\"}} {}\n", requests_ok.load());
  out += fmt::format("lathe_requests_total{{outcome=\"cancelled\"}} {}\n", requests_cancelled.load());
  out += fmt::format("lathe_requests_total{{outcome=\"failed\"}} {}\n", requests_failed.load());
  out += fmt::format("lathe_requests_total{{outcome=\"rejected\"}} {}\n", requests_rejected.load());
  out += metric("lathe_prompt_tokens_total", "counter", "Prompt tokens evaluated.", prompt_tokens.load());
  out += metric("lathe_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's cache.",
                cached_prompt_tokens.load());
  out += metric("lathe_generated_tokens_total", "counter", "Tokens generated.", generated_tokens.load());
  out += time_to_first_token.text("lathe_time_to_first_token_seconds", "Seconds from a request to its first token.");
  out += time_per_output_token.text("lathe_time_per_output_token_seconds",
                                    "Seconds per generated token after the first, per request.");
  return out;
}

}  // namespace lathe::server
