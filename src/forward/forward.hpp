// One forward pass of the Llama family (llama, qwen2, qwen3, phi3; the mixtures of experts
// Mixtral, qwen2moe, qwen3moe, olmoe) on the CPU, written to be read top to bottom like llama2.c's
// run.c: embed -> per layer (RMSNorm, Q/K/V [+bias] [+Q/K norm], RoPE, grouped-query attention
// over the KV cache, output projection, residual, RMSNorm, SwiGLU MLP or a mixture of SwiGLU
// experts, residual) -> final norm -> logits. Architecture differences are data (which tensors
// the layer has, the rope table), not separate code paths.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "core/kv_format.hpp"
#include "forward/batch.hpp"
#include "forward/moe_routing.hpp"
#include "lathe/hooks.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

// Where the keys and values of one context live: per layer, n_ctx rows of n_head_kv * head_dim
// elements, float32 or IEEE half. Owned by the runtime's KV cache; the forward pass writes the
// rows of the positions it evaluates and reads all rows before them.
struct KvCacheView {
  KvFormat format = KvFormat::F16;
  uint32_t n_ctx = 0;
  int64_t row_elements = 0;           // n_head_kv * head_dim
  std::vector<void*> keys, values;    // one per layer
};

class Forward {
 public:
  // Scratch for up to max_batch tokens per call and attention over up to n_ctx positions. Layer
  // weights come from `layers` (not owned; nullptr: the model's resident layers).
  Forward(const ModelWeights& weights, uint32_t max_batch, uint32_t n_ctx, LayerSource* layers = nullptr);

  // Evaluates every entry of `batch` (at most max_batch; the engine has checked slots, positions
  // and ids): entry i writes its K/V row at positions[i] of caches[slots[i]] and attends over
  // that cache's rows 0..positions[i]. Writes one row of n_vocab logits per entry that asks for
  // them, in batch order. hooks[s] (nullptr: none) runs on slot s's rows; an empty span: no hooks.
  void forward(const Batch& batch, std::span<KvCacheView* const> caches, std::span<ResidualHooks* const> hooks,
               float* logits, cpu::ThreadPool& pool);

  uint32_t max_batch() const noexcept { return max_batch_; }

 private:
  void attention_block(const LayerWeights& lw, uint32_t layer, int64_t n_tokens, cpu::ThreadPool& pool);
  // Runs each sequence's hooks of `site` on its rows of `rows` (row r belongs to row_slot[r]).
  void run_hooks(HookSite site, float* rows, std::span<const uint32_t> row_slot, std::span<const uint8_t> row_ends);
  void mlp_block(const LayerWeights& lw, int64_t n_tokens, cpu::ThreadPool& pool);
  // The mixture-of-experts MLP on xn_ (already normalized): adds its output to x_.
  void moe_block(const LayerWeights& lw, int64_t n_tokens, cpu::ThreadPool& pool);

  const ModelWeights& w_;
  ResidentLayers resident_;
  LayerSource* layers_;
  uint32_t max_batch_;
  uint32_t n_ctx_;
  std::span<ResidualHooks* const> hooks_;  // of the current call, by slot
  // Per token of the current call: its position and the cache it reads and writes; per row of
  // the residual stream and per logit row: the slot and whether it ends its sequence's input.
  std::vector<uint32_t> pos_;
  std::vector<KvCacheView*> kv_;
  std::vector<uint32_t> row_slot_, out_slot_;
  std::vector<uint8_t> row_ends_, out_ends_;
  // Activations, row-major [n_tokens x width].
  std::vector<float> x_;      // residual stream (n_embd)
  std::vector<float> xn_;     // normalized input of the current sub-block (n_embd)
  std::vector<float> q_, k_, v_;  // projections (q: n_head*head_dim; k, v: n_head_kv*head_dim)
  std::vector<float> qkv_;    // fused projection output (Phi-3)
  std::vector<float> attn_;   // attention output (n_head*head_dim)
  std::vector<float> gate_, up_;  // MLP (n_ff each; gate_up fused: 2*n_ff in gate_; experts: the widest FFN)
  std::vector<float> proj_;   // output of the block's last projection (n_embd)
  // Mixture of experts: router logits (n_expert), the rows routed to one expert (n_embd), and the
  // current layer's routes.
  std::vector<float> router_logits_, routed_;
  ExpertRoutes routes_;
};

}  // namespace lathe
