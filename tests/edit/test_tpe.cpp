#include "edit/tpe.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "common/test_support.hpp"
#include "edit/journal.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

using test::expect_error;

using Objective = std::function<std::vector<double>(const std::map<std::string, double>&)>;

Trial done(int number, std::vector<double> values) {
  Trial t;
  t.number = number;
  t.values = std::move(values);
  return t;
}

std::vector<ParamSpec> box(size_t dims, double low, double high) {
  std::vector<ParamSpec> space;
  for (size_t d = 0; d < dims; ++d) space.push_back({"x" + std::to_string(d), low, high});
  return space;
}

std::vector<double> as_vector(const std::map<std::string, double>& params, size_t dims) {
  std::vector<double> x;
  for (size_t d = 0; d < dims; ++d) x.push_back(params.at("x" + std::to_string(d)));
  return x;
}

std::vector<Trial> run_study(const MultiObjectiveTpe& sampler, const Objective& objective, int n_trials) {
  std::vector<Trial> history;
  for (int i = 0; i < n_trials; ++i) {
    Trial t;
    t.number = i;
    t.params = sampler.suggest(history);
    t.values = objective(t.params);
    history.push_back(std::move(t));
  }
  return history;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// ---------------------------------------------------------------- pareto_front / hypervolume

TEST(ParetoFront, KeepsOnlyNonDominatedSortedByFirstObjective) {
  const std::vector<Trial> trials = {done(0, {3, 1}), done(1, {1, 3}), done(2, {2, 2}), done(3, {3, 3}),
                                     done(4, {2, 2.5}), done(5, {0.5, 4})};
  // (3,3) is dominated by (2,2); (2,2.5) by (2,2).
  EXPECT_EQ(pareto_front(trials), (std::vector<size_t>{5, 1, 2, 0}));
}

TEST(ParetoFront, DuplicatesStayTiesInOneObjectiveDominate) {
  const std::vector<Trial> trials = {done(0, {1, 2}), done(1, {1, 2}), done(2, {1, 3}), done(3, {2, 1})};
  // Equal points do not dominate each other; (1,3) is dominated by (1,2) (equal x, better y).
  EXPECT_EQ(pareto_front(trials), (std::vector<size_t>{0, 1, 3}));
}

TEST(ParetoFront, SingleObjectiveGivesAllMinima) {
  const std::vector<Trial> trials = {done(0, {3}), done(1, {1}), done(2, {2}), done(3, {1})};
  EXPECT_EQ(pareto_front(trials), (std::vector<size_t>{1, 3}));
}

TEST(ParetoFront, IgnoresFailedTrialsAndRejectsMixedCounts) {
  std::vector<Trial> trials = {done(0, {}), done(1, {2, 2}), done(2, {}), done(3, {1, 3})};
  EXPECT_EQ(pareto_front(trials), (std::vector<size_t>{3, 1}));
  EXPECT_TRUE(pareto_front({done(0, {}), done(1, {})}).empty());
  EXPECT_TRUE(pareto_front({}).empty());
  trials.push_back(done(7, {1, 2, 3}));
  expect_error<InvalidArgumentError>([&] { pareto_front(trials); }, {"trial 7", "3 objective values"});
  expect_error<InvalidArgumentError>([&] { pareto_front({done(4, {NAN, 1})}); }, {"trial 4", "nan"});
}

TEST(Hypervolume2d, HandComputedValues) {
  EXPECT_DOUBLE_EQ(hypervolume_2d({}, {1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(hypervolume_2d({{0, 0}}, {2, 3}), 6.0);
  // Union of [1,4]x[3,4] (3) and [2,4]x[1,4] (6) overlapping in [2,4]x[3,4] (2): 7.
  EXPECT_DOUBLE_EQ(hypervolume_2d({{1, 3}, {2, 1}}, {4, 4}), 7.0);
  // A dominated point and a duplicate add nothing; order does not matter.
  EXPECT_DOUBLE_EQ(hypervolume_2d({{2, 1}, {3, 3}, {1, 3}, {2, 1}}, {4, 4}), 7.0);
  // Points on or beyond the reference add nothing.
  EXPECT_DOUBLE_EQ(hypervolume_2d({{4, 0}, {0, 4}, {5, 5}, {3, 3}}, {4, 4}), 1.0);
  // Staircase of three: 0.5*(1-0) ... computed by hand: (0.2,0.8),(0.5,0.5),(0.8,0.2), ref (1,1):
  // 0.8*0.2 + 0.5*0.3 + 0.2*0.3 = 0.16 + 0.15 + 0.06 = 0.37
  EXPECT_NEAR(hypervolume_2d({{0.8, 0.2}, {0.2, 0.8}, {0.5, 0.5}}, {1, 1}), 0.37, 1e-12);
  expect_error<InvalidArgumentError>([] { hypervolume_2d({{1, 2, 3}}, {4, 4}); }, {"point 0", "3 values"});
  expect_error<InvalidArgumentError>([] { hypervolume_2d({{1, INFINITY}}, {4, 4}); }, {"point 0"});
  expect_error<InvalidArgumentError>([] { hypervolume_2d({{1, 1}}, {NAN, 4}); }, {"reference"});
}

// ---------------------------------------------------------------- the pieces of TPE

TEST(TpeDetail, NondominatedRanks) {
  const std::vector<std::vector<double>> points = {{1, 1}, {2, 2}, {3, 3}, {0, 5}, {2, 2}, {5, 0}};
  EXPECT_EQ(detail::nondominated_ranks(points), (std::vector<int>{0, 1, 2, 0, 1, 0}));
}

TEST(TpeDetail, SelectGoodFillsRanksThenHypervolumeInsideTheLastRank) {
  // Rank 0: {0}; rank 1: points 1..4, mutually non-dominated; then a dominated one.
  const std::vector<std::vector<double>> points = {{0, 0}, {1, 9}, {5, 5}, {5.5, 4.5}, {9, 1.5}, {20, 20}};
  // Two good: rank 0 whole, then one of rank 1 by hypervolume contribution. Reference = rank 1's
  // worst + 10% of its range: (9.8, 9.75). Alone, (5,5) covers 4.8*4.75 = 22.8, (5.5,4.5)
  // 4.3*5.25 = 22.575, (1,9) and (9,1.5) 6.6 each: (5,5) wins.
  EXPECT_EQ(detail::select_good(points, 2), (std::vector<size_t>{0, 2}));
  // Next best addition to {(5,5)}: (1,9) adds 4*0.75 = 3.0, (9,1.5) adds 0.8*3.5 = 2.8, (5.5,4.5)
  // adds 4.3*0.5 = 2.15 -- the spread-out points beat the nearby one.
  EXPECT_EQ(detail::select_good(points, 3), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(detail::select_good(points, 4), (std::vector<size_t>{0, 1, 2, 4}));
  EXPECT_EQ(detail::select_good(points, 6), (std::vector<size_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(detail::select_good(points, 99).size(), 6u);
}

TEST(TpeDetail, SelectGoodSingleAndThreeObjectives) {
  EXPECT_EQ(detail::select_good({{3}, {1}, {2}, {1}, {0}}, 2), (std::vector<size_t>{1, 4}));  // 0 then first of the 1s
  // Three objectives, one rank of four: crowding keeps the extremes of each objective first.
  const std::vector<std::vector<double>> points = {{0, 5, 5}, {2, 2, 3}, {5, 0, 5}, {2.1, 2.1, 2.9}, {5, 5, 0}};
  // Extremes: point 0 (min x, ...), point 2 (min y), point 4 (min z): infinite distance.
  EXPECT_EQ(detail::select_good(points, 3), (std::vector<size_t>{0, 2, 4}));
}

TEST(TpeDetail, DefaultWeightsMatchOptuna) {
  EXPECT_TRUE(detail::default_weights(0).empty());
  EXPECT_EQ(detail::default_weights(25), std::vector<double>(25, 1.0));
  const auto w = detail::default_weights(28);  // numpy.linspace(1/28, 1, 3) then 25 ones
  ASSERT_EQ(w.size(), 28u);
  EXPECT_DOUBLE_EQ(w[0], 1.0 / 28);
  EXPECT_DOUBLE_EQ(w[1], (1.0 / 28 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(w[2], 1.0);
  EXPECT_DOUBLE_EQ(w[27], 1.0);
}

TEST(TpeDetail, ParzenEstimatorBandwidthsAndDensity) {
  // Observations 0.2, 0.3, 0.9 in [0, 1], prior mean 0.5 joins the neighbour rule:
  // sorted 0.2 0.3 0.5 0.9 -> 0.2: 0.3-0.2 = 0.1 (outermost ignores the box end); 0.3:
  // max(0.1, 0.2) = 0.2; 0.9: 0.9-0.5 = 0.4 (outermost). Magic clip minimum 1/min(100, 1+4) = 0.2.
  const detail::ParzenEstimator pe({0.2, 0.3, 0.9}, 0.0, 1.0, 1.0);
  ASSERT_EQ(pe.mus.size(), 4u);
  EXPECT_DOUBLE_EQ(pe.sigmas[0], 0.2);
  EXPECT_DOUBLE_EQ(pe.sigmas[1], 0.2);
  EXPECT_NEAR(pe.sigmas[2], 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(pe.mus[3], 0.5);
  EXPECT_DOUBLE_EQ(pe.sigmas[3], 1.0);
  for (double w : pe.weights) EXPECT_DOUBLE_EQ(w, 0.25);
  // A density on [0, 1]: the trapezoid integral is 1.
  double integral = 0;
  const int steps = 20000;
  for (int i = 0; i <= steps; ++i) {
    const double x = static_cast<double>(i) / steps;
    integral += (i == 0 || i == steps ? 0.5 : 1.0) * std::exp(pe.log_pdf(x)) / steps;
  }
  EXPECT_NEAR(integral, 1.0, 1e-6);
  // With no observations only the prior remains: truncated N(0.5, 1) on [0,1], mass
  // erf(0.5/sqrt2) = 0.3829249; density at 0.5 = 0.3989423 / 0.3829249.
  const detail::ParzenEstimator prior({}, 0.0, 1.0, 1.0);
  EXPECT_NEAR(std::exp(prior.log_pdf(0.5)), 0.3989422804 / 0.3829249225, 1e-8);
}

// ---------------------------------------------------------------- the sampler

TEST(Tpe, ValidatesSpaceOptionsAndHistory) {
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({}, 1, {}); }, {"empty"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"alpha", 1, 1}}, 1, {}); }, {"'alpha'", "low 1 >= high 1"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"beta", 0, INFINITY}}, 1, {}); }, {"'beta'", "non-finite"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"beta", NAN, 1}}, 1, {}); }, {"'beta'"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}, {"a", 0, 2}}, 1, {}); }, {"'a'", "twice"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"", 0, 1}}, 1, {}); }, {"empty name"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 0, {}); }, {"n_objectives"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 1, {.n_ei_candidates = 0}); }, {"n_ei_candidates"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 1, {.n_startup = -1}); }, {"n_startup"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 1, {.good_fraction = 0}); }, {"good_fraction"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 1, {.max_good = 0}); }, {"max_good"});
  expect_error<InvalidArgumentError>([] { MultiObjectiveTpe({{"a", 0, 1}}, 1, {.prior_weight = 0}); }, {"prior_weight"});

  const MultiObjectiveTpe tpe({{"a", 0, 1}, {"b", -1, 1}}, 2, {.n_startup = 0});
  Trial wrong_count = done(3, {1});
  wrong_count.params = {{"a", 0.5}, {"b", 0}};
  expect_error<InvalidArgumentError>([&] { tpe.suggest({wrong_count}); }, {"trial 3", "1 objective values", "has 2"});
  Trial missing = done(4, {1, 2});
  missing.params = {{"a", 0.5}};
  expect_error<InvalidArgumentError>([&] { tpe.suggest({missing}); }, {"trial 4", "'b'"});
  Trial outside = done(5, {1, 2});
  outside.params = {{"a", 0.5}, {"b", 2}};
  expect_error<InvalidArgumentError>([&] { tpe.suggest({outside}); }, {"trial 5", "'b'", "outside"});
  Trial not_finite = done(6, {1, NAN});
  not_finite.params = {{"a", 0.5}, {"b", 0}};
  expect_error<InvalidArgumentError>([&] { tpe.suggest({not_finite}); }, {"trial 6", "non-finite"});
  // A failed trial is not checked: its params may be partial.
  Trial failed = done(7, {});
  EXPECT_NO_THROW(tpe.suggest({failed}));
}

TEST(Tpe, SuggestionsStayInTheBoxAndAreDeterministic) {
  const auto space = box(3, -2, 5);
  const MultiObjectiveTpe tpe(space, 1, {.seed = 42, .n_startup = 5});
  const Objective sphere = [](const auto& p) { return std::vector<double>{as_vector(p, 3)[0] * as_vector(p, 3)[0]}; };
  const auto history = run_study(tpe, sphere, 30);
  for (const auto& t : history)
    for (const auto& spec : space) {
      EXPECT_GE(t.params.at(spec.name), spec.low);
      EXPECT_LE(t.params.at(spec.name), spec.high);
    }
  // Same seed + same history -> same point, in the random phase and in the TPE phase.
  for (size_t n : {size_t{0}, size_t{3}, size_t{20}, size_t{30}}) {
    const std::vector<Trial> prefix(history.begin(), history.begin() + static_cast<std::ptrdiff_t>(n));
    const MultiObjectiveTpe again(space, 1, {.seed = 42, .n_startup = 5});
    EXPECT_EQ(tpe.suggest(prefix), again.suggest(prefix)) << n;
  }
  // Another seed or another history length gives another point.
  const MultiObjectiveTpe other(space, 1, {.seed = 43, .n_startup = 5});
  EXPECT_NE(tpe.suggest(history), other.suggest(history));
  std::vector<Trial> with_failure = history;
  with_failure.push_back(done(30, {}));
  EXPECT_NE(tpe.suggest(history), tpe.suggest(with_failure));
  // The whole study repeats exactly.
  const auto repeat = run_study(tpe, sphere, 30);
  for (size_t i = 0; i < history.size(); ++i) EXPECT_EQ(history[i].params, repeat[i].params);
}

TEST(Tpe, ResumedFromAJournalContinuesTheSameSequence) {
  lathe::test::TempDir dir("tpe_resume");
  const auto space = box(4, 0, 1);
  const TpeOptions options{.seed = 7, .n_startup = 6};
  const MultiObjectiveTpe tpe(space, 2, options);
  const Objective zdt = [](const auto& p) {
    const auto x = as_vector(p, 4);
    const double g = 1 + 3 * (x[1] + x[2] + x[3]);
    return std::vector<double>{x[0], g * (1 - std::sqrt(x[0] / g))};
  };
  const auto uninterrupted = run_study(tpe, zdt, 25);

  const auto header = make_study_header(space, {"f1", "f2"}, options.seed);
  auto step = [&](Journal& journal) {
    Trial t;
    t.number = static_cast<int>(journal.trials().size());
    t.params = tpe.suggest(journal.trials());
    t.values = zdt(t.params);
    t.seconds = 0.125;
    journal.append(t);
  };
  {
    auto journal = Journal::open(dir / "study.jsonl", header);
    for (int i = 0; i < 11; ++i) step(journal);
  }  // "crash" after 11 trials
  auto journal = Journal::open(dir / "study.jsonl", header);
  ASSERT_EQ(journal.trials().size(), 11u);
  while (journal.trials().size() < 25) step(journal);
  for (size_t i = 0; i < 25; ++i) {
    EXPECT_EQ(journal.trials()[i].params, uninterrupted[i].params) << i;
    EXPECT_EQ(journal.trials()[i].values, uninterrupted[i].values) << i;
  }
}

// ---------------------------------------------------------------- TPE against random search

// 6-D shifted quadratic, 100 trials: best value found, TPE (20 random startup trials) vs pure
// random search (startup = all trials), seven seeds each.
TEST(TpeBenchmark, BeatsRandomSearchOnAShiftedQuadratic) {
  const std::vector<double> shift = {1.3, -2.1, 0.7, 3.2, -0.4, -3.3};
  const Objective quadratic = [&](const auto& p) {
    const auto x = as_vector(p, 6);
    double sum = 0;
    for (size_t d = 0; d < 6; ++d) sum += (x[d] - shift[d]) * (x[d] - shift[d]);
    return std::vector<double>{sum};
  };
  const int n_trials = 100;
  std::vector<double> tpe_best, random_best;
  for (uint64_t seed = 1; seed <= 7; ++seed) {
    auto best = [&](int n_startup) {
      const MultiObjectiveTpe sampler(box(6, -5, 5), 1, {.seed = seed, .n_startup = n_startup});
      const auto history = run_study(sampler, quadratic, n_trials);
      double b = INFINITY;
      for (const auto& t : history) b = std::min(b, t.values[0]);
      return b;
    };
    tpe_best.push_back(best(20));
    random_best.push_back(best(n_trials));
  }
  const double tpe_median = median(tpe_best), random_median = median(random_best);
  std::printf("shifted quadratic, best of %d: TPE median %.3f, random median %.3f\n", n_trials, tpe_median, random_median);
  for (size_t i = 0; i < tpe_best.size(); ++i) std::printf("  seed %zu: TPE %.3f random %.3f\n", i + 1, tpe_best[i], random_best[i]);
  // Measured: TPE median 1.08, random 13.97; TPE won on all 7 seeds.
  EXPECT_LT(tpe_median, 0.2 * random_median);
  int tpe_wins = 0;
  for (size_t i = 0; i < tpe_best.size(); ++i) tpe_wins += tpe_best[i] < random_best[i];
  EXPECT_GE(tpe_wins, 6);
}

// ZDT1 with 6 variables, 100 trials: hypervolume of the front found (reference (1.1, 7)).
TEST(TpeBenchmark, BeatsRandomSearchOnZdt1Hypervolume) {
  const Objective zdt1 = [](const auto& p) {
    const auto x = as_vector(p, 6);
    double sum = 0;
    for (size_t d = 1; d < 6; ++d) sum += x[d];
    const double g = 1 + 9 * sum / 5;
    return std::vector<double>{x[0], g * (1 - std::sqrt(x[0] / g))};
  };
  const int n_trials = 100;
  std::vector<double> tpe_volume, random_volume;
  for (uint64_t seed = 1; seed <= 7; ++seed) {
    auto volume = [&](int n_startup) {
      const MultiObjectiveTpe sampler(box(6, 0, 1), 2, {.seed = seed, .n_startup = n_startup});
      const auto history = run_study(sampler, zdt1, n_trials);
      std::vector<std::vector<double>> points;
      for (size_t i : pareto_front(history)) points.push_back(history[i].values);
      return hypervolume_2d(points, {1.1, 7.0});
    };
    tpe_volume.push_back(volume(20));
    random_volume.push_back(volume(n_trials));
  }
  const double tpe_median = median(tpe_volume), random_median = median(random_volume);
  std::printf("ZDT1 hypervolume after %d: TPE median %.3f, random median %.3f\n", n_trials, tpe_median, random_median);
  for (size_t i = 0; i < tpe_volume.size(); ++i) std::printf("  seed %zu: TPE %.3f random %.3f\n", i + 1, tpe_volume[i], random_volume[i]);
  // Measured: TPE median 6.62, random 5.20 (the true front gives 7.37); TPE won on all 7 seeds.
  EXPECT_GT(tpe_median, random_median + 1.0);
  int tpe_wins = 0;
  for (size_t i = 0; i < tpe_volume.size(); ++i) tpe_wins += tpe_volume[i] > random_volume[i];
  EXPECT_GE(tpe_wins, 6);
}

}  // namespace
}  // namespace lathe::edit
