#include "backend/cuda/device_layout.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/fp16.hpp"
#include "core/quant.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {

bool is_native_device_type(DType type) noexcept {
  switch (type) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_1:
    case DType::Q4_K: case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

DType device_type(DType stored, const char* tensor) {
  if (is_native_device_type(stored)) return stored;
  if (can_dequantize(stored)) return DType::F16;
  throw UnsupportedError(fmt::format("tensor {}: type {} cannot be placed on a CUDA device (lathe decodes F32, "
                                     "F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K); re-quantize the model",
                                     tensor, dtype_name(stored)));
}

size_t qs_row_bytes(DType device, int64_t cols) {
  const auto n = static_cast<size_t>(cols);
  switch (device) {
    case DType::F32: return n * 4;
    case DType::F16: case DType::BF16: return n * 2;
    case DType::Q8_0: return n;
    case DType::Q4_0: case DType::Q4_1: return n / 2;
    case DType::Q4_K: return n / 256 * 144;
    case DType::Q6_K: return n / 256 * 208;
    default: throw InternalError(fmt::format("qs_row_bytes: {} is not a device type", dtype_name(device)));
  }
}

size_t scales_row_bytes(DType device, int64_t cols) {
  const auto n = static_cast<size_t>(cols);
  switch (device) {
    case DType::Q8_0: case DType::Q4_0: return n / 32 * 2;
    case DType::Q4_1: return n / 32 * 4;
    case DType::Q6_K: return n / 256 * 2;
    default: return 0;
  }
}

namespace {

// One row of a block-quantized type whose blocks are [scale bytes][quant bytes]: the quants go to
// qs, the leading scale bytes to scales.
void split_blocks(const uint8_t* row, int64_t n_blocks, size_t block_bytes, size_t scale_bytes, uint8_t* qs,
                  uint8_t* scales) {
  const size_t quant_bytes = block_bytes - scale_bytes;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* block = row + b * block_bytes;
    std::memcpy(scales + b * scale_bytes, block, scale_bytes);
    std::memcpy(qs + b * quant_bytes, block + scale_bytes, quant_bytes);
  }
}

}  // namespace

void repack_rows(DType stored, const uint8_t* src, size_t src_row_bytes, int64_t rows, int64_t cols, uint8_t* qs_out,
                 uint8_t* scales_out) {
  const DType device = device_type(stored);
  const size_t qs_bytes = qs_row_bytes(device, cols), sc_bytes = scales_row_bytes(device, cols);
  std::vector<float> decoded;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = src + r * src_row_bytes;
    uint8_t* qs = qs_out + r * qs_bytes;
    uint8_t* scales = sc_bytes ? scales_out + r * sc_bytes : nullptr;
    switch (stored) {
      case DType::F32: case DType::F16: case DType::BF16: case DType::Q4_K:
        std::memcpy(qs, row, qs_bytes);
        break;
      case DType::Q8_0: split_blocks(row, cols / 32, 34, 2, qs, scales); break;
      case DType::Q4_0: split_blocks(row, cols / 32, 18, 2, qs, scales); break;
      case DType::Q4_1: split_blocks(row, cols / 32, 20, 4, qs, scales); break;
      case DType::Q6_K:
        // ggml: ql[128] qh[64] scales[16] d(f16); the first 208 bytes stay together.
        for (int64_t b = 0; b < cols / 256; ++b) {
          std::memcpy(qs + b * 208, row + b * 210, 208);
          std::memcpy(scales + b * 2, row + b * 210 + 208, 2);
        }
        break;
      default: {
        // Converted to F16 (exact for the 16-bit scale times small-integer products of these types
        // up to F16 rounding of the product).
        decoded.resize(static_cast<size_t>(cols));
        dequantize_row(stored, row, decoded.data(), cols);
        auto* out = reinterpret_cast<uint16_t*>(qs);
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = f32_to_f16(decoded[static_cast<size_t>(c)]);
          std::memcpy(out + c, &h, 2);
        }
        break;
      }
    }
  }
}

int64_t gemm_chunk_rows(int64_t rows, int64_t cols, size_t scratch_elems) {
  constexpr int64_t kAlign = 64;
  const int64_t fit = cols > 0 ? static_cast<int64_t>(scratch_elems / static_cast<size_t>(cols)) : 0;
  if (fit < 1)
    throw InternalError(fmt::format("gemm: a weight scratch of {} halves holds no row of {} columns", scratch_elems,
                                    cols));
  if (fit < kAlign || fit >= rows) return std::min(fit, rows);
  const int64_t max_chunk = fit / kAlign * kAlign;
  const int64_t n_chunks = (rows + max_chunk - 1) / max_chunk;
  const int64_t even = (rows + n_chunks - 1) / n_chunks;
  return std::min(max_chunk, (even + kAlign - 1) / kAlign * kAlign);
}

}  // namespace lathe::cuda
