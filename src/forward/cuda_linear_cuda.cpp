#include "forward/cuda_linear.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

#include "backend/cuda/switches.hpp"
#include "lathe/error.hpp"

namespace lathe {

using cuda::Dtype16;
using cuda::Epilogue;
using cuda::MatvecTarget;

CudaLinear::CudaLinear(CudaScratch& scratch, const cuda::Blas& blas, cudaStream_t stream, float rms_eps,
                       int64_t n_embd, bool batch_invariant)
    : s_(scratch),
      blas_(blas),
      stream_(stream),
      eps_(rms_eps),
      n_embd_(n_embd),
      write16_direct_(!cuda::turned_off_by_env("LATHE_CUDA_WRITE16")),
      batch_invariant_(batch_invariant) {}

void* CudaLinear::act16_for(int n, int64_t cols) const {
  if (s_.gemm.act16_elems < static_cast<size_t>(n) * static_cast<size_t>(cols))
    throw InternalError(fmt::format("CudaForward: {} x {} activations exceed the 16-bit input scratch ({} values)", n,
                                    cols, s_.gemm.act16_elems));
  return s_.gemm.act16;
}

Dtype16 CudaLinear::written_type16(const cuda::DeviceMatrix& w, int n) const {
  if (n <= cuda::kMatvecMaxTokens || !write16_direct_ || batch_invariant_) return Dtype16::None;
  return cuda::gemm_activation_type(w, s_.gemm);
}

Dtype16 CudaLinear::shared_type16(std::initializer_list<MatvecTarget> targets) const {
  const Dtype16 type = cuda::gemm_activation_type(targets.begin()->a, s_.gemm);
  for (const auto& t : targets)
    if (cuda::gemm_activation_type(t.a, s_.gemm) != type ||
        (t.b.qs != nullptr && cuda::gemm_activation_type(t.b, s_.gemm) != type))
      return Dtype16::None;
  return type;
}

void CudaLinear::gemm(const cuda::DeviceMatrix& w, const cuda::GemmInput& in, float* y, int64_t ldy, bool add) const {
  cuda::gemm(blas_, w, in, y, ldy, add ? 1.0f : 0.0f, s_.gemm, stream_);
}

// Up to 8 tokens: the mat-vec kernels, one launch for targets of one type (Q, K and V).
void CudaLinear::matvec(std::span<const MatvecTarget> targets, const float* xin, int64_t ldx, int n, Epilogue ep,
                        const float* norm, bool q8_ready) {
  const int64_t cols = targets.begin()->a.cols;
  cuda::MatvecInput mv;
  mv.x = xin;
  mv.ldx = ldx;
  mv.norm = norm;
  mv.eps = eps_;
  bool same_type = true, q8_needed = false;
  for (const auto& t : targets) {
    same_type = same_type && t.a.type == targets.begin()->a.type;
    q8_needed = q8_needed || cuda::matvec_reads_q8(t.a.type);
  }
  if (q8_needed) {
    if (!q8_ready) cuda::quantize_q8(xin, ldx, n, static_cast<int>(cols), s_.q8, s_.ds, stream_, norm, eps_);
    mv.q8 = s_.q8;
    mv.ds = s_.ds;
    mv.ld_q8 = cols;
    mv.ld_ds = cols / 16;
  }
  if (same_type) {
    cuda::matvec(targets.data(), static_cast<int>(targets.size()), mv, n, ep, stream_);
  } else {
    for (const auto& t : targets) cuda::matvec(&t, 1, mv, n, ep, stream_);
  }
}

// Each group of up to 8 rows gets its own launches, reading its rows of x and writing its rows of
// each y; the 8-bit rounding (quantize_q8, with the RMSNorm fused) goes row by row, so a row's
// result is the same in any group. The q8 scratch holds the current group's rows only.
void CudaLinear::matvec_groups(std::initializer_list<MatvecTarget> targets, const float* xin, int64_t ldx, int n,
                               Epilogue ep, const float* norm) {
  constexpr int kGroup = cuda::kMatvecMaxTokens;
  MatvecTarget shifted[3];
  if (targets.size() > std::size(shifted)) throw InternalError("CudaLinear: more than 3 products of one input");
  for (int row0 = 0; row0 < n; row0 += kGroup) {
    size_t i = 0;
    for (const auto& t : targets) {
      shifted[i] = t;
      shifted[i].y = t.y + int64_t{row0} * t.ldy;
      ++i;
    }
    matvec(std::span<const MatvecTarget>(shifted, i), xin + int64_t{row0} * ldx, ldx, std::min(kGroup, n - row0), ep,
           norm, false);
  }
}

cuda::GemmInput CudaLinear::operator()(std::initializer_list<MatvecTarget> targets, const float* xin, int64_t ldx,
                                       int n, Epilogue ep, const float* norm, bool q8_ready, Dtype16 swiglu_out16) {
  if (n <= cuda::kMatvecMaxTokens && !batch_invariant_) {
    matvec(targets, xin, ldx, n, ep, norm, q8_ready);
    return {};
  }
  if (batch_invariant_) {
    matvec_groups(targets, xin, ldx, n, ep, norm);
    return {};
  }
  const int64_t cols = targets.begin()->a.cols;
  cuda::GemmInput in;  // the products' input, once prepared
  if (norm != nullptr) {
    const Dtype16 type16 = write16_direct_ ? shared_type16(targets) : Dtype16::None;
    if (type16 != Dtype16::None) {
      cuda::rms_norm_16(xin, ldx, norm, n, static_cast<int>(cols), eps_, act16_for(n, cols), type16, stream_);
      in = cuda::gemm_input_written(n, cols, type16);
    } else {
      cuda::rms_norm(xin, ldx, norm, n, static_cast<int>(cols), eps_, s_.xn, n_embd_, stream_);
      xin = s_.xn;
      ldx = n_embd_;
    }
  }
  // The matrices reading xin share its 16-bit conversion when they want the same one (written
  // by the RMSNorm above: the same for all of them).
  const auto input_for = [&](const cuda::DeviceMatrix& w) {
    if (in.n_tokens > 0 && in.x == nullptr) return in;
    in = cuda::gemm_input(w, xin, ldx, n, s_.gemm, stream_, in.x != nullptr ? &in : nullptr);
    return in;
  };
  for (const auto& t : targets) {
    if (ep == Epilogue::SwiGLU) {
      const int64_t ff = t.a.rows;  // the dense FFN's width, or an expert's
      cuda::gemm(blas_, t.a, input_for(t.a), s_.gu, 2 * ff, 0.0f, s_.gemm, stream_);
      cuda::gemm(blas_, t.b, input_for(t.b), s_.gu + ff, 2 * ff, 0.0f, s_.gemm, stream_);
      if (swiglu_out16 != Dtype16::None && targets.size() == 1) {
        // The products above have read act16 (stream order): h may overwrite it.
        cuda::swiglu_16(s_.gu, n, static_cast<int>(ff), act16_for(n, ff), swiglu_out16, stream_);
        return cuda::gemm_input_written(n, ff, swiglu_out16);
      }
      cuda::swiglu(s_.gu, n, static_cast<int>(ff), t.y, stream_);
    } else {
      cuda::gemm(blas_, t.a, input_for(t.a), t.y, t.ldy, ep == Epilogue::Add ? 1.0f : 0.0f, s_.gemm, stream_);
    }
  }
  return {};
}

}  // namespace lathe
