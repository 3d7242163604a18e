// The server's counters for GET /metrics, in Prometheus' text format (version 0.0.4): requests
// running and waiting (gauges), requests by outcome, prompt and generated tokens (counters), and
// histograms of time to first token and time per output token. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace lathe::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // "<name>_bucket{le=...} n" lines, _sum and _count.
  std::string text(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct Metrics {
  std::atomic<int64_t> running{0}, waiting{0};
  std::atomic<uint64_t> requests_ok{0}, requests_cancelled{0}, requests_failed{0}, requests_rejected{0};
  std::atomic<uint64_t> prompt_tokens{0}, cached_prompt_tokens{0}, generated_tokens{0};
  Histogram time_to_first_token{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram time_per_output_token{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};

  std::string text() const;
};

}  // namespace lathe::server
