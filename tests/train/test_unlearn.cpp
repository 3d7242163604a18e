// Unlearning (src/train/unlearn.hpp) on the tiny synthetic llama: the objectives' loss heads are
// their gradients (float64 central differences), and NPO / GradDiff from a fine-tuned adapter make
// the model forget one memorized fact while it keeps the other.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <random>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/error.hpp"
#include "train/unlearn.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

std::vector<double> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> dist(0.0, 2.0);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// max |analytic - numeric| / max |numeric| for a head's gradient.
template <class Head>
double head_gradient_error(std::vector<double> z, Head head) {
  std::vector<double> analytic(z.size()), scratch(z.size());
  head(z.data(), analytic.data());
  double worst = 0, largest = 0;
  for (size_t i = 0; i < z.size(); ++i) {
    const double keep = z[i], h = 1e-6;
    z[i] = keep + h;
    const double up = head(z.data(), scratch.data());
    z[i] = keep - h;
    const double down = head(z.data(), scratch.data());
    z[i] = keep;
    const double numeric = (up - down) / (2 * h);
    worst = std::max(worst, std::abs(numeric - analytic[i]));
    largest = std::max(largest, std::abs(numeric));
  }
  return worst / largest;
}

TEST(UnlearnHeads, SequenceLogprobAndKlAreTheirGradients) {
  const int64_t n = 4, vocab = 9;
  const std::vector<int32_t> targets = {-1, 3, 8, 0};
  const auto z = random_logits(n * vocab, 1);
  EXPECT_LT(head_gradient_error(z, [&](const double* l, double* d) {
              return sequence_logprob(l, n, vocab, targets, 1.0, d);
            }),
            1e-7);
  // A reference distribution for the three scored rows.
  std::vector<float> ref;
  const auto r = random_logits(3 * vocab, 2);
  for (int k = 0; k < 3; ++k) {
    double total = 0;
    for (int i = 0; i < vocab; ++i) total += std::exp(r[k * vocab + i]);
    for (int i = 0; i < vocab; ++i) ref.push_back(static_cast<float>(r[k * vocab + i] - std::log(total)));
  }
  EXPECT_LT(head_gradient_error(z, [&](const double* l, double* d) {
              return kl_to_reference(l, n, vocab, targets, ref, 1.0, d);
            }),
            1e-6);
  // KL of the reference against itself is 0.
  std::vector<double> same(n * vocab, 0.0), d(n * vocab);
  for (int k = 0, t = 1; t < 4; ++t, ++k)
    for (int i = 0; i < vocab; ++i) same[t * vocab + i] = ref[k * vocab + i];
  EXPECT_NEAR(kl_to_reference(same.data(), n, vocab, targets, ref, 1.0, d.data()), 0.0, 1e-6);
}

struct Tiny {
  test::TempDir dir{"unlearn"};
  std::filesystem::path path;
  Tiny() {
    test::TinyModel tiny;
    path = tiny.write(dir, "tiny.gguf");
  }
};

const Example kForget = {{3, 8, 15, 4, 22, 9, 1}, {-1, 15, 4, 22, 9, 1, -1}};
const Example kRetain = {{5, 8, 2, 17, 6, 12}, {-1, 2, 17, 6, 12, -1}};

// Mean log-probability of an example's scored tokens under the model with `lora`.
double mean_logprob(const ModelWeights& w, const LoraSet<float>& lora, const Example& e) {
  std::vector<float> logits, d;
  lora_forward_backward(w, lora, e.tokens, e.targets, nullptr, &logits);
  d.resize(logits.size());
  const double sum =
      sequence_logprob(logits.data(), static_cast<int64_t>(e.tokens.size()), w.output.rows, e.targets, 1.0, d.data());
  return sum / static_cast<double>(std::count_if(e.targets.begin(), e.targets.end(), [](int32_t t) { return t >= 0; }));
}

TEST(Unlearn, NpoAndGradDiffForgetOneFactAndKeepTheOther) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  FinetuneOptions ft;
  ft.rank = 4;
  ft.alpha = 8;
  ft.adamw.lr = 2e-2;
  ft.steps = 60;
  ft.grad_accumulation = 2;
  ft.seed = 3;
  const auto learned = finetune(w, {kForget, kRetain}, ft);
  const double forget_before = mean_logprob(w, learned, kForget), retain_before = mean_logprob(w, learned, kRetain);
  EXPECT_GT(forget_before, -0.1);  // memorized
  for (Objective objective : {Objective::Npo, Objective::GradDiff}) {
    SCOPED_TRACE(objective == Objective::Npo ? "npo" : "graddiff");
    UnlearnOptions options;
    options.train = ft;
    options.train.steps = 40;
    options.train.grad_accumulation = 1;
    options.train.adamw.lr = 1e-2;
    options.objective = objective;
    options.beta = 0.5;
    int steps = 0;
    const auto forgot = unlearn(w, {kForget}, {kRetain}, options, &learned, [&](const UnlearnStep&) { ++steps; });
    EXPECT_EQ(steps, 40);
    const double forget_after = mean_logprob(w, forgot, kForget), retain_after = mean_logprob(w, forgot, kRetain);
    std::cout << "unlearn: forget log p " << forget_before << " -> " << forget_after << ", retain " << retain_before
              << " -> " << retain_after << "\n";
    EXPECT_LT(forget_after, forget_before - 2.0);  // the forget fact's answer became unlikely
    EXPECT_GT(retain_after, -0.5);                  // the retain fact is still known
  }
}

// Resident memory of this process (bytes), from /proc/self/statm.
uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// The reference model is the base with the adapters off, not a second copy loaded per run: 100
// unlearning runs in one process hold no more memory at the end than after the first few.
TEST(Unlearn, HundredRunsInOneProcessKeepMemoryFlat) {
  // ASan keeps freed memory in its quarantine (256 MB by default), so resident memory grows with
  // every allocation whatever the code does; the release build runs this test.
  if (test::kUnderAddressSanitizer)
    GTEST_SKIP() << "resident memory is not measurable under AddressSanitizer (its quarantine holds freed memory)";
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  UnlearnOptions options;
  options.train.rank = 4;
  options.train.steps = 3;
  options.retain_loss = RetainLoss::Kl;  // the reference's distributions are computed every run
  auto run = [&](uint64_t seed) {
    options.train.seed = seed;
    return unlearn(w, {kForget}, {kRetain}, options);
  };
  for (uint64_t seed = 0; seed < 5; ++seed) run(seed);  // warm-up: allocator pools, first-touch pages
  const uint64_t before = resident_bytes();
  for (uint64_t seed = 5; seed < 105; ++seed) run(seed);
  const uint64_t after = resident_bytes();
  std::cout << "unlearn x100: resident " << before / 1024 << " KiB -> " << after / 1024 << " KiB\n";
  EXPECT_LT(after, before + 4u * 1024 * 1024);
}

TEST(Unlearn, BadSetsAndOptionsAreRefusedBeforeTraining) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  UnlearnOptions options;
  options.train.steps = 1;
  test::expect_error<InvalidArgumentError>([&] { unlearn(w, {}, {kRetain}, options); }, {"forget set is empty"});
  test::expect_error<InvalidArgumentError>([&] { unlearn(w, {kForget}, {}, options); }, {"retain set is empty"});
  options.objective = Objective::GradAscent;
  EXPECT_NO_THROW(unlearn(w, {kForget}, {}, options));
  options.beta = 0;
  test::expect_error<InvalidArgumentError>([&] { unlearn(w, {kForget}, {}, options); }, {"beta 0 must be > 0"});
  options.beta = 0.1;
  test::expect_error<InvalidArgumentError>([&] { unlearn(w, {{{1, 2}, {-1, -1}}}, {}, options); },
                                           {"forget example 0 scores no position"});
}

}  // namespace
}  // namespace lathe::train
