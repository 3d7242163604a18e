// The CUDA forward pass's device memory besides weights and KV cache (CUDA builds only): the
// activations of up to max_batch tokens, partitioned once into named rows; the staging buffers
// through which token ids, hook rows and greedy ids cross PCIe; the logits, grown on demand; the
// RoPE angle table. One allocation for the activations, so a captured CUDA graph sees fixed
// addresses for the life of the forward pass.
#pragma once

#include <cstdint>

#include "arch/hparams.hpp"
#include "core/rope.hpp"
#include "backend/cuda/gemm.hpp"
#include "backend/cuda/memory.hpp"
#include "weights/cuda_weights.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct CudaScratch {
  // Activations for max_batch tokens of a model with these shapes; `multiprocessors` sizes the
  // decode attention's token-split partial sums. `matvec_only`: every product runs as mat-vecs of
  // up to 8 tokens (batch-invariant passes), so cuBLAS's buffers are not needed.
  CudaScratch(const HParams& hp, const CudaWeightsShape& dw, uint32_t max_batch, int multiprocessors,
              bool matvec_only = false);

  uint32_t max_batch = 0;
  cuda::DeviceBuffer act;  // the rows below, one allocation
  float* x = nullptr;      // [B][n_embd] the residual stream
  float* xn = nullptr;     // [B][n_embd] normalized rows (when not fused into a product)
  float* qkv = nullptr;    // [B][q + 2 kv] the attention's inputs
  float* attn = nullptr;   // [B][q] the attention's output
  float* gu = nullptr;     // [B][2 ff] gate and up products (cuBLAS path only; ff: the widest FFN)
  float* h = nullptr;      // [B][max(ff, n_embd)] SwiGLU output; also gathers logit rows
  int8_t* q8 = nullptr;    // [B][widest input] 8-bit rows for the mat-vec kernels
  float* ds = nullptr;     // ... and their scales and sums
  float* split_scratch = nullptr;  // decode attention's partial sums over token splits
  cuda::GemmScratch gemm;  // cuBLAS products' 16-bit inputs and dequantized weight slices

  cuda::DeviceBuffer io;  // tokens | positions | slots, max_batch each
  cuda::PinnedBuffer io_host;
  cuda::PinnedBuffer hook_rows;  // [B][n_embd] rows read and written by host hooks
  cuda::DeviceBuffer argmax_dev;  // greedy ids, max_batch
  cuda::PinnedBuffer argmax_host;

  // Mixture of experts (empty otherwise): router logits [B][moe_cols] (n_expert, and qwen2moe's
  // shared-expert gate in the last column), read on the host to route; one expert's gathered
  // input rows and output rows [B][n_embd] each; the routes as the device reads them, tokens then
  // weights, (n_expert_used + 1) * B of each (the shared expert's come last).
  int64_t moe_cols = 0;
  cuda::DeviceBuffer moe_logits, moe_rows, moe_out, moe_routes;
  cuda::PinnedBuffer moe_logits_host, moe_routes_host;

  int32_t* d_tokens() const { return io.as<int32_t>(); }
  int32_t* d_positions() const { return io.as<int32_t>() + max_batch; }
  int32_t* d_slots() const { return io.as<int32_t>() + 2 * max_batch; }
  uint64_t bytes() const {
    return act.bytes() + io.bytes() + argmax_dev.bytes() + moe_logits.bytes() + moe_rows.bytes() + moe_out.bytes() +
           moe_routes.bytes();
  }
  // The widest feed-forward layer: the dense one's, or an expert's or the shared expert's.
  static int64_t widest_ff(const HParams& hp);

  // The token-splits the decode attention may need at once (see decode_splits).
  static size_t split_slots(uint32_t max_batch, int multiprocessors, uint32_t n_head_kv);
};

// Logits rows of the last pass: on the device, copied to pinned host memory only when asked.
struct CudaLogits {
  int64_t n_vocab = 0;
  cuda::DeviceBuffer dev;
  cuda::PinnedBuffer host;
  uint32_t capacity = 0;  // rows
  // Makes room for `rows` rows; returns true when the buffers moved (a captured graph that wrote
  // the old ones must be captured again).
  bool grow(uint32_t rows);
};

// The RoPE angles of every position below n_ctx, (cos, sin) per frequency, computed as the CPU
// computes them (double angles); an empty buffer for long contexts (over 256 MiB), where the
// kernels compute them.
cuda::DeviceBuffer make_device_rope_table(const RopeTable& rope, uint32_t n_ctx);

}  // namespace lathe
