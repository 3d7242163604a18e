// lathe::Sampler: greedy choice, each filter's kept set, penalties against hand-computed values,
// determinism, and the draw's distribution against softmax (chi-square). Expected values are
// computed here from the definitions (llama.cpp's sampler chain), never from the sampler itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "lathe/error.hpp"
#include "lathe/sampling.hpp"

namespace lathe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Temperature 1 with every filter off: the draw follows softmax(logits).
SamplingOptions plain(uint64_t seed = 0) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 0;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.seed = seed;
  return o;
}

SamplingOptions greedy_options() {
  SamplingOptions o = plain();
  o.temperature = 0.0f;
  return o;
}

// The ids drawn by `n_seeds` fresh samplers (seeds 0..n_seeds-1), `draws_each` draws each.
std::set<int32_t> drawn_ids(SamplingOptions options, const std::vector<float>& logits, int n_seeds,
                            int draws_each = 1, const std::vector<int32_t>& history = {}) {
  std::set<int32_t> ids;
  for (int seed = 0; seed < n_seeds; ++seed) {
    options.seed = static_cast<uint64_t>(seed);
    Sampler sampler(options);
    for (int i = 0; i < draws_each; ++i) ids.insert(sampler.sample(logits, history));
  }
  return ids;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  const double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) total += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& v : p) v /= total;
  return p;
}

// Pearson's chi-square statistic of observed counts against probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int n) {
  double chi2 = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double expected = probs[i] * n;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi2;
}

std::vector<int> histogram(Sampler& sampler, const std::vector<float>& logits, int n) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n; ++i) ++counts.at(static_cast<size_t>(sampler.sample(logits, {})));
  return counts;
}

// 50 logits spread over [-2, 2] without ties; every softmax probability is >= 0.2%.
std::vector<float> spread_logits() {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = 2.0f * std::sin(static_cast<float>(i) * 1.3f);
  return logits;
}

// ---------------------------------------------------------------- greedy

TEST(Sampler, GreedyPicksArgmax) {
  Sampler sampler(greedy_options());
  EXPECT_EQ(sampler.sample(std::vector<float>{0.1f, 2.5f, -3.0f, 2.4f}, {}), 1);
  EXPECT_EQ(sampler.sample(std::vector<float>{-5.0f, -4.0f, -7.0f}, {}), 1);
}

TEST(Sampler, GreedyTiesGoToLowestId) {
  Sampler sampler(greedy_options());
  EXPECT_EQ(sampler.sample(std::vector<float>{1.0f, 3.0f, 0.0f, 3.0f, 3.0f}, {}), 1);
  EXPECT_EQ(sampler.sample(std::vector<float>{-kInf, 7.0f, 7.0f}, {}), 1);
}

TEST(Sampler, GreedyIgnoresNaN) {
  Sampler sampler(greedy_options());
  EXPECT_EQ(sampler.sample(std::vector<float>{kNaN, 1.0f, kNaN, 2.0f, kNaN}, {}), 3);
  EXPECT_EQ(sampler.sample(std::vector<float>{kNaN, -kInf, -100.0f}, {}), 2);
}

TEST(Sampler, GreedyIgnoresFiltersButNotPenalties) {
  SamplingOptions o = greedy_options();
  o.top_k = 1;
  o.top_p = 0.01f;
  o.min_p = 1.0f;
  o.repeat_penalty = 2.0f;
  Sampler sampler(o);
  const std::vector<float> logits{3.0f, 2.0f, 1.0f};
  EXPECT_EQ(sampler.sample(logits, {}), 0);
  const std::vector<int32_t> history{0};  // 3.0 / 2 = 1.5 < 2.0
  EXPECT_EQ(sampler.sample(logits, history), 1);
}

// argmax_logit is what a greedy sampler without penalties draws (GPUs compute it on the device:
// Session::greedy_token), on hand-made edge cases and on random rows with repeated values.
TEST(Sampler, ArgmaxLogitIsTheGreedyDraw) {
  const std::vector<std::vector<float>> cases = {
      {0.1f, 2.5f, -3.0f, 2.4f},  {1.0f, 3.0f, 0.0f, 3.0f, 3.0f}, {-kInf, 7.0f, 7.0f},
      {kNaN, 1.0f, kNaN, 2.0f},   {kNaN, -kInf, -100.0f},          {1.0f, kInf, 2.0f, kInf},
      {-3.4e38f, -kInf, -3.4e38f}, {5.0f}};
  const std::vector<int32_t> expected = {1, 1, 1, 3, 2, 1, 0, 0};
  Sampler sampler(greedy_options());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(argmax_logit(cases[i]), expected[i]) << "case " << i;
    EXPECT_EQ(sampler.sample(cases[i], {}), expected[i]) << "case " << i;
  }
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(0, 40);  // few distinct values: many ties
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> logits(1 + rng() % 3000);
    for (float& v : logits) v = static_cast<float>(level(rng)) - (rng() % 17 == 0 ? kInf : 0.0f);
    if (trial % 7 == 0) logits[rng() % logits.size()] = kNaN;
    EXPECT_EQ(argmax_logit(logits), sampler.sample(logits, {})) << "trial " << trial;
  }
  // Nothing drawable: -1 here, the sampler's error there.
  EXPECT_EQ(argmax_logit(std::vector<float>{-kInf, kNaN}), -1);
  EXPECT_EQ(argmax_logit(std::vector<float>{}), -1);
}

TEST(Sampler, PicksArgmaxOnlyForGreedyWithoutPenalties) {
  EXPECT_TRUE(picks_argmax(greedy_options()));
  EXPECT_FALSE(picks_argmax(SamplingOptions{}));  // temperature 0.8
  SamplingOptions o = greedy_options();
  o.top_k = 1;  // filters do not matter at temperature 0
  o.min_p = 0.5f;
  EXPECT_TRUE(picks_argmax(o));
  o.repeat_penalty = 1.1f;
  EXPECT_FALSE(picks_argmax(o));
  o.penalty_last_n = 0;  // a penalty over no tokens is none
  EXPECT_TRUE(picks_argmax(o));
  o = greedy_options();
  o.frequency_penalty = 0.5f;
  EXPECT_FALSE(picks_argmax(o));
  o = greedy_options();
  o.presence_penalty = -0.5f;
  EXPECT_FALSE(picks_argmax(o));
}

// ---------------------------------------------------------------- filters, each alone

TEST(Sampler, TopKKeepsExactlyTheKBest) {
  SamplingOptions o = plain();
  o.top_k = 3;
  // Close logits so that every kept token is likely enough to show up in 400 draws.
  const std::vector<float> logits{0.0f, 0.9f, 0.2f, 1.0f, 0.5f, 0.95f, 0.1f};
  EXPECT_EQ(drawn_ids(o, logits, 400), (std::set<int32_t>{1, 3, 5}));
  o.top_k = 1;
  EXPECT_EQ(drawn_ids(o, logits, 50), (std::set<int32_t>{3}));
  o.top_k = 7;  // k == vocabulary: no filtering
  EXPECT_EQ(drawn_ids(o, logits, 50, 40).size(), 7u);
}

TEST(Sampler, TopKBreaksTiesAtTheBoundaryByLowestId) {
  SamplingOptions o = plain();
  o.top_k = 3;
  const std::vector<float> logits{1.0f, 2.0f, 1.0f, 1.0f, 1.0f};
  EXPECT_EQ(drawn_ids(o, logits, 400), (std::set<int32_t>{0, 1, 2}));
}

TEST(Sampler, TopKOnALargeVocabularyKeepsTheKBest) {
  // 152k logits from a fixed pseudo-random formula; the expected set comes from a full sort here.
  std::vector<float> logits(152064);
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = static_cast<float>(std::fmod(static_cast<double>(i) * 0.6180339887498949, 1.0) * 8.0);
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  SamplingOptions o = plain();
  o.top_k = 40;
  const std::set<int32_t> expected(order.begin(), order.begin() + 40);
  EXPECT_EQ(drawn_ids(o, logits, 40, 100), expected);
}

TEST(Sampler, TopPKeepsTheSmallestPrefixReachingP) {
  // Probabilities 0.4, 0.3, 0.2, 0.1 (ids shuffled): cumulative 0.4, 0.7, 0.9, 1.0.
  const std::vector<float> logits{std::log(0.2f), std::log(0.4f), std::log(0.1f), std::log(0.3f)};
  SamplingOptions o = plain();
  o.top_p = 0.35f;
  EXPECT_EQ(drawn_ids(o, logits, 100), (std::set<int32_t>{1}));
  o.top_p = 0.65f;
  EXPECT_EQ(drawn_ids(o, logits, 300), (std::set<int32_t>{1, 3}));
  o.top_p = 0.8f;
  EXPECT_EQ(drawn_ids(o, logits, 400), (std::set<int32_t>{0, 1, 3}));
  o.top_p = 0.95f;
  EXPECT_EQ(drawn_ids(o, logits, 600), (std::set<int32_t>{0, 1, 2, 3}));
}

TEST(Sampler, TopPOnALargeVocabularyRanksTiesByLowestId) {
  // Five equal logits of 20 hold 99.99% of the mass; 0.7 needs four of them (0.2 each), and ties
  // rank by id, so exactly 1000..1003 remain, whatever the 152k other tokens.
  std::vector<float> logits(152064, 0.0f);
  for (int32_t id = 1000; id < 1005; ++id) logits[static_cast<size_t>(id)] = 20.0f;
  SamplingOptions o = plain();
  o.top_p = 0.7f;
  EXPECT_EQ(drawn_ids(o, logits, 10, 20), (std::set<int32_t>{1000, 1001, 1002, 1003}));
}

TEST(Sampler, MinPKeepsTokensAtLeastMinPTimesTheBest) {
  // Probabilities 0.5, 0.25, 0.15, 0.1: with min_p 0.25 the cut is 0.125 -> 0.1 goes.
  const std::vector<float> logits{std::log(0.15f), std::log(0.5f), std::log(0.1f), std::log(0.25f)};
  SamplingOptions o = plain();
  o.min_p = 0.25f;
  EXPECT_EQ(drawn_ids(o, logits, 400), (std::set<int32_t>{0, 1, 3}));
  o.min_p = 0.4f;  // cut 0.2
  EXPECT_EQ(drawn_ids(o, logits, 300), (std::set<int32_t>{1, 3}));
  o.min_p = 0.6f;  // cut 0.3
  EXPECT_EQ(drawn_ids(o, logits, 100), (std::set<int32_t>{1}));
  o.min_p = 0.15f;  // cut 0.075: all stay
  EXPECT_EQ(drawn_ids(o, logits, 600), (std::set<int32_t>{0, 1, 2, 3}));
}

TEST(Sampler, FiltersChainInLlamaCppOrder) {
  // Probabilities 0.5 (id 1), 0.25 (id 3), 0.15 (id 0), 0.1 (id 2). top-k 3 keeps {1, 3, 0}, whose
  // renormalized probabilities are 0.556, 0.278, 0.167; top-p then sees those: p = 0.6 stops at
  // {1, 3} (0.556 < 0.6 <= 0.833) and p = 0.55 at {1}, while top-p 0.55 over the full set needs
  // {1, 3} (0.5 < 0.55). So top-k runs before top-p and top-p renormalizes.
  const std::vector<float> logits{std::log(0.15f), std::log(0.5f), std::log(0.1f), std::log(0.25f)};
  SamplingOptions o = plain();
  o.top_k = 3;
  o.top_p = 0.6f;
  EXPECT_EQ(drawn_ids(o, logits, 300), (std::set<int32_t>{1, 3}));
  o.top_p = 0.55f;
  EXPECT_EQ(drawn_ids(o, logits, 100), (std::set<int32_t>{1}));
  o.top_k = 0;
  EXPECT_EQ(drawn_ids(o, logits, 300), (std::set<int32_t>{1, 3}));
}

TEST(Sampler, PositiveInfinityWinsAndTiesShare) {
  const std::vector<float> logits{0.0f, kInf, 5.0f, kInf, kNaN};
  EXPECT_EQ(drawn_ids(plain(), logits, 200), (std::set<int32_t>{1, 3}));
  Sampler sampler(greedy_options());
  EXPECT_EQ(sampler.sample(logits, {}), 1);
}

TEST(Sampler, NaNAndNegativeInfinityAreNeverDrawn) {
  const std::vector<float> logits{kNaN, 0.0f, -kInf, 0.5f, kNaN};
  EXPECT_EQ(drawn_ids(plain(), logits, 300), (std::set<int32_t>{1, 3}));
}

// ---------------------------------------------------------------- penalties

// Pins the penalized logit of token 0 (raw logit `raw`) within +-1e-3 with greedy picks against a
// competitor (token 1, never penalized) placed just above and just below `expected`.
void expect_penalized(SamplingOptions o, float raw, const std::vector<int32_t>& history, float expected) {
  o.temperature = 0.0f;
  Sampler sampler(o);
  std::vector<float> logits{raw, expected + 1e-3f, -50.0f, -50.0f};
  EXPECT_EQ(sampler.sample(logits, history), 1) << "penalized logit should be below " << expected + 1e-3f;
  logits[1] = expected - 1e-3f;
  EXPECT_EQ(sampler.sample(logits, history), 0) << "penalized logit should be above " << expected - 1e-3f;
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegativeOncePerToken) {
  SamplingOptions o = plain();
  o.repeat_penalty = 1.5f;
  expect_penalized(o, 3.0f, {0}, 2.0f);
  expect_penalized(o, -2.0f, {0}, -3.0f);
  expect_penalized(o, 3.0f, {0, 0, 0, 2, 0}, 2.0f);  // once per distinct token, not per occurrence
  expect_penalized(o, 3.0f, {2, 3}, 3.0f);           // token 0 absent: untouched
  o.repeat_penalty = 0.5f;                            // < 1 favours repeats
  expect_penalized(o, 3.0f, {0}, 6.0f);
}

TEST(Sampler, FrequencyAndPresencePenalties) {
  SamplingOptions o = plain();
  o.frequency_penalty = 0.5f;
  expect_penalized(o, 3.0f, {0, 2, 0, 0}, 3.0f - 3 * 0.5f);
  o.frequency_penalty = 0.0f;
  o.presence_penalty = 0.7f;
  expect_penalized(o, 3.0f, {0, 2, 0, 0}, 3.0f - 0.7f);
  expect_penalized(o, 3.0f, {0}, 3.0f - 0.7f);
  // All three: 3 / 1.5 - 2 * 0.5 - 0.25 = 0.75 and -2 * 1.5 - 1 - 0.25 = -4.25.
  o.repeat_penalty = 1.5f;
  o.frequency_penalty = 0.5f;
  o.presence_penalty = 0.25f;
  expect_penalized(o, 3.0f, {0, 3, 0}, 0.75f);
  expect_penalized(o, -2.0f, {0, 3, 0}, -4.25f);
  // Negative values reward repeats (llama.cpp allows them).
  o.repeat_penalty = 1.0f;
  o.frequency_penalty = -1.0f;
  o.presence_penalty = 0.0f;
  expect_penalized(o, 3.0f, {0, 0}, 5.0f);
}

TEST(Sampler, PenaltyWindowIsTheHistoryTail) {
  SamplingOptions o = plain();
  o.frequency_penalty = 1.0f;
  o.penalty_last_n = 2;
  expect_penalized(o, 3.0f, {0, 0, 0, 2, 3}, 3.0f);  // window {2, 3}
  expect_penalized(o, 3.0f, {0, 0, 0, 2, 0}, 2.0f);  // window {2, 0}
  expect_penalized(o, 3.0f, {0, 0}, 1.0f);           // history shorter than the window
  o.penalty_last_n = -1;
  expect_penalized(o, 3.0f, {0, 0, 0, 2, 3}, 0.0f);  // whole history
  o.penalty_last_n = 0;
  expect_penalized(o, 3.0f, {0, 0, 0}, 3.0f);  // off
}

TEST(Sampler, TopKRanksThePenalizedLogits) {
  // A penalty can push a token out of the top k (letting the next one in) or lift one into it.
  const std::vector<float> logits{3.0f, 2.9f, 2.8f, 0.0f, 2.85f, -1.0f};
  SamplingOptions o = plain();
  o.top_k = 2;
  EXPECT_EQ(drawn_ids(o, logits, 300), (std::set<int32_t>{0, 1}));
  o.repeat_penalty = 10.0f;  // id 0: 3.0 -> 0.3, so 4 (2.85) moves up
  EXPECT_EQ(drawn_ids(o, logits, 300, 1, {0, 5}), (std::set<int32_t>{1, 4}));
  o.repeat_penalty = 1.0f;
  o.frequency_penalty = -1.45f;  // id 3: 0 + 2 * 1.45 = 2.9 ties id 1 and ranks after it by id
  EXPECT_EQ(drawn_ids(o, logits, 300, 1, {3, 3}), (std::set<int32_t>{0, 1}));
  o.frequency_penalty = -1.5f;   // id 3: 3.0 ties id 0 and ranks after it
  EXPECT_EQ(drawn_ids(o, logits, 300, 1, {3, 3}), (std::set<int32_t>{0, 3}));
  o.frequency_penalty = -2.0f;   // id 3: 4.0, the best
  EXPECT_EQ(drawn_ids(o, logits, 300, 1, {3, 3}), (std::set<int32_t>{0, 3}));
  o.top_k = 1;
  EXPECT_EQ(drawn_ids(o, logits, 20, 1, {3, 3}), (std::set<int32_t>{3}));
}

TEST(Sampler, PenaltiesRejectHistoryIdsOutsideTheVocabulary) {
  SamplingOptions o = plain();
  o.repeat_penalty = 1.1f;
  Sampler sampler(o);
  const std::vector<float> logits{1.0f, 2.0f};
  EXPECT_THROW(sampler.sample(logits, std::vector<int32_t>{0, 2}), InvalidArgumentError);
  EXPECT_THROW(sampler.sample(logits, std::vector<int32_t>{-1}), InvalidArgumentError);
}

// ---------------------------------------------------------------- determinism

std::vector<int32_t> sequence(uint64_t seed, const std::vector<float>& logits, int n) {
  Sampler sampler(plain(seed));
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(sampler.sample(logits, {}));
  return ids;
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedDifferent) {
  const auto logits = spread_logits();
  const auto a = sequence(42, logits, 300);
  EXPECT_EQ(a, sequence(42, logits, 300));
  EXPECT_NE(a, sequence(43, logits, 300));
  EXPECT_NE(a, sequence(0, logits, 300));
  // More than one token shows up, or the comparisons above prove nothing.
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 10u);
}

TEST(Sampler, ResetRestartsTheSequence) {
  const auto logits = spread_logits();
  Sampler sampler(plain(7));
  std::vector<int32_t> first, second;
  for (int i = 0; i < 100; ++i) first.push_back(sampler.sample(logits, {}));
  sampler.reset();
  for (int i = 0; i < 100; ++i) second.push_back(sampler.sample(logits, {}));
  EXPECT_EQ(first, second);
  EXPECT_EQ(sampler.options().seed, 7u);
}

TEST(Sampler, MovedSamplerKeepsItsState) {
  const auto logits = spread_logits();
  Sampler a(plain(9));
  const int32_t first = a.sample(logits, {});
  Sampler b(std::move(a));
  Sampler reference(plain(9));
  EXPECT_EQ(reference.sample(logits, {}), first);
  EXPECT_EQ(b.sample(logits, {}), reference.sample(logits, {}));
}

// ---------------------------------------------------------------- distribution

// 99.9% quantile of the chi-square distribution with 49 degrees of freedom (scipy.stats.chi2.ppf(
// 0.999, 49) = 85.35): a correct sampler fails this with probability 0.001 per seed, and the seed
// is fixed, so the test is deterministic.
constexpr double kChi2Critical49 = 85.35;

TEST(Sampler, DistributionMatchesSoftmaxAtTemperatureOne) {
  const auto logits = spread_logits();
  const int n = 100000;
  Sampler sampler(plain(20240601));
  const auto counts = histogram(sampler, logits, n);
  EXPECT_LT(chi_square(counts, softmax(logits), n), kChi2Critical49);
  // The statistic has power: the same counts are far from the uniform distribution and from
  // softmax at another temperature.
  EXPECT_GT(chi_square(counts, std::vector<double>(logits.size(), 1.0 / logits.size()), n), 10 * kChi2Critical49);
  EXPECT_GT(chi_square(counts, softmax(logits, 1.2), n), 10 * kChi2Critical49);
}

TEST(Sampler, TemperatureScalesTheLogits) {
  const auto logits = spread_logits();
  const int n = 100000;
  SamplingOptions o = plain(5);
  o.temperature = 0.7f;
  Sampler sampler(o);
  const auto counts = histogram(sampler, logits, n);
  // Some tokens are rare at 0.7; pool the ones expected < 50 times into one bin, and use the
  // critical value for the resulting degrees of freedom (computed below, 99.9% via Wilson-Hilferty).
  const auto probs = softmax(logits, 0.7);
  std::vector<int> pooled_counts{0};
  std::vector<double> pooled_probs{0.0};
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] * n < 50) {
      pooled_counts[0] += counts[i];
      pooled_probs[0] += probs[i];
    } else {
      pooled_counts.push_back(counts[i]);
      pooled_probs.push_back(probs[i]);
    }
  }
  const double df = static_cast<double>(pooled_probs.size() - 1);
  const double z = 3.0902;  // standard normal 99.9% quantile
  const double critical = df * std::pow(1 - 2 / (9 * df) + z * std::sqrt(2 / (9 * df)), 3);
  EXPECT_LT(chi_square(pooled_counts, pooled_probs, n), critical);
}

TEST(Sampler, TopKRenormalizesOverTheKeptTokens) {
  const auto logits = spread_logits();
  const int n = 100000;
  SamplingOptions o = plain(11);
  o.top_k = 10;
  Sampler sampler(o);
  const auto counts = histogram(sampler, logits, n);
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  std::vector<float> kept_logits;
  std::vector<int> kept_counts;
  int outside = 0;
  for (size_t r = 0; r < order.size(); ++r) {
    if (r < 10) {
      kept_logits.push_back(logits[order[r]]);
      kept_counts.push_back(counts[order[r]]);
    } else {
      outside += counts[order[r]];
    }
  }
  EXPECT_EQ(outside, 0);
  // 9 degrees of freedom: scipy.stats.chi2.ppf(0.999, 9) = 27.88.
  EXPECT_LT(chi_square(kept_counts, softmax(kept_logits), n), 27.88);
}

// ---------------------------------------------------------------- errors

TEST(Sampler, NoDrawableTokenIsAnError) {
  const std::vector<float> all_minus_inf(8, -kInf);
  const std::vector<float> all_nan(8, kNaN);
  const std::vector<float> mixed{-kInf, kNaN, -kInf};
  for (const SamplingOptions& o : {plain(), greedy_options(), SamplingOptions{}}) {
    Sampler sampler(o);
    EXPECT_THROW(sampler.sample(all_minus_inf, {}), InvalidArgumentError);
    EXPECT_THROW(sampler.sample(all_nan, {}), InvalidArgumentError);
    EXPECT_THROW(sampler.sample(mixed, {}), InvalidArgumentError);
    EXPECT_THROW(sampler.sample(std::vector<float>{}, {}), InvalidArgumentError);
  }
  try {
    Sampler(plain()).sample(all_minus_inf, {});
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("-inf or NaN"), std::string::npos) << e.what();
  }
}

struct BadOption {
  const char* name;
  void (*set)(SamplingOptions&);
};

TEST(Sampler, EachInvalidOptionIsRejectedByName) {
  const std::vector<BadOption> cases = {
      {"temperature", [](SamplingOptions& o) { o.temperature = -1.0f; }},
      {"temperature", [](SamplingOptions& o) { o.temperature = kNaN; }},
      {"temperature", [](SamplingOptions& o) { o.temperature = kInf; }},
      {"top_p", [](SamplingOptions& o) { o.top_p = 0.0f; }},
      {"top_p", [](SamplingOptions& o) { o.top_p = 1.5f; }},
      {"top_p", [](SamplingOptions& o) { o.top_p = -0.5f; }},
      {"top_p", [](SamplingOptions& o) { o.top_p = kNaN; }},
      {"min_p", [](SamplingOptions& o) { o.min_p = -0.1f; }},
      {"min_p", [](SamplingOptions& o) { o.min_p = 1.1f; }},
      {"min_p", [](SamplingOptions& o) { o.min_p = kNaN; }},
      {"repeat_penalty", [](SamplingOptions& o) { o.repeat_penalty = 0.0f; }},
      {"repeat_penalty", [](SamplingOptions& o) { o.repeat_penalty = -1.0f; }},
      {"repeat_penalty", [](SamplingOptions& o) { o.repeat_penalty = kNaN; }},
      {"frequency_penalty", [](SamplingOptions& o) { o.frequency_penalty = kNaN; }},
      {"presence_penalty", [](SamplingOptions& o) { o.presence_penalty = kInf; }},
      {"penalty_last_n", [](SamplingOptions& o) { o.penalty_last_n = -2; }},
  };
  for (const auto& c : cases) {
    SamplingOptions o;
    c.set(o);
    for (int via_constructor = 0; via_constructor < 2; ++via_constructor) {
      try {
        if (via_constructor) {
          Sampler sampler(o);
        } else {
          validate(o);
        }
        ADD_FAILURE() << c.name << ": no error";
      } catch (const InvalidArgumentError& e) {
        EXPECT_NE(std::string(e.what()).find(c.name), std::string::npos) << e.what();
      }
    }
  }
}

TEST(Sampler, BoundaryOptionsAreValid) {
  SamplingOptions o;
  o.temperature = 0.0f;
  o.top_p = 1.0f;
  o.min_p = 0.0f;
  o.penalty_last_n = -1;
  o.top_k = -5;
  EXPECT_NO_THROW(validate(o));
  o.min_p = 1.0f;
  o.top_p = 1e-6f;
  EXPECT_NO_THROW(validate(o));
  EXPECT_NO_THROW(validate(SamplingOptions{}));
}

}  // namespace
}  // namespace lathe
