// rope_kv's steps for one attention head, by one warp: bias, per-head RMSNorm (Qwen3), rotary
// position embedding. Shared by rope_kv.cu (all heads of a token) and decode attention, which does
// them for its own heads when the separate launch is folded into it (AttentionArgs::rope), so both
// give the same floats.
#pragma once

#include "backend/cuda/common.cuh"

namespace lathe::cuda {

// One angle of position pos in double, as the CPU reference computes it. Out of line: kernels
// with a table never run it, and inlined it is ~4 KB of code in their instruction stream.
static __device__ __noinline__ void rope_angle_double(float inv_freq, float position_scale, int pos,
                                                      float* cos_out, float* sin_out) {
  const double theta = static_cast<double>(pos) * static_cast<double>(position_scale) * inv_freq;
  double s, c;
  sincos(theta, &s, &c);
  *cos_out = static_cast<float>(c);
  *sin_out = static_cast<float>(s);
}

// The (cos, sin) pairs of position `pos` into cos_t/sin_t (rope_dim / 2 each), by the threads of
// the block: from the host-computed table when there is one, else in double as the CPU reference
// (positions reach 10^5 and float angles would drift).
__device__ __forceinline__ void load_rope_angles(const float* cos_sin, const float* inv_freq, float position_scale,
                                                 int pos, int half, float* cos_t, float* sin_t) {
#pragma unroll 1
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    if (cos_sin != nullptr) {
      const float* cs = cos_sin + (static_cast<int64_t>(pos) * half + i) * 2;
      cos_t[i] = cs[0];
      sin_t[i] = cs[1];
    } else {
      rope_angle_double(inv_freq[i], position_scale, pos, &cos_t[i], &sin_t[i]);
    }
  }
}

// One head of D values at src (+ bias, when given), RMS-normalized with `norm` (when given) and
// rotated: calls out(i, value) for i = lane, lane + 32, ... < D (all lanes together, as
// kv_store_warp needs). buf: D floats of this warp's shared memory. Pairs (i, i + rope_dim / 2)
// with neox, else (2i, 2i + 1); dimensions past rope_dim pass through. The loops stay rolled
// (`#pragma unroll 1`): decode attention runs them once per head, and unrolled copies only
// lengthened its code (attention_decode.cu).
template <typename Out>
__device__ __forceinline__ void rope_one_head(const float* src, const float* bias, const float* norm, float eps, int D,
                                              int rope_dim, bool neox, const float* cos_t, const float* sin_t,
                                              float* buf, Out&& out) {
  const int lane = threadIdx.x % 32, half = rope_dim / 2;
  float ss = 0.0f;
#pragma unroll 1
  for (int d = lane; d < D; d += 32) {
    float v = src[d];
    if (bias != nullptr) v += bias[d];
    buf[d] = v;
    ss += v * v;
  }
  if (norm != nullptr) {
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(D) + eps);
#pragma unroll 1
    for (int d = lane; d < D; d += 32) buf[d] = buf[d] * inv * norm[d];
  }
  __syncwarp();
#pragma unroll 1
  for (int i = lane; i < D; i += 32) {
    float v;
    if (i < rope_dim) {
      int pair, other;
      bool first;
      if (neox) {
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
    out(i, v);
  }
  __syncwarp();  // buf may be reused by this warp's next head
}

}  // namespace lathe::cuda
