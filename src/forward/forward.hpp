// One forward pass of the Llama family (llama, qwen2, qwen3, phi3) on the CPU, written to be read
// top to bottom like llama2.c's run.c: embed -> per layer (RMSNorm, Q/K/V [+bias] [+per-head
// norm], RoPE, grouped-query attention over the KV cache, output projection, residual, RMSNorm,
// SwiGLU MLP, residual) -> final norm -> logits. Architecture differences are data (which tensors
// the layer has, the rope table), not separate code paths.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/cpu/thread_pool.hpp"
#include "core/kv_format.hpp"
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
  // Scratch for up to max_batch tokens per call and attention over up to n_ctx positions.
  Forward(const ModelWeights& weights, uint32_t max_batch, uint32_t n_ctx);

  // Evaluates tokens at positions first_pos.. first_pos + n - 1 (n <= max_batch; the caller checks
  // ids and the context bound). Writes the logits of every token (all_logits: n x n_vocab) or of
  // the last one (n_vocab) into `logits`.
  // `last_chunk`: whether these tokens end the caller's eval() (hooks capturing the last row).
  void run(std::span<const int32_t> tokens, uint32_t first_pos, KvCacheView& kv, bool all_logits, float* logits,
           cpu::ThreadPool& pool, bool last_chunk = true);

  // Batched decode over independent sequences: token t sits at positions[t] of its own cache
  // kvs[t] (whose rows before positions[t] are filled). Writes every token's logits
  // (n x n_vocab). A sequence may appear at most once per call.
  void run_batch(std::span<const int32_t> tokens, std::span<const uint32_t> positions,
                 std::span<KvCacheView* const> kvs, float* logits, cpu::ThreadPool& pool);

  // Residual-stream hooks run inside every later call (nullptr: none). Not owned.
  void set_hooks(ResidualHooks* hooks) noexcept { hooks_ = hooks; }

  uint32_t max_batch() const noexcept { return max_batch_; }

 private:
  void forward_rows(std::span<const int32_t> tokens, bool all_logits, float* logits, cpu::ThreadPool& pool,
                    bool last_chunk);
  void attention_block(const LayerWeights& lw, uint32_t layer, int64_t n_tokens, cpu::ThreadPool& pool);
  void run_hooks(HookPoint point, uint32_t layer, float* rows, int64_t n_rows, bool last_chunk);
  void mlp_block(const LayerWeights& lw, int64_t n_tokens, cpu::ThreadPool& pool);

  const ModelWeights& w_;
  uint32_t max_batch_;
  uint32_t n_ctx_;
  ResidualHooks* hooks_ = nullptr;
  // Per token of the current call: its position and the cache it reads and writes.
  std::vector<uint32_t> pos_;
  std::vector<KvCacheView*> kv_;
  // Activations, row-major [n_tokens x width].
  std::vector<float> x_;      // residual stream (n_embd)
  std::vector<float> xn_;     // normalized input of the current sub-block (n_embd)
  std::vector<float> q_, k_, v_;  // projections (q: n_head*head_dim; k, v: n_head_kv*head_dim)
  std::vector<float> qkv_;    // fused projection output (Phi-3)
  std::vector<float> attn_;   // attention output (n_head*head_dim)
  std::vector<float> gate_, up_;  // MLP (n_ff each; gate_up fused: 2*n_ff in gate_)
  std::vector<float> proj_;   // output of the block's last projection (n_embd)
};

}  // namespace lathe
