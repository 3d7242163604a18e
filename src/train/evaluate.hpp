// How well a model knows a set of examples (the measure of fine-tuning and unlearning, as TOFU
// reports it): per example, teacher-forced through the inference engine (a Session, so it measures
// exactly what `lathe run` computes, adapters merged by --lora included), the log-probability of
// the scored tokens, how many of them the model would pick greedily, and whether it would produce
// all of them; over the set, the mean answer probability, accuracy and perplexity.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "lathe/lathe.hpp"
#include "train/finetune.hpp"

namespace lathe::train {

struct ExampleScore {
  size_t scored = 0;        // tokens scored
  double logprob = 0;       // sum of log p(target) over them
  size_t correct = 0;       // of them, the model's greedy pick
  bool exact() const noexcept { return correct == scored; }
  // TOFU's normalized answer probability: p(answer)^(1/|answer|) = exp(mean log p).
  double probability() const noexcept;
};

struct SetScore {
  std::vector<ExampleScore> examples;
  double mean_probability = 0;  // mean over examples of ExampleScore::probability()
  double token_accuracy = 0;    // correct / scored over all tokens
  double exact_match = 0;       // fraction of examples with every scored token right
  double perplexity = 0;        // exp(-sum logprob / sum scored)
};

// Scores `examples` with one session of `model` (context: the longest example), with `hooks` on
// the residual stream when given (an edit that lives in hooks: a projection, a steering vector).
// on_progress, when given, is called after each example (done, total).
SetScore score_examples(std::shared_ptr<const Model> model, const std::vector<Example>& examples,
                        const ComputeOptions& compute = {},
                        const std::function<void(size_t done, size_t total)>& on_progress = {},
                        std::shared_ptr<ResidualHooks> hooks = nullptr);

}  // namespace lathe::train
