#include "edit/tpe.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <set>

#include "core/splitmix.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// splitmix64: spreads (seed, history size) over the 64-bit seed of the engine, so neighbouring
// seeds and history sizes give unrelated streams.
uint64_t splitmix64(uint64_t x) { return splitmix64_next(x); }

// mt19937_64's output sequence is fixed by the standard; std::uniform_real_distribution and
// std::normal_distribution are not, so the draws from it are our own.
class Rng {
 public:
  Rng(uint64_t seed, size_t history_size) : engine_(splitmix64(seed ^ splitmix64(history_size + 0x5851f42d4c957f2dULL))) {}
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {  // Box-Muller, one value per call
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  std::mt19937_64 engine_;
};

bool dominates(const std::vector<double>& a, const std::vector<double>& b) {
  bool strictly_better = false;
  for (size_t j = 0; j < a.size(); ++j) {
    if (a[j] > b[j]) return false;
    if (a[j] < b[j]) strictly_better = true;
  }
  return strictly_better;
}

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::numbers::sqrt2); }

double log_sum_exp(const std::vector<double>& terms) {
  const double peak = *std::max_element(terms.begin(), terms.end());
  if (!std::isfinite(peak)) return peak;
  double sum = 0;
  for (double t : terms) sum += std::exp(t - peak);
  return peak + std::log(sum);
}

// Reference point for the hypervolume of one rank: a tenth of the range beyond the worst value
// (shift- and scale-invariant per objective), or 1 beyond it when all values are equal.
std::array<double, 2> reference_point(const std::vector<std::vector<double>>& points) {
  std::array<double, 2> reference{};
  for (size_t j = 0; j < 2; ++j) {
    double lo = kInf, hi = -kInf;
    for (const auto& p : points) {
      lo = std::min(lo, p[j]);
      hi = std::max(hi, p[j]);
    }
    reference[j] = hi > lo ? hi + 0.1 * (hi - lo) : hi + 1.0;
  }
  return reference;
}

// Greedy hypervolume subset selection (Optuna's _solve_hssp): k times, add the candidate whose
// addition grows the selected set's hypervolume most (ties: the earlier candidate).
std::vector<size_t> select_by_hypervolume(const std::vector<std::vector<double>>& points,
                                          const std::vector<size_t>& candidates, size_t k) {
  std::vector<std::vector<double>> rank_points;
  for (size_t i : candidates) rank_points.push_back(points[i]);
  const auto reference = reference_point(rank_points);
  std::vector<size_t> chosen;
  std::vector<bool> taken(candidates.size(), false);
  std::vector<std::vector<double>> chosen_points;
  while (chosen.size() < k) {
    size_t best = candidates.size();
    double best_volume = -1;
    for (size_t c = 0; c < candidates.size(); ++c) {
      if (taken[c]) continue;
      chosen_points.push_back(points[candidates[c]]);
      const double volume = hypervolume_2d(chosen_points, reference);
      chosen_points.pop_back();
      if (volume > best_volume) {
        best_volume = volume;
        best = c;
      }
    }
    taken[best] = true;
    chosen.push_back(candidates[best]);
    chosen_points.push_back(points[candidates[best]]);
  }
  return chosen;
}

// NSGA-II crowding distance inside one rank; the k most isolated points (ties: earlier first).
std::vector<size_t> select_by_crowding(const std::vector<std::vector<double>>& points,
                                       const std::vector<size_t>& candidates, size_t k) {
  const size_t m = candidates.size();
  std::vector<double> distance(m, 0.0);
  std::vector<size_t> order(m);
  for (size_t j = 0; j < points[candidates[0]].size(); ++j) {
    for (size_t c = 0; c < m; ++c) order[c] = c;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return points[candidates[a]][j] < points[candidates[b]][j]; });
    const double lo = points[candidates[order.front()]][j], hi = points[candidates[order.back()]][j];
    distance[order.front()] = distance[order.back()] = kInf;
    if (hi <= lo) continue;
    for (size_t r = 1; r + 1 < m; ++r)
      distance[order[r]] += (points[candidates[order[r + 1]]][j] - points[candidates[order[r - 1]]][j]) / (hi - lo);
  }
  for (size_t c = 0; c < m; ++c) order[c] = c;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return distance[a] > distance[b]; });
  std::vector<size_t> chosen;
  for (size_t r = 0; r < k; ++r) chosen.push_back(candidates[order[r]]);
  return chosen;
}

void check_finite_values(const Trial& trial, const char* what) {
  for (size_t j = 0; j < trial.values.size(); ++j)
    if (!std::isfinite(trial.values[j]))
      throw InvalidArgumentError(fmt::format("{}: trial {} objective {} is {}; record a failed trial with empty "
                                             "values instead of a non-finite objective",
                                             what, trial.number, j, trial.values[j]));
}

double sample_from(const detail::ParzenEstimator& estimator, Rng& rng) {
  double pick = rng.uniform();
  size_t k = 0;
  while (k + 1 < estimator.weights.size() && pick >= estimator.weights[k]) pick -= estimator.weights[k++];
  const double mu = estimator.mus[k], sigma = estimator.sigmas[k];
  // Rejection from the untruncated Gaussian: each kernel keeps at least a third of its mass
  // inside the box (its mean lies in the box and sigma <= high - low), so 64 tries essentially
  // never run out; if they do, the last draw is clamped.
  double x = mu;
  for (int attempt = 0; attempt < 64; ++attempt) {
    x = mu + sigma * rng.normal();
    if (x >= estimator.low && x <= estimator.high) return x;
  }
  return std::clamp(x, estimator.low, estimator.high);
}

}  // namespace

namespace detail {

std::vector<int> nondominated_ranks(const std::vector<std::vector<double>>& points) {
  const size_t n = points.size();
  std::vector<int> rank(n, -1);
  std::vector<size_t> dominator_count(n, 0);
  std::vector<std::vector<size_t>> dominated(n);
  for (size_t a = 0; a < n; ++a)
    for (size_t b = 0; b < n; ++b)
      if (a != b && dominates(points[a], points[b])) {
        dominated[a].push_back(b);
        ++dominator_count[b];
      }
  std::vector<size_t> current;
  for (size_t i = 0; i < n; ++i)
    if (dominator_count[i] == 0) current.push_back(i);
  for (int r = 0; !current.empty(); ++r) {
    std::vector<size_t> next;
    for (size_t i : current) {
      rank[i] = r;
      for (size_t d : dominated[i])
        if (--dominator_count[d] == 0) next.push_back(d);
    }
    current = std::move(next);
  }
  return rank;
}

std::vector<size_t> select_good(const std::vector<std::vector<double>>& points, size_t n_good) {
  n_good = std::min(n_good, points.size());
  const auto rank = nondominated_ranks(points);
  std::vector<size_t> good;
  for (int r = 0; good.size() < n_good; ++r) {
    std::vector<size_t> members;
    for (size_t i = 0; i < points.size(); ++i)
      if (rank[i] == r) members.push_back(i);
    const size_t room = n_good - good.size();
    if (members.size() <= room) {
      good.insert(good.end(), members.begin(), members.end());
      continue;
    }
    const size_t n_objectives = points[members[0]].size();
    std::vector<size_t> chosen;
    if (n_objectives == 1)
      chosen.assign(members.begin(), members.begin() + static_cast<std::ptrdiff_t>(room));  // all equal
    else if (n_objectives == 2)
      chosen = select_by_hypervolume(points, members, room);
    else
      chosen = select_by_crowding(points, members, room);
    good.insert(good.end(), chosen.begin(), chosen.end());
  }
  std::sort(good.begin(), good.end());
  return good;
}

std::vector<double> default_weights(size_t n) {
  std::vector<double> weights(n, 1.0);
  if (n <= 25) return weights;
  const size_t n_ramp = n - 25;  // numpy.linspace(1/n, 1, n_ramp)
  for (size_t i = 0; i < n_ramp; ++i)
    weights[i] = n_ramp == 1 ? 1.0 / static_cast<double>(n)
                             : 1.0 / static_cast<double>(n) +
                                   (1.0 - 1.0 / static_cast<double>(n)) * static_cast<double>(i) /
                                       static_cast<double>(n_ramp - 1);
  return weights;
}

ParzenEstimator::ParzenEstimator(const std::vector<double>& observations, double low_bound, double high_bound,
                                 double prior_weight)
    : low(low_bound), high(high_bound) {
  const double range = high - low;
  const double prior_mu = 0.5 * (low + high);
  const size_t n = observations.size();
  // Neighbour rule over the observations plus the prior mean, sorted, with the box ends as outer
  // neighbours; the outermost points ignore the box ends (Optuna's consider_endpoints=False).
  std::vector<double> with_prior = observations;
  with_prior.push_back(prior_mu);
  std::vector<size_t> order(with_prior.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return with_prior[a] < with_prior[b]; });
  std::vector<double> sorted{low};
  for (size_t i : order) sorted.push_back(with_prior[i]);
  sorted.push_back(high);
  const size_t m = with_prior.size();
  std::vector<double> sorted_sigma(m);
  for (size_t r = 0; r < m; ++r) sorted_sigma[r] = std::max(sorted[r + 1] - sorted[r], sorted[r + 2] - sorted[r + 1]);
  if (m >= 2) {
    sorted_sigma[0] = sorted[2] - sorted[1];
    sorted_sigma[m - 1] = sorted[m] - sorted[m - 1];
  }
  // Magic clip: no kernel narrower than range / min(100, 1 + kernels) nor wider than the range.
  const double min_sigma = range / std::min(100.0, 1.0 + static_cast<double>(n + 1));
  std::vector<double> sigma_of(m);
  for (size_t r = 0; r < m; ++r) sigma_of[order[r]] = std::clamp(sorted_sigma[r], min_sigma, range);

  mus = observations;
  sigmas.assign(sigma_of.begin(), sigma_of.begin() + static_cast<std::ptrdiff_t>(n));
  weights = default_weights(n);
  mus.push_back(prior_mu);
  sigmas.push_back(range);
  weights.push_back(prior_weight);
  double total = 0;
  for (double w : weights) total += w;
  for (double& w : weights) w /= total;
  const double log_sqrt_2pi = 0.5 * std::log(2.0 * std::numbers::pi);
  for (size_t k = 0; k < mus.size(); ++k) {
    const double mass = normal_cdf((high - mus[k]) / sigmas[k]) - normal_cdf((low - mus[k]) / sigmas[k]);
    log_coefficients.push_back(std::log(weights[k]) - log_sqrt_2pi - std::log(sigmas[k]) - std::log(mass));
  }
}

double ParzenEstimator::log_pdf(double x) const {
  std::vector<double> terms(mus.size());
  for (size_t k = 0; k < mus.size(); ++k) {
    const double z = (x - mus[k]) / sigmas[k];
    terms[k] = log_coefficients[k] - 0.5 * z * z;
  }
  return log_sum_exp(terms);
}

}  // namespace detail

MultiObjectiveTpe::MultiObjectiveTpe(std::vector<ParamSpec> space, size_t n_objectives, TpeOptions options)
    : space_(std::move(space)), n_objectives_(n_objectives), options_(options) {
  if (space_.empty()) throw InvalidArgumentError("TPE search space is empty; give at least one parameter");
  std::set<std::string> names;
  for (const auto& spec : space_) {
    if (spec.name.empty()) throw InvalidArgumentError("TPE search space: a parameter has an empty name; name every parameter");
    if (!names.insert(spec.name).second)
      throw InvalidArgumentError(fmt::format("TPE search space: parameter '{}' appears twice; give each parameter once", spec.name));
    if (!std::isfinite(spec.low) || !std::isfinite(spec.high))
      throw InvalidArgumentError(fmt::format("TPE search space: parameter '{}' has non-finite bounds [{}, {}]; "
                                             "give finite bounds", spec.name, spec.low, spec.high));
    if (!(spec.low < spec.high))
      throw InvalidArgumentError(fmt::format("TPE search space: parameter '{}' has low {} >= high {}; "
                                             "give low < high", spec.name, spec.low, spec.high));
  }
  if (n_objectives_ == 0) throw InvalidArgumentError("TPE: n_objectives is 0; give at least one objective");
  if (options_.n_startup < 0)
    throw InvalidArgumentError(fmt::format("TPE option n_startup is {}; give 0 or more", options_.n_startup));
  if (options_.n_ei_candidates < 1 || options_.n_ei_candidates > 100000)
    throw InvalidArgumentError(fmt::format("TPE option n_ei_candidates is {}; give 1..100000", options_.n_ei_candidates));
  if (!(options_.good_fraction > 0 && options_.good_fraction <= 1))
    throw InvalidArgumentError(fmt::format("TPE option good_fraction is {}; give a value in (0, 1]", options_.good_fraction));
  if (options_.max_good < 1)
    throw InvalidArgumentError(fmt::format("TPE option max_good is {}; give 1 or more", options_.max_good));
  if (!(options_.prior_weight > 0) || !std::isfinite(options_.prior_weight))
    throw InvalidArgumentError(fmt::format("TPE option prior_weight is {}; give a finite value > 0", options_.prior_weight));
}

std::map<std::string, double> MultiObjectiveTpe::suggest(const std::vector<Trial>& history) const {
  std::vector<const Trial*> completed;
  for (const auto& trial : history) {
    if (!trial.completed()) continue;
    if (trial.values.size() != n_objectives_)
      throw InvalidArgumentError(fmt::format("TPE: trial {} has {} objective values, the study has {}; "
                                             "resume with the study's objectives", trial.number, trial.values.size(),
                                             n_objectives_));
    check_finite_values(trial, "TPE");
    for (const auto& spec : space_) {
      const auto it = trial.params.find(spec.name);
      if (it == trial.params.end())
        throw InvalidArgumentError(fmt::format("TPE: trial {} lacks parameter '{}'; resume with the study's search space",
                                               trial.number, spec.name));
      if (!(it->second >= spec.low && it->second <= spec.high))
        throw InvalidArgumentError(fmt::format("TPE: trial {} parameter '{}' = {} lies outside [{}, {}]; resume with "
                                               "the study's search space", trial.number, spec.name, it->second,
                                               spec.low, spec.high));
    }
    completed.push_back(&trial);
  }

  Rng rng(options_.seed, history.size());
  std::map<std::string, double> point;
  if (completed.empty() || completed.size() < static_cast<size_t>(options_.n_startup)) {
    for (const auto& spec : space_) point[spec.name] = spec.low + (spec.high - spec.low) * rng.uniform();
    return point;
  }

  std::vector<std::vector<double>> values;
  for (const Trial* trial : completed) values.push_back(trial->values);
  const size_t n = completed.size();
  const auto gamma = static_cast<size_t>(std::ceil(options_.good_fraction * static_cast<double>(n)));
  const size_t n_good = std::clamp<size_t>(gamma, 1, static_cast<size_t>(options_.max_good));
  const auto good = detail::select_good(values, n_good);
  std::vector<bool> is_good(n, false);
  for (size_t i : good) is_good[i] = true;

  std::vector<detail::ParzenEstimator> below, above;  // l (good) and g (bad) per parameter
  for (const auto& spec : space_) {
    std::vector<double> good_obs, bad_obs;
    for (size_t i = 0; i < n; ++i) (is_good[i] ? good_obs : bad_obs).push_back(completed[i]->params.at(spec.name));
    below.emplace_back(good_obs, spec.low, spec.high, options_.prior_weight);
    above.emplace_back(bad_obs, spec.low, spec.high, options_.prior_weight);
  }

  double best_score = -kInf;
  std::vector<double> candidate(space_.size());
  for (int c = 0; c < options_.n_ei_candidates; ++c) {
    double score = 0;
    for (size_t d = 0; d < space_.size(); ++d) {
      candidate[d] = sample_from(below[d], rng);
      score += below[d].log_pdf(candidate[d]) - above[d].log_pdf(candidate[d]);
    }
    if (score > best_score || point.empty()) {
      best_score = score;
      for (size_t d = 0; d < space_.size(); ++d) point[space_[d].name] = candidate[d];
    }
  }
  return point;
}

std::vector<size_t> pareto_front(const std::vector<Trial>& trials) {
  std::vector<size_t> completed;
  for (size_t i = 0; i < trials.size(); ++i) {
    if (!trials[i].completed()) continue;
    if (trials[i].values.size() != trials[completed.empty() ? i : completed[0]].values.size())
      throw InvalidArgumentError(fmt::format("pareto_front: trial {} has {} objective values, trial {} has {}; "
                                             "all trials of a study need the same objectives", trials[i].number,
                                             trials[i].values.size(), trials[completed[0]].number,
                                             trials[completed[0]].values.size()));
    check_finite_values(trials[i], "pareto_front");
    completed.push_back(i);
  }
  std::vector<size_t> front;
  for (size_t a : completed) {
    bool dominated = false;
    for (size_t b : completed)
      if (b != a && dominates(trials[b].values, trials[a].values)) {
        dominated = true;
        break;
      }
    if (!dominated) front.push_back(a);
  }
  std::stable_sort(front.begin(), front.end(),
                   [&](size_t a, size_t b) { return trials[a].values < trials[b].values; });
  return front;
}

double hypervolume_2d(const std::vector<std::vector<double>>& points, std::array<double, 2> reference) {
  if (!std::isfinite(reference[0]) || !std::isfinite(reference[1]))
    throw InvalidArgumentError(fmt::format("hypervolume_2d: reference point ({}, {}) is not finite; give a finite one",
                                           reference[0], reference[1]));
  std::vector<std::array<double, 2>> inside;
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& p = points[i];
    if (p.size() != 2)
      throw InvalidArgumentError(fmt::format("hypervolume_2d: point {} has {} values; give 2 objectives", i, p.size()));
    if (!std::isfinite(p[0]) || !std::isfinite(p[1]))
      throw InvalidArgumentError(fmt::format("hypervolume_2d: point {} ({}, {}) is not finite", i, p[0], p[1]));
    if (p[0] < reference[0] && p[1] < reference[1]) inside.push_back({p[0], p[1]});
  }
  std::sort(inside.begin(), inside.end());
  // Sweep left to right: each point that lowers the best y so far adds the slab from its x to the
  // reference, between the new and the previous best y.
  double volume = 0, best_y = reference[1];
  for (const auto& p : inside) {
    if (p[1] >= best_y) continue;
    volume += (reference[0] - p[0]) * (best_y - p[1]);
    best_y = p[1];
  }
  return volume;
}

}  // namespace lathe::edit
