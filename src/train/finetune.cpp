#include "train/finetune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "arch/hparams.hpp"
#include "lathe/error.hpp"

namespace lathe::train {
namespace {

void check_examples(const ModelWeights& w, const std::vector<Example>& examples) {
  if (examples.empty()) throw InvalidArgumentError("there are no training examples");
  for (size_t i = 0; i < examples.size(); ++i) {
    const auto& e = examples[i];
    if (e.tokens.empty() || e.tokens.size() != e.targets.size())
      throw InvalidArgumentError(fmt::format("training example {} has {} tokens and {} targets", i, e.tokens.size(),
                                             e.targets.size()));
    if (std::none_of(e.targets.begin(), e.targets.end(), [](int32_t t) { return t >= 0; }))
      throw InvalidArgumentError(fmt::format("training example {} scores no position (every target is -1)", i));
    for (int32_t id : e.tokens)
      if (id < 0 || id >= w.token_embd.rows)
        throw InvalidArgumentError(fmt::format("training example {} has token {} outside the vocabulary (0..{})", i,
                                               id, w.token_embd.rows - 1));
    for (int32_t id : e.targets)
      if (id < -1 || id >= w.output.rows)
        throw InvalidArgumentError(fmt::format("training example {} has target {} outside the vocabulary (0..{}, or "
                                               "-1)",
                                               i, id, w.output.rows - 1));
  }
}

void check_options(const FinetuneOptions& o) {
  if (o.rank < 1 || o.rank > 4096) throw InvalidArgumentError(fmt::format("the LoRA rank {} is outside 1..4096", o.rank));
  if (o.steps < 1) throw InvalidArgumentError(fmt::format("training needs at least one step (got {})", o.steps));
  if (o.grad_accumulation < 1)
    throw InvalidArgumentError(fmt::format("gradient accumulation {} must be at least 1", o.grad_accumulation));
  if (o.warmup_steps < 0 || o.warmup_steps > o.steps)
    throw InvalidArgumentError(fmt::format("{} warm-up steps for {} steps", o.warmup_steps, o.steps));
  if (o.targets.empty()) throw InvalidArgumentError("no LoRA targets given");
}

}  // namespace

size_t ExampleCycle::next() {
  if (at_ == order_.size()) {
    std::iota(order_.begin(), order_.end(), size_t{0});
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng_() % i]);
    at_ = 0;
  }
  return order_[at_++];
}

LoraSet<float> finetune(const ModelWeights& weights, const std::vector<Example>& examples,
                        const FinetuneOptions& options, const std::function<void(const StepReport&)>& on_step) {
  check_options(options);
  check_examples(weights, examples);
  auto lora = init_lora(weights, options.targets, options.rank, options.alpha, options.seed);
  std::vector<size_t> sizes;
  for (const auto& p : lora.pairs) sizes.insert(sizes.end(), {p.a.size(), p.b.size()});
  AdamW adamw(options.adamw, sizes);
  LoraGrads<float> grads;
  std::vector<float*> params, grad_ptrs;
  ExampleCycle order(examples.size(), options.seed ^ 0x5851f42d4c957f2dull);
  for (int64_t step = 0; step < options.steps; ++step) {
    grads.reset(lora);
    double loss = 0;
    for (int64_t k = 0; k < options.grad_accumulation; ++k) {
      const Example& e = examples[order.next()];
      loss += lora_forward_backward(weights, lora, e.tokens, e.targets, &grads);
    }
    params.clear();
    grad_ptrs.clear();
    const float scale = 1.0f / static_cast<float>(options.grad_accumulation);
    for (size_t p = 0; p < lora.pairs.size(); ++p) {
      for (auto* g : {&grads.da[p], &grads.db[p]})
        for (float& x : *g) x *= scale;
      params.insert(params.end(), {lora.pairs[p].a.data(), lora.pairs[p].b.data()});
      grad_ptrs.insert(grad_ptrs.end(), {grads.da[p].data(), grads.db[p].data()});
    }
    const double norm = clip_grad_norm(grad_ptrs, sizes, options.max_grad_norm);
    const double lr = learning_rate(options.adamw.lr, step, options.warmup_steps, options.steps, options.decay);
    std::vector<const float*> const_grads(grad_ptrs.begin(), grad_ptrs.end());
    adamw.step(lr, params, const_grads);
    if (on_step) on_step({step + 1, loss / static_cast<double>(options.grad_accumulation), norm, lr});
  }
  return lora;
}

LoraAdapter to_adapter(const LoraSet<float>& lora, const ModelWeights& weights) {
  LoraAdapter adapter;
  adapter.source = weights.source;
  adapter.architecture = std::string(arch_name(weights.hp.arch));
  adapter.alpha = static_cast<float>(lora.alpha);
  for (const auto& p : lora.pairs)
    adapter.pairs.push_back({fmt::format("blk.{}.{}.weight", p.layer, p.target), lora.rank, p.in, p.out, p.a, p.b});
  return adapter;
}

}  // namespace lathe::train
