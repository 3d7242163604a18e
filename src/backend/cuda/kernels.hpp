// Host-side launchers of lathe's CUDA kernels, one .cu file per concern. Every pointer is device
// memory; every launcher enqueues on `stream` and checks the launch (DeviceError naming the
// kernel). Each kernel is compared with the CPU reference in tests/backend/cuda/.
// CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/matrix.hpp"
#include "core/kv_format.hpp"

namespace lathe::cuda {

// embed.cu: out[t] = row tokens[t] of `table`, decoded to float32 (n_tokens x table.cols).
void embed_rows(const DeviceMatrix& table, const int32_t* tokens, int n_tokens, float* out, cudaStream_t stream);

// rms_norm.cu: out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for n_rows rows of `width`
// (x rows ldx floats apart, out rows ldo apart; out may alias x).
void rms_norm(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, float* out,
              int64_t ldo, cudaStream_t stream);
// The same rounded to bfloat16 or half (type, not None) into dense rows of `width`: the input of a
// cuBLAS product, written once instead of in float32 and then converted (prefill).
void rms_norm_16(const float* x, int64_t ldx, const float* weight, int n_rows, int width, float eps, void* out,
                 Dtype16 type, cudaStream_t stream);

// quantize_act.cu: each 32-element block of the n_rows x width rows of x (ldx floats apart) to
// int8 with d = max|x| / 127 (q8, width bytes per row) and the pair (d, d * sum q) (ds, width/16
// floats per row). width must be a multiple of 32. With `norm`, the rows are RMS-normalized
// first (x / rms(x) * norm, as rms_norm), in the same kernel.
void quantize_q8(const float* x, int64_t ldx, int n_rows, int width, int8_t* q8, float* ds, cudaStream_t stream,
                 const float* norm = nullptr, float eps = 0.0f);

// matvec.cu: y = W x for up to 8 tokens, reading W once (decode). Up to three independent
// matrices of one type run in one launch (Q, K and V). Epilogues: Store (y = Wx), Add
// (y += Wx: the residual stream), SwiGLU (y = silu(A x) * (B x): gate and up).
enum class Epilogue { Store, Add, SwiGLU };
struct MatvecTarget {
  DeviceMatrix a;  // the matrix (SwiGLU: the gate)
  DeviceMatrix b;  // SwiGLU only: the up projection, same type and shape as a
  float* y = nullptr;
  int64_t ldy = 0;  // floats between tokens' rows of y
};
constexpr int kMatvecMaxTokens = 8;
// Whether the mat-vec of this device type reads MatvecInput::q8 (else MatvecInput::x).
bool matvec_reads_q8(DType type) noexcept;
// How the rows are shared out: each group of rows_per_group rows (2 or 4; SwiGLU: half of them
// gate rows, half the same rows of up) is computed by warps_per_group warps (1, 2 or 4). 0 picks
// from the matrix shape (benchmarks compare the choices: bench/cuda_matvec_bench.cpp); Q4_K and
// Q6_K always take groups of 2. loads_ahead: Q4_0/Q4_1 at one token load two steps' weights
// before multiplying either (matvec.cu); 0 where each lane has two steps or more, 1 wherever the
// type allows, -1 never.
struct MatvecLayout {
  int warps_per_group = 0;
  int rows_per_group = 0;
  int loads_ahead = 0;
};
void matvec(const MatvecTarget* targets, int n_targets, const MatvecInput& in, int n_tokens, Epilogue epilogue,
            cudaStream_t stream, MatvecLayout layout = {});

// rope_kv.cu: for each token: add the Q/K/V biases (when given), RMS-normalize each head of Q
// and K (Qwen3, when q_norm/k_norm are given), rotate Q and K (RoPE), write Q back in place and
// K, V into the token's KV cache row.
struct RopeKvArgs {
  float* qkv = nullptr;          // [n_tokens][ld]: q (n_head*D) | k (n_kv*D) | v (n_kv*D)
  int64_t ld = 0;
  int n_tokens = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  const float* bq = nullptr;     // biases (n_head*D, n_kv*D, n_kv*D) or null
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* q_norm = nullptr; // head_dim weights or null
  const float* k_norm = nullptr;
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  // rope_dim / 2 angles per position
  int rope_dim = 0;
  bool neox = true;              // pairs (i, i + rope_dim/2); false: (2i, 2i+1)
  float position_scale = 1.0f;
  // Optional [n_ctx][rope_dim / 2] (cos, sin) pairs computed on the host exactly as the CPU does
  // (double angles); without it the kernel computes them (double sincos per token).
  const float* cos_sin = nullptr;
  const int32_t* positions = nullptr;  // per token
  const int32_t* slots = nullptr;      // per token: its sequence's KV cache
  void* const* k_cache = nullptr;      // per slot: this layer's keys (n_ctx rows of n_kv*D)
  void* const* v_cache = nullptr;
  KvFormat kv_format = KvFormat::F16;
  int n_ctx = 0;  // rows per cache (locates Q8_0 scales)
};
void rope_kv(const RopeKvArgs& args, cudaStream_t stream);

// attention_decode.cu: one query token per sequence (decode), its keys split over blocks
// (split-K) and merged; grouped-query heads share each K/V read.
struct AttentionArgs {
  const float* q = nullptr;   // [n_tokens][ldq], after RoPE
  int64_t ldq = 0;
  float* out = nullptr;       // [n_tokens][ldo]: n_head * D
  int64_t ldo = 0;
  int n_tokens = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  float scale = 1.0f;
  const int32_t* positions = nullptr;  // per token; it sees keys 0..position
  const int32_t* slots = nullptr;
  const void* const* k_cache = nullptr;  // per slot
  const void* const* v_cache = nullptr;
  KvFormat kv_format = KvFormat::F16;
  int n_ctx = 0;  // rows per cache (locates Q8_0 scales)
  Q8Output out_q8;  // decode: the output also rounded for the output projection (head_dim % 32 == 0)
  // Decode: with rope.qkv set, rope_kv's work is folded in (one launch fewer per layer): each
  // block takes its query heads from rope.qkv's raw projections and does their biases, norms and
  // RoPE itself (q above is not read), and each block whose key range holds the token's position
  // stores that position's K and V row of its K/V head first (the blocks of one head store the
  // same bytes). rope's shapes, positions, slots and caches must be this call's.
  RopeKvArgs rope;
  // Prefill on tensor cores (attention_prefill_uses_tensor_cores): with out16_type set, the output
  // is written rounded to that type into dense rows of n_head * head_dim at out16 (the output
  // projection's cuBLAS input, gemm_input_written) instead of float32 into out.
  void* out16 = nullptr;
  Dtype16 out16_type = Dtype16::None;
};
// Partial results need split_scratch_floats() floats of scratch.
int decode_splits(int n_ctx, int n_tokens, int n_head_kv, int multiprocessors);
size_t split_scratch_floats(int n_tokens, int n_head, int head_dim, int n_splits);
// Query heads per block: whole groups when the grid covers the GPU, else smaller sub-groups so that
// short contexts run on more multiprocessors.
int decode_heads_per_block(int n_splits, int n_tokens, int n_head_kv, int group, int multiprocessors);
// heads_per_block 0 = whole groups.
void attention_decode(const AttentionArgs& args, int n_splits, int split_len, float* scratch, cudaStream_t stream,
                      int heads_per_block = 0);

// attention_prefill.cu: causal attention of n_tokens consecutive queries of one sequence
// (positions first_pos.., slots[0] for all), tiled like flash attention (online softmax, no
// score matrix in memory).
// Half and Q8_0 caches with head_dim 64 or 128 run on tensor cores (attention_prefill_mma.cu,
// LATHE_CUDA_MMA_ATTENTION=0 turns that off); the rest, float32 caches included, on float32 units.
void attention_prefill(const AttentionArgs& args, int first_pos, cudaStream_t stream);
bool attention_prefill_uses_tensor_cores(const AttentionArgs& args);
void attention_prefill_mma(const AttentionArgs& args, int first_pos, cudaStream_t stream);

// dequantize.cu: rows [first, first + n) of m into IEEE half, row-major (n x m.cols).
void dequantize_rows_f16(const DeviceMatrix& m, int64_t first, int64_t n, void* out, cudaStream_t stream);

// convert.cu: float32 rows to IEEE half or bfloat16 (n_rows x width, source rows ldx apart,
// destination dense).
void f32_to_f16(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream);
void f32_to_bf16(const float* x, int64_t ldx, int n_rows, int width, void* out, cudaStream_t stream);

// swiglu.cu: h[t][i] = silu(gu[t][i]) * gu[t][n_ff + i] (gate and up side by side).
void swiglu(const float* gate_up, int n_tokens, int n_ff, float* h, cudaStream_t stream);
// The same rounded to bfloat16 or half (type, not None): the down projection's cuBLAS input.
void swiglu_16(const float* gate_up, int n_tokens, int n_ff, void* h, Dtype16 type, cudaStream_t stream);

// moe_rows.cu: the rows of a mixture-of-experts block (forward/cuda_forward_cuda.cpp).
// gather_rows: out[i] = x[ids[i]] (n rows of `width`; x rows ldx floats apart, out dense).
// scatter_add_rows: y[ids[i]] += weights[i] * rows[i] (rows dense, y rows ldy apart). The ids of
// one call must be distinct (one expert sees a token once): no two threads add to one value.
void gather_rows(const float* x, int64_t ldx, const int32_t* ids, int n, int width, float* out, cudaStream_t stream);
void scatter_add_rows(const float* rows, const int32_t* ids, const float* weights, int n, int width, float* y,
                      int64_t ldy, cudaStream_t stream);

// argmax.cu: index of the largest of the first n floats of each row (rows ld floats apart): the
// first on ties, NaN and -inf never taken, -1 if nothing else is left (argmax_logit).
void argmax_rows(const float* x, int n_rows, int n, int64_t ld, int32_t* out, cudaStream_t stream);

// sae_gate.cu: the SAE feature gate of edit/sae.hpp on device rows (the math is there). Every
// pointer is device memory; values/scales describe the n_edits edits (scales[e] != 0: an
// ID*SCALE edit, else ID:VALUE) and w_dec holds their features' decoder rows only ([n_edits][d_in]).
// ids[e] indexes w_enc_t, b_enc and threshold: standard and jumprelu gates may hold only the
// edited features there too (ids 0..n_edits-1); topk holds every feature (ids are feature ids:
// it ranks them all). TopK needs scratch for chunk_rows rows: sae_in [chunk_rows][d_in] and pre
// [chunk_rows][d_sae]. rows_changed (optional) counts the rows the gate changed.
struct SaeGateArgs {
  static constexpr int kStandard = 0, kJumpRelu = 1, kTopK = 2;              // architecture
  static constexpr int kNoNorm = 0, kConstantNormRescale = 1, kLayerNorm = 2;  // normalization
  const float* w_enc_t = nullptr;    // [d_sae][d_in] (or [n_edits][d_in], above)
  const float* b_enc = nullptr;      // [d_sae] (or [n_edits])
  const float* w_dec = nullptr;      // [n_edits][d_in]
  const float* b_dec = nullptr;      // [d_in]
  const float* threshold = nullptr;  // [d_sae] (or [n_edits]), jumprelu
  const uint32_t* ids = nullptr;
  const float* values = nullptr;
  const uint8_t* scales = nullptr;
  int n_edits = 0, d_in = 0, d_sae = 0, k = 0;
  int architecture = kStandard, normalization = kNoNorm;
  bool apply_b_dec_to_input = true, clamp_everywhere = false;
  int chunk_rows = 0;
  float* sae_in = nullptr;
  float* pre = nullptr;
  unsigned long long* rows_changed = nullptr;
};
// Shared memory a row's block needs; sae_gate_prepare() allows it (call once per device, before
// any capture, when it may exceed 48 KiB).
size_t sae_gate_shared_bytes(const SaeGateArgs& args);
void sae_gate_prepare(const SaeGateArgs& args);
// Gates n_rows rows [n_rows][d_in] in place. Enqueues kernels only (capturable).
void sae_gate(const SaeGateArgs& args, float* rows, int n_rows, cudaStream_t stream);

}  // namespace lathe::cuda
