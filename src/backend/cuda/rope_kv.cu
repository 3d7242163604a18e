// Per token, after the Q/K/V projections: biases, per-head Q/K RMSNorm (Qwen3), rotary position
// embedding, and the store of K and V into the token's KV cache row. One block per token; each
// warp takes one head at a time through a shared-memory copy (RoPE pairs dimensions that
// different lanes hold).
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/kv_access.cuh"
#include "backend/cuda/memory.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kMaxHeadDim = 256;

template <KvFormat F>
__global__ void __launch_bounds__(kWarps * 32) rope_kv_kernel(const RopeKvArgs a) {
  __shared__ float cos_t[kMaxHeadDim / 2], sin_t[kMaxHeadDim / 2];
  __shared__ float head[kWarps][kMaxHeadDim];
  wait_for_previous_kernel();
  const int t = blockIdx.x;
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

  float* row = a.qkv + t * a.ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* buf = head[warp];
  void* k_row = a.k_cache[slot];
  const int64_t scales_at = static_cast<int64_t>(kv_q8_scales_offset(a.n_ctx, kv_w));
  for (int h = warp; h < a.n_head + a.n_head_kv; h += kWarps) {
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
      else kv_store_warp<F>(k_row, scales_at, static_cast<int64_t>(pos) * kv_w + (off - q_w) + i, v);
    }
    __syncwarp();
  }
  void* v_row = a.v_cache[slot];
  // kv_w is a multiple of 32 for Q8_0, so each warp is either wholly inside or past the row.
  for (int64_t i = threadIdx.x; i < kv_w; i += blockDim.x) {
    float v = row[q_w + kv_w + i];
    if (a.bv != nullptr) v += a.bv[i];
    kv_store_warp<F>(v_row, scales_at, static_cast<int64_t>(pos) * kv_w + i, v);
  }
}

}  // namespace

void rope_kv(const RopeKvArgs& args, cudaStream_t stream) {
  if (args.n_tokens <= 0) return;
  if (args.head_dim > kMaxHeadDim || args.rope_dim > args.head_dim || args.rope_dim % 2 != 0)
    throw InternalError("rope_kv: head_dim must be <= 256 and rope_dim even and <= head_dim");
  require_kv_heads_fit(args.kv_format, args.head_dim, "rope_kv");
  dispatch_kv_format(args.kv_format, [&]<KvFormat F>() {
    launch_chained(rope_kv_kernel<F>, args.n_tokens, kWarps * 32, 0, stream, "rope_kv", args);
  });
  check_launch("rope_kv");
}

}  // namespace lathe::cuda
