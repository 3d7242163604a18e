#include "train/evaluate.hpp"

#include <algorithm>
#include <cmath>

#include "lathe/error.hpp"
#include "train/ops.hpp"

namespace lathe::train {

double ExampleScore::probability() const noexcept {
  return scored == 0 ? 0.0 : std::exp(logprob / static_cast<double>(scored));
}

SetScore score_examples(std::shared_ptr<const Model> model, const std::vector<Example>& examples,
                        const ComputeOptions& compute, const std::function<void(size_t, size_t)>& on_progress,
                        std::shared_ptr<ResidualHooks> hooks) {
  if (examples.empty()) throw InvalidArgumentError("there are no examples to score");
  size_t longest = 0;
  for (const auto& e : examples) longest = std::max(longest, e.tokens.size());
  Session session(model, {.n_ctx = static_cast<uint32_t>(longest), .compute = compute});
  if (hooks) session.set_hooks(std::move(hooks));
  SetScore set;
  double total_logprob = 0;
  size_t total_scored = 0, total_correct = 0, exact = 0;
  for (size_t i = 0; i < examples.size(); ++i) {
    const Example& e = examples[i];
    session.reset();
    session.eval(e.tokens, /*all_logits=*/true);
    ExampleScore score;
    for (size_t t = 0; t < e.tokens.size(); ++t) {
      if (e.targets[t] < 0) continue;
      const auto row = session.logits_at(t);
      score.logprob += double(row[static_cast<size_t>(e.targets[t])]) - log_sum_exp(row.data(), static_cast<int64_t>(row.size()));
      score.correct += static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()) == e.targets[t];
      ++score.scored;
    }
    set.mean_probability += score.probability();
    total_logprob += score.logprob;
    total_scored += score.scored;
    total_correct += score.correct;
    exact += score.exact() && score.scored > 0;
    set.examples.push_back(score);
    if (on_progress) on_progress(i + 1, examples.size());
  }
  const double n = static_cast<double>(examples.size());
  set.mean_probability /= n;
  set.token_accuracy = total_scored ? static_cast<double>(total_correct) / static_cast<double>(total_scored) : 0.0;
  set.exact_match = static_cast<double>(exact) / n;
  set.perplexity = total_scored ? std::exp(-total_logprob / static_cast<double>(total_scored)) : 0.0;
  return set;
}

}  // namespace lathe::train
