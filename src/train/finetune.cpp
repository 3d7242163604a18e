#include "train/finetune.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <sstream>

#include "arch/hparams.hpp"
#include "arch/tensor_names.hpp"
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
    if (e.scored() == 0)
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
  if (!(o.lora_dropout >= 0 && o.lora_dropout < 1))
    throw InvalidArgumentError(fmt::format("the LoRA dropout {} is outside [0, 1)", o.lora_dropout));
  if (o.n_threads < 0 || o.n_threads > 4096)
    throw InvalidArgumentError(fmt::format("{} threads is outside 0..4096 (0: one per physical core)", o.n_threads));
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

ExampleCycle::State ExampleCycle::state() const {
  std::ostringstream rng;
  rng << rng_;
  return {order_, at_, rng.str()};
}

void ExampleCycle::restore(const State& state) {
  std::vector<size_t> sorted = state.order;
  std::sort(sorted.begin(), sorted.end());
  bool permutation = sorted.size() == order_.size();
  for (size_t i = 0; permutation && i < sorted.size(); ++i) permutation = sorted[i] == i;
  if (!permutation || state.at > order_.size())
    throw InvalidArgumentError(fmt::format("the saved example order is not one over {} examples (it has {}, next {}): "
                                           "was the data changed?",
                                           order_.size(), state.order.size(), state.at));
  std::istringstream text(state.rng);
  std::mt19937_64 rng;
  text >> rng;
  if (text.fail()) throw InvalidArgumentError("the saved example order's generator state cannot be read");
  order_ = state.order;
  at_ = state.at;
  rng_ = rng;
}

AdapterOptimizer::AdapterOptimizer(LoraSet<float> lora, const FinetuneOptions& options)
    : lora_(std::move(lora)), options_(options), sizes_(), adamw_(options.adamw, [&] {
        for (const auto& p : lora_.pairs) sizes_.insert(sizes_.end(), {p.a.size(), p.b.size()});
        return std::span<const size_t>(sizes_);
      }()) {}

AdapterOptimizer::Applied AdapterOptimizer::apply(LoraGrads<float>& grads) {
  std::vector<float*> params, grad_ptrs;
  for (size_t p = 0; p < lora_.pairs.size(); ++p) {
    params.insert(params.end(), {lora_.pairs[p].a.data(), lora_.pairs[p].b.data()});
    grad_ptrs.insert(grad_ptrs.end(), {grads.da[p].data(), grads.db[p].data()});
  }
  const double norm = clip_grad_norm(grad_ptrs, sizes_, options_.max_grad_norm);
  const double lr = learning_rate(options_.adamw.lr, step_, options_.warmup_steps, options_.steps, options_.decay);
  const std::vector<const float*> const_grads(grad_ptrs.begin(), grad_ptrs.end());
  adamw_.step(lr, params, const_grads);
  ++step_;
  return {norm, lr};
}

TrainState AdapterOptimizer::state() const {
  return {step_, lora_, adamw_.first_moments(), adamw_.second_moments(), {}};
}

void AdapterOptimizer::restore(const TrainState& state) {
  const auto& saved = state.lora;
  if (saved.rank != lora_.rank || saved.pairs.size() != lora_.pairs.size())
    throw InvalidArgumentError(fmt::format("the saved adapters have rank {} and {} matrices; this run's have rank {} and "
                                           "{}",
                                           saved.rank, saved.pairs.size(), lora_.rank, lora_.pairs.size()));
  for (size_t p = 0; p < saved.pairs.size(); ++p) {
    const auto &a = saved.pairs[p], &b = lora_.pairs[p];
    if (a.layer != b.layer || a.target != b.target || a.a.size() != b.a.size() || a.b.size() != b.b.size())
      throw InvalidArgumentError(fmt::format("saved adapter {} is blk.{}.{} ({} x {}); this run's is blk.{}.{} ({} x {})",
                                             p, a.layer, a.target, a.out, a.in, b.layer, b.target, b.out, b.in));
  }
  if (state.adam_m.size() != sizes_.size() || state.adam_v.size() != sizes_.size())
    throw InvalidArgumentError(fmt::format("the saved optimizer has {} tensors; this run has {}", state.adam_m.size(),
                                           sizes_.size()));
  for (size_t i = 0; i < sizes_.size(); ++i)
    if (state.adam_m[i].size() != sizes_[i] || state.adam_v[i].size() != sizes_[i])
      throw InvalidArgumentError(fmt::format("the saved optimizer's tensor {} has the wrong size", i));
  if (state.step < 0 || state.step > options_.steps)
    throw InvalidArgumentError(fmt::format("the saved run is at step {}, outside this run's 0..{}", state.step,
                                           options_.steps));
  lora_ = saved;
  adamw_.first_moments() = state.adam_m;
  adamw_.second_moments() = state.adam_v;
  adamw_.set_steps(state.step);
  step_ = state.step;
}

FinetuneRun::FinetuneRun(const ModelWeights& weights, const std::vector<Example>& examples,
                         const FinetuneOptions& options, const LoraSet<float>* initial)
    : weights_(weights),
      examples_(examples),
      options_((check_options(options), check_examples(weights, examples), options)),
      optimizer_(initial ? *initial : init_lora(weights, options.targets, options.rank, options.alpha, options.seed),
                 options),
      order_(examples.size(), options.seed ^ kExampleOrderSeedMix),
      pool_(std::make_unique<cpu::ThreadPool>(options.n_threads)) {}

StepReport FinetuneRun::step() {
  if (done()) throw InvalidArgumentError(fmt::format("the run has done all its {} steps", options_.steps));
  grads_.reset(optimizer_.lora());
  double loss = 0;
  for (int64_t k = 0; k < options_.grad_accumulation; ++k) {
    const Example& e = examples_[order_.next()];
    // LoRA dropout: a mask per pass, drawn from the seed and the pass's place in the run.
    const LoraDropout dropout{options_.lora_dropout, dropout_seed(options_.seed, optimizer_.steps_done(), k)};
    loss += lora_forward_backward(weights_, optimizer_.lora(), e.tokens, e.targets, &grads_, nullptr, {}, pool_.get(),
                                  nullptr, dropout);
  }
  const float scale = 1.0f / static_cast<float>(options_.grad_accumulation);
  for (size_t p = 0; p < grads_.da.size(); ++p)
    for (auto* g : {&grads_.da[p], &grads_.db[p]})
      for (float& x : *g) x *= scale;
  const auto applied = optimizer_.apply(grads_);
  return {optimizer_.steps_done(), loss / static_cast<double>(options_.grad_accumulation), applied.grad_norm,
          applied.lr};
}

TrainState FinetuneRun::state() const {
  TrainState s = optimizer_.state();
  s.cycles = {order_.state()};
  return s;
}

void FinetuneRun::restore(const TrainState& state) {
  if (state.cycles.size() != 1)
    throw InvalidArgumentError(fmt::format("the saved state has {} example orders; fine-tuning has one (is it an "
                                           "unlearning checkpoint?)",
                                           state.cycles.size()));
  order_.restore(state.cycles[0]);
  optimizer_.restore(state);
}

LoraSet<float> finetune(const ModelWeights& weights, const std::vector<Example>& examples,
                        const FinetuneOptions& options, const std::function<void(const StepReport&)>& on_step) {
  FinetuneRun run(weights, examples, options);
  while (!run.done()) {
    const StepReport report = run.step();
    if (on_step) on_step(report);
  }
  return run.lora();
}

LoraAdapter to_adapter(const LoraSet<float>& lora, const ModelWeights& weights) {
  LoraAdapter adapter;
  adapter.source = weights.source;
  adapter.architecture = std::string(arch_name(weights.hp.arch));
  adapter.alpha = static_cast<float>(lora.alpha);
  for (const auto& p : lora.pairs) {
    const std::string target = fmt::format("blk.{}.{}.weight", p.layer, p.target);
    adapter.pairs.push_back({target, lora.rank, p.in, p.out, p.a, p.b});
    // A Llama loaded from a Hugging Face directory keeps Q/K rows in Hugging Face's order, so the
    // adapters trained on it are in that order too; llama.cpp's adapter files use its own.
    if (const auto heads = qk_permute_heads(weights.hp, target); heads && weights.format != "gguf")
      permute_qk_rows_gguf_from_hf(adapter.pairs.back().b, static_cast<uint64_t>(p.out),
                                   static_cast<uint64_t>(lora.rank), *heads);
  }
  return adapter;
}

}  // namespace lathe::train
