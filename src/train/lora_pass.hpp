// One sequence through a frozen model with LoRA adapters, forward and backward, on the CPU: the
// cross-entropy of the scored tokens and the adapters' gradients. The same pass as the inference
// engine's (forward/forward.cpp: RMSNorm, Q/K/V [+ Qwen2 biases] [+ Qwen3 per-head norms], RoPE,
// causal GQA attention, output projection, SwiGLU MLP, Phi-3's fused matrices), computed in T on
// dequantized weights and keeping what the backward needs; the base weights get no gradients.
// Written for float and double: the double pass is the reference of tests/train.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "lathe/hooks.hpp"
#include "train/reft.hpp"
#include "weights/model_weights.hpp"

namespace lathe::train {

// The adapters being trained: per (layer, matrix) A [rank x in] and B [out x rank], applied as
// y += (alpha / rank) * B (A x), the convention of PEFT and of llama.cpp's LoRA GGUF.
template <class T>
struct LoraSet {
  int64_t rank = 0;
  double alpha = 0;
  struct Pair {
    uint32_t layer = 0;
    // The matrix by its GGUF name within the layer: attn_q, attn_k, attn_v, attn_qkv (Phi-3),
    // attn_output, ffn_gate, ffn_up (Phi-3: the fused gate+up matrix), ffn_down.
    std::string target;
    int64_t in = 0, out = 0;
    std::vector<T> a, b;
  };
  std::vector<Pair> pairs;
  T factor() const { return static_cast<T>(alpha / static_cast<double>(rank)); }
};

// Per pair, the gradients of A and B (same shapes), accumulated by each pass.
template <class T>
struct LoraGrads {
  std::vector<std::vector<T>> da, db;
  void reset(const LoraSet<T>& lora);  // zeros of the right sizes
};

// The matrix `target` of `layer` (names as LoraSet::Pair::target); InvalidArgumentError naming
// the layer and the matrices it has when it has no such matrix.
const MatrixView& target_matrix(const ModelWeights& w, uint32_t layer, std::string_view target);

// Adapters on `targets` of every layer, initialized as PEFT does: A uniform in +-1/sqrt(in)
// (kaiming_uniform with a = sqrt(5)), B zero, so training starts from the base model. Same seed,
// same adapters on every machine.
LoraSet<float> init_lora(const ModelWeights& w, std::span<const std::string> targets, int64_t rank, double alpha,
                         uint64_t seed);

// The loss of one sequence from its logits [n x vocab]: returns the loss and writes its gradient
// dlogits (same shape). The default is cross_entropy over `targets` (train/ops.hpp); the unlearning
// objectives (train/unlearn.hpp) bring their own.
template <class T>
using LossHead = std::function<double(const T* logits, int64_t n, int64_t vocab, T* dlogits)>;

// LoRA dropout (PEFT's lora_dropout) for one training pass: each input value of an adapted product
// is zeroed on the adapter's path with probability p (the frozen product still reads it) and the
// kept ones are scaled by 1 / (1 - p), so y = x W^T + s B A (m * x) with the mask m. The mask is
// a pure function of (seed, adapter, token, column), not of a generator's state or of the thread
// count: one seed per pass gives the same masks on every run, a resumed one included.
struct LoraDropout {
  double p = 0;  // 0: off
  uint64_t seed = 0;
  // Whether the value (token, col) of adapter `pair`'s input is kept.
  bool keeps(size_t pair, int64_t token, int64_t col) const noexcept;
};

// A pass's dropout seed from its run's seed and where the pass is in the run (optimizer step,
// example within the step, which data set): distinct passes, independent masks.
uint64_t dropout_seed(uint64_t run_seed, int64_t step, int64_t example, int64_t stream = 0) noexcept;

// The residual stream at one hook site of the pass and the loss's gradient with respect to it,
// both [n x n_embd] (what attribution of a residual edit to the loss needs: train/sae_select.hpp).
// resid_pre/resid_mid/resid_post of a layer are the rows the engine's hooks of that name see;
// final_norm, the final RMSNorm's output (the rows the output matrix reads).
template <class T>
struct ResidualProbe {
  HookSite site;
  std::vector<T> rows, grad;
};

// One sequence: tokens[t] is the input at position t, targets[t] the token to predict there (-1:
// not scored, e.g. prompt tokens). Returns the mean cross-entropy over the scored positions;
// accumulates the adapters' gradients into `grads` (reset it first) when given, and writes the
// logits [n x vocab] into `logits` when given. With `head`, the loss and its gradient are the
// head's (targets then unused). InvalidArgumentError for an empty sequence, a token outside the
// vocabulary or adapters whose shapes do not fit the model. `pool`: the threads to use (a run keeps
// one across its passes); without it the pass starts one thread per physical core. The result does
// not depend on the number of threads (every sum has one fixed order). With `probe`, the rows at
// its site and their gradient are written into it (without `grads` the backward then stops at the
// site); InvalidArgumentError for a site past the model's last layer. `dropout` (training passes):
// LoRA dropout on every adapter's input, above; InvalidArgumentError for p outside [0, 1).
// `reft` (train/reft.hpp): LoReFT interventions at their layers' outputs, on the positions of the
// prompt — the tokens up to and including the first scored position (the last prompt token
// predicts the first answer token); every token when none is scored. Their gradients accumulate
// into `reft_grads` (reset it first) when given. The probe of a layer's resid_post sees its rows
// after the intervention. InvalidArgumentError for sites past the last layer or of another width.
template <class T>
double lora_forward_backward(const ModelWeights& w, const LoraSet<T>& lora, std::span<const int32_t> tokens,
                             std::span<const int32_t> targets, std::type_identity_t<LoraGrads<T>>* grads,
                             std::type_identity_t<std::vector<T>>* logits = nullptr,
                             const std::type_identity_t<LossHead<T>>& head = {}, cpu::ThreadPool* pool = nullptr,
                             std::type_identity_t<ResidualProbe<T>>* probe = nullptr, LoraDropout dropout = {},
                             const std::type_identity_t<ReftSet<T>>* reft = nullptr,
                             std::type_identity_t<ReftGrads<T>>* reft_grads = nullptr);

}  // namespace lathe::train
