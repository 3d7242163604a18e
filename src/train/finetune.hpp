// LoRA fine-tuning of a frozen model on the CPU: examples (token sequences with the positions to
// score) in a seeded order, gradient accumulation, clipping, AdamW with warm-up and decay, one
// callback per optimizer step. The same seed gives the same adapters on every run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "train/lora_pass.hpp"
#include "train/optimizer.hpp"
#include "weights/lora.hpp"

namespace lathe::train {

struct Example {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;  // per position, the token to predict there or -1 (not scored)
  size_t scored() const noexcept {  // positions with a target
    return static_cast<size_t>(std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; }));
  }
};

// What a run's example order is seeded with: its seed mixed with this, so that the order and
// the adapters' initialization (seeded with the seed itself) are not drawn from one stream.
inline constexpr uint64_t kExampleOrderSeedMix = 0x5851f42d4c957f2dull;

// A seeded cycle through n examples, reshuffled at each pass (Fisher-Yates on the generator's raw
// draws: the same order on every standard library).
class ExampleCycle {
 public:
  ExampleCycle(size_t n, uint64_t seed) : order_(n), rng_(seed), at_(n) {
    std::iota(order_.begin(), order_.end(), size_t{0});  // a permutation in every state
  }
  size_t next();

  // Where the cycle stands, for checkpoints: the current order, the next index and the generator
  // (std::mt19937_64's text form, the same on every standard library).
  struct State {
    std::vector<size_t> order;
    size_t at = 0;
    std::string rng;
  };
  State state() const;
  // InvalidArgumentError when the state is not one of a cycle over this many examples.
  void restore(const State& state);

 private:
  std::vector<size_t> order_;
  std::mt19937_64 rng_;
  size_t at_;  // == order_.size(): shuffle before the next draw (also the first)
};

struct FinetuneOptions {
  std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  int64_t rank = 8;
  double alpha = 16;
  double lora_dropout = 0;  // PEFT's lora_dropout (train/lora_pass.hpp: LoraDropout), training passes only
  AdamWOptions adamw = {.lr = 1e-3};
  int64_t steps = 100;           // optimizer steps
  int64_t grad_accumulation = 1;  // examples per optimizer step
  int64_t warmup_steps = 0;
  LrDecay decay = LrDecay::Linear;
  double max_grad_norm = 1.0;     // <= 0: no clipping
  uint64_t seed = 0;              // adapter initialization and example order
  int n_threads = 0;              // the passes' threads, 0: one per physical core (no effect on results)
};

struct StepReport {
  int64_t step = 0;  // 1-based
  double loss = 0;   // mean over the step's examples
  double grad_norm = 0;
  double lr = 0;
};

// Everything a training run needs to continue exactly where it stopped (what a checkpoint holds).
struct TrainState {
  int64_t step = 0;  // optimizer steps done
  LoraSet<float> lora;
  std::vector<std::vector<float>> adam_m, adam_v;  // per tensor: A then B of each pair
  std::vector<ExampleCycle::State> cycles;         // the example orders (fine-tuning: one)
};

// The adapters and their optimizer, shared by fine-tuning and unlearning: one step from
// accumulated gradients (clipping, the schedule, AdamW) and the state of both for checkpoints.
class AdapterOptimizer {
 public:
  AdapterOptimizer(LoraSet<float> lora, const FinetuneOptions& options);
  struct Applied {
    double grad_norm = 0, lr = 0;
  };
  // Clips `grads`, takes one AdamW step at the scheduled learning rate, counts the step.
  Applied apply(LoraGrads<float>& grads);
  int64_t steps_done() const noexcept { return step_; }
  const LoraSet<float>& lora() const noexcept { return lora_; }
  // The adapters, moments and step (cycles left empty: the run adds its own).
  TrainState state() const;
  // InvalidArgumentError naming the pair whose shape differs from this run's adapters.
  void restore(const TrainState& state);

 private:
  LoraSet<float> lora_;
  FinetuneOptions options_;
  std::vector<size_t> sizes_;
  AdamW adamw_;
  int64_t step_ = 0;
};

// Fine-tuning one optimizer step at a time, so that a caller can report progress, write
// checkpoints and stop between steps; finetune() below runs it to the end.
class FinetuneRun {
 public:
  // Checks the examples and options (as finetune()) before any work; `initial` replaces PEFT's
  // initialization (continued training).
  FinetuneRun(const ModelWeights& weights, const std::vector<Example>& examples, const FinetuneOptions& options,
              const LoraSet<float>* initial = nullptr);
  StepReport step();
  bool done() const noexcept { return optimizer_.steps_done() >= options_.steps; }
  int64_t steps_done() const noexcept { return optimizer_.steps_done(); }
  const LoraSet<float>& lora() const noexcept { return optimizer_.lora(); }
  TrainState state() const;
  void restore(const TrainState& state);

 private:
  const ModelWeights& weights_;
  const std::vector<Example>& examples_;
  FinetuneOptions options_;
  AdapterOptimizer optimizer_;
  ExampleCycle order_;
  LoraGrads<float> grads_;
  std::unique_ptr<cpu::ThreadPool> pool_;  // kept across the passes
};

// Trains adapters on `examples` (cycled, reshuffled each epoch with the seed) and returns them.
// InvalidArgumentError before any work for no examples, an example with no scored position, a
// length mismatch or a token outside the vocabulary, and for options out of range.
LoraSet<float> finetune(const ModelWeights& weights, const std::vector<Example>& examples,
                        const FinetuneOptions& options, const std::function<void(const StepReport&)>& on_step = {});

// The adapters as llama.cpp's LoRA GGUF describes them (weights/lora.hpp), for write_lora_adapter
// or merge_lora.
LoraAdapter to_adapter(const LoraSet<float>& lora, const ModelWeights& weights);

}  // namespace lathe::train
