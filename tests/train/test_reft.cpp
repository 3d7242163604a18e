// ReFT interventions (src/train/reft.hpp) in the training pass, on the tiny synthetic llama (3
// layers): the op's algebra (an intervention with W = R and b = 0 changes nothing; after one, R h'
// is W h + b exactly, what LoReFT sets the subspace to), the positions, the initialization, and
// the gradients of R, W and b against float64 central differences of the pass's loss — and the
// LoRA gradients of layers below an intervention, which flow through it.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/error.hpp"
#include "train/lora_pass.hpp"
#include "train/reft.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

const std::vector<int32_t> kTokens = {1, 5, 9, 2, 7, 3, 11, 4, 0, 30, 12};
// A 4-token prompt (position 3 predicts the first answer token), then the answer.
const std::vector<int32_t> kTargets = {-1, -1, -1, 7, 3, 11, 4, 0, 30, 12, -1};

ReftSet<double> to_double(const ReftSet<float>& f) {
  ReftSet<double> d;
  d.rank = f.rank;
  d.width = f.width;
  d.first = f.first;
  d.last = f.last;
  for (const auto& s : f.sites)
    d.sites.push_back({s.layer, {s.r.begin(), s.r.end()}, {s.w.begin(), s.w.end()}, {s.b.begin(), s.b.end()}});
  return d;
}

// Central differences of `loss` (which reads `values`) on 4 random entries of `values`, against
// `analytic`: the worst difference and the largest analytic value seen, accumulated.
struct Agreement {
  double worst = 0, largest = 0;
};
void compare_entries(std::vector<double>& values, const std::vector<double>& analytic,
                     const std::function<double()>& loss, std::mt19937& rng, Agreement& agreement) {
  const double h = 1e-6;
  for (int sample = 0; sample < 4; ++sample) {
    const size_t i = rng() % values.size();
    const double keep = values[i];
    values[i] = keep + h;
    const double up = loss();
    values[i] = keep - h;
    const double down = loss();
    values[i] = keep;
    agreement.worst = std::max(agreement.worst, std::abs((up - down) / (2 * h) - analytic[i]));
    agreement.largest = std::max(agreement.largest, std::abs(analytic[i]));
  }
}

// Gradients that are not all zero, and within 1e-6 of the largest of the central differences.
void expect_agreement(const Agreement& agreement) {
  EXPECT_GT(agreement.largest, 1e-4);
  EXPECT_LT(agreement.worst / agreement.largest, 1e-6) << "worst " << agreement.worst << ", largest "
                                                       << agreement.largest;
}

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

TEST(Reft, InitGivesOrthonormalRowsAndRefusesBadShapes) {
  const std::vector<uint32_t> layers = {2, 0};
  const auto f = init_reft(64, layers, 4, 1, 1, 7);
  ASSERT_EQ(f.sites.size(), 2u);
  EXPECT_EQ(f.sites[0].layer, 0u);  // layer order
  const auto d = to_double(f);
  for (const auto& s : d.sites)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 4; ++j)
        EXPECT_NEAR(dot(s.r.data() + i * 64, s.r.data() + j * 64, 64), i == j ? 1.0 : 0.0, 1e-6);
  const auto again = init_reft(64, layers, 4, 1, 1, 7);
  EXPECT_EQ(again.sites[1].w, f.sites[1].w);  // same seed, same set
  EXPECT_NE(init_reft(64, layers, 4, 1, 1, 8).sites[1].w, f.sites[1].w);
  test::expect_error<InvalidArgumentError>([&] { init_reft(64, layers, 65, 1, 1, 7); }, {"rank 65", "1..64"});
  test::expect_error<InvalidArgumentError>([&] { init_reft(64, layers, 4, 0, 0, 7); }, {"f0+l0"});
  const std::vector<uint32_t> twice = {1, 1};
  test::expect_error<InvalidArgumentError>([&] { init_reft(64, twice, 4, 1, 1, 7); }, {"layer 1", "twice"});
  std::vector<double> dependent(2 * 3, 1.0);
  test::expect_error<InvalidArgumentError>([&] { orthonormalize_rows(dependent, 2, 3); }, {"row 1"});
}

TEST(Reft, PositionsAreThePromptsFirstAndLast) {
  EXPECT_EQ(reft_positions(1, 2, 5), (std::vector<int64_t>{0, 3, 4}));
  EXPECT_EQ(reft_positions(3, 3, 4), (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(reft_positions(0, 1, 1), (std::vector<int64_t>{0}));
  EXPECT_EQ(reft_positions(2, 0, 1), (std::vector<int64_t>{0}));
}

TEST(Reft, TheInterventionSetsTheSubspaceToWhPlusB) {
  const std::vector<uint32_t> layer = {0};
  auto set = to_double(init_reft(8, layer, 3, 1, 1, 3));
  auto& site = set.sites[0];
  orthonormalize_rows(site.r, 3, 8);  // orthonormal to float64 precision, not float32's
  std::mt19937 rng(5);
  std::normal_distribution<double> dist(0.0, 1.0);
  std::vector<double> x(2 * 8);
  for (auto& v : x) v = dist(rng);
  const std::vector<int64_t> at = {1};
  std::vector<double> saved;
  auto y = x;
  reft_forward<double>(site, 3, 8, at, y.data(), saved);
  for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(y[c], x[c]) << "row 0 is not intervened on";
  for (int64_t i = 0; i < 3; ++i) {
    const double want = dot(site.w.data() + i * 8, x.data() + 8, 8) + site.b[i];
    EXPECT_NEAR(dot(site.r.data() + i * 8, y.data() + 8, 8), want, 1e-12);
  }
  // W = R, b = 0: nothing changes.
  site.w = site.r;
  std::fill(site.b.begin(), site.b.end(), 0.0);
  y = x;
  reft_forward<double>(site, 3, 8, at, y.data(), saved);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-12);
}

// Central differences of the float64 pass's loss on sampled entries of every site's R, W and b.
TEST(Reft, GradientsAreTheLossGradient) {
  test::TempDir dir("train_reft");
  test::TinyModel tiny("", DType::F32, 3);
  tiny.add_tokenizer();
  const auto w = load_model_weights(tiny.write(dir, "tiny3.gguf"));
  const std::vector<uint32_t> layers = {0, 2};
  auto reft = to_double(init_reft(w.hp.n_embd, layers, 4, 1, 2, 11));
  LoraSet<double> no_lora;
  no_lora.rank = 1;
  no_lora.alpha = 1;
  ReftGrads<double> grads;
  grads.reset(reft);
  const double loss = lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr,
                                                    nullptr, {}, &reft, &grads);
  EXPECT_GT(loss, 0.0);
  std::vector<double> plain_logits, reft_logits;
  lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, &plain_logits);
  lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, &reft_logits, {}, nullptr, nullptr, {}, &reft);
  double moved = 0;
  for (size_t i = 0; i < plain_logits.size(); ++i) moved = std::max(moved, std::abs(plain_logits[i] - reft_logits[i]));
  EXPECT_GT(moved, 1e-3) << "the interventions changed nothing";

  std::mt19937 rng(13);
  Agreement agreement;
  const auto loss_now = [&] {
    return lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, {},
                                         &reft);
  };
  for (size_t s = 0; s < reft.sites.size(); ++s) {
    compare_entries(reft.sites[s].r, grads.dr[s], loss_now, rng, agreement);
    compare_entries(reft.sites[s].w, grads.dw[s], loss_now, rng, agreement);
    compare_entries(reft.sites[s].b, grads.db[s], loss_now, rng, agreement);
  }
  expect_agreement(agreement);
}

// A LoRA adapter below a fixed intervention: its gradient is the loss's through the intervention
// (reft given, its own gradients not asked for).
TEST(Reft, LoraGradientsFlowThroughAFixedIntervention) {
  test::TempDir dir("train_reft_lora");
  test::TinyModel tiny("", DType::F32, 3);
  tiny.add_tokenizer();
  const auto w = load_model_weights(tiny.write(dir, "tiny3.gguf"));
  const std::vector<uint32_t> layers = {1};
  const auto reft = to_double(init_reft(w.hp.n_embd, layers, 4, 2, 2, 17));
  const std::vector<std::string> targets = {"ffn_down"};
  const auto init = init_lora(w, targets, 2, 4.0, 19);
  LoraSet<double> lora;
  lora.rank = init.rank;
  lora.alpha = init.alpha;
  std::mt19937 rng(21);
  std::normal_distribution<double> dist(0.0, 0.05);
  for (const auto& p : init.pairs) {
    if (p.layer != 0) continue;  // below the intervention only
    LoraSet<double>::Pair q{p.layer, p.target, p.in, p.out, {p.a.begin(), p.a.end()}, {}};
    q.b.resize(p.b.size());
    for (auto& x : q.b) x = dist(rng);
    lora.pairs.push_back(std::move(q));
  }
  ASSERT_EQ(lora.pairs.size(), 1u);
  LoraGrads<double> grads;
  grads.reset(lora);
  lora_forward_backward<double>(w, lora, kTokens, kTargets, &grads, nullptr, {}, nullptr, nullptr, {}, &reft);
  Agreement agreement;
  const auto loss_now = [&] {
    return lora_forward_backward<double>(w, lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, {}, &reft);
  };
  compare_entries(lora.pairs[0].a, grads.da[0], loss_now, rng, agreement);
  compare_entries(lora.pairs[0].b, grads.db[0], loss_now, rng, agreement);
  expect_agreement(agreement);
}

TEST(Reft, SitesMustFitTheModel) {
  test::TempDir dir("train_reft_bad");
  test::TinyModel tiny("", DType::F32, 3);
  tiny.add_tokenizer();
  const auto w = load_model_weights(tiny.write(dir, "tiny3.gguf"));
  LoraSet<double> no_lora;
  no_lora.rank = 1;
  no_lora.alpha = 1;
  const std::vector<uint32_t> past = {3};
  const auto beyond = to_double(init_reft(w.hp.n_embd, past, 2, 1, 1, 1));
  test::expect_error<InvalidArgumentError>(
      [&] {
        lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, {},
                                      &beyond);
      },
      {"layer 3", "layers 0..2"});
  const std::vector<uint32_t> first = {0};
  const auto narrow = to_double(init_reft(32, first, 2, 1, 1, 1));
  test::expect_error<InvalidArgumentError>(
      [&] {
        lora_forward_backward<double>(w, no_lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, {},
                                      &narrow);
      },
      {"width 32", "width 64"});
}

}  // namespace
}  // namespace lathe::train
