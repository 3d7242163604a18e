// Portable versions of the attention vector loops and the level choice (see vec_kernels.hpp).
#include "backend/cpu/vec_kernels.hpp"

#include "backend/cpu/kernels.hpp"
#include "core/fp16.hpp"

namespace lathe::cpu::kernels {
namespace {

float dot_f32(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}
float dot_f16(const float* a, const uint16_t* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * lathe::f16_to_f32(b[i]);
  return sum;
}
void axpy_f32(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
void axpy_f16(float alpha, const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * lathe::f16_to_f32(x[i]);
}
void to_f16(const float* x, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = lathe::f32_to_f16(x[i]);
}
void from_f16(const uint16_t* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = lathe::f16_to_f32(x[i]);
}

constexpr VecKernels kScalar{dot_f32, dot_f16, axpy_f32, axpy_f16, to_f16, from_f16};

}  // namespace

const VecKernels& scalar_vec_kernels() noexcept { return kScalar; }

const VecKernels& active_vec_kernels() noexcept {
  if (active_kernels().level == "avx2")
    if (const auto* avx2 = avx2_vec_kernels()) return *avx2;
  return kScalar;
}

}  // namespace lathe::cpu::kernels
