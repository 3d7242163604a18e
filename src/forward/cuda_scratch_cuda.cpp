#include "forward/cuda_scratch.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/kernels.hpp"

namespace lathe {

// n tokens get n * splits <= max(n, 2 * multiprocessors / n_head_kv) token-splits (see
// decode_splits in attention_decode.cu).
size_t CudaScratch::split_slots(uint32_t max_batch, int multiprocessors, uint32_t n_head_kv) {
  return std::max<size_t>(max_batch, 2 * static_cast<size_t>(multiprocessors) / n_head_kv + 1);
}

int64_t CudaScratch::widest_ff(const HParams& hp) {
  return std::max({int64_t{hp.n_ff}, int64_t{hp.n_ff_exp}, int64_t{hp.n_ff_shexp}});
}

CudaScratch::CudaScratch(const HParams& hp, const CudaWeightsShape& dw, uint32_t max_batch_, int multiprocessors,
                         bool matvec_only)
    : max_batch(max_batch_) {
  const size_t B = max_batch;
  const int64_t n_embd = hp.n_embd, n_ff = widest_ff(hp), head_dim = hp.head_dim;
  const int64_t q_w = int64_t{hp.n_head} * head_dim, kv_w = int64_t{hp.n_head_kv} * head_dim;
  const int64_t widest_input = std::max({n_embd, q_w, n_ff});
  struct Part {
    size_t bytes;
    void** where;
  };
  // Above kMatvecMaxTokens tokens the products go through cuBLAS, which wants gate and up apart
  // from SwiGLU and 16-bit inputs.
  const bool use_gemm = B > cuda::kMatvecMaxTokens && !matvec_only;
  // LATHE_CUDA_BF16_GEMM=f16: BF16 weights meet half activations in prefill (see GemmScratch).
  const char* bf16_mode = std::getenv("LATHE_CUDA_BF16_GEMM");
  gemm.bf16_as_f16 = bf16_mode != nullptr && std::string(bf16_mode) == "f16";
  const size_t w16_elems =
      use_gemm && (dw.any_quantized || (dw.any_bf16 && gemm.bf16_as_f16))
          ? static_cast<size_t>(std::min<int64_t>(dw.max_rows, std::max<int64_t>(1, (32ll << 20) / dw.max_cols))) *
                dw.max_cols
          : 0;
  const size_t splits = split_slots(max_batch, multiprocessors, hp.n_head_kv);
  std::vector<Part> parts = {
      {B * n_embd * 4, reinterpret_cast<void**>(&x)},
      {B * n_embd * 4, reinterpret_cast<void**>(&xn)},
      {B * (q_w + 2 * kv_w) * 4, reinterpret_cast<void**>(&qkv)},
      {B * q_w * 4, reinterpret_cast<void**>(&attn)},
      {use_gemm ? B * 2 * n_ff * 4 : 0, reinterpret_cast<void**>(&gu)},
      {B * std::max(n_ff, n_embd) * 4, reinterpret_cast<void**>(&h)},
      {B * widest_input, reinterpret_cast<void**>(&q8)},
      {B * (widest_input / 32) * 2 * 4, reinterpret_cast<void**>(&ds)},
      {cuda::split_scratch_floats(static_cast<int>(splits), hp.n_head, static_cast<int>(head_dim), 1) * 4,
       reinterpret_cast<void**>(&split_scratch)},
      {use_gemm ? B * dw.max_cols * 2 : 0, &gemm.act16},
      {w16_elems * 2, &gemm.w16},
  };
  const auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  size_t total = 0;
  for (const auto& p : parts) total += aligned(p.bytes);
  act = cuda::DeviceBuffer(total, fmt::format("activations for {} tokens per step", B));
  auto* base = act.as<uint8_t>();
  size_t offset = 0;
  for (const auto& p : parts) {
    *p.where = p.bytes ? base + offset : nullptr;
    offset += aligned(p.bytes);
  }
  gemm.act16_elems = use_gemm ? B * dw.max_cols : 0;
  gemm.w16_elems = w16_elems;
  io = cuda::DeviceBuffer(3 * B * sizeof(int32_t), "token ids and positions");
  io_host = cuda::PinnedBuffer(3 * B * sizeof(int32_t), "token ids and positions");
  hook_rows = cuda::PinnedBuffer(B * n_embd * sizeof(float), "hook rows");
  argmax_dev = cuda::DeviceBuffer(B * sizeof(int32_t), "greedy token ids");
  argmax_host = cuda::PinnedBuffer(B * sizeof(int32_t), "greedy token ids");
  if (hp.is_moe()) {
    moe_cols = int64_t{hp.n_expert} + (hp.n_ff_shexp > 0 ? 1 : 0);
    const size_t logits_bytes = B * moe_cols * sizeof(float);
    const size_t routes_bytes = 2 * (size_t{hp.n_expert_used} + 1) * B * 4;
    moe_logits = cuda::DeviceBuffer(logits_bytes, "router logits");
    moe_logits_host = cuda::PinnedBuffer(logits_bytes, "router logits");
    moe_rows = cuda::DeviceBuffer(B * n_embd * sizeof(float), "rows routed to an expert");
    moe_out = cuda::DeviceBuffer(B * n_embd * sizeof(float), "an expert's output rows");
    moe_routes = cuda::DeviceBuffer(routes_bytes, "expert routes");
    moe_routes_host = cuda::PinnedBuffer(routes_bytes, "expert routes");
  }
}

bool CudaLogits::grow(uint32_t rows) {
  if (rows <= capacity) return false;
  dev = cuda::DeviceBuffer();  // the old buffers go first: both may not fit at once
  host = cuda::PinnedBuffer();
  dev = cuda::DeviceBuffer(size_t{rows} * n_vocab * 4, fmt::format("logits for {} tokens", rows));
  host = cuda::PinnedBuffer(size_t{rows} * n_vocab * 4, fmt::format("logits for {} tokens", rows));
  capacity = rows;
  return true;
}

cuda::DeviceBuffer make_device_rope_table(const RopeTable& rope, uint32_t n_ctx) {
  const size_t half = static_cast<size_t>(rope.rope_dim / 2);
  const size_t floats = size_t{n_ctx} * half * 2;
  if (half == 0 || floats > (64u << 20)) return {};
  std::vector<float> table(floats);
  for (uint32_t pos = 0; pos < n_ctx; ++pos) {
    const double position = static_cast<double>(pos) * rope.position_scale;
    for (size_t i = 0; i < half; ++i) {
      const double theta = position * rope.inv_freq[i];
      table[(pos * half + i) * 2] = static_cast<float>(std::cos(theta));
      table[(pos * half + i) * 2 + 1] = static_cast<float>(std::sin(theta));
    }
  }
  cuda::DeviceBuffer buffer(floats * sizeof(float), "the RoPE table");
  cuda::check(cudaMemcpy(buffer.data(), table.data(), floats * sizeof(float), cudaMemcpyHostToDevice),
              "copying the RoPE table");
  return buffer;
}

}  // namespace lathe
