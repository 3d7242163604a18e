// Multi-objective Tree-structured Parzen Estimator (TPE) over a box of float parameters, the
// search behind `lathe ablate`. Follows Optuna's TPESampler/MOTPE (Ozaki et al. 2020):
//   1. Fewer than n_startup completed trials: draw uniformly in the box.
//   2. Otherwise split the completed trials into "good" (the best gamma(n) = min(ceil(0.1 n), 25))
//      and "bad" by non-dominated sorting rank. Inside the rank that does not fit whole, ties are
//      broken by greedy hypervolume contribution for 2 objectives (Optuna's HSSP), by crowding
//      distance (NSGA-II) for 3+ objectives, by value then trial order for 1 objective.
//   3. Per parameter fit a Parzen estimator to the good trials (l) and to the bad ones (g): a
//      mixture of Gaussians truncated to [low, high], one per observation plus a prior component
//      (mean at the box centre, sigma = high - low). Bandwidths are Optuna's univariate rule: the
//      larger distance to a sorted neighbour (box ends count as neighbours except for the outermost
//      observations), clipped to [(high-low)/min(100, 1 + kernels), high - low] (the "magic clip").
//      Mixture weights are Optuna's default_weights (equal up to 25 observations, older ones ramp
//      down beyond that), the prior weighing prior_weight.
//   4. Draw n_ei_candidates points from l (each parameter from its own mixture) and return the one
//      maximizing sum over parameters of log l(x) - log g(x).
// Every random draw comes from one mt19937_64 seeded from (seed, history size) with our own
// uniform/normal draws, so the same seed and history give the same point on every machine, and a
// study resumed from its journal continues exactly as if it had never stopped.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lathe::edit {

struct ParamSpec {
  std::string name;
  double low = 0, high = 1;  // uniform float in [low, high]
};

struct Trial {
  int number = 0;
  std::map<std::string, double> params;
  std::vector<double> values;  // objectives, all minimized; empty = failed/unfinished (ignored by the sampler)
  double seconds = 0;
  nlohmann::json extra = nlohmann::json::object();  // free-form (metrics breakdown etc.)

  bool completed() const noexcept { return !values.empty(); }
};

struct TpeOptions {
  uint64_t seed = 0;
  int n_startup = 60;        // completed trials drawn uniformly before TPE takes over (>= 0)
  int n_ei_candidates = 24;  // candidates drawn from l per suggestion (>= 1)
  double good_fraction = 0.1;  // gamma(n) = min(ceil(good_fraction * n), max_good), at least 1
  int max_good = 25;
  double prior_weight = 1.0;  // weight of the prior component in both estimators (> 0)
};

class MultiObjectiveTpe {
 public:
  // Throws InvalidArgumentError for an empty space, a duplicate or empty name, non-finite bounds,
  // low >= high, n_objectives == 0 or out-of-range options, naming the offender.
  MultiObjectiveTpe(std::vector<ParamSpec> space, size_t n_objectives, TpeOptions options);

  // Next point to evaluate given all trials so far (failed ones included: they count for the RNG
  // but not for the model). Throws InvalidArgumentError when a completed trial has the wrong
  // number of values, a non-finite value, or a parameter missing or outside the box.
  std::map<std::string, double> suggest(const std::vector<Trial>& history) const;

  const std::vector<ParamSpec>& space() const noexcept { return space_; }
  size_t n_objectives() const noexcept { return n_objectives_; }
  const TpeOptions& options() const noexcept { return options_; }

 private:
  std::vector<ParamSpec> space_;
  size_t n_objectives_;
  TpeOptions options_;
};

// Indices of the non-dominated completed trials (minimization), sorted by the first objective
// (then the next ones, then index). Equal points do not dominate each other: duplicates all stay.
// Throws InvalidArgumentError when completed trials disagree on the number of objectives.
std::vector<size_t> pareto_front(const std::vector<Trial>& trials);

// Area dominated by the points and bounded by the reference point (minimization). Points not
// strictly better than the reference in both objectives add nothing. Throws InvalidArgumentError
// for a point without exactly 2 values or with a non-finite value, or a non-finite reference.
double hypervolume_2d(const std::vector<std::vector<double>>& points, std::array<double, 2> reference);

namespace detail {
// Non-dominated sorting: rank 0 = the Pareto front, rank 1 = the front once rank 0 is removed...
std::vector<int> nondominated_ranks(const std::vector<std::vector<double>>& points);
// Indices (into points) of the n_good best points by rank, ties inside the last rank broken as
// described at the top of this file. Sorted ascending.
std::vector<size_t> select_good(const std::vector<std::vector<double>>& points, size_t n_good);
// Optuna's default_weights(n): n ones up to 25, else a ramp 1/n..1 for the oldest n-25 then ones.
std::vector<double> default_weights(size_t n);

// One parameter's Parzen estimator: truncated Gaussian mixture on [low, high].
struct ParzenEstimator {
  double low = 0, high = 1;
  std::vector<double> mus, sigmas, weights;  // weights sum to 1
  std::vector<double> log_coefficients;      // log(weight / (sigma sqrt(2 pi) mass inside the box)) per kernel

  ParzenEstimator(const std::vector<double>& observations, double low, double high, double prior_weight);
  double log_pdf(double x) const;
};
}  // namespace detail

}  // namespace lathe::edit
