// Mat-vec for decode: y = W x for 1..8 tokens, each weight byte read once from device memory.
//
// A block of 4 warps; 1, 2 or 4 warps compute one group of 2 or 4 rows (rows of one matrix, or
// for SwiGLU rows of the gate and the same rows of the up matrix) for every token: long rows are
// shared by more warps so that enough loads are in flight, and a group of 4 reads each activation
// step once for four rows. The lanes walk the rows in "steps" (8 elements of a float type, one
// 32-element block of a quantized type), so that neighbouring lanes read neighbouring 16-byte
// pieces of a row (coalesced); the partial sums are reduced with shuffles, then across the warps
// of a group in shared memory.
//
// Chained launches: the weights do not depend on the kernel before, so blocks scheduled while it
// still runs ask L2 for their rows before they wait for it (launch.cuh).
//
// Weights bypass L1 where a lane's step is one 16-byte load (F16, BF16, Q4_0, Q4_1 quants): they
// are read once, and the activations that every warp reads again stay in L1 (load_weights16).
//
// Q8_0, Q4_0 and Q4_1 meet activations quantized to int8 blocks (quantize_act.cu) and multiply
// with dp4a, 4 products per instruction, as llama.cpp does; the float types and the K-quants
// decode to float and meet float activations.
//
// Loads ahead (Q4_0 and Q4_1, one token): a step of these types is only 16 bytes of quants per
// row, so a lane that loads a step and then multiplies it keeps too few bytes in flight to cover
// the memory latency (the compiler does not move the next step's loads above this step's dp4a).
// Where a lane has two or more steps, it loads two steps' weights before it multiplies either:
// the 8B shape's Q4_0 layer matrices went from 36-67% of the read rate to 39-68% (output head
// 84% -> 94%), 8B Q4_0 decode +5%. Not for Q8_0 (32 bytes a step: 8B decode -6%), nor for rows
// of a single step per lane (more registers, fewer blocks: the 0.5B shape's gate/up 4.8 -> 5.8
// us), nor the float types (F16/BF16 tried the same way: 8B BF16 decode -1%). PERFORMANCE.md.
//
// Up to three matrices of one type run in one launch (Q, K and V: fewer launches per token,
// which decides the speed of small models): each gets its own range of blocks.
//
// RMSNorm fused (MatvecInput::norm): the float path multiplies x by the norm weights as it loads
// them and sums x^2 from the same loads; since W (x s g) = s W (x g) for the scalar
// s = 1 / rms(x), the sums are scaled once at the end. The warps of a group cover the whole row,
// so each group has the whole sum of squares without another pass over x.
#include <algorithm>
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
  int warps_per_group = 1;  // 1, 2 or 4
  MatvecInput in;
  int n_tokens = 0;
  int prefetch_blocks = 0;  // blocks below this prefetch their rows into L2 before waiting
  bool loads_ahead = false;  // Q4_0/Q4_1, one token: matvec_kernel<..., true> (see the top)
  bool weights_skip_l1 = false;  // load_weights16
};

// 16 bytes of weights, not kept in L1 (weights_skip_l1): they are read once, and in L1 they would
// evict the activations that every warp of the multiprocessor reads again (H200 decode in three
// calls: 8B BF16 +1.6% to +3.5%, 8B Q4_0 +2.5% to +3.0%, 0.5B BF16 +0.7% to +4.7%, 0.5B Q4_0
// +1.7% to +1.8%; docs/PERFORMANCE.md). Only for steps that are one 16-byte
// load per lane: where a lane loads 32 contiguous bytes in two halves (Q8_0, F32), skipping L1
// lost 5% of 8B Q8_0 decode (presumably the second half is an L1 hit of the first one's sector).
template <typename V>
__device__ __forceinline__ V load_weights16(const V* p, bool skip_l1) {
  static_assert(sizeof(V) == 16);
  if (!skip_l1) return *p;
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return *reinterpret_cast<V*>(&v);
}

// Float activations: decode the R rows' step, multiply with each token's 8 or 32 floats.
template <DType T, int R, int NCOLS>
__device__ __forceinline__ void step_float(const uint8_t* const* qs, const uint8_t* const* sc, int64_t st,
                                           const MatvecInput& in, int n_tokens, float (&acc)[R][NCOLS],
                                           float (&ss)[NCOLS], bool skip_l1) {
  constexpr int E = StepElems<T>::value;
  float w[R][E];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const uint4* p = reinterpret_cast<const uint4*>(qs[r]) + st;
    if constexpr (T == DType::BF16) bf16x8_to_float(load_weights16(p, skip_l1), w[r]);
    else if constexpr (T == DType::F16) halves8_to_float(load_weights16(p, skip_l1), w[r]);
    else decode_step<T>(qs[r], sc[r], st, w[r]);
  }
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
      for (int r = 0; r < R; ++r)
        acc[r][t] += w[r][4 * i] * x.x + w[r][4 * i + 1] * x.y + w[r][4 * i + 2] * x.z + w[r][4 * i + 3] * x.w;
    }
  }
}

// One step of R rows of an 8-bit-path type as loaded: the quants and the half-precision scales,
// not yet unpacked, so that the loads of two steps can be issued before either is used.
template <DType T, int R>
struct Q8PathStep {
  int4 q[R][T == DType::Q8_0 ? 2 : 1];  // Q8_0: 32 int8; Q4_x: 32 nibbles
  __half d[R];
  __half m[R];  // Q4_1 only
};

template <DType T, int R>
__device__ __forceinline__ void load_q8_path_step(const uint8_t* const* qs, const uint8_t* const* sc, int64_t st,
                                                  Q8PathStep<T, R>& w, bool skip_l1) {
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if constexpr (T == DType::Q8_0) {
      const int4* p = reinterpret_cast<const int4*>(qs[r] + st * 32);
      w.q[r][0] = p[0];
      w.q[r][1] = p[1];
      w.d[r] = *reinterpret_cast<const __half*>(sc[r] + st * 2);
    } else {
      w.q[r][0] = load_weights16(reinterpret_cast<const int4*>(qs[r] + st * 16), skip_l1);
      if constexpr (T == DType::Q4_0) {
        w.d[r] = *reinterpret_cast<const __half*>(sc[r] + st * 2);
      } else {
        const __half2 dm = *reinterpret_cast<const __half2*>(sc[r] + st * 4);
        w.d[r] = dm.x;
        w.m[r] = dm.y;
      }
    }
  }
}

// 8-bit activations: one 32-element block per step, integer dot products.
template <DType T, int R, int NCOLS>
__device__ __forceinline__ void dot_q8_path_step(const Q8PathStep<T, R>& w, int64_t st, const MatvecInput& in,
                                                 int n_tokens, float (&acc)[R][NCOLS]) {
  int wq[R][8];  // Q8_0: 32 int8; Q4_x: the 32 nibbles, each widened to a byte
  float d[R], m[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    d[r] = __half2float(w.d[r]);
    if constexpr (T == DType::Q8_0) {
      const int4 a = w.q[r][0], b = w.q[r][1];
      wq[r][0] = a.x; wq[r][1] = a.y; wq[r][2] = a.z; wq[r][3] = a.w;
      wq[r][4] = b.x; wq[r][5] = b.y; wq[r][6] = b.z; wq[r][7] = b.w;
      m[r] = 0.0f;
    } else {
      const int4 a = w.q[r][0];
      // Low nibbles are elements 0..15, high nibbles 16..31 (ggml's order).
      wq[r][0] = a.x & 0x0F0F0F0F; wq[r][1] = a.y & 0x0F0F0F0F;
      wq[r][2] = a.z & 0x0F0F0F0F; wq[r][3] = a.w & 0x0F0F0F0F;
      wq[r][4] = (a.x >> 4) & 0x0F0F0F0F; wq[r][5] = (a.y >> 4) & 0x0F0F0F0F;
      wq[r][6] = (a.z >> 4) & 0x0F0F0F0F; wq[r][7] = (a.w >> 4) & 0x0F0F0F0F;
      // Q4_0: value = d * (q - 8) = d * q + m
      m[r] = T == DType::Q4_0 ? -8.0f * d[r] : __half2float(w.m[r]);
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
    for (int r = 0; r < R; ++r) {
      int sum = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) sum = __dp4a(wq[r][i], xq[i], sum);
      // sum_j (d q_j + m) (dx qx_j) = d dx sum(q qx) + m (dx sum(qx))
      acc[r][t] += d[r] * dx * static_cast<float>(sum) + m[r] * sx;
    }
  }
}

template <DType T, int R, int NCOLS>
__device__ __forceinline__ void step_q8(const uint8_t* const* qs, const uint8_t* const* sc, int64_t st,
                                        const MatvecInput& in, int n_tokens, float (&acc)[R][NCOLS], bool skip_l1) {
  Q8PathStep<T, R> w;
  load_q8_path_step<T, R>(qs, sc, st, w, skip_l1);
  dot_q8_path_step<T, R, NCOLS>(w, st, in, n_tokens, acc);
}

// Asks L2 for the `bytes` bytes of a row: the 128-byte lines at first, first + stride, ...
__device__ __forceinline__ void prefetch_row(const uint8_t* row, int64_t bytes, int64_t first, int64_t stride) {
  for (int64_t off = first; off < bytes; off += stride) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + off));
}

template <DType T, int R, int NCOLS, Epilogue EP, bool kLoadsAhead = false>
__global__ void __launch_bounds__(kWarps * 32) matvec_kernel(const Params p) {
  __shared__ float partial[kWarps][R + 1][NCOLS];  // the R rows' sums and the sum of squares
  int s = 0;
  while (s + 1 < p.n_seg && static_cast<int>(blockIdx.x) >= p.seg[s + 1].block_begin) ++s;
  const Segment& seg = p.seg[s];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // wpg warps share one group of R rows, each taking every wpg-th 32-step slice of the rows:
  // long rows get more loads in flight, short rows keep a warp per group.
  const int wpg = p.warps_per_group, groups_per_block = kWarps / wpg;
  constexpr int kOuts = EP == Epilogue::SwiGLU ? R / 2 : R;  // outputs per group
  const int64_t out0 = (static_cast<int64_t>(blockIdx.x - seg.block_begin) * groups_per_block + warp / wpg) * kOuts;
  const bool active = out0 < seg.n_out;  // no early return: the block synchronizes below

  // Row r of the group: outputs out0 + r (SwiGLU: the gate rows of outputs out0.., then the same
  // rows of up). Past the last output the last row is read again (computed, never stored).
  const uint8_t* qs[R];
  const uint8_t* sc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const DeviceMatrix& m = EP == Epilogue::SwiGLU && r >= kOuts ? seg.target.b : seg.target.a;
    const int64_t row = active ? min(out0 + r % kOuts, seg.n_out - 1) : 0;
    qs[r] = m.qs + row * static_cast<int64_t>(m.qs_row);
    sc[r] = m.scales ? m.scales + row * static_cast<int64_t>(m.sc_row) : nullptr;
  }
  // The weights do not depend on the kernel before: blocks scheduled while it still runs (the
  // first wave of a chained launch) start fetching their rows now.
  if (active && static_cast<int>(blockIdx.x) < p.prefetch_blocks) {
    const int64_t first = ((warp % wpg) * 32 + lane) * 128, stride = wpg * 32 * 128;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const DeviceMatrix& m = EP == Epilogue::SwiGLU && r >= kOuts ? seg.target.b : seg.target.a;
      prefetch_row(qs[r], static_cast<int64_t>(m.qs_row), first, stride);
      if (sc[r] != nullptr) prefetch_row(sc[r], static_cast<int64_t>(m.sc_row), first, stride);
    }
  }
  wait_for_previous_kernel();

  float acc[R][NCOLS], ss[NCOLS];
#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r][t] = 0.0f;
    ss[t] = 0.0f;
  }

  constexpr bool kQ8 = T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1;
  const int64_t n_steps = active ? seg.target.a.cols / StepElems<T>::value : 0;
  const int stride = wpg * 32;
  if constexpr (kLoadsAhead) {
    // Steps st and st + stride: both loaded, then both multiplied in order (the same sums as below).
    for (int64_t st = (warp % wpg) * 32 + lane; st < n_steps; st += 2 * stride) {
      const bool second = st + stride < n_steps;
      Q8PathStep<T, R> w[2];
      load_q8_path_step<T, R>(qs, sc, st, w[0], p.weights_skip_l1);
      if (second) load_q8_path_step<T, R>(qs, sc, st + stride, w[1], p.weights_skip_l1);
      dot_q8_path_step<T, R, NCOLS>(w[0], st, p.in, p.n_tokens, acc);
      if (second) dot_q8_path_step<T, R, NCOLS>(w[1], st + stride, p.in, p.n_tokens, acc);
    }
  } else {
#pragma unroll 2
    for (int64_t st = (warp % wpg) * 32 + lane; st < n_steps; st += stride) {
      if constexpr (kQ8) step_q8<T, R, NCOLS>(qs, sc, st, p.in, p.n_tokens, acc, p.weights_skip_l1);
      else step_float<T, R, NCOLS>(qs, sc, st, p.in, p.n_tokens, acc, ss, p.weights_skip_l1);
    }
  }

#pragma unroll
  for (int t = 0; t < NCOLS; ++t) {
    float v[R];
#pragma unroll
    for (int r = 0; r < R; ++r) v[r] = warp_sum(acc[r][t]);
    const float sq = warp_sum(ss[t]);
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) partial[warp][r][t] = v[r];
      partial[warp][R][t] = sq;
    }
  }
  if (wpg > 1) __syncthreads();
  if (!active || lane != 0 || warp % wpg != 0) return;
  for (int t = 0; t < p.n_tokens && t < NCOLS; ++t) {
    float v[R + 1] = {};
    for (int w = warp; w < warp + wpg; ++w)
#pragma unroll
      for (int r = 0; r <= R; ++r) v[r] += partial[w][r][t];
    if (!kQ8 && p.in.norm != nullptr) {  // the fused RMSNorm's 1 / rms(x)
      const float inv = rsqrtf(v[R] / static_cast<float>(seg.target.a.cols) + p.in.eps);
#pragma unroll
      for (int r = 0; r < R; ++r) v[r] *= inv;
    }
    float* y = seg.target.y + t * seg.target.ldy;
#pragma unroll
    for (int r = 0; r < kOuts; ++r) {
      if (out0 + r >= seg.n_out) break;
      if constexpr (EP == Epilogue::SwiGLU) y[out0 + r] = silu(v[r]) * v[kOuts + r];
      else if constexpr (EP == Epilogue::Add) y[out0 + r] += v[r];
      else y[out0 + r] = v[r];
    }
  }
}

// Groups of 4 rows need 4 rows' decoded step in registers: only for the types whose step is
// small (8 floats, or 8-bit quants that stay packed); Q4_K and Q6_K decode 32 floats per row.
constexpr bool four_row_groups_fit(DType type) { return type != DType::Q4_K && type != DType::Q6_K; }

template <DType T, int R, Epilogue EP>
void launch_typed(const Params& p, int n_blocks, cudaStream_t stream) {
  const dim3 block(kWarps * 32);
  if constexpr (T == DType::Q4_0 || T == DType::Q4_1) {
    if (p.loads_ahead) return launch_chained(matvec_kernel<T, R, 1, EP, true>, n_blocks, block, 0, stream, "matvec", p);
  }
  if (p.n_tokens <= 1) launch_chained(matvec_kernel<T, R, 1, EP>, n_blocks, block, 0, stream, "matvec", p);
  else if (p.n_tokens <= 2) launch_chained(matvec_kernel<T, R, 2, EP>, n_blocks, block, 0, stream, "matvec", p);
  else if (p.n_tokens <= 4) launch_chained(matvec_kernel<T, R, 4, EP>, n_blocks, block, 0, stream, "matvec", p);
  else launch_chained(matvec_kernel<T, R, 8, EP>, n_blocks, block, 0, stream, "matvec", p);
}

// The automatic layout. Warps per group, from bench/cuda_matvec_bench.cpp (H200, H100) and whole
// decode steps: few row pairs (small matrices: Qwen2.5-0.5B's Q/K/V, output and down projections)
// leave most of the GPU idle unless each row is shared by several warps (+60% for 1,152 x 896
// BF16); a few thousand pairs do best with 2; many pairs with 1, except long float rows (>= 512
// steps), where 4 warps keep more loads in flight. Never more warps than the row has 32-step
// slices. (A rule tuned on the benchmark alone, more warps for the 8B shapes, looked better there
// but lost 3-5% of 8B Q8_0/Q4_0 decode in whole decode steps: docs/PERFORMANCE.md.)
// Groups of 4 rows for float weights on very tall matrices (>= 8192 pairs: the output head) at
// 1-2 tokens: +2% to +7% there. For the 8-bit types on tall matrices of short rows (< 64 steps:
// Qwen2.5-0.5B's gate/up and output head, 896 columns) the benchmark gave +5% to +12% per matrix
// and whole decode steps +3.0% (Q8_0) and +0.5% (Q4_0); on the 8B shape's long rows nothing
// (LATHE_CUDA_Q8_ROWS4=0 turns this off, to measure what it brings).
bool q8_four_row_groups_enabled() {
  static const bool turned_off = turned_off_by_env("LATHE_CUDA_Q8_ROWS4");
  return !turned_off;
}

// Weights not kept in L1 (load_weights16): LATHE_CUDA_WEIGHTS_SKIP_L1=0 turns it off, to measure
// what it brings.
bool weights_skip_l1_enabled() {
  static const bool turned_off = turned_off_by_env("LATHE_CUDA_WEIGHTS_SKIP_L1");
  return !turned_off;
}

// Loads ahead (see the top): LATHE_CUDA_MATVEC_AHEAD=0 turns it off, to measure what it brings.
bool loads_ahead_enabled() {
  static const bool turned_off = turned_off_by_env("LATHE_CUDA_MATVEC_AHEAD");
  return !turned_off;
}
constexpr bool loads_ahead_applies(DType type, int n_tokens) {
  return (type == DType::Q4_0 || type == DType::Q4_1) && n_tokens == 1;
}

MatvecLayout choose_layout(DType type, int64_t pairs, int64_t n_steps, int n_tokens) {
  MatvecLayout layout{pairs < 1024 ? 4 : pairs < 3072 ? 2 : n_steps >= 512 ? 4 : 1, 2};
  int& wpg = layout.warps_per_group;
  while (wpg > 1 && static_cast<int64_t>(wpg / 2) * 32 >= n_steps) wpg /= 2;
  const bool float_type = type == DType::F32 || type == DType::F16 || type == DType::BF16;
  if (pairs >= 8192 && float_type && n_tokens <= 2) layout.rows_per_group = 4;
  if (matvec_reads_q8(type) && pairs >= 4096 && n_steps < 64 && n_tokens <= 2 && q8_four_row_groups_enabled())
    layout.rows_per_group = 4;
  return layout;
}

}  // namespace

bool matvec_reads_q8(DType type) noexcept { return type == DType::Q8_0 || type == DType::Q4_0 || type == DType::Q4_1; }

void matvec(const MatvecTarget* targets, int n_targets, const MatvecInput& in, int n_tokens, Epilogue epilogue,
            cudaStream_t stream, MatvecLayout layout) {
  if (n_targets < 1 || n_targets > 3 || n_tokens < 1 || n_tokens > kMatvecMaxTokens)
    throw InternalError("matvec: 1..3 matrices and 1..8 tokens per launch (got " + std::to_string(n_targets) +
                        " and " + std::to_string(n_tokens) + ")");
  for (int i = 1; i < n_targets; ++i)
    if (targets[i].a.type != targets[0].a.type || targets[i].a.cols != targets[0].a.cols)
      throw InternalError("matvec: the matrices of one launch must share type and width");
  Params p;
  p.weights_skip_l1 = weights_skip_l1_enabled();
  p.n_seg = n_targets;
  p.in = in;
  p.n_tokens = n_tokens;
  const DType type = targets[0].a.type;
  int64_t n_steps = 0;
  dispatch_device_type(type, [&]<DType T>() { n_steps = targets[0].a.cols / StepElems<T>::value; });
  int64_t pairs = 0;
  for (int i = 0; i < n_targets; ++i)
    pairs += epilogue == Epilogue::SwiGLU ? targets[i].a.rows : (targets[i].a.rows + 1) / 2;
  const DeviceMatrix& m0 = targets[0].a;
  const MatvecLayout automatic = choose_layout(type, pairs, n_steps, n_tokens);
  int rows = automatic.rows_per_group;
  if (layout.rows_per_group == 2 || (layout.rows_per_group == 4 && four_row_groups_fit(type)))
    rows = layout.rows_per_group;
  p.warps_per_group = automatic.warps_per_group;
  if (layout.warps_per_group == 1 || layout.warps_per_group == 2 || layout.warps_per_group == 4)
    p.warps_per_group = layout.warps_per_group;
  // Loads ahead where a lane has a second step to load (more steps than the group has lanes),
  // unless the caller asks for it (1: wherever the type allows) or against it (-1).
  if (layout.loads_ahead == 1) p.loads_ahead = loads_ahead_applies(type, n_tokens);
  else if (layout.loads_ahead == 0)
    p.loads_ahead = loads_ahead_applies(type, n_tokens) && n_steps > int64_t{32} * p.warps_per_group &&
                    loads_ahead_enabled();
  const int outs_per_block = (kWarps / p.warps_per_group) * (epilogue == Epilogue::SwiGLU ? rows / 2 : rows);
  if (prefetch_before_wait_enabled()) {
    // At most the first wave (16 blocks of 128 threads per multiprocessor) and 1/kPrefetchL2Fraction
    // of L2.
    const DeviceFacts device = current_device_facts();
    const int64_t block_bytes = static_cast<int64_t>(kWarps / p.warps_per_group) * rows * (m0.qs_row + m0.sc_row);
    p.prefetch_blocks = static_cast<int>(std::min<int64_t>(int64_t{device.multiprocessors} * 16,
                                                           device.l2_bytes / kPrefetchL2Fraction / block_bytes));
  }
  int blocks = 0;
  for (int i = 0; i < n_targets; ++i) {
    p.seg[i].target = targets[i];
    p.seg[i].n_out = targets[i].a.rows;
    p.seg[i].block_begin = blocks;
    blocks += static_cast<int>((targets[i].a.rows + outs_per_block - 1) / outs_per_block);
  }
  dispatch_device_type(type, [&]<DType T>() {
    const auto launch = [&]<int R>() {
      switch (epilogue) {
        case Epilogue::Store: launch_typed<T, R, Epilogue::Store>(p, blocks, stream); break;
        case Epilogue::Add: launch_typed<T, R, Epilogue::Add>(p, blocks, stream); break;
        case Epilogue::SwiGLU: launch_typed<T, R, Epilogue::SwiGLU>(p, blocks, stream); break;
      }
    };
    if constexpr (four_row_groups_fit(T)) {
      if (rows == 4) return launch.template operator()<4>();
    }
    launch.template operator()<2>();
  });
}

}  // namespace lathe::cuda
