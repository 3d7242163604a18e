// The sampler chain of include/lathe/sampling.hpp: penalties -> top-k -> top-p -> min-p ->
// temperature -> draw, with llama.cpp's semantics.
//
// Determinism: every result depends only on the inputs and the seed, never on the standard
// library. The random number is the top 53 bits of one std::mt19937_64 output (its sequence is
// fixed by the standard), and every sum and every walk runs in an order defined by the values
// alone: candidates in id order, or ranked by (logit desc, id asc), a strict total order, so the
// ranked prefix that nth_element/partial_sort produce is unique whatever the library does inside.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "lathe/error.hpp"
#include "lathe/sampling.hpp"

namespace lathe {

// A named namespace, not an anonymous one: Sampler::State (declared in the public header) holds
// Candidate and CandidateSet, and a class with external linkage must not have fields of a type
// with internal linkage (GCC's -Wsubobject-linkage, which fires once this file is compiled inside
// a unity source, cmake/Pch.cmake).
namespace sampler_detail {

constexpr float kInfinity = std::numeric_limits<float>::infinity();

// Whether any penalty is on, over a window (penalty_last_n) that is not empty by definition.
bool penalties_configured(const SamplingOptions& o) noexcept {
  return (o.repeat_penalty != 1.0f || o.frequency_penalty != 0.0f || o.presence_penalty != 0.0f) &&
         o.penalty_last_n != 0;
}

struct Candidate {
  float logit;
  int32_t id;
};

// Rank order: higher logit first, lower id first among equal logits.
bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

template <typename Value>
[[noreturn]] void reject(const char* option, Value value, const char* allowed) {
  throw InvalidArgumentError(fmt::format("sampling option {} = {} is out of range: {}", option, value, allowed));
}

// The candidates still in the running. Either `sorted_` (held in rank order) or in id order with a
// ranked prefix built on demand: `ranked_` holds the best entries in rank order and `rest_` the
// others in no particular order. Sums always run over `pool_` in its own (value-defined) order.
class CandidateSet {
 public:
  // All finite candidates of `logits`, in id order.
  void assign_all(const float* logits, size_t n) {
    clear();
    pool_.reserve(n);
    for (size_t i = 0; i < n; ++i)
      if (!std::isnan(logits[i]) && logits[i] != -kInfinity)
        pool_.push_back({logits[i], static_cast<int32_t>(i)});
  }

  // The best k finite candidates (k >= 1) in rank order, where `overrides` (sorted by id) replace
  // the logits of a few tokens (the penalized ones). One pass over the raw logits keeps the best
  // k + overrides.size() in a bounded heap whose top is the worst kept one, so most logits cost a
  // single comparison; those are enough, because at most overrides.size() of them can change.
  void assign_top_k(std::span<const float> logits, size_t k, std::span<const Candidate> overrides) {
    clear();
    const size_t capacity = std::min(logits.size(), k + overrides.size());
    pool_.reserve(capacity + overrides.size());
    size_t i = 0;
    for (; i < logits.size() && pool_.size() < capacity; ++i) {
      if (std::isnan(logits[i]) || logits[i] == -kInfinity) continue;
      pool_.push_back({logits[i], static_cast<int32_t>(i)});
      std::push_heap(pool_.begin(), pool_.end(), ranks_before);
    }
    if (pool_.size() == capacity) {
      // Ids only grow during the scan, so a logit equal to the worst kept one ranks below it: only
      // a strictly greater logit gets in (NaN never compares greater). Blocks of logits are first
      // tested together, a branch-free loop the compiler vectorizes; few blocks hold a candidate.
      float worst = pool_.front().logit;
      const auto consider = [&](size_t at) {
        if (!(logits[at] > worst)) return;
        std::pop_heap(pool_.begin(), pool_.end(), ranks_before);
        pool_.back() = {logits[at], static_cast<int32_t>(at)};
        std::push_heap(pool_.begin(), pool_.end(), ranks_before);
        worst = pool_.front().logit;
      };
      constexpr size_t kBlock = 32;
      for (; i < logits.size() && i % kBlock != 0; ++i) consider(i);
      for (; i + kBlock <= logits.size(); i += kBlock) {
        const float* block = logits.data() + i;
        int hits = 0;
        for (size_t j = 0; j < kBlock; ++j) hits += block[j] > worst ? 1 : 0;
        if (hits != 0)
          for (size_t j = 0; j < kBlock; ++j) consider(i + j);
      }
      for (; i < logits.size(); ++i) consider(i);
    }
    if (!overrides.empty()) apply_overrides(overrides);
    if (pool_.size() > k) {
      std::nth_element(pool_.begin(), pool_.begin() + static_cast<std::ptrdiff_t>(k), pool_.end(), ranks_before);
      pool_.resize(k);
    }
    std::sort(pool_.begin(), pool_.end(), ranks_before);
    sorted_ = true;
  }

  size_t size() const { return pool_.size(); }
  bool empty() const { return pool_.empty(); }

  // The best candidate's logit (the set must not be empty).
  float max_logit() { return at_rank(0).logit; }

  // An infinite logit outweighs every finite one: keep only the +inf candidates, equally likely.
  void resolve_positive_infinity() {
    if (empty() || max_logit() != kInfinity) return;
    std::erase_if(pool_, [](const Candidate& c) { return c.logit != kInfinity; });
    for (Candidate& c : pool_) c.logit = 0.0f;
    reset_ranking();
  }

  // The candidate of rank `r` (< size()), extending the ranked prefix when needed.
  const Candidate& at_rank(size_t r) {
    if (sorted_) return pool_[r];
    if (r >= ranked_.size()) extend_ranking(r + 1);
    return ranked_[r];
  }

  // Keeps the best m candidates (m <= size()).
  void keep_top(size_t m) {
    if (m >= pool_.size()) return;
    if (!sorted_) {
      at_rank(m - 1);
      pool_.assign(ranked_.begin(), ranked_.begin() + static_cast<std::ptrdiff_t>(m));
      sorted_ = true;
      ranked_.clear();
      rest_.clear();
    } else {
      pool_.resize(m);
    }
  }

  // Keeps the candidates for which keep(candidate) holds, preserving the pool's order.
  template <typename Keep>
  void keep_if(Keep keep) {
    std::erase_if(pool_, [&](const Candidate& c) { return !keep(c); });
    reset_ranking();
  }

  // Sum of f(logit) over the candidates, in the pool's order (id order or rank order).
  template <typename F>
  double sum(F f) const {
    double total = 0.0;
    for (const Candidate& c : pool_) total += f(c.logit);
    return total;
  }

 private:
  void clear() {
    pool_.clear();
    sorted_ = false;
    reset_ranking();
  }
  void reset_ranking() {
    ranked_.clear();
    rest_.clear();
  }

  // Replaces the logits of the overridden ids that the pool holds and adds the others; drops what
  // became -inf or NaN.
  void apply_overrides(std::span<const Candidate> overrides) {
    std::sort(pool_.begin(), pool_.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
    const size_t held = pool_.size();
    for (const Candidate& o : overrides) {
      const auto end = pool_.begin() + static_cast<std::ptrdiff_t>(held);
      const auto it =
          std::lower_bound(pool_.begin(), end, o.id, [](const Candidate& c, int32_t id) { return c.id < id; });
      if (it != end && it->id == o.id) it->logit = o.logit;
      else pool_.push_back(o);
    }
    std::erase_if(pool_, [](const Candidate& c) { return std::isnan(c.logit) || c.logit == -kInfinity; });
  }

  // Grows the ranked prefix to at least `want` entries (doubling, so a walk down the ranking
  // costs O(n log n) at worst and O(n) when it stops early, which is the common case).
  void extend_ranking(size_t want) {
    if (ranked_.empty() && rest_.empty()) rest_ = pool_;
    const size_t target = std::min(pool_.size(), std::max({want, 2 * ranked_.size(), size_t{64}}));
    const auto take = static_cast<std::ptrdiff_t>(target - ranked_.size());
    if (take < static_cast<std::ptrdiff_t>(rest_.size()))
      std::nth_element(rest_.begin(), rest_.begin() + take, rest_.end(), ranks_before);
    std::sort(rest_.begin(), rest_.begin() + take, ranks_before);
    ranked_.insert(ranked_.end(), rest_.begin(), rest_.begin() + take);
    rest_.erase(rest_.begin(), rest_.begin() + take);
  }

  std::vector<Candidate> pool_;
  bool sorted_ = false;
  std::vector<Candidate> ranked_, rest_;
};

}  // namespace sampler_detail

using namespace sampler_detail;

void validate(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0.0f)
    reject("temperature (--temp)", o.temperature, "must be a finite number >= 0 (0 = greedy)");
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) reject("top_p (--top-p)", o.top_p, "must be in (0, 1] (1 = off)");
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) reject("min_p (--min-p)", o.min_p, "must be in [0, 1] (0 = off)");
  if (!std::isfinite(o.repeat_penalty) || o.repeat_penalty <= 0.0f)
    reject("repeat_penalty (--repeat-penalty)", o.repeat_penalty, "must be a finite number > 0 (1 = off)");
  if (!std::isfinite(o.frequency_penalty))
    reject("frequency_penalty (--frequency-penalty)", o.frequency_penalty, "must be a finite number (0 = off)");
  if (!std::isfinite(o.presence_penalty))
    reject("presence_penalty (--presence-penalty)", o.presence_penalty, "must be a finite number (0 = off)");
  if (o.penalty_last_n < -1)
    reject("penalty_last_n (--repeat-last-n)", o.penalty_last_n, "must be >= -1 (-1 = the whole history, 0 = off)");
}

struct Sampler::State {
  SamplingOptions options;
  std::mt19937_64 rng;
  std::vector<int32_t> window;        // the penalty window, sorted (reused between calls)
  std::vector<Candidate> overrides;   // penalized logits of the window's distinct ids, by id
  std::vector<float> penalized;       // all logits with the overrides applied (filters-off path)
  CandidateSet candidates;

  bool penalties_active(size_t history_size) const { return penalties_configured(options) && history_size > 0; }

  // The penalized logit of each distinct token of the window (llama.cpp: the repeat penalty once
  // per distinct token, then count * frequency + presence).
  void compute_overrides(std::span<const float> logits, std::span<const int32_t> history) {
    overrides.clear();
    if (!penalties_active(history.size())) return;
    const size_t n_window = options.penalty_last_n < 0
                                ? history.size()
                                : std::min(history.size(), static_cast<size_t>(options.penalty_last_n));
    const size_t first = history.size() - n_window;
    window.assign(history.begin() + static_cast<std::ptrdiff_t>(first), history.end());
    for (size_t i = 0; i < window.size(); ++i)
      if (window[i] < 0 || static_cast<size_t>(window[i]) >= logits.size())
        throw InvalidArgumentError(fmt::format(
            "sampler: history[{}] = {} is not a token id of this vocabulary (0..{}); pass the ids the model evaluated",
            first + i, window[i], logits.size() - 1));
    std::sort(window.begin(), window.end());
    for (size_t i = 0; i < window.size();) {
      size_t j = i;
      while (j < window.size() && window[j] == window[i]) ++j;
      const auto count = static_cast<float>(j - i);
      float logit = logits[static_cast<size_t>(window[i])];
      logit = logit > 0.0f ? logit / options.repeat_penalty : logit * options.repeat_penalty;
      logit -= count * options.frequency_penalty + options.presence_penalty;
      overrides.push_back({logit, window[i]});
      i = j;
    }
  }

  [[noreturn]] static void throw_no_candidate(size_t n) {
    throw InvalidArgumentError(fmt::format(
        "sampler: all {} logits are -inf or NaN, so no token can be drawn; check the model's output (lathe run "
        "--check-tensors) or the logit biases",
        n));
  }

  // Top-p: the smallest prefix of the ranking whose probability mass (at temperature 1) reaches p.
  void apply_top_p() {
    const float max_logit = candidates.max_logit();
    const double total = candidates.sum([&](float l) { return std::exp(static_cast<double>(l) - max_logit); });
    const double needed = static_cast<double>(options.top_p) * total;
    double cumulative = 0.0;
    for (size_t r = 0; r < candidates.size(); ++r) {
      cumulative += std::exp(static_cast<double>(candidates.at_rank(r).logit) - max_logit);
      if (cumulative >= needed) {
        candidates.keep_top(r + 1);
        return;
      }
    }
  }

  // Min-p: keep the candidates whose probability is at least min_p times the best one's, i.e.
  // whose logit is at least max + log(min_p) (llama.cpp compares logits the same way).
  void apply_min_p() {
    const float threshold = candidates.max_logit() + std::log(options.min_p);
    candidates.keep_if([&](const Candidate& c) { return c.logit >= threshold; });
  }

  // Temperature and the inverse-CDF draw over the candidates in rank order.
  int32_t draw() {
    const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
    const float max_logit = candidates.max_logit();
    const double inv_temp = 1.0 / options.temperature;
    const auto weight = [&](float l) { return std::exp((static_cast<double>(l) - max_logit) * inv_temp); };
    const double target = u * candidates.sum(weight);
    double cumulative = 0.0;
    for (size_t r = 0; r < candidates.size(); ++r) {
      const Candidate& c = candidates.at_rank(r);
      cumulative += weight(c.logit);
      if (target < cumulative) return c.id;
    }
    return candidates.at_rank(candidates.size() - 1).id;  // rounding left target at the very end
  }

  // Every logit with the penalties applied (for the paths that look at the whole vocabulary).
  const float* penalized_logits(std::span<const float> logits) {
    if (overrides.empty()) return logits.data();
    penalized.assign(logits.begin(), logits.end());
    for (const Candidate& o : overrides) penalized[static_cast<size_t>(o.id)] = o.logit;
    return penalized.data();
  }

  int32_t sample(std::span<const float> logits, std::span<const int32_t> history) {
    if (logits.empty()) throw InvalidArgumentError("sampler: the logits are empty; pass one logit per vocabulary entry");
    const size_t n = logits.size();
    compute_overrides(logits, history);
    const bool greedy = options.temperature == 0.0f;
    if (greedy || (options.top_k > 0 && static_cast<size_t>(options.top_k) < n))
      candidates.assign_top_k(logits, greedy ? 1 : static_cast<size_t>(options.top_k), overrides);
    else
      candidates.assign_all(penalized_logits(logits), n);
    if (candidates.empty()) throw_no_candidate(n);
    if (greedy) return candidates.at_rank(0).id;  // argmax, lowest id on ties
    candidates.resolve_positive_infinity();
    if (options.top_p < 1.0f) apply_top_p();
    if (options.min_p > 0.0f) apply_min_p();
    return draw();
  }
};

bool picks_argmax(const SamplingOptions& options) noexcept {
  return options.temperature == 0.0f && !penalties_configured(options);
}

int32_t argmax_logit(std::span<const float> logits) noexcept {
  int32_t best = -1;
  float best_logit = -kInfinity;
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] > best_logit) {  // false for NaN and for -inf
      best_logit = logits[i];
      best = static_cast<int32_t>(i);
    }
  return best;
}

Sampler::Sampler(const SamplingOptions& options) : state_(std::make_unique<State>()) {
  validate(options);
  state_->options = options;
  state_->rng.seed(options.seed);
}
Sampler::~Sampler() = default;
Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  return state_->sample(logits, history);
}

void Sampler::reset() { state_->rng.seed(state_->options.seed); }

const SamplingOptions& Sampler::options() const noexcept { return state_->options; }

}  // namespace lathe
