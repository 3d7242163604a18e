// Rounding 32 floats to one 8-bit block (llama.cpp's q8_1: 32 int8 with d = max|v| / 127 and the
// pair (d, d * sum q)), one warp per block, lane = element. quantize_act.cu rounds whole rows with
// it; decode attention rounds its own output with it (Q8Output), which saves the quantize_q8 launch
// before the output projection. Same arithmetic in both, so the same bytes.
#pragma once

#include "backend/cuda/common.cuh"
#include "backend/cuda/matrix.hpp"

namespace lathe::cuda {

// All 32 lanes call it together: q8[lane] and ds[0..1] of one block.
__device__ __forceinline__ void quantize_block32(float v, int8_t* q8, float* ds) {
  const int lane = threadIdx.x % kWarpSize;
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
  q8[lane] = static_cast<int8_t>(q);
  const float sum = warp_sum(static_cast<float>(q));
  if (lane == 0) {
    ds[0] = d;
    ds[1] = d * sum;
  }
}

// Block b (outputs b*32 .. b*32+31) of token t of a Q8Output, from the warp's 32 values.
__device__ __forceinline__ void write_q8_block(const Q8Output& o, int t, int64_t b, float v) {
  quantize_block32(v, o.q8 + t * o.ld_q8 + b * 32, o.ds + t * o.ld_ds + b * 2);
}

}  // namespace lathe::cuda
