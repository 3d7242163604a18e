// libFuzzer target for what `lathe stats` reads from users: a file of numbers (one per line,
// stats/number_file.hpp), and then the statistics run on whatever it parsed. Any input must either
// parse or throw a lathe::Error; a parsed column is non-empty, finite and in line order; and every
// method either answers within its documented range or throws lathe::Error: never crash, index
// out of range or hang. The first byte picks what runs on the numbers; the rest is the file.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lathe/error.hpp"
#include "stats/bootstrap.hpp"
#include "stats/fisher.hpp"
#include "stats/multitest.hpp"
#include "stats/number_file.hpp"
#include "stats/permutation.hpp"
#include "stats/wilcoxon.hpp"

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

bool is_probability(double p) { return p >= 0 && p <= 1; }

// The statistics on at most 40 values (the Wilcoxon test enumerates 2^13 sign flips, the
// permutation tests up to 200 arrangements, the bootstrap 50 resamples: fast per input).
void run_methods(uint8_t pick, std::span<const double> all) {
  const auto v = all.subspan(0, std::min<size_t>(all.size(), 40));
  const size_t half = v.size() / 2;
  const auto first = v.subspan(0, half), second = v.subspan(half);
  switch (pick % 6) {
    case 0: {
      const auto r = lathe::stats::adjust_fdr(v, pick & 8 ? lathe::stats::FdrMethod::BenjaminiYekutieli
                                                          : lathe::stats::FdrMethod::BenjaminiHochberg);
      for (double p : r.adjusted) require(is_probability(p));
      break;
    }
    case 1: {
      const auto r = lathe::stats::wilcoxon(v);
      require(is_probability(r.p_value));
      break;
    }
    case 2: {
      const auto r = lathe::stats::permutation_test_sign_flip(v, {.n_resamples = 200, .seed = pick});
      require(is_probability(r.p_value) && r.p_value > 0);
      break;
    }
    case 3: {
      const auto r = lathe::stats::permutation_test_two_sample(first, second, {.n_resamples = 200, .seed = pick});
      require(is_probability(r.p_value) && r.p_value > 0);
      break;
    }
    case 4: {
      const auto method = pick & 8 ? lathe::stats::IntervalMethod::Percentile : lathe::stats::IntervalMethod::Bca;
      const auto r = lathe::stats::bootstrap_two_sample_interval(first, second, lathe::stats::median_of,
                                                                 {.n_resamples = 50, .method = method});
      require(r.low <= r.high);
      break;
    }
    default: {
      // The first four values as a 2x2 table of small counts.
      if (v.size() < 4) return;
      uint64_t t[4];
      for (int i = 0; i < 4; ++i) t[i] = static_cast<uint64_t>(std::fmod(std::abs(v[i]), 200.0));
      const auto r = lathe::stats::fisher_exact(t[0], t[1], t[2], t[3]);
      require(is_probability(r.p_value));
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    const auto column = lathe::stats::parse_numbers(text, "fuzz.txt");
    require(!column.values.empty() && column.values.size() == column.lines.size());
    for (size_t i = 0; i < column.values.size(); ++i) {
      require(std::isfinite(column.values[i]));
      require(i == 0 || column.lines[i] > column.lines[i - 1]);
    }
    run_methods(data[0], column.values);
  } catch (const lathe::Error&) {
  }
  return 0;
}
