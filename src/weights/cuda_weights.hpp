// A model's weights placed on a CUDA device: every matrix in its device layout
// (backend/cuda/device_layout.hpp), the float32 vectors (norms, biases, RoPE frequencies) as they
// are. Uploaded once per model and device and shared by every session
// (ModelWeights::device_copies). CUDA builds only.
//
// Layers may stream (docs/STREAMING.md): a streamed layer is not on the device; its matrices and
// vectors wait in pinned host memory, already in the device layout and laid out exactly as they
// will be on the device (its "host image"), so that a forward pass brings it in with one
// asynchronous copy into a slot buffer (forward/cuda_layer_stream.hpp) and reads it there.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/cuda/matrix.hpp"
#include "backend/cuda/memory.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct CudaLayerWeights {
  cuda::DeviceMatrix wq, wk, wv, wqkv, wo, w_gate, w_up, w_gate_up, w_down;
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* bq = nullptr;  // null when absent
  const float* bk = nullptr;
  const float* bv = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  // Mixture of experts (LayerWeights::moe()): the router, each expert's gate/up/down, qwen2moe's
  // shared expert and its gate vector (as a 1-row float32 matrix, a mat-vec target beside the
  // router's).
  cuda::DeviceMatrix router, shexp_gate, shexp_up, shexp_down, shexp_gate_inp;
  std::vector<cuda::DeviceMatrix> exp_gate, exp_up, exp_down;
  bool fused_qkv() const noexcept { return wqkv.qs != nullptr; }
  bool fused_gate_up() const noexcept { return w_gate_up.qs != nullptr; }
  bool moe() const noexcept { return router.qs != nullptr; }
  bool shared_expert() const noexcept { return shexp_gate.qs != nullptr; }
};

// What the forward pass's scratch is sized by.
struct CudaWeightsShape {
  int64_t max_cols = 0, max_rows = 0;
  bool any_quantized = false;  // some matrix is block-quantized (prefill dequantizes it)
  bool any_bf16 = false;
  uint64_t converted_matrices = 0;  // matrices converted to F16 (types without a native kernel)
};

// A model's device bytes by part, before anything is uploaded (what streaming plans with).
struct CudaWeightsSizes {
  uint64_t always_resident = 0;  // embedding, output layer, final norm, RoPE frequencies
  std::vector<uint64_t> layers;  // each layer's matrices and vectors
  CudaWeightsShape shape;
};

class CudaWeights {
 public:
  // The device bytes `weights` would take, by part (host work only).
  static CudaWeightsSizes sizes(const ModelWeights& weights);

  // The copy of `weights` on cuda:`device`, made on first use (OutOfMemoryError naming the model
  // and the bytes needed when it does not fit): the layers marked in `streamed` (by layer; empty:
  // none) as pinned host images, the rest uploaded. A copy already made is returned as it is,
  // whatever `streamed` asks (every session of a model on a device shares one copy).
  static std::shared_ptr<CudaWeights> get(const ModelWeights& weights, int device,
                                          const std::vector<bool>& streamed = {});

  int device = 0;
  cuda::DeviceMatrix token_embd, output;
  const float* output_norm = nullptr;
  const float* inv_freq = nullptr;
  std::vector<CudaLayerWeights> layers;  // by layer; a streamed layer's entry is empty (see layer_in)
  uint64_t bytes = 0;         // device memory held
  uint64_t pinned_bytes = 0;  // pinned host memory held by the streamed layers' images
  uint32_t n_streamed = 0;
  double image_seconds = 0;   // time spent allocating and filling the host images
  CudaWeightsShape shape;

  bool streamed(uint32_t layer) const noexcept { return layer < streamed_.size() && streamed_[layer]; }
  // A streamed layer's host image (pinned, in the device layout).
  std::span<const uint8_t> host_image(uint32_t layer) const;
  // A streamed layer's weights as they are once its host image is copied to `base` (a device
  // buffer of at least host_image(layer).size() bytes, 256-byte aligned).
  CudaLayerWeights layer_in(uint32_t layer, const uint8_t* base) const;

  // Copies matrix `host` of layer `layer` (or of the always-resident part, layer = UINT32_MAX)
  // again from the host after an edit of its bytes: on the device for a resident layer, where it
  // keeps its address (captured CUDA graphs stay valid); into the host image for a streamed one,
  // which the next pass copies in. Call between passes only.
  void refresh(uint32_t layer, const MatrixView& host) const;

 private:
  // Where one matrix goes: its region (0: the always-resident part; 1 + l: layer l) and its
  // offsets there.
  struct MatrixPlan {
    DType device_type = DType::F32;
    size_t region = 0;
    size_t qs_row = 0, sc_row = 0, qs_offset = 0, sc_offset = 0;
  };
  struct Region {
    size_t bytes = 0;
    bool streamed = false;
    size_t offset = 0;  // in the device arena, or in the pinned host images when streamed
  };
  // Fills plans_, vectors_, regions_ (sizes only) and shape from `w`.
  void plan(const ModelWeights& w);
  cuda::DeviceMatrix matrix_at(const MatrixView& m, size_t region, const uint8_t* base) const;
  const float* vector_at(const std::vector<float>& v, size_t region, const uint8_t* base) const;
  CudaLayerWeights layer_at(uint32_t layer, const uint8_t* base) const;
  const uint8_t* device_base(size_t region) const { return arena_.as<uint8_t>() + regions_[region].offset; }

  const ModelWeights* weights_ = nullptr;
  std::map<const MatrixView*, MatrixPlan> plans_;  // by host view (tied embeddings share a plan)
  std::map<const std::vector<float>*, std::pair<size_t, size_t>> vectors_;  // (region, offset)
  std::deque<MatrixView> gate_vectors_;         // qwen2moe's shared-expert gates as 1-row matrices
  std::deque<std::string> gate_vector_names_;
  std::vector<const MatrixView*> layer_gate_vector_;
  std::vector<Region> regions_;
  std::vector<bool> streamed_;
  cuda::DeviceBuffer arena_;
  cuda::PinnedBuffer images_;
};

// The CUDA forward pass's weights seam (weights/layer_source.hpp).
using CudaLayerSource = LayerSourceOf<CudaLayerWeights>;

}  // namespace lathe
