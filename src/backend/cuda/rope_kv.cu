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
  // Angles in double, as the CPU reference: positions reach 10^5 and float angles would drift.
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    if (a.cos_sin != nullptr) {
      const float* cs = a.cos_sin + (static_cast<int64_t>(pos) * half + i) * 2;
      cos_t[i] = cs[0];
      sin_t[i] = cs[1];
    } else {
      const double theta = static_cast<double>(pos) * static_cast<double>(a.position_scale) * a.inv_freq[i];
      double s, c;
      sincos(theta, &s, &c);
      cos_t[i] = static_cast<float>(c);
      sin_t[i] = static_cast<float>(s);
    }
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.x * kWarps + warp;  // this warp's head: query, key, then value heads
  if (h >= a.n_head + 2 * a.n_head_kv) return;
  float* row = a.qkv + t * a.ld;
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  if (h >= a.n_head + a.n_head_kv) {  // a value head: bias, then the cache
    const int64_t off = static_cast<int64_t>(h - a.n_head - a.n_head_kv) * D;
    // head_dim is a multiple of 32 for Q8_0 (require_kv_heads_fit): the lanes store whole blocks.
    for (int d = lane; d < D; d += 32) {
      float v = row[q_w + kv_w + off + d];
      if (a.bv != nullptr) v += a.bv[off + d];
      kv_store_warp<F>(a.v_cache[slot], scales_at, static_cast<int64_t>(pos) * kv_w + off + d, v);
    }
    return;
  }
  float* buf = head[warp];
  const bool is_q = h < a.n_head;
  const int64_t off = is_q ? static_cast<int64_t>(h) * D : q_w + static_cast<int64_t>(h - a.n_head) * D;
  const float* bias = is_q ? a.bq : a.bk;
  const float* norm = is_q ? a.q_norm : a.k_norm;
  float ss = 0.0f;
  for (int d = lane; d < D; d += 32) {
    float v = row[off + d];
    if (bias != nullptr) v += bias[off - (is_q ? 0 : q_w) + d];
    buf[d] = v;
    ss += v * v;
  }
  if (norm != nullptr) {
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(D) + a.eps);
    for (int d = lane; d < D; d += 32) buf[d] = buf[d] * inv * norm[d];
  }
  __syncwarp();
  // Rotated pairs (a, b); dimensions past rope_dim pass through.
  for (int i = lane; i < D; i += 32) {
    float v;
    if (i < a.rope_dim) {
      int pair, other;
      bool first;
      if (a.neox) {
        first = i < half;
        pair = first ? i : i - half;
        other = first ? i + half : i - half;
      } else {
        first = (i % 2) == 0;
        pair = i / 2;
        other = first ? i + 1 : i - 1;
      }
      const float c = cos_t[pair], s = sin_t[pair];
      v = first ? buf[i] * c - buf[other] * s : buf[other] * s + buf[i] * c;
    } else {
      v = buf[i];
    }
    if (is_q) row[off + i] = v;
    else kv_store_warp<F>(a.k_cache[slot], scales_at, static_cast<int64_t>(pos) * kv_w + (off - q_w) + i, v);
  }
}

}  // namespace

void rope_kv(const RopeKvArgs& args, cudaStream_t stream) {
  if (args.n_tokens <= 0) return;
  if (args.head_dim > kMaxHeadDim || args.rope_dim > args.head_dim || args.rope_dim % 2 != 0)
    throw InternalError("rope_kv: head_dim must be <= 256 and rope_dim even and <= head_dim");
  require_kv_heads_fit(args.kv_format, args.head_dim, "rope_kv");
  dispatch_kv_format(args.kv_format, [&]<KvFormat F>() {
    const int heads = args.n_head + 2 * args.n_head_kv;  // query, key and value heads: a warp each
    constexpr int kMaxGridY = 65535;
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
