// ReFT (representation fine-tuning) adapters: LoReFT interventions on the residual stream, the
// second adapter kind beside LoRA (Wu et al. 2024, pyreft's LoreftIntervention). At a layer's
// output (resid_post) and at chosen positions of the prompt, each row h becomes
//     h' = h + R^T (W h + b - R h)
// with R [rank x d] of orthonormal rows (the subspace edited), W [rank x d] and b [rank] (the
// values the subspace is set to). The base model stays frozen; only R, W, b train. The positions
// are pyreft's "f{first}+l{last}": the first `first` and the last `last` tokens of the prompt.
// Written for float and double like the LoRA pass: the double pass is the tests' reference.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lathe::train {

template <class T>
struct ReftSet {
  int64_t rank = 0, width = 0;  // width: the model's n_embd
  uint32_t first = 0, last = 0;  // positions: the prompt's first `first` and last `last` tokens
  struct Site {
    uint32_t layer = 0;  // intervenes on blocks.{layer}.hook_resid_post
    std::vector<T> r, w, b;  // [rank x width], [rank x width], [rank]
  };
  std::vector<Site> sites;  // at most one per layer, in layer order
};

// Per site, the gradients of R, W and b (same shapes), accumulated by each pass.
template <class T>
struct ReftGrads {
  std::vector<std::vector<T>> dr, dw, db;
  void reset(const ReftSet<T>& reft);  // zeros of the right sizes
};

// Interventions at `layers` (each < n_layer, no repeats) of rank `rank` on rows of `width`: R with
// orthonormal rows from a seeded Gaussian (orthonormalize_rows), W and b uniform in
// +-1/sqrt(width) as torch's Linear initializes them (pyreft's learned_source). Same seed, same
// set on every machine. InvalidArgumentError for a rank outside 1..width, no layers, a repeated
// layer, or no positions (first + last = 0).
ReftSet<float> init_reft(int64_t width, std::span<const uint32_t> layers, int64_t rank, uint32_t first, uint32_t last,
                         uint64_t seed);

// Makes the rows of r [rank x width] orthonormal (modified Gram-Schmidt in float64, in order):
// the retraction that keeps R on its constraint after an optimizer step. InvalidArgumentError
// when the rows are linearly dependent.
template <class T>
void orthonormalize_rows(std::vector<T>& r, int64_t rank, int64_t width);

// The positions of a sequence intervened on: the first `first` and last `last` of its prompt's
// `prompt_len` tokens (each once where they overlap), in increasing order.
std::vector<int64_t> reft_positions(uint32_t first, uint32_t last, int64_t prompt_len);

// h' = h + R^T (W h + b - R h) on the rows `positions` of x [n x width], in place; `saved` keeps
// those rows as they were (the backward's input).
template <class T>
void reft_forward(const typename ReftSet<T>::Site& site, int64_t rank, int64_t width, std::span<const int64_t> positions,
                  T* x, std::vector<T>& saved);

// The backward of reft_forward: dx (the gradient of h', rows [n x width]) becomes that of h in
// place, and the gradients of R, W and b accumulate into dr, dw, db (all null: none wanted):
//   g_u = R g',  dh = g' + (W - R)^T g_u,  dW += g_u h^T,  db += g_u,  dR += u g'^T - g_u h^T.
template <class T>
void reft_backward(const typename ReftSet<T>::Site& site, int64_t rank, int64_t width,
                   std::span<const int64_t> positions, const std::vector<T>& saved, T* dx, T* dr, T* dw, T* db);

}  // namespace lathe::train
