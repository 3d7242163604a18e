#include "backend/cuda/gemm.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cuda/cublas_api.hpp"
#include "backend/cuda/device_layout.hpp"
#include "backend/cuda/kernels.hpp"
#include "lathe/error.hpp"

namespace lathe::cuda {
namespace {

void check_blas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  if (status == CUBLAS_STATUS_ALLOC_FAILED)
    throw OutOfMemoryError(fmt::format("cuBLAS ran out of device memory in {}; use a smaller batch (-b) or context",
                                       what));
  throw DeviceError(fmt::format("cuBLAS {} failed: {} ({})", what, cublas().status_name(status),
                                cublas().status_string(status)));
}

}  // namespace

Dtype16 gemm_activation_type(const DeviceMatrix& w, const GemmScratch& scratch) {
  if (w.type == DType::F32) return Dtype16::None;
  return w.type == DType::BF16 && !scratch.bf16_as_f16 ? Dtype16::BF16 : Dtype16::F16;
}

Blas::Blas(cudaStream_t stream) {
  check_blas(cublas().create(&handle_), "cublasCreate");
  check_blas(cublas().set_stream(handle_, stream), "cublasSetStream");
}

Blas::~Blas() {
  if (handle_ != nullptr) cublas().destroy(handle_);
}

GemmInput gemm_input(const DeviceMatrix& w, const float* x, int64_t ldx, int n_tokens, const GemmScratch& scratch,
                     cudaStream_t stream, const GemmInput* reuse) {
  GemmInput in{x, ldx, n_tokens, w.cols, gemm_activation_type(w, scratch)};
  if (reuse != nullptr && reuse->x == x && reuse->ldx == ldx && reuse->n_tokens == n_tokens &&
      reuse->cols == in.cols && reuse->type16 == in.type16)
    return in;
  if (in.type16 == Dtype16::None || n_tokens <= 0) return in;
  if (scratch.act16_elems < static_cast<size_t>(n_tokens) * static_cast<size_t>(in.cols))
    throw InternalError("gemm: activation scratch too small");
  const int k = static_cast<int>(in.cols);
  if (in.type16 == Dtype16::BF16) f32_to_bf16(x, ldx, n_tokens, k, scratch.act16, stream);
  else f32_to_f16(x, ldx, n_tokens, k, scratch.act16, stream);
  return in;
}

void gemm(const Blas& blas, const DeviceMatrix& w, const GemmInput& in, float* y, int64_t ldy, float beta,
          const GemmScratch& scratch, cudaStream_t stream) {
  const int n_tokens = in.n_tokens;
  if (n_tokens <= 0) return;
  if (in.cols != w.cols || in.type16 != gemm_activation_type(w, scratch) || (in.type16 == Dtype16::None && !in.x))
    throw InternalError("gemm: the input was prepared for another kind of matrix");
  const float alpha = 1.0f;
  const int k = static_cast<int>(w.cols);
  if (in.type16 == Dtype16::None) {
    // Row-major W [rows][cols] is column-major cols x rows: C (rows x n) = W^T-view * X.
    check_blas(cublas().sgemm(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.rows), n_tokens, k, &alpha,
                           reinterpret_cast<const float*>(w.qs), k, in.x, static_cast<int>(in.ldx), &beta, y,
                           static_cast<int>(ldy)),
               "SGEMM");
    return;
  }
  const cudaDataType_t type16 = in.type16 == Dtype16::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  auto product = [&](const void* a, int64_t rows, float* c) {
    check_blas(cublas().gemm_ex(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), n_tokens, k, &alpha, a,
                            type16, k, scratch.act16, type16, k, &beta, c, CUDA_R_32F, static_cast<int>(ldy),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "GemmEx");
  };
  if (w.type == DType::F16 || in.type16 == Dtype16::BF16) {  // straight from the weights
    product(w.qs, w.rows, y);
    return;
  }
  // Block-quantized (or BF16 as half): decode a chunk of rows to half, multiply, next chunk.
  const int64_t chunk = gemm_chunk_rows(w.rows, w.cols, scratch.w16_elems);  // aligned for cuBLAS
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk) {
    const int64_t n = std::min(chunk, w.rows - r0);
    dequantize_rows_f16(w, r0, n, scratch.w16, stream);
    product(scratch.w16, n, y + r0);
  }
}

void gemm(const Blas& blas, const DeviceMatrix& w, const float* x, int64_t ldx, int n_tokens, float* y, int64_t ldy,
          float beta, const GemmScratch& scratch, cudaStream_t stream) {
  gemm(blas, w, gemm_input(w, x, ldx, n_tokens, scratch, stream), y, ldy, beta, scratch, stream);
}

}  // namespace lathe::cuda
