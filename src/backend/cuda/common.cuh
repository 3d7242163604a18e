// Device helpers shared by the kernels: warp reductions and 16-bit float loads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace lathe::cuda {

constexpr int kWarpSize = 32;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over a whole block of blockDim.x threads (a multiple of 32, at most 1024); every thread
// gets the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / kWarpSize;
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float load_half(const uint8_t* p) {
  return __half2float(*reinterpret_cast<const __half*>(p));
}

// Eight IEEE halves packed in 16 bytes to floats.
__device__ __forceinline__ void halves8_to_float(const uint4& raw, float* out) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    __half2 h2;
    memcpy(&h2, &words[e], 4);
    const float2 f = __half22float2(h2);
    out[2 * e] = f.x;
    out[2 * e + 1] = f.y;
  }
}

// A float stored as Out: itself, or rounded to the nearest half / bfloat16.
template <typename Out>
__device__ __forceinline__ Out float_to(float v) {
  if constexpr (std::is_same_v<Out, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<Out, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return v;
}

// Four floats stored as Out at dst (16 bytes for float, 8 for the 16-bit types; dst aligned so).
template <typename Out>
__device__ __forceinline__ void store4(Out* dst, float a, float b, float c, float d) {
  if constexpr (std::is_same_v<Out, float>) {
    *reinterpret_cast<float4*>(dst) = make_float4(a, b, c, d);
  } else {
    Out v[4] = {float_to<Out>(a), float_to<Out>(b), float_to<Out>(c), float_to<Out>(d)};
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(v);
  }
}

// The largest grid y dimension: per-token launches loop over, or split off, the tokens beyond it.
constexpr int kMaxGridY = 65535;

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

}  // namespace lathe::cuda
