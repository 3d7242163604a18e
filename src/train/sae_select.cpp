#include "train/sae_select.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>

#include "api/model_impl.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "lathe/error.hpp"
#include "train/lora_pass.hpp"

namespace lathe::train {
namespace {

// Sums of an SAE's feature activations over the rows it sees (the stream is left as it is).
class FeatureSums : public RowTransform {
 public:
  explicit FeatureSums(std::shared_ptr<const edit::Sae> sae)
      : sae_(std::move(sae)), sums_(static_cast<size_t>(sae_->d_sae), 0.0) {}
  int64_t width() const noexcept override { return sae_->d_in; }
  std::string describe() const override { return "feature sums of " + sae_->describe(); }
  void apply(float* rows, int64_t n_rows, int64_t) override {
    const auto f = edit::sae_encode(*sae_, rows, n_rows);
    for (int64_t r = 0; r < n_rows; ++r)
      for (size_t j = 0; j < sums_.size(); ++j) sums_[j] += f[static_cast<size_t>(r) * sums_.size() + j];
    rows_ += static_cast<uint64_t>(n_rows);
  }
  std::vector<double> means() const {
    std::vector<double> m(sums_);
    for (double& x : m) x /= std::max<double>(1.0, static_cast<double>(rows_));
    return m;
  }

 private:
  std::shared_ptr<const edit::Sae> sae_;
  std::vector<double> sums_;
  uint64_t rows_ = 0;
};

std::vector<double> mean_activations(const std::shared_ptr<const Model>& model,
                                     const std::shared_ptr<const edit::Sae>& sae, HookSite site,
                                     const std::vector<Example>& examples, const FeatureSelectOptions& options,
                                     const std::function<void()>& on_example) {
  auto sums = std::make_shared<FeatureSums>(sae);
  auto hooks = std::make_shared<ResidualHooks>();
  hooks->transform(site, sums);
  run_answer_positions(model, examples, hooks, options.compute, on_example);
  return sums->means();
}

}  // namespace

std::string_view feature_criterion_name(FeatureCriterion c) noexcept {
  return c == FeatureCriterion::Activation ? "activation" : "attribution";
}

FeatureCriterion parse_feature_criterion(std::string_view name, std::string_view where) {
  for (const auto c : {FeatureCriterion::Activation, FeatureCriterion::Attribution})
    if (name == feature_criterion_name(c)) return c;
  throw InvalidArgumentError(fmt::format("{}: unknown feature criterion \"{}\"; use activation or attribution", where, name));
}

void run_answer_positions(const std::shared_ptr<const Model>& model, const std::vector<Example>& examples,
                          const std::shared_ptr<ResidualHooks>& hooks, const ComputeOptions& compute,
                          const std::function<void()>& on_example) {
  size_t longest = 0;
  for (const auto& e : examples) longest = std::max(longest, e.tokens.size());
  if (longest == 0) return;
  Session session(model, {.n_ctx = static_cast<uint32_t>(longest), .compute = compute});
  for (const auto& e : examples) {
    const auto first = static_cast<size_t>(
        std::find_if(e.targets.begin(), e.targets.end(), [](int32_t t) { return t >= 0; }) - e.targets.begin());
    if (first < e.tokens.size()) {
      session.reset();
      session.set_hooks(nullptr);
      if (first > 0) session.eval(std::span<const TokenId>(e.tokens.data(), first));
      session.set_hooks(hooks);
      session.eval(std::span<const TokenId>(e.tokens.data() + first, e.tokens.size() - first));
    }
    if (on_example) on_example();
  }
}

std::vector<double> sae_feature_effects(const std::shared_ptr<const Model>& model, const edit::Sae& sae, HookSite site,
                                        const std::vector<Example>& examples, const FeatureSelectOptions& options,
                                        const std::function<void()>& on_example) {
  const ModelWeights& weights = internals(*model).weights;
  cpu::ThreadPool pool(options.compute.n_threads);
  const LoraSet<float> no_adapters;
  std::vector<double> mean(static_cast<size_t>(sae.d_sae), 0.0);
  size_t used = 0;
  for (const auto& e : examples) {
    if (e.scored() > 0) {
      ResidualProbe<float> probe{.site = site, .rows = {}, .grad = {}};
      lora_forward_backward(weights, no_adapters, e.tokens, e.targets, nullptr, nullptr, {}, &pool, &probe);
      const size_t first =
          options.rows == FeatureSelectOptions::Rows::All
              ? 0
              : static_cast<size_t>(std::find_if(e.targets.begin(), e.targets.end(), [](int32_t t) { return t >= 0; }) -
                                    e.targets.begin());
      const size_t width = static_cast<size_t>(sae.d_in);
      const auto effects = edit::sae_edit_attribution(sae, probe.rows.data() + first * width,
                                                      probe.grad.data() + first * width,
                                                      static_cast<int64_t>(e.tokens.size() - first), options.edit,
                                                      options.gate, &pool);
      for (size_t j = 0; j < mean.size(); ++j) mean[j] += effects[j];
      ++used;
    }
    if (on_example) on_example();
  }
  for (double& m : mean) m /= std::max<double>(1.0, static_cast<double>(used));
  return mean;
}

std::vector<SelectedFeature> select_sae_features(const std::shared_ptr<const Model>& model,
                                                 const std::shared_ptr<const edit::Sae>& sae, HookSite site,
                                                 const std::vector<Example>& forget, const std::vector<Example>& retain,
                                                 const FeatureSelectOptions& options) {
  if (forget.empty() || retain.empty())
    throw InvalidArgumentError("choosing SAE features needs forget and retain examples to compare");
  if (options.count < 1)
    throw InvalidArgumentError(fmt::format("the number of features to choose is {}; give 1 or more", options.count));
  const auto& s = model->summary();
  edit::check_sae_fits(*sae, site, s.n_layer, s.n_embd);
  const size_t total = forget.size() + retain.size();
  size_t done = 0;
  auto tick = [&] {
    if (options.on_progress) options.on_progress(++done, total);
  };
  std::array<std::vector<double>, 2> per_set;  // forget, retain
  for (int i = 0; i < 2; ++i) {
    const auto& examples = i == 0 ? forget : retain;
    per_set[i] = options.by == FeatureCriterion::Activation
                     ? mean_activations(model, sae, site, examples, options, tick)
                     : sae_feature_effects(model, *sae, site, examples, options, tick);
  }
  std::vector<SelectedFeature> scored;
  for (size_t j = 0; j < per_set[0].size(); ++j) {
    const double score = per_set[0][j] - per_set[1][j];
    if (score > 0) scored.push_back({static_cast<uint32_t>(j), score, per_set[0][j], per_set[1][j]});
  }
  std::sort(scored.begin(), scored.end(),
            [](const auto& a, const auto& b) { return a.score > b.score || (a.score == b.score && a.id < b.id); });
  if (scored.size() > static_cast<size_t>(options.count)) scored.resize(static_cast<size_t>(options.count));
  if (scored.empty())
    throw InvalidArgumentError(fmt::format(
        "no feature of {} scores above 0 by {} (forget minus retain){}", sae->describe(),
        feature_criterion_name(options.by),
        options.by == FeatureCriterion::Attribution ? ": no single edit raises the forget loss more than the retain loss"
                                                    : ": none is more active on the forget set"));
  return scored;
}

}  // namespace lathe::train
