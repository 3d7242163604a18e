// Internal to the CPU backend: the short vector loops of attention (dot products and scaled
// adds against float32 or half rows) and half conversion, per instruction set. The AVX2 set
// lives in vec_kernels_avx2.cpp (compiled with -mavx2 -mfma -mf16c) and is only used when
// matmul's kernel level is avx2, so LATHE_CPU_KERNELS=scalar lowers both together.
#pragma once

#include <cstdint>

namespace lathe::cpu::kernels {

struct VecKernels {
  float (*dot_f32)(const float* a, const float* b, int64_t n);
  float (*dot_f16)(const float* a, const uint16_t* b, int64_t n);
  void (*axpy_f32)(float alpha, const float* x, float* y, int64_t n);   // y += alpha * x
  void (*axpy_f16)(float alpha, const uint16_t* x, float* y, int64_t n);
  void (*f32_to_f16)(const float* x, uint16_t* out, int64_t n);
  void (*f16_to_f32)(const uint16_t* x, float* out, int64_t n);
};

const VecKernels& scalar_vec_kernels() noexcept;
const VecKernels* avx2_vec_kernels() noexcept;  // nullptr when not built for x86
// The set matching active_kernels().level.
const VecKernels& active_vec_kernels() noexcept;

}  // namespace lathe::cpu::kernels
