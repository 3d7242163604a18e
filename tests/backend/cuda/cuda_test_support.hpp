// Helpers for the CUDA tests: skip without a device, device buffers from host vectors, matrices
// uploaded in the device layout, random inputs, and the normalized mean squared error that the
// bounds are stated in (as llama.cpp's test-backend-ops).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cuda/device.hpp"
#include "backend/cuda/device_layout.hpp"
#include "backend/cuda/matrix.hpp"
#include "backend/cuda/memory.hpp"
#include "core/dtype.hpp"
#include "core/fp16.hpp"
#include "common/require_gpu.hpp"
#include "core/quant.hpp"

namespace lathe::test {

inline double nmse(const std::vector<float>& out, const std::vector<double>& ref) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    err += (out[i] - ref[i]) * (out[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return err / std::max(norm, 1e-300);
}

inline std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

template <typename T>
cuda::DeviceBuffer to_device(const std::vector<T>& host) {
  cuda::DeviceBuffer b(std::max<size_t>(1, host.size() * sizeof(T)), "test data");
  if (!host.empty()) cuda::check(cudaMemcpy(b.data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return b;
}

template <typename T>
std::vector<T> to_host(const cuda::DeviceBuffer& b, size_t n) {
  cuda::check(cudaDeviceSynchronize(), "kernel");
  std::vector<T> host(n);
  cuda::check(cudaMemcpy(host.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost), "download");
  return host;
}

// Random rows of `type` (stored layout): quantized from random floats where lathe can quantize
// to the type, else random bytes with finite, small 16-bit scales.
inline std::vector<uint8_t> random_matrix(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
  const size_t row_bytes = *dtype_bytes(type, static_cast<uint64_t>(cols));
  std::vector<uint8_t> bytes(row_bytes * rows);
  if (can_quantize(type)) {
    for (int64_t r = 0; r < rows; ++r) {
      const auto v = random_floats(static_cast<size_t>(cols), rng, 0.5f);
      quantize_row(type, v.data(), bytes.data() + r * row_bytes, cols);
    }
    return bytes;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.001f, 0.02f);
  const auto& info = dtype_info(type);
  auto set_half = [&](uint8_t* p) {
    const uint16_t h = f32_to_f16(scale(rng));
    std::memcpy(p, &h, 2);
  };
  for (size_t b = 0; b < bytes.size() / info.block_bytes; ++b) {
    uint8_t* block = bytes.data() + b * info.block_bytes;
    switch (type) {
      case DType::Q5_0: set_half(block); break;
      case DType::Q5_1: set_half(block); set_half(block + 2); break;
      case DType::Q2_K: set_half(block + 80); set_half(block + 82); break;
      case DType::Q3_K: set_half(block + 108); break;
      case DType::Q4_K: case DType::Q5_K: set_half(block); set_half(block + 2); break;
      case DType::Q6_K: set_half(block + 208); break;
      default: break;
    }
  }
  return bytes;
}

// A matrix in the device layout with the buffers that hold it.
struct UploadedMatrix {
  cuda::DeviceBuffer qs, scales;
  cuda::DeviceMatrix view;
};

inline UploadedMatrix upload_matrix(DType stored, const std::vector<uint8_t>& bytes, int64_t rows, int64_t cols) {
  const DType device = cuda::device_type(stored);
  const size_t src_row = *dtype_bytes(stored, static_cast<uint64_t>(cols));
  const size_t qs_row = cuda::qs_row_bytes(device, cols), sc_row = cuda::scales_row_bytes(device, cols);
  std::vector<uint8_t> qs(qs_row * rows), sc(sc_row * rows);
  cuda::repack_rows(stored, bytes.data(), src_row, rows, cols, qs.data(), sc_row ? sc.data() : nullptr);
  UploadedMatrix m;
  m.qs = to_device(qs);
  m.scales = to_device(sc);
  m.view.type = device;
  m.view.qs = m.qs.as<uint8_t>();
  m.view.scales = sc_row ? m.scales.as<uint8_t>() : nullptr;
  m.view.rows = rows;
  m.view.cols = cols;
  m.view.qs_row = qs_row;
  m.view.sc_row = sc_row;
  return m;
}

// The matrix decoded by the CPU reference (core/quant.cpp), in double.
inline std::vector<double> reference_matrix(DType stored, const std::vector<uint8_t>& bytes, int64_t rows, int64_t cols) {
  const size_t src_row = *dtype_bytes(stored, static_cast<uint64_t>(cols));
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<double> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(stored, bytes.data() + r * src_row, row.data(), cols);
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = row[c];
  }
  return out;
}

}  // namespace lathe::test
