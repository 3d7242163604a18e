// The views CUDA kernels take: a weight matrix in its device layout (device_layout.hpp) and the
// activations a mat-vec reads. Plain structs of device pointers, passed to kernels by value.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace lathe::cuda {

// The 16-bit form activations take for a cuBLAS product (None: float32 weights, no conversion).
enum class Dtype16 { None, BF16, F16 };

struct DeviceMatrix {
  DType type = DType::F32;         // device type: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K Q6_K
  const uint8_t* qs = nullptr;     // quants or elements, qs_row bytes per row
  const uint8_t* scales = nullptr; // per-block scales, sc_row bytes per row (null if none)
  int64_t rows = 0, cols = 0;
  size_t qs_row = 0, sc_row = 0;

  // Rows [first, first + count) (e.g. the gate half of Phi-3's fused gate_up matrix).
  DeviceMatrix row_slice(int64_t first, int64_t count) const {
    DeviceMatrix m = *this;
    m.qs += first * static_cast<int64_t>(qs_row);
    if (m.scales != nullptr) m.scales += first * static_cast<int64_t>(sc_row);
    m.rows = count;
    return m;
  }
};

// A mat-vec's input for n tokens: float rows (x, ldx floats apart) and, for the weight types
// whose dot product runs on 8-bit integers (Q8_0, Q4_0, Q4_1), the same rows quantized to
// blocks of 32 int8 (q8, ld_q8 bytes apart) with per block (d, d * sum(q)) float pairs (ds,
// ld_ds floats apart), as llama.cpp's q8_1.
// With `norm` set, x holds the residual stream before its RMSNorm: the float mat-vec computes
// W (x / rms(x) * norm) itself (RMSNorm fused; q8 rows are then made by quantize_q8 with the
// same norm).
struct MatvecInput {
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* norm = nullptr;  // RMSNorm weights (x's width) or null
  float eps = 0.0f;
  const int8_t* q8 = nullptr;
  const float* ds = nullptr;
  int64_t ld_q8 = 0, ld_ds = 0;
};

// A kernel's output also written as the next mat-vec's 8-bit input (its MatvecInput::q8/ds), so
// that no quantize_q8 launch runs between them: decode attention rounds each block of 32 outputs
// of token t into q8 + t * ld_q8 and ds + t * ld_ds, as quantize_q8 would.
struct Q8Output {
  int8_t* q8 = nullptr;  // null: nothing written
  float* ds = nullptr;
  int64_t ld_q8 = 0, ld_ds = 0;
};

}  // namespace lathe::cuda
