// LoRA fine-tuning of a frozen model on the CPU: examples (token sequences with the positions to
// score) in a seeded order, gradient accumulation, clipping, AdamW with warm-up and decay, one
// callback per optimizer step. The same seed gives the same adapters on every run.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "train/lora_pass.hpp"
#include "train/optimizer.hpp"
#include "weights/lora.hpp"

namespace lathe::train {

struct Example {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;  // per position, the token to predict there or -1 (not scored)
};

// A seeded cycle through n examples, reshuffled at each pass (Fisher-Yates on the generator's raw
// draws: the same order on every standard library).
class ExampleCycle {
 public:
  ExampleCycle(size_t n, uint64_t seed) : order_(n), rng_(seed), at_(n) {}
  size_t next();

 private:
  std::vector<size_t> order_;
  std::mt19937_64 rng_;
  size_t at_;  // == order_.size(): shuffle before the next draw (also the first)
};

struct FinetuneOptions {
  std::vector<std::string> targets = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  int64_t rank = 8;
  double alpha = 16;
  AdamWOptions adamw = {.lr = 1e-3};
  int64_t steps = 100;           // optimizer steps
  int64_t grad_accumulation = 1;  // examples per optimizer step
  int64_t warmup_steps = 0;
  LrDecay decay = LrDecay::Linear;
  double max_grad_norm = 1.0;     // <= 0: no clipping
  uint64_t seed = 0;              // adapter initialization and example order
};

struct StepReport {
  int64_t step = 0;  // 1-based
  double loss = 0;   // mean over the step's examples
  double grad_norm = 0;
  double lr = 0;
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
