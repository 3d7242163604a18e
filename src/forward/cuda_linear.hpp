// The linear layers of the CUDA forward pass (CUDA builds only): y = W x for n tokens, by the
// mat-vec kernels up to kMatvecMaxTokens tokens (decode) and by cuBLAS above (prefill, large
// batches), with the RMSNorm before a product and SwiGLU after the gate/up product fused in where
// the path allows. Which 16-bit type a product's input takes, and who writes it, is decided here.
#pragma once

#include <cuda_runtime.h>

#include <initializer_list>
#include <span>

#include "backend/cuda/gemm.hpp"
#include "backend/cuda/kernels.hpp"
#include "forward/cuda_scratch.hpp"

namespace lathe {

class CudaLinear {
 public:
  // `batch_invariant`: every product runs as mat-vecs of up to 8 tokens, however many tokens
  // the pass has (ComputeOptions::batch_invariant), so that a token's result never depends on
  // the batch.
  CudaLinear(CudaScratch& scratch, const cuda::Blas& blas, cudaStream_t stream, float rms_eps, int64_t n_embd,
             bool batch_invariant = false);

  // y (per target) = W x for n tokens. With `norm`, x is first RMS-normalized with those
  // weights: fused into the mat-vec and the 8-bit rounding for up to 8 tokens (two launches fewer
  // per layer in decode); above, the RMSNorm writes the 16-bit input of the products itself (or
  // float32 rows into scratch.xn, then converted). `q8_ready`: the kernel that wrote xin also
  // wrote its 8-bit rows into scratch.q8/ds (decode attention). `swiglu_out16` (SwiGLU above 8
  // tokens): write h in that 16-bit type into the products' input scratch instead of t.y, and
  // return it as the input of the next product (the down projection).
  cuda::GemmInput operator()(std::initializer_list<cuda::MatvecTarget> targets, const float* xin, int64_t ldx, int n,
                             cuda::Epilogue ep, const float* norm = nullptr, bool q8_ready = false,
                             cuda::Dtype16 swiglu_out16 = cuda::Dtype16::None);

  // y = W in (+ y with `add`) through cuBLAS, for an input a kernel wrote itself.
  void gemm(const cuda::DeviceMatrix& w, const cuda::GemmInput& in, float* y, int64_t ldy, bool add) const;

  // The 16-bit type a kernel writes w's cuBLAS input in itself for n tokens, or None where w's
  // product reads float32 rows: mat-vecs (up to 8 tokens), float32 weights, LATHE_CUDA_WRITE16=0.
  cuda::Dtype16 written_type16(const cuda::DeviceMatrix& w, int n) const;
  // The products' 16-bit input scratch, for a kernel that writes n rows of `cols` there itself.
  void* act16_for(int n, int64_t cols) const;

 private:
  // The 16-bit type every target's cuBLAS product wants its activations in, or None when they
  // differ or one wants float32.
  cuda::Dtype16 shared_type16(std::initializer_list<cuda::MatvecTarget> targets) const;
  void matvec(std::span<const cuda::MatvecTarget> targets, const float* xin, int64_t ldx, int n, cuda::Epilogue ep,
              const float* norm, bool q8_ready);
  // Any number of tokens as mat-vecs of up to 8 tokens each (the batch-invariant path).
  void matvec_groups(std::initializer_list<cuda::MatvecTarget> targets, const float* xin, int64_t ldx, int n,
                     cuda::Epilogue ep, const float* norm);

  CudaScratch& s_;
  const cuda::Blas& blas_;
  cudaStream_t stream_;
  float eps_;
  int64_t n_embd_;
  // Prefill: the RMSNorms, SwiGLU and attention write the cuBLAS products' 16-bit inputs themselves
  // (LATHE_CUDA_WRITE16=0: float32 rows, converted by a separate kernel, to measure the gain).
  bool write16_direct_;
  bool batch_invariant_;
};

}  // namespace lathe
