// Per token, after the Q/K/V projections: biases, per-head Q/K RMSNorm (Qwen3), rotary position
// embedding, and the store of K and V into the token's KV cache row. One warp per head (the query
// heads, the key heads with RoPE, then the value heads, which are only stored), spread over blocks
// of kWarps: a decode step's heads run side by side instead of one block walking them in turn
// (that block took 8 us per layer of Llama-3.1-8B's decode, 10% of the step). Each warp goes
// through a shared-memory copy of its head, since RoPE pairs dimensions that different lanes hold.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/rope_head.cuh"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

template <KvFormat F>
__global__ void __launch_bounds__(kWarps * 32) rope_kv_kernel(const RopeKvArgs a) {
  __shared__ float cos_t[kMaxHeadDim / 2], sin_t[kMaxHeadDim / 2];
  __shared__ float head[kWarps][kMaxHeadDim];
  wait_for_previous_kernel();
  const int t = blockIdx.y;
  const int pos = a.positions[t];
  const int slot = a.slots[t];
  const int D = a.head_dim, half = a.rope_dim / 2;
  const int64_t q_w = static_cast<int64_t>(a.n_head) * D, kv_w = static_cast<int64_t>(a.n_head_kv) * D;
  load_rope_angles(a.cos_sin, a.inv_freq, a.position_scale, pos, half, cos_t, sin_t);
  __syncthreads();

  const int warp = threadIdx.x / 32;
  const int h = blockIdx.x * kWarps + warp;  // this warp's head: query, key, then value heads
  if (h >= a.n_head + 2 * a.n_head_kv) return;
  float* row = a.qkv + t * a.ld;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  if (h >= a.n_head + a.n_head_kv) {  // a value head: bias, then the cache
    const int64_t off = static_cast<int64_t>(h - a.n_head - a.n_head_kv) * D;
    // head_dim is a multiple of 32 for Q8_0 (require_kv_heads_fit): the lanes store whole blocks.
    kv_store_head<F>(a.v_cache[slot], scales_at, static_cast<int64_t>(pos) * kv_w + off, row + q_w + kv_w + off,
                     a.bv != nullptr ? a.bv + off : nullptr, D);
    return;
  }
  const bool is_q = h < a.n_head;
  const int64_t off = is_q ? static_cast<int64_t>(h) * D : q_w + static_cast<int64_t>(h - a.n_head) * D;
  const float* bias = is_q ? a.bq : a.bk;
  const float* norm = is_q ? a.q_norm : a.k_norm;
  void* k_row = a.k_cache[slot];
  rope_one_head(row + off, bias != nullptr ? bias + off - (is_q ? 0 : q_w) : nullptr, norm, a.eps, D, a.rope_dim,
                a.neox, cos_t, sin_t, head[warp], [&](int i, float v) {
                  if (is_q) row[off + i] = v;
                  else kv_store_warp<F>(k_row, scales_at, static_cast<int64_t>(pos) * kv_w + (off - q_w) + i, v);
                });
}

}  // namespace

void rope_kv(const RopeKvArgs& args, cudaStream_t stream) {
  if (args.n_tokens <= 0) return;
  if (args.head_dim > kMaxHeadDim || args.rope_dim > args.head_dim || args.rope_dim % 2 != 0)
    throw InternalError("rope_kv: head_dim must be <= 256 and rope_dim even and <= head_dim");
  require_kv_heads_fit(args.kv_format, args.head_dim, "rope_kv");
  dispatch_kv_format(args.kv_format, [&]<KvFormat F>() {
    const int heads = args.n_head + 2 * args.n_head_kv;  // query, key and value heads: a warp each
    for (int t0 = 0; t0 < args.n_tokens; t0 += kMaxGridY) {  // tokens on the grid's y axis
      RopeKvArgs part = args;
      part.n_tokens = std::min(kMaxGridY, args.n_tokens - t0);
      part.qkv = args.qkv + static_cast<int64_t>(t0) * args.ld;
      part.positions = args.positions + t0;
      part.slots = args.slots + t0;
      const dim3 grid((heads + kWarps - 1) / kWarps, part.n_tokens);
      launch_chained(rope_kv_kernel<F>, grid, kWarps * 32, 0, stream, "rope_kv", part);
    }
  });
  check_launch("rope_kv");
}

}  // namespace lathe::cuda
