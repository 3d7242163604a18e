// Blocked float32 frozen products (see frozen_gemm.hpp). Both directions run the same
// micro-kernel, c[i][j] += sum_p a[i, p] * b[p, j], with the tokens along j (8 or 16 at a time,
// the activations transposed once per call to [depth x tokens]) and weights along i:
// - forward, y^T = W x^T: i = weight rows, p = input columns (a walks along each row);
// - backward, dx^T = W^T dy^T: i = input columns, p = weight rows (a walks down the columns).
// Weights are dequantized (dequantize_row's bits, AVX2 for the common types) into a per-thread
// panel: a unit of rows 256 columns at a time (forward), or a slice of columns of a few rows at
// a time (backward); slices start on a block boundary so that each decodes on its own. Sums that
// go on across panels carry over through memory in order, so the blocking changes no bit.
// Transposed results are written back row-major.
#include "train/frozen_gemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <numeric>
#include <vector>

#include "core/quant.hpp"
#include "lathe/error.hpp"
#include "train/gemm_kernels.hpp"

namespace lathe::train {
namespace {

using gemm::kMaxRows;
using gemm::kVector;

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

// n elements of `type` at src into dst: the level's fast path when it has one, else
// dequantize_row (same bits either way).
void dequantize(const gemm::Kernels& k, DType type, const uint8_t* src, float* dst, int64_t n) {
  if (k.dequantize == nullptr || !k.dequantize(type, src, dst, n)) dequantize_row(type, src, dst, n);
}

// A thread's buffer kept between calls, so that the products do not allocate every time, unless
// it grew past 16 MiB (dy^T of the output projection for a long sequence and a large
// vocabulary): that much is given back when the call ends.
class CallerScratch {
 public:
  CallerScratch(std::vector<float>& buffer, size_t size) : buffer_(buffer) { buffer_.resize(size); }
  ~CallerScratch() {
    if (buffer_.capacity() > kKeep) std::vector<float>().swap(buffer_);
  }
  CallerScratch(const CallerScratch&) = delete;
  CallerScratch& operator=(const CallerScratch&) = delete;
  float* data() noexcept { return buffer_.data(); }

 private:
  static constexpr size_t kKeep = size_t{4} << 20;  // floats
  std::vector<float>& buffer_;
};

int pool_threads(cpu::ThreadPool* pool) { return pool != nullptr ? pool->size() : 1; }

// Calls body(u) once for every unit u < units, on whichever of the pool's threads is free: a
// thread slowed by other work on the machine takes fewer units instead of holding up the rest.
void for_each_unit(cpu::ThreadPool* pool, int64_t units, const std::function<void(int64_t)>& body) {
  if (pool == nullptr || pool->size() == 1 || units == 1) {
    for (int64_t u = 0; u < units; ++u) body(u);
    return;
  }
  std::atomic<int64_t> next{0};
  pool->run([&](int, int) {
    for (int64_t u = next.fetch_add(1, std::memory_order_relaxed); u < units;
         u = next.fetch_add(1, std::memory_order_relaxed))
      body(u);
  });
}

// out [cols x padded] = in [n x cols]^T, tokens n..padded-1 zero: the tokens become the
// contiguous axis the micro-kernel loads 8 at a time.
void transpose_tokens(const gemm::Kernels& k, const float* in, int64_t n, int64_t cols, int64_t padded, float* out,
                      cpu::ThreadPool* pool) {
  auto part = [&](int64_t first, int64_t end) {
    k.transpose(in + first, cols, n, end - first, out + first * padded, padded);
    if (n < padded)
      for (int64_t c = first; c < end; ++c) std::fill(out + c * padded + n, out + (c + 1) * padded, 0.0f);
  };
  if (pool != nullptr && cols * n >= (int64_t{1} << 16))
    pool->parallel_for(cols, 256, part);
  else
    part(0, cols);
}

// c [rows x padded] += a-panel products over `depth`, in tiles of up to 6 rows x 16 tokens, 64
// tokens at a time: b's rows for those (depth x 64 floats) stay in cache while every row tile
// passes over them. a_row / a_step: a's strides along the tile's rows and along the depth.
void panel_product(const gemm::Kernels& k, int64_t rows, int64_t depth, const float* a, int64_t a_row,
                   int64_t a_step, const float* b, int64_t padded, float* c) {
  constexpr int64_t kTokenBlock = 64, kTokenTile = gemm::kMaxVectors * kVector;
  for (int64_t t0 = 0; t0 < padded; t0 += kTokenBlock) {
    const int64_t t1 = std::min(padded, t0 + kTokenBlock);
    for (int64_t i = 0; i < rows; i += kMaxRows) {
      const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, rows - i));
      for (int64_t t = t0; t < t1; t += kTokenTile) {
        const int nv = static_cast<int>(std::min<int64_t>(gemm::kMaxVectors, (t1 - t) / kVector));
        k.tile(mr, nv, depth, a + i * a_row, a_row, a_step, b + t, padded, c + i * padded + t, padded);
      }
    }
  }
}

// Rows per forward unit: a multiple of the tile height, about 8 units per thread, at most 96.
int64_t forward_unit_rows(int64_t rows, int threads) {
  const int64_t tiles = (rows + kMaxRows * 8 * threads - 1) / (kMaxRows * 8 * threads);
  return kMaxRows * std::clamp<int64_t>(tiles, 1, 16);
}

// Columns per backward unit: whole blocks of every weight type and whole tiles (so only the last
// unit may have a partial tile), doubled up to 192 while every thread still gets 4 units.
int64_t backward_unit_cols(int64_t cols, int64_t block, int threads) {
  int64_t unit = std::lcm(block, int64_t{kMaxRows});
  while (unit * 2 <= 192 && cols / (unit * 2) >= 4 * threads) unit *= 2;
  return std::min(unit, cols);
}

void check_same_width(std::span<const MatrixView* const> ws, size_t activations) {
  if (ws.size() != activations)
    throw InvalidArgumentError(fmt::format("frozen products: {} matrices, {} activations", ws.size(), activations));
  for (const MatrixView* w : ws)
    if (w->cols != ws[0]->cols)
      throw InvalidArgumentError(fmt::format("frozen products: {} has {} columns, {} has {}", w->name, w->cols,
                                             ws[0]->name, ws[0]->cols));
}

// The forward's unit u: rows [first, first + rows) of matrix `matrix`, in depth blocks of 256
// columns (whole blocks of every type): the rows' slices of one block are dequantized into a
// panel (at most 96 x 256 floats, L2-sized) and multiplied before the next block's, the sums
// carrying over in yt in order of the columns.
struct RowUnit {
  size_t matrix;
  int64_t first, rows;
};

void forward_unit(const gemm::Kernels& kernels, const MatrixView& w, const RowUnit& unit, const float* xt, int64_t n,
                  int64_t padded, float* y) {
  const auto& info = dtype_info(w.type);
  const int64_t in = w.cols, depth_block = std::lcm(int64_t{256}, int64_t{info.block_size});
  thread_local std::vector<float> panel, yt;
  panel.resize(static_cast<size_t>(unit.rows * std::min(depth_block, in)));
  yt.assign(static_cast<size_t>(unit.rows * padded), 0.0f);
  for (int64_t k0 = 0; k0 < in; k0 += depth_block) {
    const int64_t depth = std::min(depth_block, in - k0);
    const size_t offset = static_cast<size_t>(k0 / info.block_size) * info.block_bytes;
    for (int64_t r = 0; r < unit.rows; ++r)
      dequantize(kernels, w.type, w.data + static_cast<size_t>(unit.first + r) * w.row_bytes + offset,
                 panel.data() + r * depth, depth);
    panel_product(kernels, unit.rows, depth, panel.data(), depth, 1, xt + k0 * padded, padded, yt.data());
  }
  kernels.transpose(yt.data(), padded, unit.rows, n, y + unit.first, w.rows);
}

// The backward's share of one matrix for columns [first, first + cols): acc [cols x padded] +=
// (W's slice)^T dy^T, over W's rows in order, a few rows at a time: the panel (about 24 KiB)
// stays in L1 while every tile of tokens passes over it. The slices are short reads a row apart,
// which the hardware does not fetch ahead on its own, so each row's slice of the next chunk is
// asked for while this one is decoded.
void backward_slice(const gemm::Kernels& kernels, const MatrixView& w, int64_t first, int64_t cols, const float* dyt,
                    int64_t padded, float* acc) {
  const auto& info = dtype_info(w.type);
  const size_t offset = static_cast<size_t>(first / info.block_size) * info.block_bytes;
  const size_t slice_bytes = static_cast<size_t>(cols / info.block_size) * info.block_bytes;
  const int64_t chunk = std::max<int64_t>(16, 6144 / cols);
  thread_local std::vector<float> panel;
  panel.resize(static_cast<size_t>(chunk * cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
    const int64_t rows = std::min(chunk, w.rows - r0);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* slice = w.data + static_cast<size_t>(r0 + r) * w.row_bytes + offset;
      if (r0 + chunk + r < w.rows)
        for (size_t b = 0; b < slice_bytes; b += 64) __builtin_prefetch(slice + chunk * w.row_bytes + b);
      dequantize(kernels, w.type, slice, panel.data() + r * cols, cols);
    }
    panel_product(kernels, cols, rows, panel.data(), 1, cols, dyt + r0 * padded, padded, acc);
  }
}

}  // namespace

void frozen_gemm_forward(std::span<const MatrixView* const> ws, const float* x, int64_t n, std::span<float* const> ys,
                         cpu::ThreadPool* pool) {
  check_same_width(ws, ys.size());
  if (n <= 0 || ws.empty()) return;
  const gemm::Kernels& kernels = gemm::active_kernels();
  const int64_t in = ws[0]->cols, padded = round_up(n, kVector);
  // A lambda run on a worker would see that thread's own thread_local, so the workers get the
  // caller's buffer through this pointer.
  thread_local std::vector<float> xt_buffer;
  CallerScratch xt_scratch(xt_buffer, static_cast<size_t>(in * padded));
  float* const xt = xt_scratch.data();
  transpose_tokens(kernels, x, n, in, padded, xt, pool);
  int64_t total = 0;
  for (const MatrixView* w : ws) total += w->rows;
  const int64_t unit_rows = forward_unit_rows(total, pool_threads(pool));
  std::vector<RowUnit> units;
  for (size_t m = 0; m < ws.size(); ++m)
    for (int64_t first = 0; first < ws[m]->rows; first += unit_rows)
      units.push_back({m, first, std::min(unit_rows, ws[m]->rows - first)});
  for_each_unit(pool, static_cast<int64_t>(units.size()), [&](int64_t u) {
    const RowUnit& unit = units[static_cast<size_t>(u)];
    forward_unit(kernels, *ws[unit.matrix], unit, xt, n, padded, ys[unit.matrix]);
  });
}

void frozen_gemm_backward(std::span<const MatrixView* const> ws, std::span<const float* const> dys, int64_t n,
                          float* dx, cpu::ThreadPool* pool) {
  check_same_width(ws, dys.size());
  if (n <= 0 || ws.empty()) return;
  const gemm::Kernels& kernels = gemm::active_kernels();
  const int64_t in = ws[0]->cols, padded = round_up(n, kVector);
  // dy^T of every matrix, one after the other: rows [start[m], start[m] + rows of m).
  std::vector<int64_t> start(ws.size() + 1, 0);
  int64_t block = 1;
  for (size_t m = 0; m < ws.size(); ++m) {
    start[m + 1] = start[m] + ws[m]->rows;
    block = std::lcm(block, int64_t{dtype_info(ws[m]->type).block_size});
  }
  thread_local std::vector<float> dyt_buffer;  // the caller's, as xt in the forward
  CallerScratch dyt_scratch(dyt_buffer, static_cast<size_t>(start.back() * padded));
  float* const dyt = dyt_scratch.data();
  for (size_t m = 0; m < ws.size(); ++m)
    transpose_tokens(kernels, dys[m], n, ws[m]->rows, padded, dyt + start[m] * padded, pool);
  const int64_t unit_cols = backward_unit_cols(in, block, pool_threads(pool));
  for_each_unit(pool, (in + unit_cols - 1) / unit_cols, [&](int64_t u) {
    const int64_t first = u * unit_cols, cols = std::min(unit_cols, in - first);
    // The unit's dx^T, starting from dx's values so that each sum continues dx's, then every
    // matrix's terms in the order given.
    thread_local std::vector<float> acc;
    acc.resize(static_cast<size_t>(cols * padded));
    kernels.transpose(dx + first, in, n, cols, acc.data(), padded);
    if (n < padded)
      for (int64_t c = 0; c < cols; ++c) std::fill(acc.data() + c * padded + n, acc.data() + (c + 1) * padded, 0.0f);
    for (size_t m = 0; m < ws.size(); ++m)
      backward_slice(kernels, *ws[m], first, cols, dyt + start[m] * padded, padded, acc.data());
    kernels.transpose(acc.data(), padded, cols, n, dx + first, in);
  });
}

void frozen_gemm_forward(const MatrixView& w, const float* x, int64_t n, float* y, cpu::ThreadPool* pool) {
  const MatrixView* ws[] = {&w};
  float* ys[] = {y};
  frozen_gemm_forward(ws, x, n, ys, pool);
}

void frozen_gemm_backward(const MatrixView& w, const float* dy, int64_t n, float* dx, cpu::ThreadPool* pool) {
  const MatrixView* ws[] = {&w};
  const float* dys[] = {dy};
  frozen_gemm_backward(ws, dys, n, dx, pool);
}

namespace {

// c[i * ldc + j] += sum over p < depth of a[i * a_row + p * a_step] * b[p * ldb + j] for i < rows
// and j < width, on the calling thread: the micro-kernel reads b and c in place, 16 or 8 columns
// at a time; a last width % 8 columns go through zero-padded copies.
void accumulate(const gemm::Kernels& k, int64_t rows, int64_t width, int64_t depth, const float* a, int64_t a_row,
                int64_t a_step, const float* b, int64_t ldb, float* c, int64_t ldc) {
  const int64_t full = width / kVector * kVector;
  for (int64_t i = 0; i < rows; i += kMaxRows) {
    const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, rows - i));
    for (int64_t j = 0; j < full; j += gemm::kMaxVectors * kVector) {
      const int nv = static_cast<int>(std::min<int64_t>(gemm::kMaxVectors, (full - j) / kVector));
      k.tile(mr, nv, depth, a + i * a_row, a_row, a_step, b + j, ldb, c + i * ldc + j, ldc);
    }
  }
  const int64_t tail = width - full;
  if (tail == 0) return;
  std::vector<float> b_tail(static_cast<size_t>(depth * kVector), 0.0f), c_tail(static_cast<size_t>(rows * kVector));
  for (int64_t p = 0; p < depth; ++p) std::copy_n(b + p * ldb + full, tail, b_tail.begin() + p * kVector);
  for (int64_t i = 0; i < rows; ++i) std::copy_n(c + i * ldc + full, tail, c_tail.begin() + i * kVector);
  for (int64_t i = 0; i < rows; i += kMaxRows) {
    const int mr = static_cast<int>(std::min<int64_t>(kMaxRows, rows - i));
    k.tile(mr, 1, depth, a + i * a_row, a_row, a_step, b_tail.data(), kVector, c_tail.data() + i * kVector, kVector);
  }
  for (int64_t i = 0; i < rows; ++i) std::copy_n(c_tail.begin() + i * kVector, tail, c + i * ldc + full);
}

}  // namespace

// The adapter's products read the activations where they lie (row-major, tokens first): the
// rank is too small for a transposed copy of an activation to pay, only the adapter's own
// matrices are transposed when a product needs them so.
void lora_gemm_forward(const float* a, const float* b, int64_t rank, int64_t in, int64_t out, float s, const float* x,
                       int64_t n, float* y, float* xa) {
  const gemm::Kernels& k = gemm::active_kernels();
  thread_local std::vector<float> a_t, b_t, product;
  // xa [n x rank] = x A^T, summed over the input in order.
  a_t.resize(static_cast<size_t>(in * rank));
  k.transpose(a, in, rank, in, a_t.data(), rank);
  std::fill(xa, xa + n * rank, 0.0f);
  accumulate(k, n, rank, in, x, in, 1, a_t.data(), rank, xa, rank);
  // y += s * (xa B^T), as the loops: the sum over the rank, then scaled.
  b_t.resize(static_cast<size_t>(rank * out));
  k.transpose(b, rank, out, rank, b_t.data(), out);
  product.assign(static_cast<size_t>(n * out), 0.0f);
  accumulate(k, n, out, rank, xa, rank, 1, b_t.data(), out, product.data(), out);
  for (int64_t i = 0; i < n * out; ++i) y[i] += s * product[static_cast<size_t>(i)];
}

void lora_gemm_backward(const float* a, const float* b, int64_t rank, int64_t in, int64_t out, float s,
                        const float* x, const float* xa, const float* dy, int64_t n, float* da, float* db, float* dx) {
  const gemm::Kernels& k = gemm::active_kernels();
  // With g = s dy (the loops' s * g[r]), each sum over its depth in order, onto what it holds:
  // du = g B (from zero), db += g^T xa, da += du^T x, dx += du A.
  thread_local std::vector<float> g, du;
  g.resize(static_cast<size_t>(n * out));
  for (int64_t i = 0; i < n * out; ++i) g[static_cast<size_t>(i)] = s * dy[i];
  du.assign(static_cast<size_t>(n * rank), 0.0f);
  accumulate(k, n, rank, out, g.data(), out, 1, b, rank, du.data(), rank);
  accumulate(k, out, rank, n, g.data(), 1, out, xa, rank, db, rank);
  accumulate(k, rank, in, n, du.data(), 1, rank, x, in, da, in);
  accumulate(k, n, in, rank, du.data(), rank, 1, a, in, dx, in);
}

}  // namespace lathe::train
