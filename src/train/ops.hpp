// The training pass's operations on the CPU, forward and backward, llm.c-style: each a plain loop
// over row-major arrays, written once for float and double (the double instantiation is the
// reference the float one and finite differences are checked against, tests/train). The matrix
// products (frozen and LoRA) of the float one run as blocked SIMD products instead
// (train/frozen_gemm.hpp): the same sums, with the rounding of fused multiply-adds. The base
// model is frozen: its weights (norms, matrices in any stored type) get no gradients; gradients
// flow to the activations and to the adapters only (LoRA's A and B).
//
// Shapes: n rows (tokens) of width d, row-major. "Accumulates" means the result is added to the
// output array (a residual stream's gradient collects from several ops), "writes" that it is set.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "backend/cpu/thread_pool.hpp"
#include "core/matrix.hpp"
#include "core/rope.hpp"

namespace lathe::train {

// RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) per row. Writes y and rstd (n values,
// kept for the backward).
template <class T>
void rms_norm_forward(const T* x, const float* w, int64_t n, int64_t d, float eps, T* y, T* rstd);
// dx += rstd * (w . dy) - x * rstd^3 / d * sum(w . dy . x), per row (w frozen).
template <class T>
void rms_norm_backward(const T* dy, const T* x, const float* w, const T* rstd, int64_t n, int64_t d, T* dx);

// SwiGLU: h = silu(g) * u, silu(g) = g * sigmoid(g), elementwise over `count` values. Writes h.
// With `pool`, threads take ranges of values (elementwise: same results).
template <class T>
void swiglu_forward(const T* g, const T* u, int64_t count, T* h, cpu::ThreadPool* pool = nullptr);
// Writes dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))) and du = dh * silu(g).
template <class T>
void swiglu_backward(const T* dh, const T* g, const T* u, int64_t count, T* dg, T* du,
                     cpu::ThreadPool* pool = nullptr);

// A frozen matrix W [out x in] in its stored type (any type lathe dequantizes): y = x W^T for n
// rows of x [n x in], computed on dequantized rows in T (no 8-bit activations: the gradient is
// that of this exact function). Writes y [n x out]. With `pool`, threads take ranges of output
// rows; every value is summed in the same order whatever the threads, so results do not depend
// on them. float: a blocked product that dequantizes each weight once per call
// (train/frozen_gemm.hpp); double: one dequantized row at a time.
template <class T>
void frozen_linear_forward(const MatrixView& w, const T* x, int64_t n, T* y, cpu::ThreadPool* pool = nullptr);
// Accumulates dx [n x in] += dy W. With `pool`, threads take ranges of input columns (each
// dequantizes the rows it needs), again independent of the threads.
template <class T>
void frozen_linear_backward(const MatrixView& w, const T* dy, int64_t n, T* dx, cpu::ThreadPool* pool = nullptr);

// Several frozen matrices of the same width on one input (Q, K and V; gate and up) at once:
// y[i] = x w[i]^T for each i, and dx += sum_i dy[i] w[i], matrix by matrix in the order given.
// Same results as one call per matrix, up to the rounding of the float32 sums, with the input
// read once (train/frozen_gemm.hpp). InvalidArgumentError for matrices of different widths.
template <class T>
void frozen_linear_forward(std::span<const MatrixView* const> w, const T* x, int64_t n,
                           std::span<std::type_identity_t<T>* const> y, cpu::ThreadPool* pool = nullptr);
template <class T>
void frozen_linear_backward(std::span<const MatrixView* const> w, std::span<const std::type_identity_t<T>* const> dy,
                            int64_t n, T* dx, cpu::ThreadPool* pool = nullptr);

// A LoRA adapter on a linear layer: y += s * (x A^T) B^T with A [rank x in], B [out x rank].
// Accumulates into y and writes xa = x A^T [n x rank] (kept for the backward).
template <class T>
void lora_forward(const T* a, const T* b, int64_t rank, int64_t in, int64_t out, T s, const T* x, int64_t n, T* y,
                  T* xa);
// From dy [n x out]: accumulates da [rank x in], db [out x rank] (the adapter's gradients) and
// dx [n x in] (the input's).
template <class T>
void lora_backward(const T* a, const T* b, int64_t rank, int64_t in, int64_t out, T s, const T* x, const T* xa,
                   const T* dy, int64_t n, T* da, T* db, T* dx);

// Rotary embeddings in place on n rows of `heads` heads of head_dim, row t at position
// positions[t], with the pairs and angles of `rope` (core/rope.hpp). The backward rotates the
// gradient by the opposite angle (a rotation's inverse is its transpose), also in place.
template <class T>
void rope_forward(const RopeTable& rope, T* x, int64_t n, int64_t heads, int64_t head_dim,
                  std::span<const int32_t> positions);
template <class T>
void rope_backward(const RopeTable& rope, T* dx, int64_t n, int64_t heads, int64_t head_dim,
                   std::span<const int32_t> positions);

// Causal grouped-query attention over one sequence of n tokens: q [n x heads x hd], k and v
// [n x kv_heads x hd] (heads a multiple of kv_heads; query head h reads kv head h / (heads /
// kv_heads)), scores scaled by 1/sqrt(hd), token t attends to 0..t. Writes out [n x heads x hd]
// and probs [heads x n x n] (the softmax, kept for the backward; zero above the diagonal).
// Dot products over the head dimension add eight interleaved partial sums (vectorizable), then
// those in a fixed order. With `pool`, threads take rows: query rows (head, token), and in the
// backward then key rows (kv head, token), each collecting its sums in a fixed order, so results
// do not depend on the threads.
struct AttentionShape {
  int64_t n = 0, heads = 0, kv_heads = 0, head_dim = 0;
};
template <class T>
void attention_forward(const AttentionShape& shape, const T* q, const T* k, const T* v, T* out, T* probs,
                       cpu::ThreadPool* pool = nullptr);
// From dout: writes dq, and accumulates dk and dv (zero them first for one sequence).
template <class T>
void attention_backward(const AttentionShape& shape, const T* q, const T* k, const T* v, const T* probs,
                        const T* dout, T* dq, T* dk, T* dv, cpu::ThreadPool* pool = nullptr);

// log(sum(exp(z))) of one row of `vocab` logits, in float64 with the maximum taken out: the
// log-partition every softmax-based loss of training needs.
template <class T>
double log_sum_exp(const T* z, int64_t vocab);

// Mean cross-entropy of the rows whose target is >= 0 (a target of -1 is not scored: prompt
// tokens when training on answers): loss = mean -log softmax(logits)[target]. Writes dlogits
// (softmax - onehot) / n_scored for scored rows and 0 for the others; returns the loss (0 when no
// row is scored). InvalidArgumentError for a target outside the vocabulary.
template <class T>
double cross_entropy(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, T* dlogits);
// The same with `pool`: threads take whole rows; the loss adds the rows' terms in row order, so
// the result does not depend on the threads.
template <class T>
double cross_entropy(const T* logits, int64_t n, int64_t vocab, std::span<const int32_t> targets, T* dlogits,
                     cpu::ThreadPool* pool);

}  // namespace lathe::train
