// The whole-model LoRA training pass (src/train/lora_pass.hpp) on the tiny synthetic llama:
// - its forward is the inference engine's function: logits equal a Session's, without adapters
//   and with adapters (against the adapter merged into the weights by `--lora`'s merge_lora);
// - its adapter gradients are the loss's: float64 central differences on sampled entries of A and
//   B of every pair, and the float32 pass against the float64 one.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/model_logits.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "lathe/lathe.hpp"
#include "train/lora_pass.hpp"
#include "weights/lora.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {
namespace {

const std::vector<std::string> kAllTargets = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                              "ffn_gate", "ffn_up", "ffn_down"};
const std::vector<int32_t> kTokens = {1, 5, 9, 2, 7, 3, 11, 4, 0, 30, 12};
// Predict the next token everywhere but the first two positions (a "prompt") and the last.
const std::vector<int32_t> kTargets = {-1, -1, 2, 7, 3, 11, 4, 0, 30, 12, -1};

struct Tiny {
  test::TempDir dir{"train_pass"};
  std::filesystem::path path;
  Tiny() {
    test::TinyModel tiny;
    tiny.add_tokenizer();
    path = tiny.write(dir, "tiny.gguf");
  }
};

// Adapters with B non-zero too (init_lora's B = 0 would give A no gradient).
LoraSet<double> random_lora(const ModelWeights& w, uint64_t seed) {
  const auto init = init_lora(w, kAllTargets, 3, 6.0, seed);
  LoraSet<double> lora;
  lora.rank = init.rank;
  lora.alpha = init.alpha;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<double> dist(0.0, 0.05);
  for (const auto& p : init.pairs) {
    LoraSet<double>::Pair q{p.layer, p.target, p.in, p.out, {p.a.begin(), p.a.end()}, {}};
    q.b.resize(p.b.size());
    for (auto& x : q.b) x = dist(rng);
    lora.pairs.push_back(std::move(q));
  }
  return lora;
}

LoraSet<float> to_float(const LoraSet<double>& d) {
  LoraSet<float> f;
  f.rank = d.rank;
  f.alpha = d.alpha;
  for (const auto& p : d.pairs)
    f.pairs.push_back({p.layer, p.target, p.in, p.out, {p.a.begin(), p.a.end()}, {p.b.begin(), p.b.end()}});
  return f;
}

std::vector<float> session_logits(const std::filesystem::path& model_path, const std::vector<LoraSpec>& loras) {
  LoadOptions options;
  options.loras = loras;
  Session session(Model::load(model_path, options), {.n_ctx = 32, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
  return test::session_logits(session, kTokens);
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(LoraPass, ForwardIsTheInferenceEnginesFunction) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  // Without adapters (B = 0 at init): the engine's logits.
  LoraSet<double> zero;
  zero.rank = 2;
  zero.alpha = 2;
  std::vector<double> logits;
  lora_forward_backward(w, zero, kTokens, kTargets, nullptr, &logits);
  const auto plain = session_logits(tiny.path, {});
  ASSERT_EQ(plain.size(), logits.size());
  EXPECT_LT(max_abs_diff(plain, logits), 1e-4);

  // With adapters on every matrix: the engine's logits with the adapter merged by --lora.
  const auto lora = random_lora(w, 3);
  lora_forward_backward(w, lora, kTokens, kTargets, nullptr, &logits);
  LoraAdapter adapter;
  adapter.architecture = "llama";
  adapter.alpha = static_cast<float>(lora.alpha);
  for (const auto& p : lora.pairs)
    adapter.pairs.push_back({fmt::format("blk.{}.{}.weight", p.layer, p.target), lora.rank, p.in, p.out,
                             {p.a.begin(), p.a.end()}, {p.b.begin(), p.b.end()}});
  write_lora_adapter(adapter, tiny.dir / "trained.gguf", "test");
  const auto merged = session_logits(tiny.path, {{tiny.dir / "trained.gguf", 1.0f}});
  EXPECT_LT(max_abs_diff(merged, logits), 1e-4);
  EXPECT_GT(max_abs_diff(plain, logits), 0.05);  // the adapters matter
}

// The analytic gradients `grads` of the float64 pass against central differences of its loss on 3
// sampled entries (from `seed`) of every pair's A and B, through the same dropout masks.
void expect_central_differences(const ModelWeights& w, LoraSet<double>& lora, const LoraGrads<double>& grads,
                                uint32_t seed, LoraDropout dropout = {}) {
  std::mt19937 rng(seed);
  const double h = 1e-6;
  double worst = 0, largest = 0;
  for (size_t p = 0; p < lora.pairs.size(); ++p) {
    for (int which = 0; which < 2; ++which) {
      auto& values = which == 0 ? lora.pairs[p].a : lora.pairs[p].b;
      const auto& analytic = which == 0 ? grads.da[p] : grads.db[p];
      for (int sample = 0; sample < 3; ++sample) {
        const size_t i = rng() % values.size();
        const double keep = values[i];
        const auto loss_at = [&](double v) {
          values[i] = v;
          return lora_forward_backward(w, lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, dropout);
        };
        const double numeric = (loss_at(keep + h) - loss_at(keep - h)) / (2 * h);
        values[i] = keep;
        worst = std::max(worst, std::abs(numeric - analytic[i]));
        largest = std::max(largest, std::abs(analytic[i]));
      }
    }
  }
  EXPECT_GT(largest, 1e-4);  // gradients that are not all zero
  EXPECT_LT(worst / largest, 1e-6) << "worst " << worst << ", largest " << largest;
}

TEST(LoraPass, AdapterGradientsAreTheLossGradient) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  auto lora = random_lora(w, 5);
  LoraGrads<double> grads;
  grads.reset(lora);
  const double loss = lora_forward_backward(w, lora, kTokens, kTargets, &grads);
  EXPECT_GT(loss, 0.0);
  expect_central_differences(w, lora, grads, 9);

  // The float32 pass against the float64 one.
  const auto lora_f = to_float(lora);
  LoraGrads<float> grads_f;
  grads_f.reset(lora_f);
  const double loss_f = lora_forward_backward(w, lora_f, kTokens, kTargets, &grads_f);
  EXPECT_NEAR(loss_f, loss, 1e-4 * loss);
  double diff = 0, size = 0;
  for (size_t p = 0; p < lora.pairs.size(); ++p)
    for (int which = 0; which < 2; ++which) {
      const auto& d = which == 0 ? grads.da[p] : grads.db[p];
      const auto& f = which == 0 ? grads_f.da[p] : grads_f.db[p];
      for (size_t i = 0; i < d.size(); ++i) {
        diff = std::max(diff, std::abs(f[i] - d[i]));
        size = std::max(size, std::abs(d[i]));
      }
    }
  EXPECT_LT(diff / size, 1e-4);
}

// LoRA dropout (LoraDropout): with a fixed seed the pass is a function of the adapters, and its
// gradients are that function's (central differences through the same masks, every pair: the
// earlier layers' gradients pass through the later adapters' masked input gradients); p = 0 is no
// dropout to the bit; a seed repeats to the bit and another draws other masks.
TEST(LoraPass, DropoutGradientsAreTheMaskedPassGradient) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  auto lora = random_lora(w, 5);
  const LoraDropout dropout{0.3, 77};
  LoraGrads<double> grads;
  grads.reset(lora);
  const double loss = lora_forward_backward(w, lora, kTokens, kTargets, &grads, nullptr, {}, nullptr, nullptr, dropout);
  expect_central_differences(w, lora, grads, 19, dropout);

  LoraGrads<double> plain, zero_p, again, other;
  for (auto* g : {&plain, &zero_p, &again, &other}) g->reset(lora);
  const double loss_plain = lora_forward_backward(w, lora, kTokens, kTargets, &plain);
  EXPECT_EQ(lora_forward_backward(w, lora, kTokens, kTargets, &zero_p, nullptr, {}, nullptr, nullptr, {0.0, 77}),
            loss_plain);
  EXPECT_EQ(zero_p.da, plain.da);
  EXPECT_EQ(zero_p.db, plain.db);
  EXPECT_NE(loss, loss_plain);
  EXPECT_EQ(lora_forward_backward(w, lora, kTokens, kTargets, &again, nullptr, {}, nullptr, nullptr, dropout), loss);
  EXPECT_EQ(again.da, grads.da);
  EXPECT_NE(lora_forward_backward(w, lora, kTokens, kTargets, &other, nullptr, {}, nullptr, nullptr, {0.3, 78}), loss);

  // The float pass with dropout gives the same bits on any number of threads.
  const auto lora_f = to_float(lora);
  cpu::ThreadPool one(1), three(3);
  LoraGrads<float> g1, g3;
  g1.reset(lora_f);
  g3.reset(lora_f);
  EXPECT_EQ(lora_forward_backward(w, lora_f, kTokens, kTargets, &g1, nullptr, {}, &one, nullptr, dropout),
            lora_forward_backward(w, lora_f, kTokens, kTargets, &g3, nullptr, {}, &three, nullptr, dropout));
  EXPECT_EQ(g1.da, g3.da);
  EXPECT_EQ(g1.db, g3.db);

  for (double bad : {-0.1, 1.0, std::nan("")})
    test::expect_error<InvalidArgumentError>(
        [&] { lora_forward_backward(w, lora, kTokens, kTargets, nullptr, nullptr, {}, nullptr, nullptr, {bad, 1}); },
        {"LoRA dropout", "[0, 1)"});
}

// The masks drop the asked share of values, independently per adapter, and the kept values are
// scaled by 1 / (1 - p) (inverted dropout, as torch's nn.Dropout in PEFT): with a small adapter (its
// effect on the logits nearly linear), the mean over many masks of the logits' change is the
// change without dropout, while one mask alone is far from it.
TEST(LoraPass, DropoutDropsItsShareAndKeepsTheAdapterEffectOnAverage) {
  for (double p : {0.1, 0.5}) {
    const LoraDropout d{p, 1234};
    size_t dropped = 0, differ = 0;
    const size_t n = 200000;
    for (size_t i = 0; i < n; ++i) {
      const int64_t token = static_cast<int64_t>(i / 500), col = static_cast<int64_t>(i % 500);
      dropped += !d.keeps(0, token, col);
      differ += d.keeps(0, token, col) != d.keeps(1, token, col);
    }
    const double share = double(dropped) / n;
    EXPECT_NEAR(share, p, 4 * std::sqrt(p * (1 - p) / n)) << "p " << p;
    EXPECT_NEAR(double(differ) / n, 2 * p * (1 - p), 0.01) << "p " << p << ": two adapters' masks are independent";
  }

  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  auto lora = random_lora(w, 5);
  for (auto& pair : lora.pairs)
    for (double& b : pair.b) b *= 1e-3;
  LoraSet<double> none = lora;
  none.pairs.clear();
  std::vector<double> base, full, one_mask, sum;
  lora_forward_backward(w, none, kTokens, kTargets, nullptr, &base);
  lora_forward_backward(w, lora, kTokens, kTargets, nullptr, &full);
  const int kMasks = 400;
  for (int k = 0; k < kMasks; ++k) {
    std::vector<double> logits;
    lora_forward_backward(w, lora, kTokens, kTargets, nullptr, &logits, {}, nullptr, nullptr,
                          {0.5, static_cast<uint64_t>(1000 + k)});
    if (k == 0) one_mask = logits;
    if (sum.empty()) sum.assign(logits.size(), 0.0);
    for (size_t i = 0; i < logits.size(); ++i) sum[i] += logits[i];
  }
  double err_mean = 0, err_one = 0, size = 0;
  for (size_t i = 0; i < sum.size(); ++i) {
    const double change = full[i] - base[i];
    err_mean += std::pow(sum[i] / kMasks - full[i], 2);
    err_one += std::pow(one_mask[i] - full[i], 2);
    size += change * change;
  }
  std::cout << "dropout 0.5: one mask's logit change off by " << std::sqrt(err_one / size) << ", the mean of "
            << kMasks << " masks by " << std::sqrt(err_mean / size) << " (relative)\n";
  EXPECT_GT(std::sqrt(err_one / size), 0.3);
  EXPECT_LT(std::sqrt(err_mean / size), 0.1);
}

// The CPU engine's forward pass (forward/forward.cpp) on `w`, logits of every token of kTokens.
std::vector<float> engine_logits(const ModelWeights& w) { return test::forward_logits(w, kTokens); }

// Tiny models of the other architectures, written here as GGUF: Qwen2 (Q/K/V biases, untied
// output), Qwen3 (per-head Q/K norms, head_dim set explicitly), Phi-3 (fused QKV and gate/up,
// 12 of 16 head dimensions rotated). RoPE pairs are NeoX halves for all three.
std::filesystem::path write_arch_model(const test::TempDir& dir, const std::string& arch) {
  constexpr uint32_t embd = 48, ff = 80, heads = 3, kv_heads = 1, head_dim = 16, vocab = 40, layers = 2;
  gguf::Writer writer;
  std::vector<std::vector<uint8_t>> buffers;
  std::mt19937 rng(11);
  auto tensor = [&](const std::string& name, std::vector<uint64_t> shape, float mean = 0.0f, float scale = 0.2f) {
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    std::normal_distribution<float> dist(mean, scale);
    std::vector<float> values(n);
    for (auto& v : values) v = dist(rng);
    buffers.push_back(quantize(DType::F32, values));
    writer.add_tensor(name, DType::F32, std::move(shape), buffers.back());
  };
  writer.set("general.architecture", gguf::Value::str(arch));
  auto key = [&](const std::string& k) { return arch + "." + k; };
  writer.set(key("block_count"), gguf::Value::u32(layers));
  writer.set(key("embedding_length"), gguf::Value::u32(embd));
  writer.set(key("feed_forward_length"), gguf::Value::u32(ff));
  writer.set(key("attention.head_count"), gguf::Value::u32(heads));
  writer.set(key("attention.head_count_kv"), gguf::Value::u32(kv_heads));
  writer.set(key("attention.key_length"), gguf::Value::u32(head_dim));
  writer.set(key("context_length"), gguf::Value::u32(64));
  writer.set(key("vocab_size"), gguf::Value::u32(vocab));
  if (arch == "phi3") writer.set(key("rope.dimension_count"), gguf::Value::u32(12));
  const uint32_t q = heads * head_dim, kv = kv_heads * head_dim;
  tensor("token_embd.weight", {embd, vocab});
  tensor("output_norm.weight", {embd}, 1.0f);
  if (arch != "phi3") tensor("output.weight", {embd, vocab});
  for (uint32_t i = 0; i < layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    tensor(p + "attn_norm.weight", {embd}, 1.0f);
    tensor(p + "ffn_norm.weight", {embd}, 1.0f);
    if (arch == "phi3") {
      tensor(p + "attn_qkv.weight", {embd, q + 2 * kv});
      tensor(p + "ffn_up.weight", {embd, 2 * ff});
    } else {
      tensor(p + "attn_q.weight", {embd, q});
      tensor(p + "attn_k.weight", {embd, kv});
      tensor(p + "attn_v.weight", {embd, kv});
      tensor(p + "ffn_gate.weight", {embd, ff});
      tensor(p + "ffn_up.weight", {embd, ff});
    }
    if (arch == "qwen2")
      for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias"})
        tensor(p + b, {std::string(b) == "attn_q.bias" ? q : kv});
    if (arch == "qwen3") {
      tensor(p + "attn_q_norm.weight", {head_dim}, 1.0f);
      tensor(p + "attn_k_norm.weight", {head_dim}, 1.0f);
    }
    tensor(p + "attn_output.weight", {q, embd});
    tensor(p + "ffn_down.weight", {ff, embd});
  }
  const auto path = dir / (arch + ".gguf");
  writer.write(path);
  return path;
}

// The pass on every architecture: logits equal the CPU engine's (forward/forward.cpp), through
// the weights seam without a tokenizer, and adapter gradients equal central differences.
TEST(LoraPass, EveryArchitectureMatchesTheEngineAndItsGradients) {
  for (const std::string arch : {"qwen2", "qwen3", "phi3"}) {
    SCOPED_TRACE(arch);
    test::TempDir dir("train_arch");
    const auto path = write_arch_model(dir, arch);
    const auto w = load_model_weights(path);
    const std::vector<std::string> targets =
        arch == "phi3" ? std::vector<std::string>{"attn_qkv", "attn_output", "ffn_up", "ffn_down"} : kAllTargets;
    const auto init = init_lora(w, targets, 2, 4.0, 5);
    LoraSet<double> lora;
    lora.rank = init.rank;
    lora.alpha = init.alpha;
    std::mt19937 rng(3);
    std::normal_distribution<double> dist(0.0, 0.05);
    for (const auto& p : init.pairs) {
      LoraSet<double>::Pair q{p.layer, p.target, p.in, p.out, {p.a.begin(), p.a.end()}, {}};
      q.b.resize(p.b.size());
      for (auto& x : q.b) x = dist(rng);
      lora.pairs.push_back(std::move(q));
    }
    // Forward: the engine on the weights with the adapter merged (merge_lora), same logits.
    std::vector<double> logits;
    LoraGrads<double> grads;
    grads.reset(lora);
    lora_forward_backward(w, lora, kTokens, kTargets, &grads, &logits);
    auto merged = load_model_weights(path);
    LoraAdapter adapter;
    adapter.architecture = arch;
    adapter.alpha = static_cast<float>(lora.alpha);
    for (const auto& p : lora.pairs)
      adapter.pairs.push_back({fmt::format("blk.{}.{}.weight", p.layer, p.target), lora.rank, p.in, p.out,
                               {p.a.begin(), p.a.end()}, {p.b.begin(), p.b.end()}});
    merge_lora(merged, adapter, 1.0f, 1);
    const auto engine = engine_logits(merged);
    EXPECT_LT(max_abs_diff(engine, logits), 1e-4);
    // Gradients: two sampled entries of each pair's A and B.
    double worst = 0, largest = 0;
    for (size_t p = 0; p < lora.pairs.size(); ++p)
      for (int which = 0; which < 2; ++which) {
        auto& values = which == 0 ? lora.pairs[p].a : lora.pairs[p].b;
        const auto& analytic = which == 0 ? grads.da[p] : grads.db[p];
        for (int sample = 0; sample < 2; ++sample) {
          const size_t i = rng() % values.size();
          const double keep = values[i], h = 1e-6;
          values[i] = keep + h;
          const double up = lora_forward_backward(w, lora, kTokens, kTargets, nullptr);
          values[i] = keep - h;
          const double down = lora_forward_backward(w, lora, kTokens, kTargets, nullptr);
          values[i] = keep;
          worst = std::max(worst, std::abs((up - down) / (2 * h) - analytic[i]));
          largest = std::max(largest, std::abs(analytic[i]));
        }
      }
    EXPECT_GT(largest, 1e-5);
    EXPECT_LT(worst / largest, 1e-6) << "worst " << worst << ", largest " << largest;
  }
}

TEST(LoraPass, BadInputsAreClearErrors) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  const auto lora = init_lora(w, std::vector<std::string>{"attn_q"}, 2, 4.0, 1);
  EXPECT_THROW(lora_forward_backward(w, lora, std::vector<int32_t>{}, std::vector<int32_t>{}, nullptr),
               InvalidArgumentError);
  EXPECT_THROW(lora_forward_backward(w, lora, std::vector<int32_t>{1, 99}, std::vector<int32_t>{-1, -1}, nullptr),
               InvalidArgumentError);
  test::expect_error<InvalidArgumentError>(
      [&] { init_lora(w, std::vector<std::string>{"attn_qkv"}, 2, 4.0, 1); }, {"layer 0 has no matrix attn_qkv",
                                                                               "attn_q, attn_k"});
  auto wrong = lora;
  wrong.pairs[0].in += 1;
  EXPECT_THROW(lora_forward_backward(w, wrong, kTokens, kTargets, nullptr), InvalidArgumentError);
}

// Records the rows it sees at its site and adds `add` (one row per position) to them.
class ProbeHook : public RowTransform {
 public:
  ProbeHook(int64_t width, std::vector<float> add) : width_(width), add_(std::move(add)) {}
  int64_t width() const noexcept override { return width_; }
  std::string describe() const override { return "probe hook"; }
  void apply(float* rows, int64_t n_rows, int64_t width) override {
    for (int64_t i = 0; i < n_rows * width; ++i, ++seen_) {
      rows_.push_back(rows[i]);
      if (!add_.empty()) rows[i] += add_[seen_];
    }
  }
  std::vector<float> rows_;

 private:
  int64_t width_;
  std::vector<float> add_;
  size_t seen_ = 0;
};

// The engine's mean cross-entropy over kTargets, with a hook at `site` adding `add` to its rows;
// the rows the hook saw come back in `rows`.
double engine_loss(const std::filesystem::path& path, HookSite site, std::vector<float> add, std::vector<float>* rows) {
  auto model = Model::load(path);
  const int64_t d = model->summary().n_embd;
  auto hook = std::make_shared<ProbeHook>(d, std::move(add));
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->transform(site, hook);
  Session session(model, {.n_ctx = 32, .compute = {.n_threads = 1, .kv_type = KvType::F32}});
  session.set_hooks(hooks);
  session.eval(kTokens, true);
  double sum = 0;
  int scored = 0;
  for (size_t t = 0; t < kTokens.size(); ++t) {
    if (kTargets[t] < 0) continue;
    const auto row = session.logits_at(t);
    double m = -1e300, z = 0;
    for (float v : row) m = std::max(m, double(v));
    for (float v : row) z += std::exp(double(v) - m);
    sum += m + std::log(z) - row[static_cast<size_t>(kTargets[t])];
    ++scored;
  }
  if (rows) *rows = hook->rows_;
  return sum / scored;
}

// The probe's rows are the rows the engine's hook of that name sees, and its gradient is the
// loss's: the engine's loss moved along the gradient's direction by +-h changes by 2h|g| (to 1%).
TEST(LoraPass, ProbeGivesTheRowsAndTheLossGradientAtTheSite) {
  Tiny tiny;
  const auto w = load_model_weights(tiny.path);
  const LoraSet<double> none;
  const double base = lora_forward_backward(w, none, kTokens, kTargets, nullptr);
  for (const char* name : {"blocks.0.resid_pre", "blocks.0.resid_mid", "blocks.0.resid_post", "blocks.1.resid_mid",
                           "blocks.1.resid_post", "final_norm"}) {
    SCOPED_TRACE(name);
    const HookSite site = HookSite::parse(name);
    ResidualProbe<double> probe{.site = site, .rows = {}, .grad = {}};
    const double loss = lora_forward_backward(w, none, kTokens, kTargets, nullptr, nullptr, {}, nullptr, &probe);
    EXPECT_EQ(loss, base);
    ASSERT_EQ(probe.rows.size(), kTokens.size() * static_cast<size_t>(w.hp.n_embd));
    ASSERT_EQ(probe.grad.size(), probe.rows.size());
    std::vector<float> engine_rows;
    engine_loss(tiny.path, site, {}, &engine_rows);
    ASSERT_EQ(engine_rows.size(), probe.rows.size());
    EXPECT_LT(max_abs_diff(engine_rows, probe.rows), 1e-4);
    double norm = 0;
    for (double g : probe.grad) norm += g * g;
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 1e-3);
    // A step of 1e-3 of the rows' size: the embeddings (resid_pre 0) are small, and the loss
    // curves on their scale.
    double size = 0;
    for (double x : probe.rows) size += x * x;
    const double h = 1e-3 * std::sqrt(size);
    std::vector<float> up(probe.grad.size()), down(probe.grad.size());
    for (size_t i = 0; i < up.size(); ++i) {
      up[i] = static_cast<float>(h * probe.grad[i] / norm);
      down[i] = -up[i];
    }
    const double slope = (engine_loss(tiny.path, site, up, nullptr) - engine_loss(tiny.path, site, down, nullptr)) / (2 * h);
    EXPECT_NEAR(slope, norm, 1e-2 * norm) << "|g| " << norm;
  }
  // With adapter gradients asked for too, the probe and the gradients are those of separate passes.
  const auto lora = random_lora(w, 5);
  LoraGrads<double> alone, with_probe;
  alone.reset(lora);
  with_probe.reset(lora);
  lora_forward_backward(w, lora, kTokens, kTargets, &alone);
  ResidualProbe<double> probe{.site = HookSite::parse("blocks.1.resid_mid"), .rows = {}, .grad = {}};
  lora_forward_backward(w, lora, kTokens, kTargets, &with_probe, nullptr, {}, nullptr, &probe);
  EXPECT_EQ(alone.da, with_probe.da);
  EXPECT_EQ(alone.db, with_probe.db);
  EXPECT_FALSE(probe.grad.empty());
  ResidualProbe<double> past{.site = HookSite::parse("blocks.2.resid_post"), .rows = {}, .grad = {}};
  test::expect_error<InvalidArgumentError>(
      [&] { lora_forward_backward(w, none, kTokens, kTargets, nullptr, nullptr, {}, nullptr, &past); },
      {"blocks.2.resid_post", "last layer (1)"});
}

}  // namespace
}  // namespace lathe::train
