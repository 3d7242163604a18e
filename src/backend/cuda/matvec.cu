// Mat-vec for decode: y = W x for 1..8 tokens, each weight byte read once from device memory.
//
// A block of 4 warps; 1, 2 or 4 warps compute one output pair (two rows of one matrix, or for
// SwiGLU one row of the gate and the same row of the up matrix) for every token: long rows are
// shared by more warps so that enough loads are in flight. The lanes walk the row in "steps" (8
// elements of a float type, one 32-element block of a quantized type), so that neighbouring
// lanes read neighbouring 16-byte pieces of the row (coalesced); the partial sums are reduced
// with shuffles, then across the warps of a pair in shared memory.
//
// Q8_0, Q4_0 and Q4_1 meet activations quantized to int8 blocks (quantize_act.cu) and multiply
// with dp4a, 4 products per instruction, as llama.cpp does; the float types and the K-quants
// decode to float and meet float activations.
//
// Up to three matrices of one type run in one launch (Q, K and V: fewer launches per token,
// which decides the speed of small models): each gets its own range of blocks.
//
// RMSNorm fused (MatvecInput::norm): the float path multiplies x by the norm weights as it loads
// them and sums x^2 from the same loads; since W (x s g) = s W (x g) for the scalar
// s = 1 / rms(x), the sums are scaled once at the end. Every pair of warps covers the whole row,
// so each has the whole sum of squares without another pass over x.
#include <string>

#include "backend/cuda/kernels.hpp"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/memory.hpp"
#include "backend/cuda/quant_decode.cuh"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

constexpr int kWarps = 4;

struct Segment {
  MatvecTarget target;
  int64_t n_out = 0;    // outputs (rows; SwiGLU: rows of the gate)
  int block_begin = 0;  // first block of this segment
};

struct Params {
  Segment seg[3];
  int n_seg = 0;
  int warps_per_output = 1;  // 1, 2 or 4
  MatvecInput in;
  int n_tokens = 0;
};

// Float activations: decode both rows' step, multiply with each token's 8 or 32 floats.
template <DType T, int NCOLS>
__device__ __forceinline__ void step_float(const uint8_t* const (&qs)[2], const uint8_t* const (&sc)[2], int64_t st,
                                           const MatvecInput& in, int n_tokens, float (&acc)[2][NCOLS],
                                           float (&ss)[NCOLS]) {
  constexpr int E = StepElems<T>::value;
  float w[2][E];
  decode_step<T>(qs[0], sc[0], st, w[0]);
  decode_step<T>(qs[1], sc[1], st, w[1]);
  const float4* gp = in.norm != nullptr ? reinterpret_cast<const float4*>(in.norm + st * E) : nullptr;
#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
    if (t >= n_tokens) break;
    const float4* xp = reinterpret_cast<const float4*>(in.x + t * in.ldx + st * E);
#pragma unroll
    for (int i = 0; i < E / 4; ++i) {
      float4 x = xp[i];
      if (gp != nullptr) {
        ss[t] += x.x * x.x + x.y * x.y + x.z * x.z + x.w * x.w;
        const float4 g = gp[i];
        x.x *= g.x; x.y *= g.y; x.z *= g.z; x.w *= g.w;
      }
#pragma unroll
      for (int r = 0; r < 2; ++r)
        acc[r][t] += w[r][4 * i] * x.x + w[r][4 * i + 1] * x.y + w[r][4 * i + 2] * x.z + w[r][4 * i + 3] * x.w;
    }
  }
}

// 8-bit activations: one 32-element block per step, integer dot products.
template <DType T, int NCOLS>
__device__ __forceinline__ void step_q8(const uint8_t* const (&qs)[2], const uint8_t* const (&sc)[2], int64_t st,
                                        const MatvecInput& in, int n_tokens, float (&acc)[2][NCOLS]) {
  int wq[2][8];  // Q8_0: 32 int8; Q4_x: 16 bytes of nibbles in wq[r][0..3]
  float d[2], m[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if constexpr (T == DType::Q8_0) {
      const int4* p = reinterpret_cast<const int4*>(qs[r] + st * 32);
      const int4 a = p[0], b = p[1];
      wq[r][0] = a.x; wq[r][1] = a.y; wq[r][2] = a.z; wq[r][3] = a.w;
      wq[r][4] = b.x; wq[r][5] = b.y; wq[r][6] = b.z; wq[r][7] = b.w;
      d[r] = load_half(sc[r] + st * 2);
      m[r] = 0.0f;
    } else {
      const int4 a = *reinterpret_cast<const int4*>(qs[r] + st * 16);
      // Low nibbles are elements 0..15, high nibbles 16..31 (ggml's order).
      wq[r][0] = a.x & 0x0F0F0F0F; wq[r][1] = a.y & 0x0F0F0F0F;
      wq[r][2] = a.z & 0x0F0F0F0F; wq[r][3] = a.w & 0x0F0F0F0F;
      wq[r][4] = (a.x >> 4) & 0x0F0F0F0F; wq[r][5] = (a.y >> 4) & 0x0F0F0F0F;
      wq[r][6] = (a.z >> 4) & 0x0F0F0F0F; wq[r][7] = (a.w >> 4) & 0x0F0F0F0F;
      if constexpr (T == DType::Q4_0) {
        d[r] = load_half(sc[r] + st * 2);
        m[r] = -8.0f * d[r];  // value = d * (q - 8) = d * q + m
      } else {
        d[r] = load_half(sc[r] + st * 4);
        m[r] = load_half(sc[r] + st * 4 + 2);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
    if (t >= n_tokens) break;
    const int4* xp = reinterpret_cast<const int4*>(in.q8 + t * in.ld_q8 + st * 32);
    const int4 xa = xp[0], xb = xp[1];
    const int xq[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
    const float dx = in.ds[t * in.ld_ds + st * 2], sx = in.ds[t * in.ld_ds + st * 2 + 1];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      int sum = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) sum = __dp4a(wq[r][i], xq[i], sum);
      // sum_j (d q_j + m) (dx qx_j) = d dx sum(q qx) + m (dx sum(qx))
      acc[r][t] += d[r] * dx * static_cast<float>(sum) + m[r] * sx;
    }
  }
}

template <DType T, int NCOLS, Epilogue EP>
__global__ void __launch_bounds__(kWarps * 32) matvec_kernel(const Params p) {
  __shared__ float partial[kWarps][3][NCOLS];  // two rows' sums and the sum of squares
  wait_for_previous_kernel();
  int s = 0;
  while (s + 1 < p.n_seg && static_cast<int>(blockIdx.x) >= p.seg[s + 1].block_begin) ++s;
  const Segment& seg = p.seg[s];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // wpo warps share one output pair, each taking every wpo-th 32-step slice of the row: long
  // rows get more loads in flight, short rows keep a warp per pair.
  const int wpo = p.warps_per_output, pairs_per_block = kWarps / wpo;
  constexpr int kOutsPerPair = EP == Epilogue::SwiGLU ? 1 : 2;
  const int64_t out0 =
      (static_cast<int64_t>(blockIdx.x - seg.block_begin) * pairs_per_block + warp / wpo) * kOutsPerPair;
  const bool active = out0 < seg.n_out;  // no early return: the block synchronizes below

  const DeviceMatrix& a = seg.target.a;
  const DeviceMatrix& b = EP == Epilogue::SwiGLU ? seg.target.b : seg.target.a;
  // Normal: rows out0 and out0 + 1 of a (the last row twice when n_out is odd, stored once).
  const int64_t row0 = active ? out0 : 0;
  const int64_t row1 = !active ? 0 : EP == Epilogue::SwiGLU ? out0 : min(out0 + 1, seg.n_out - 1);
  const uint8_t* const qs[2] = {a.qs + row0 * static_cast<int64_t>(a.qs_row), b.qs + row1 * static_cast<int64_t>(b.qs_row)};
  const uint8_t* const sc[2] = {a.scales ? a.scales + row0 * static_cast<int64_t>(a.sc_row) : nullptr,
                                b.scales ? b.scales + row1 * static_cast<int64_t>(b.sc_row) : nullptr};

  float acc[2][NCOLS], ss[NCOLS];
#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
    acc[0][t] = acc[1][t] = 0.0f;
    ss[t] = 0.0f;
  }

  constexpr bool kQ8 = T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1;
  const int64_t n_steps = active ? a.cols / StepElems<T>::value : 0;
  const int stride = wpo * 32;
#pragma unroll 2
  for (int64_t st = (warp % wpo) * 32 + lane; st < n_steps; st += stride) {
    if constexpr (kQ8) step_q8<T, NCOLS>(qs, sc, st, p.in, p.n_tokens, acc);
    else step_float<T, NCOLS>(qs, sc, st, p.in, p.n_tokens, acc, ss);
  }

#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
    const float v0 = warp_sum(acc[0][t]);
    const float v1 = warp_sum(acc[1][t]);
    const float sq = warp_sum(ss[t]);
    if (lane == 0) {
      partial[warp][0][t] = v0;
      partial[warp][1][t] = v1;
      partial[warp][2][t] = sq;
    }
  }
  if (wpo > 1) __syncthreads();
  if (!active || lane != 0 || warp % wpo != 0) return;
  for (int t = 0; t < p.n_tokens && t < NCOLS; ++t) {
    float v0 = 0.0f, v1 = 0.0f, sq = 0.0f;
    for (int w = warp; w < warp + wpo; ++w) {
      v0 += partial[w][0][t];
      v1 += partial[w][1][t];
      sq += partial[w][2][t];
    }
    if (!kQ8 && p.in.norm != nullptr) {  // the fused RMSNorm's 1 / rms(x)
      const float inv = rsqrtf(sq / static_cast<float>(a.cols) + p.in.eps);
      v0 *= inv;
      v1 *= inv;
    }
    float* y = seg.target.y + t * seg.target.ldy;
    if constexpr (EP == Epilogue::SwiGLU) {
      y[out0] = silu(v0) * v1;
    } else if constexpr (EP == Epilogue::Add) {
      y[out0] += v0;
      if (out0 + 1 < seg.n_out) y[out0 + 1] += v1;
    } else {
      y[out0] = v0;
      if (out0 + 1 < seg.n_out) y[out0 + 1] = v1;
    }
  }
}

template <DType T, Epilogue EP>
void launch_typed(const Params& p, int n_blocks, cudaStream_t stream) {
  const dim3 block(kWarps * 32);
  if (p.n_tokens <= 1) launch_chained(matvec_kernel<T, 1, EP>, n_blocks, block, 0, stream, "matvec", p);
  else if (p.n_tokens <= 2) launch_chained(matvec_kernel<T, 2, EP>, n_blocks, block, 0, stream, "matvec", p);
  else if (p.n_tokens <= 4) launch_chained(matvec_kernel<T, 4, EP>, n_blocks, block, 0, stream, "matvec", p);
  else launch_chained(matvec_kernel<T, 8, EP>, n_blocks, block, 0, stream, "matvec", p);
}

// Warps per output pair, from bench/cuda_matvec_bench.cpp on an H200 and checked on an H100 (the
// automatic choice within 4% of the best of 1, 2, 4 on all 48 cases there, docs/PERFORMANCE.md): few
// output pairs (small matrices: Qwen2.5-0.5B's Q/K/V, output and down projections) leave most of
// the GPU idle unless each row is shared by several warps (+60% for 1,152 x 896 BF16); a few
// thousand pairs do best with 2; many pairs with 1, except long float rows (>= 512 steps), where
// 4 warps keep more loads in flight. Never more warps than the row has 32-step slices.
int choose_warps_per_output(int64_t pairs, int64_t n_steps) {
  int wpo = pairs < 1024 ? 4 : pairs < 3072 ? 2 : n_steps >= 512 ? 4 : 1;
  while (wpo > 1 && static_cast<int64_t>(wpo / 2) * 32 >= n_steps) wpo /= 2;
  return wpo;
}

}  // namespace

bool matvec_reads_q8(DType type) noexcept { return type == DType::Q8_0 || type == DType::Q4_0 || type == DType::Q4_1; }

void matvec(const MatvecTarget* targets, int n_targets, const MatvecInput& in, int n_tokens, Epilogue epilogue,
            cudaStream_t stream, int warps_per_output) {
  if (n_targets < 1 || n_targets > 3 || n_tokens < 1 || n_tokens > kMatvecMaxTokens)
    throw InternalError("matvec: 1..3 matrices and 1..8 tokens per launch (got " + std::to_string(n_targets) +
                        " and " + std::to_string(n_tokens) + ")");
  for (int i = 1; i < n_targets; ++i)
    if (targets[i].a.type != targets[0].a.type || targets[i].a.cols != targets[0].a.cols)
      throw InternalError("matvec: the matrices of one launch must share type and width");
  Params p;
  p.n_seg = n_targets;
  p.in = in;
  p.n_tokens = n_tokens;
  const DType type = targets[0].a.type;
  int64_t n_steps = 0;
  dispatch_device_type(type, [&]<DType T>() { n_steps = targets[0].a.cols / StepElems<T>::value; });
  int64_t pairs = 0;
  for (int i = 0; i < n_targets; ++i)
    pairs += epilogue == Epilogue::SwiGLU ? targets[i].a.rows : (targets[i].a.rows + 1) / 2;
  p.warps_per_output = choose_warps_per_output(pairs, n_steps);
  if (warps_per_output == 1 || warps_per_output == 2 || warps_per_output == 4) p.warps_per_output = warps_per_output;
  const int outs_per_block = (kWarps / p.warps_per_output) * (epilogue == Epilogue::SwiGLU ? 1 : 2);
  int blocks = 0;
  for (int i = 0; i < n_targets; ++i) {
    p.seg[i].target = targets[i];
    p.seg[i].n_out = targets[i].a.rows;
    p.seg[i].block_begin = blocks;
    blocks += static_cast<int>((targets[i].a.rows + outs_per_block - 1) / outs_per_block);
  }
  dispatch_device_type(type, [&]<DType T>() {
    switch (epilogue) {
      case Epilogue::Store: launch_typed<T, Epilogue::Store>(p, blocks, stream); break;
      case Epilogue::Add: launch_typed<T, Epilogue::Add>(p, blocks, stream); break;
      case Epilogue::SwiGLU: launch_typed<T, Epilogue::SwiGLU>(p, blocks, stream); break;
    }
  });
  check_launch("matvec");
}

}  // namespace lathe::cuda
