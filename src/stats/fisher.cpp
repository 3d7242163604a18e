#include "stats/fisher.hpp"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <limits>

#include "lathe/error.hpp"

namespace lathe::stats {
namespace {

// The hypergeometric distribution of the top-left cell, as weights relative to its mode: every
// weight is a product of ratios P(x+1)/P(x) walked out from the mode, in long double (64-bit
// mantissa on x86-64) so that a weight thousands of steps away still has ~1e-16 relative error
// in double terms, and its range (to 1e-4951) keeps far tails from underflowing.
class Hypergeometric {
 public:
  Hypergeometric(uint64_t row1, uint64_t row2, uint64_t col1)
      : r1_(row1), r2_(row2), c1_(col1), lo_(col1 > row2 ? col1 - row2 : 0), hi_(std::min(row1, col1)) {
    const auto n = static_cast<long double>(row1 + row2);
    // The mode of the hypergeometric distribution: floor((c1 + 1)(r1 + 1) / (n + 2)).
    mode_ = static_cast<uint64_t>(std::floor((static_cast<long double>(col1) + 1) *
                                             (static_cast<long double>(row1) + 1) / (n + 2)));
    mode_ = std::clamp(mode_, lo_, hi_);
  }
  uint64_t lo() const { return lo_; }
  uint64_t hi() const { return hi_; }
  uint64_t mode() const { return mode_; }

  // Calls f(x, weight) for x = mode, mode - 1, ..., lo (down) or mode + 1, ..., hi (up); the
  // weights fall monotonically away from the mode.
  template <typename F>
  void walk_down(F&& f) const {
    long double w = 1;
    for (uint64_t x = mode_;; --x) {
      f(x, w);
      if (x == lo_) break;
      w *= ratio_down(x);
    }
  }
  template <typename F>
  void walk_up(F&& f) const {
    long double w = 1;
    for (uint64_t x = mode_; x < hi_; ++x) {
      w *= ratio_up(x);
      f(x + 1, w);
    }
  }
  long double weight(uint64_t x) const {
    long double w = 1;
    for (uint64_t y = mode_; y < x; ++y) w *= ratio_up(y);
    for (uint64_t y = mode_; y > x; --y) w *= ratio_down(y);
    return w;
  }

 private:
  // P(x + 1) / P(x) = (r1 - x)(c1 - x) / ((x + 1)(r2 - c1 + x + 1)).
  long double ratio_up(uint64_t x) const {
    return static_cast<long double>(r1_ - x) * static_cast<long double>(c1_ - x) /
           (static_cast<long double>(x + 1) * static_cast<long double>(r2_ + x + 1 - c1_));
  }
  // P(x - 1) / P(x), the inverse of ratio_up(x - 1).
  long double ratio_down(uint64_t x) const {
    return static_cast<long double>(x) * static_cast<long double>(r2_ + x - c1_) /
           (static_cast<long double>(r1_ - x + 1) * static_cast<long double>(c1_ - x + 1));
  }
  uint64_t r1_, r2_, c1_, lo_, hi_, mode_ = 0;
};

double odds_ratio(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  if (b == 0 || c == 0) return std::numeric_limits<double>::infinity();
  // As scipy: the integer products, then one division.
  return static_cast<double>(a * d) / static_cast<double>(b * c);
}

// The sum of the weights of x in [from, to] over the sum of all weights.
double tail_probability(const Hypergeometric& h, uint64_t from, uint64_t to) {
  long double total = 0, tail = 0;
  auto add = [&](uint64_t x, long double w) {
    total += w;
    if (x >= from && x <= to) tail += w;
  };
  h.walk_down(add);
  h.walk_up(add);
  return static_cast<double>(std::min<long double>(1, tail / total));
}

double two_sided(const Hypergeometric& h, uint64_t a) {
  const long double observed = h.weight(a);
  // scipy: |P(a) - P(mode)| / max(...) <= 1e-14 means a table as likely as the most likely.
  if (std::abs(1 - observed) <= 1e-14L) return 1.0;
  const long double bound = observed * (1 + 1e-14L);
  long double total = 0, extreme = 0;
  auto add = [&](uint64_t, long double w) {
    total += w;
    if (w <= bound) extreme += w;
  };
  h.walk_down(add);
  h.walk_up(add);
  return static_cast<double>(std::min<long double>(1, extreme / total));
}

}  // namespace

FisherResult fisher_exact(uint64_t a, uint64_t b, uint64_t c, uint64_t d, Alternative alternative) {
  constexpr uint64_t kMaxTotal = 1'000'000'000;
  if (a > kMaxTotal || b > kMaxTotal || c > kMaxTotal || d > kMaxTotal || a + b + c + d > kMaxTotal)
    throw InvalidArgumentError(fmt::format("the table {},{},{},{} has more than 10^9 counts in all; Fisher's exact "
                                           "test sums over every table with its margins, use a chi-squared test",
                                           a, b, c, d));
  FisherResult r{.a = a, .b = b, .c = c, .d = d, .odds_ratio = 0, .p_value = 1};
  if (a + b == 0 || c + d == 0 || a + c == 0 || b + d == 0) {
    r.odds_ratio = std::numeric_limits<double>::quiet_NaN();
    return r;
  }
  r.odds_ratio = odds_ratio(a, b, c, d);
  const Hypergeometric h(a + b, c + d, a + c);
  switch (alternative) {
    case Alternative::Less: r.p_value = tail_probability(h, h.lo(), a); break;
    case Alternative::Greater: r.p_value = tail_probability(h, a, h.hi()); break;
    case Alternative::TwoSided: r.p_value = two_sided(h, a); break;
  }
  return r;
}

}  // namespace lathe::stats
