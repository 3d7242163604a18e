#include "edit/ablation_adapter.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "arch/hparams.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "core/gram_schmidt.hpp"
#include "core/quant.hpp"
#include "core/splitmix.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

// Column vectors of length n, k of them, stored one after another.
using Columns = std::vector<double>;

// Modified Gram-Schmidt on k columns of length n; a column that vanishes (rank < k) is set to 0.
void orthonormalize(Columns& q, int64_t n, int k) { gram_schmidt(q.data(), k, n, 1e-300); }

// y_j = M q_j for a row-major [rows x cols] M (y: k columns of length rows).
void multiply(cpu::ThreadPool& pool, const std::vector<float>& m, int64_t rows, int64_t cols, const Columns& q, int k,
              Columns& y) {
  y.assign(static_cast<size_t>(rows * k), 0.0);
  pool.parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = m.data() + r * cols;
      for (int j = 0; j < k; ++j) {
        const double* qj = q.data() + j * cols;
        double sum = 0;
        for (int64_t c = 0; c < cols; ++c) sum += row[c] * qj[c];
        y[j * rows + r] = sum;
      }
    }
  });
}

// q_j = M^T y_j (q: k columns of length cols); threads take column ranges and walk every row.
void multiply_transposed(cpu::ThreadPool& pool, const std::vector<float>& m, int64_t rows, int64_t cols,
                         const Columns& y, int k, Columns& q) {
  q.assign(static_cast<size_t>(cols * k), 0.0);
  pool.parallel_for(cols, 256, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = m.data() + r * cols;
      for (int j = 0; j < k; ++j) {
        const double yr = y[j * rows + r];
        double* qj = q.data() + j * cols;
        for (int64_t c = begin; c < end; ++c) qj[c] += row[c] * yr;
      }
    }
  });
}

std::string_view gguf_component_name(EditComponent component) {
  return component == EditComponent::AttnOutput ? "attn_output" : "ffn_down";
}

}  // namespace

double low_rank_approximation(const std::vector<float>& m, int64_t rows, int64_t cols, int rank, std::vector<float>& b,
                              std::vector<float>& a) {
  const int k = static_cast<int>(std::min<int64_t>({rank, rows, cols}));
  cpu::ThreadPool pool;
  // A fixed start (splitmix64 values in [-0.5, 0.5)): the same adapter on every machine.
  Columns q(static_cast<size_t>(cols * k)), y;
  uint64_t state = kSplitmixGamma;
  for (double& x : q) x = static_cast<double>(splitmix64_next(state) >> 11) * 0x1.0p-53 - 0.5;
  orthonormalize(q, cols, k);
  // Subspace iteration: each round multiplies the error of the subspace by (s_{k+1} / s_k)^2.
  constexpr int kRounds = 12;
  for (int round = 0; round < kRounds; ++round) {
    multiply(pool, m, rows, cols, q, k, y);
    orthonormalize(y, rows, k);
    multiply_transposed(pool, m, rows, cols, y, k, q);
    orthonormalize(q, cols, k);
  }
  multiply(pool, m, rows, cols, q, k, y);  // B = M Q, A = Q^T: the projection of M onto span(Q)
  b.assign(static_cast<size_t>(rows * rank), 0.0f);
  a.assign(static_cast<size_t>(rank * cols), 0.0f);
  double kept = 0, total = 0;
  for (int j = 0; j < k; ++j) {
    for (int64_t r = 0; r < rows; ++r) {
      b[r * rank + j] = static_cast<float>(y[j * rows + r]);
      kept += y[j * rows + r] * y[j * rows + r];
    }
    for (int64_t c = 0; c < cols; ++c) a[j * cols + c] = static_cast<float>(q[j * cols + c]);
  }
  for (float x : m) total += double(x) * x;
  return total > 0 ? std::sqrt(std::max(0.0, total - kept) / total) : 0.0;
}

AblationAdapter ablation_adapter(const ModelWeights& weights, const RefusalDirections& directions,
                                 const AblationParams& params, bool norm_preserving, int rank) {
  // llama.cpp's adapters name one matrix per target; the experts of a GGUF share a stacked tensor.
  refuse_moe(weights.hp, weights.source, "an abliteration edit as a LoRA adapter (--lora-out)");
  if (rank < 1 || rank > 64)
    throw InvalidArgumentError(fmt::format("the adapter rank {} is outside 1..64 (--lora-rank)", rank));
  if (directions.n_layer != weights.hp.n_layer || directions.n_embd != weights.hp.n_embd)
    throw InvalidArgumentError(fmt::format("the refusal directions are for {} layers x {} but {} has {} x {}",
                                           directions.n_layer, directions.n_embd, weights.source, weights.hp.n_layer,
                                           weights.hp.n_embd));
  AblationAdapter out;
  out.adapter.source = weights.source;
  out.adapter.architecture = std::string(arch_name(weights.hp.arch));
  const int pair_rank = norm_preserving ? rank : 1;
  out.adapter.alpha = static_cast<float>(pair_rank);
  std::vector<float> global;
  if (params.direction_index >= 0) {
    const auto d = direction_at(directions, params.direction_index);
    global.assign(d.begin(), d.end());
  }
  std::vector<float> w, edited;
  for (uint32_t layer = 0; layer < weights.hp.n_layer; ++layer) {
    for (const auto& [component, kernel] : params.components) {
      const double lambda = layer_weight(kernel, layer);
      if (lambda == 0) continue;
      std::vector<float> v = global;
      if (v.empty()) v.assign(directions.per_layer[layer].begin(), directions.per_layer[layer].end());
      for (const MatrixView* view : component_matrices(weights, layer, component)) {
        const int64_t rows = view->rows, cols = view->cols;
        if (rows != static_cast<int64_t>(weights.hp.n_embd))
          throw UnsupportedError(fmt::format("{}: {} has {} output rows, expected the hidden size {}", weights.source,
                                             view->name, rows, weights.hp.n_embd));
        w.resize(static_cast<size_t>(rows * cols));
        for (int64_t r = 0; r < rows; ++r)
          dequantize_row(view->type, view->data + r * view->row_bytes, w.data() + r * cols, cols);
        LoraPair pair;
        pair.target = fmt::format("blk.{}.{}.weight", layer, gguf_component_name(component));
        pair.rank = pair_rank;
        pair.n_in = cols;
        pair.n_out = rows;
        if (!norm_preserving) {
          // dW = -lambda v (v^T W): B = v, A = -lambda v^T W, exactly.
          pair.b = v;
          pair.a.assign(static_cast<size_t>(cols), 0.0f);
          std::vector<double> u(static_cast<size_t>(cols), 0.0);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) u[c] += double(v[r]) * w[r * cols + c];
          for (int64_t c = 0; c < cols; ++c) pair.a[c] = static_cast<float>(-lambda * u[c]);
        } else {
          edited = w;
          ablate_matrix(edited.data(), rows, cols, v.data(), static_cast<float>(lambda), true);
          for (size_t i = 0; i < edited.size(); ++i) edited[i] -= w[i];
          out.max_rel_error =
              std::max(out.max_rel_error, low_rank_approximation(edited, rows, cols, rank, pair.b, pair.a));
        }
        out.adapter.pairs.push_back(std::move(pair));
      }
    }
  }
  return out;
}

}  // namespace lathe::edit
