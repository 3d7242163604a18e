#include "weights/cuda_weights.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>

#include "backend/cuda/device_layout.hpp"
#include "backend/cuda/switches.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kStagingBytes = 64u << 20;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Where one matrix or vector goes in the arena (offsets, filled before the allocation).
struct MatrixPlan {
  DType device_type = DType::F32;
  size_t qs_row = 0, sc_row = 0, qs_offset = 0, sc_offset = 0;
};

void check_shape(const MatrixView& m, DType device) {
  const int64_t step = (device == DType::F32 || device == DType::F16 || device == DType::BF16) ? 8
                       : (device == DType::Q4_K || device == DType::Q6_K)                    ? 256
                                                                                               : 32;
  if (m.cols % step != 0)
    throw UnsupportedError(fmt::format("tensor {}: {} columns of {} are not a multiple of {}, which the CUDA kernels "
                                       "need; use --device cpu",
                                       m.name, m.cols, dtype_name(m.type), step));
}

// Repacks the rows of `host` into the device layout a chunk at a time through `staging` and copies
// them to qs_dst / sc_dst (qs_row / sc_row bytes per row; no scale array when sc_row is 0).
void copy_rows(const MatrixView& host, uint8_t* qs_dst, uint8_t* sc_dst, size_t qs_row, size_t sc_row,
               uint8_t* staging, size_t staging_bytes, int device) {
  const int64_t chunk = std::max<int64_t>(1, static_cast<int64_t>(staging_bytes / (qs_row + sc_row)));
  const std::string what = fmt::format("copying tensor {} to cuda:{}", host.name, device);
  for (int64_t r0 = 0; r0 < host.rows; r0 += chunk) {
    const int64_t n = std::min(chunk, host.rows - r0);
    uint8_t* qs = staging;
    uint8_t* sc = staging + n * qs_row;
    cuda::repack_rows(host.type, host.data + r0 * host.row_bytes, host.row_bytes, n, host.cols, qs,
                      sc_row ? sc : nullptr);
    cuda::check(cudaMemcpy(qs_dst + r0 * qs_row, qs, n * qs_row, cudaMemcpyHostToDevice), what);
    if (sc_row) cuda::check(cudaMemcpy(sc_dst + r0 * sc_row, sc, n * sc_row, cudaMemcpyHostToDevice), what);
  }
}

}  // namespace

void CudaWeights::refresh(const MatrixView& host, const cuda::DeviceMatrix& dm) const {
  cuda::use_device(device);
  // Pageable staging: a refresh copies one edited matrix, and pinning memory per call costs more
  // than it saves.
  std::vector<uint8_t> staging(std::min(kStagingBytes, static_cast<size_t>(host.rows) * (dm.qs_row + dm.sc_row)));
  copy_rows(host, const_cast<uint8_t*>(dm.qs), const_cast<uint8_t*>(dm.scales), dm.qs_row, dm.sc_row,
            staging.data(), staging.size(), device);
}

std::shared_ptr<CudaWeights> CudaWeights::get(const ModelWeights& w, int device) {
  // The device path of mixtures of experts (forward/cuda_forward_cuda.cpp: moe_block) is opt-in
  // until it has run on a GPU: it was written and compiled on a machine without one.
  if (!cuda::turned_on_by_env("LATHE_CUDA_MOE"))
    refuse_moe(w.hp, w.source, "the CUDA backend (LATHE_CUDA_MOE=1 turns on its untested device path)");
  std::lock_guard lock(w.device_copies->mutex);
  auto& slot = w.device_copies->by_device[device];
  if (slot) return std::static_pointer_cast<CudaWeights>(slot);
  cuda::use_device(device);

  auto out = std::make_shared<CudaWeights>();
  out->device = device;
  size_t total = 0;
  // Matrices, once per host buffer (tied embeddings share one).
  std::map<const uint8_t*, MatrixPlan> plans;
  std::vector<const MatrixView*> order;
  auto plan_matrix = [&](const MatrixView& m) {
    if (m.data == nullptr || plans.count(m.data)) return;
    MatrixPlan p;
    p.device_type = cuda::device_type(m.type, std::string(m.name).c_str());
    check_shape(m, p.device_type);
    p.qs_row = cuda::qs_row_bytes(p.device_type, m.cols);
    p.sc_row = cuda::scales_row_bytes(p.device_type, m.cols);
    p.qs_offset = total;
    total += align_up(p.qs_row * m.rows);
    p.sc_offset = total;
    total += align_up(p.sc_row * m.rows);
    if (!cuda::is_native_device_type(m.type)) ++out->converted_matrices;
    if (dtype_info(p.device_type).quantized) out->any_quantized = true;
    if (p.device_type == DType::BF16) out->any_bf16 = true;
    out->max_cols = std::max(out->max_cols, m.cols);
    out->max_rows = std::max(out->max_rows, m.rows);
    plans.emplace(m.data, p);
    order.push_back(&m);
  };
  // Vectors (float32 on both sides).
  std::vector<std::pair<const std::vector<float>*, size_t>> vectors;
  std::map<const std::vector<float>*, size_t> vector_offset;
  auto plan_vector = [&](const std::vector<float>& v) {
    if (v.empty() || vector_offset.count(&v)) return;
    vector_offset[&v] = total;
    vectors.emplace_back(&v, total);
    total += align_up(v.size() * sizeof(float));
  };
  // qwen2moe's shared-expert gate vectors, seen as 1-row float32 matrices (kept for the upload).
  std::deque<MatrixView> gate_vectors;
  std::deque<std::string> gate_vector_names;
  std::vector<const MatrixView*> layer_gate_vector(w.layers.size(), nullptr);
  plan_matrix(w.token_embd);
  plan_matrix(w.output);
  plan_vector(w.output_norm);
  plan_vector(w.rope.inv_freq);
  for (size_t il = 0; il < w.layers.size(); ++il) {
    const LayerWeights& lw = w.layers[il];
    lw.for_each_matrix(plan_matrix);
    for (const auto* v : {&lw.attn_norm, &lw.ffn_norm, &lw.bq, &lw.bk, &lw.bv, &lw.q_norm, &lw.k_norm}) plan_vector(*v);
    if (!lw.moe()) continue;
    plan_matrix(lw.router);
    for (const auto* experts : {&lw.exp_gate, &lw.exp_up, &lw.exp_down})
      for (const MatrixView& m : *experts) plan_matrix(m);
    for (const MatrixView* m : {&lw.shexp_gate, &lw.shexp_up, &lw.shexp_down}) plan_matrix(*m);
    if (!lw.shexp_gate_inp.empty()) {
      const auto cols = static_cast<int64_t>(lw.shexp_gate_inp.size());
      gate_vector_names.push_back(fmt::format("blk.{}.ffn_gate_inp_shexp.weight", il));
      gate_vectors.push_back(MatrixView{DType::F32, reinterpret_cast<const uint8_t*>(lw.shexp_gate_inp.data()), 1,
                                        cols, static_cast<size_t>(cols) * sizeof(float), gate_vector_names.back()});
      layer_gate_vector[il] = &gate_vectors.back();
      plan_matrix(gate_vectors.back());
    }
  }

  out->arena_ = cuda::DeviceBuffer(total, fmt::format("the weights of {} ({} tensors)", w.source, plans.size()));
  out->bytes = total;
  auto* base = out->arena_.as<uint8_t>();

  // Upload through a pinned staging buffer, a chunk of rows at a time.
  cuda::PinnedBuffer staging(kStagingBytes, "the weight upload's staging buffer");
  for (const auto* m : order) {
    const MatrixPlan& p = plans.at(m->data);
    copy_rows(*m, base + p.qs_offset, base + p.sc_offset, p.qs_row, p.sc_row, staging.as<uint8_t>(), kStagingBytes,
              device);
  }
  for (const auto& [v, offset] : vectors)
    cuda::check(cudaMemcpy(base + offset, v->data(), v->size() * sizeof(float), cudaMemcpyHostToDevice),
                fmt::format("copying the vectors of {} to cuda:{}", w.source, device));

  auto matrix = [&](const MatrixView& m) {
    cuda::DeviceMatrix d;
    if (m.data == nullptr) return d;
    const MatrixPlan& p = plans.at(m.data);
    d.type = p.device_type;
    d.qs = base + p.qs_offset;
    d.scales = p.sc_row ? base + p.sc_offset : nullptr;
    d.rows = m.rows;
    d.cols = m.cols;
    d.qs_row = p.qs_row;
    d.sc_row = p.sc_row;
    return d;
  };
  auto vec = [&](const std::vector<float>& v) -> const float* {
    return v.empty() ? nullptr : reinterpret_cast<const float*>(base + vector_offset.at(&v));
  };
  out->token_embd = matrix(w.token_embd);
  out->output = matrix(w.output);
  out->output_norm = vec(w.output_norm);
  out->inv_freq = vec(w.rope.inv_freq);
  for (size_t il = 0; il < w.layers.size(); ++il) {
    const LayerWeights& lw = w.layers[il];
    CudaLayerWeights d;
    d.wq = matrix(lw.wq);
    d.wk = matrix(lw.wk);
    d.wv = matrix(lw.wv);
    d.wqkv = matrix(lw.wqkv);
    d.wo = matrix(lw.wo);
    d.w_gate = matrix(lw.w_gate);
    d.w_up = matrix(lw.w_up);
    d.w_gate_up = matrix(lw.w_gate_up);
    d.w_down = matrix(lw.w_down);
    d.attn_norm = vec(lw.attn_norm);
    d.ffn_norm = vec(lw.ffn_norm);
    d.bq = vec(lw.bq);
    d.bk = vec(lw.bk);
    d.bv = vec(lw.bv);
    d.q_norm = vec(lw.q_norm);
    d.k_norm = vec(lw.k_norm);
    if (lw.moe()) {
      d.router = matrix(lw.router);
      for (const MatrixView& m : lw.exp_gate) d.exp_gate.push_back(matrix(m));
      for (const MatrixView& m : lw.exp_up) d.exp_up.push_back(matrix(m));
      for (const MatrixView& m : lw.exp_down) d.exp_down.push_back(matrix(m));
      d.shexp_gate = matrix(lw.shexp_gate);
      d.shexp_up = matrix(lw.shexp_up);
      d.shexp_down = matrix(lw.shexp_down);
      if (layer_gate_vector[il] != nullptr) d.shexp_gate_inp = matrix(*layer_gate_vector[il]);
    }
    out->layers.push_back(std::move(d));
  }
  slot = out;
  return out;
}

}  // namespace lathe
