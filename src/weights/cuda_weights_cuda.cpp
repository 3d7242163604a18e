#include "weights/cuda_weights.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>

#include "backend/cuda/device_layout.hpp"
#include "backend/cuda/switches.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

constexpr size_t kAlign = 256;
constexpr size_t kStagingBytes = 64u << 20;

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

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
// them to qs_dst / sc_dst on the device (qs_row / sc_row bytes per row; no scale array when sc_row
// is 0).
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

// Calls f(matrix) for every matrix of layer `lw` the device holds (qwen2moe's gate vector, a
// 1-row matrix made by the caller, comes separately).
template <typename F>
void for_each_layer_matrix(const LayerWeights& lw, F&& f) {
  lw.for_each_matrix(f);
  if (!lw.moe()) return;
  f(lw.router);
  for (const auto* experts : {&lw.exp_gate, &lw.exp_up, &lw.exp_down})
    for (const MatrixView& m : *experts) f(m);
  for (const MatrixView* m : {&lw.shexp_gate, &lw.shexp_up, &lw.shexp_down}) f(*m);
}

}  // namespace

void CudaWeights::plan(const ModelWeights& w) {
  weights_ = &w;
  regions_.assign(1 + w.layers.size(), Region{});
  layer_gate_vector_.assign(w.layers.size(), nullptr);
  std::map<const uint8_t*, const MatrixView*> by_bytes;  // tied embeddings: one device matrix
  auto plan_matrix = [&](const MatrixView& m, size_t region) {
    if (m.data == nullptr || plans_.count(&m)) return;
    if (const auto same = by_bytes.find(m.data); same != by_bytes.end()) {
      plans_.emplace(&m, plans_.at(same->second));
      return;
    }
    by_bytes.emplace(m.data, &m);
    MatrixPlan p;
    p.region = region;
    p.device_type = cuda::device_type(m.type, std::string(m.name).c_str());
    check_shape(m, p.device_type);
    p.qs_row = cuda::qs_row_bytes(p.device_type, m.cols);
    p.sc_row = cuda::scales_row_bytes(p.device_type, m.cols);
    size_t& total = regions_[region].bytes;
    p.qs_offset = total;
    total += align_up(p.qs_row * m.rows);
    p.sc_offset = total;
    total += align_up(p.sc_row * m.rows);
    if (!cuda::is_native_device_type(m.type)) ++shape.converted_matrices;
    if (dtype_info(p.device_type).quantized) shape.any_quantized = true;
    if (p.device_type == DType::BF16) shape.any_bf16 = true;
    shape.max_cols = std::max(shape.max_cols, m.cols);
    shape.max_rows = std::max(shape.max_rows, m.rows);
    plans_.emplace(&m, p);
  };
  auto plan_vector = [&](const std::vector<float>& v, size_t region) {
    if (v.empty() || vectors_.count(&v)) return;
    size_t& total = regions_[region].bytes;
    vectors_[&v] = {region, total};
    total += align_up(v.size() * sizeof(float));
  };
  plan_matrix(w.token_embd, 0);
  plan_matrix(w.output, 0);
  plan_vector(w.output_norm, 0);
  plan_vector(w.rope.inv_freq, 0);
  for (size_t il = 0; il < w.layers.size(); ++il) {
    const LayerWeights& lw = w.layers[il];
    const size_t region = 1 + il;
    for_each_layer_matrix(lw, [&](const MatrixView& m) { plan_matrix(m, region); });
    for (const auto* v : {&lw.attn_norm, &lw.ffn_norm, &lw.bq, &lw.bk, &lw.bv, &lw.q_norm, &lw.k_norm})
      plan_vector(*v, region);
    if (!lw.shexp_gate_inp.empty()) {
      const auto cols = static_cast<int64_t>(lw.shexp_gate_inp.size());
      gate_vector_names_.push_back(fmt::format("blk.{}.ffn_gate_inp_shexp.weight", il));
      gate_vectors_.push_back(MatrixView{DType::F32, reinterpret_cast<const uint8_t*>(lw.shexp_gate_inp.data()), 1,
                                         cols, static_cast<size_t>(cols) * sizeof(float), gate_vector_names_.back()});
      layer_gate_vector_[il] = &gate_vectors_.back();
      plan_matrix(gate_vectors_.back(), region);
    }
  }
}

CudaWeightsSizes CudaWeights::sizes(const ModelWeights& w) {
  CudaWeights planned;
  planned.plan(w);
  CudaWeightsSizes out;
  out.always_resident = planned.regions_[0].bytes;
  for (size_t r = 1; r < planned.regions_.size(); ++r) out.layers.push_back(planned.regions_[r].bytes);
  out.shape = planned.shape;
  return out;
}

std::shared_ptr<CudaWeights> CudaWeights::get(const ModelWeights& w, int device, const std::vector<bool>& streamed) {
  // The device path of mixtures of experts (forward/cuda_forward_cuda.cpp: moe_block) is opt-in
  // until its last fix (OLMoE's whole-projection Q/K norms, docs/MOE.md) has run on a GPU.
  if (!cuda::turned_on_by_env("LATHE_CUDA_MOE"))
    refuse_moe(w.hp, w.source,
               "the CUDA backend (LATHE_CUDA_MOE=1 turns on its device path, whose last fix has not yet run on a GPU)");
  if (!streamed.empty() && streamed.size() != w.layers.size())
    throw InternalError(fmt::format("CudaWeights::get: {} streaming marks for {} layers", streamed.size(),
                                    w.layers.size()));
  std::lock_guard lock(w.device_copies->mutex);
  auto& slot = w.device_copies->by_device[device];
  if (slot) return std::static_pointer_cast<CudaWeights>(slot);
  cuda::use_device(device);

  auto out = std::make_shared<CudaWeights>();
  out->device = device;
  out->plan(w);
  out->streamed_ = streamed;
  out->streamed_.resize(w.layers.size(), false);
  size_t device_total = 0, image_total = 0;
  for (size_t r = 0; r < out->regions_.size(); ++r) {
    Region& region = out->regions_[r];
    region.streamed = r > 0 && out->streamed_[r - 1];
    size_t& total = region.streamed ? image_total : device_total;
    region.offset = total;
    total += region.bytes;
  }
  out->n_streamed = static_cast<uint32_t>(std::count(out->streamed_.begin(), out->streamed_.end(), true));
  out->arena_ = cuda::DeviceBuffer(device_total, fmt::format("the weights of {} ({} tensors{})", w.source,
                                                             out->plans_.size(),
                                                             out->n_streamed ? fmt::format(", {} of {} layers streamed",
                                                                                           out->n_streamed,
                                                                                           w.layers.size())
                                                                             : ""));
  out->bytes = device_total;
  if (image_total > 0) {
    const auto start = std::chrono::steady_clock::now();
    out->images_ = cuda::PinnedBuffer(image_total, fmt::format("the host copies of the {} streamed layers of {}",
                                                               out->n_streamed, w.source));
    out->pinned_bytes = image_total;
    for (size_t il = 0; il < w.layers.size(); ++il) {
      if (!out->streamed_[il]) continue;
      for_each_layer_matrix(w.layers[il], [&](const MatrixView& m) {
        if (m.data != nullptr) out->refresh(static_cast<uint32_t>(il), m);
      });
      if (out->layer_gate_vector_[il] != nullptr) out->refresh(static_cast<uint32_t>(il), *out->layer_gate_vector_[il]);
    }
    out->image_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // The resident matrices through a pinned staging buffer, a chunk of rows at a time.
  cuda::PinnedBuffer staging(kStagingBytes, "the weight upload's staging buffer");
  std::set<const uint8_t*> uploaded;  // tied embeddings: once
  auto upload = [&](const MatrixView& m) {
    if (m.data == nullptr || !uploaded.insert(m.data).second) return;
    const MatrixPlan& p = out->plans_.at(&m);
    if (out->regions_[p.region].streamed) return;
    auto* base = const_cast<uint8_t*>(out->device_base(p.region));
    copy_rows(m, base + p.qs_offset, base + p.sc_offset, p.qs_row, p.sc_row, staging.as<uint8_t>(), kStagingBytes,
              device);
  };
  upload(w.token_embd);
  upload(w.output);
  for (size_t il = 0; il < w.layers.size(); ++il) {
    for_each_layer_matrix(w.layers[il], upload);
    if (out->layer_gate_vector_[il] != nullptr) upload(*out->layer_gate_vector_[il]);
  }
  for (const auto& [v, where] : out->vectors_) {
    const auto [region, offset] = where;
    if (out->regions_[region].streamed) {
      std::memcpy(out->images_.as<uint8_t>() + out->regions_[region].offset + offset, v->data(), v->size() * sizeof(float));
      continue;
    }
    cuda::check(cudaMemcpy(const_cast<uint8_t*>(out->device_base(region)) + offset, v->data(), v->size() * sizeof(float),
                           cudaMemcpyHostToDevice),
                fmt::format("copying the vectors of {} to cuda:{}", w.source, device));
  }

  const uint8_t* globals = out->device_base(0);
  out->token_embd = out->matrix_at(w.token_embd, 0, globals);
  out->output = out->matrix_at(w.output, 0, globals);
  out->output_norm = out->vector_at(w.output_norm, 0, globals);
  out->inv_freq = out->vector_at(w.rope.inv_freq, 0, globals);
  out->layers.resize(w.layers.size());
  for (uint32_t il = 0; il < w.layers.size(); ++il)
    if (!out->streamed_[il]) out->layers[il] = out->layer_at(il, out->device_base(1 + il));
  slot = out;
  return out;
}

cuda::DeviceMatrix CudaWeights::matrix_at(const MatrixView& m, size_t region, const uint8_t* base) const {
  cuda::DeviceMatrix d;
  if (m.data == nullptr) return d;
  const MatrixPlan& p = plans_.at(&m);
  if (p.region != region)
    throw InternalError(fmt::format("CudaWeights: tensor {} is planned in region {}, asked in {}", m.name, p.region,
                                    region));
  d.type = p.device_type;
  d.qs = base + p.qs_offset;
  d.scales = p.sc_row ? base + p.sc_offset : nullptr;
  d.rows = m.rows;
  d.cols = m.cols;
  d.qs_row = p.qs_row;
  d.sc_row = p.sc_row;
  return d;
}

const float* CudaWeights::vector_at(const std::vector<float>& v, size_t region, const uint8_t* base) const {
  if (v.empty()) return nullptr;
  const auto [planned_region, offset] = vectors_.at(&v);
  if (planned_region != region)
    throw InternalError(fmt::format("CudaWeights: a vector is planned in region {}, asked in {}", planned_region, region));
  return reinterpret_cast<const float*>(base + offset);
}

CudaLayerWeights CudaWeights::layer_at(uint32_t il, const uint8_t* base) const {
  const LayerWeights& lw = weights_->layers[il];
  const size_t r = 1 + il;
  auto matrix = [&](const MatrixView& m) { return matrix_at(m, r, base); };
  auto vec = [&](const std::vector<float>& v) { return vector_at(v, r, base); };
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
    if (layer_gate_vector_[il] != nullptr) d.shexp_gate_inp = matrix(*layer_gate_vector_[il]);
  }
  return d;
}

std::span<const uint8_t> CudaWeights::host_image(uint32_t layer) const {
  if (!streamed(layer)) throw InternalError(fmt::format("CudaWeights::host_image: layer {} is not streamed", layer));
  const Region& r = regions_[1 + layer];
  return {images_.as<uint8_t>() + r.offset, r.bytes};
}

CudaLayerWeights CudaWeights::layer_in(uint32_t layer, const uint8_t* base) const {
  if (!streamed(layer)) throw InternalError(fmt::format("CudaWeights::layer_in: layer {} is not streamed", layer));
  return layer_at(layer, base);
}

void CudaWeights::refresh(uint32_t layer, const MatrixView& host) const {
  const auto found = plans_.find(&host);
  if (found == plans_.end())
    throw InternalError(fmt::format("CudaWeights::refresh: tensor {} has no device copy", host.name));
  const MatrixPlan& p = found->second;
  const size_t region = layer == UINT32_MAX ? 0 : 1 + size_t{layer};
  if (p.region != region)
    throw InternalError(fmt::format("CudaWeights::refresh: tensor {} belongs to region {}, not {}", host.name, p.region,
                                    region));
  if (regions_[region].streamed) {
    // Straight into the host image, which the next pass copies in whole.
    uint8_t* image = images_.as<uint8_t>() + regions_[region].offset;
    cuda::repack_rows(host.type, host.data, host.row_bytes, host.rows, host.cols, image + p.qs_offset,
                      p.sc_row ? image + p.sc_offset : nullptr);
    return;
  }
  cuda::use_device(device);
  // Pageable staging: a refresh copies one edited matrix, and pinning memory per call costs more
  // than it saves.
  std::vector<uint8_t> staging(std::min(kStagingBytes, static_cast<size_t>(host.rows) * (p.qs_row + p.sc_row)));
  auto* base = const_cast<uint8_t*>(device_base(region));
  copy_rows(host, base + p.qs_offset, base + p.sc_offset, p.qs_row, p.sc_row, staging.data(), staging.size(), device);
}

}  // namespace lathe
