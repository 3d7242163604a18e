// Layers streamed into the GPU as a forward pass runs (docs/STREAMING.md): a CudaLayerSource over
// CudaWeights whose streamed layers wait in pinned host memory (their host images). The streamed
// layers take turns in a few slot buffers on the device, the k-th streamed layer always in slot
// k mod slots, so each layer's weights have one device address for the life of the source and a
// decode step, copies included, can be captured as a CUDA graph and replayed.
//
// Per pass, on a copy stream beside the compute stream:
//   begin_pass  the copy stream waits for the compute stream's earlier work, then copies the first
//               `slots` streamed layers into their slots (each copy then records `loaded`);
//   acquire(l)  the compute stream waits for layer l's `loaded`;
//   release(l)  the compute stream records that l's slot is free; the copy stream waits for that
//               and copies the streamed layer `slots` places later into it.
// Every copy a pass starts is waited for within that pass, so a finished pass leaves no copy in
// flight, and edits of the host images (CudaWeights::refresh) between passes are safe.
// CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "backend/cuda/memory.hpp"
#include "weights/cuda_weights.hpp"

namespace lathe {

class StreamedCudaLayers final : public CudaLayerSource {
 public:
  // Slots for `weights`' streamed layers (at least one streamed), used on `compute`.
  StreamedCudaLayers(std::shared_ptr<const CudaWeights> weights, cudaStream_t compute, uint32_t slots = 2);
  ~StreamedCudaLayers() override;
  StreamedCudaLayers(const StreamedCudaLayers&) = delete;
  StreamedCudaLayers& operator=(const StreamedCudaLayers&) = delete;

  void begin_pass() override;
  const CudaLayerWeights& acquire(uint32_t layer) override;
  void release(uint32_t layer) override;
  bool resident() const noexcept override { return false; }
  bool capturable() const noexcept override { return true; }

  uint32_t slots() const noexcept { return static_cast<uint32_t>(slot_buffers_.size()); }
  uint64_t slot_bytes() const noexcept { return slot_bytes_; }
  uint64_t device_bytes() const noexcept { return slot_bytes_ * slot_buffers_.size(); }
  uint64_t bytes_per_pass() const noexcept { return bytes_per_pass_; }

 private:
  void copy_in(size_t k);  // streamed layer k (in streaming order) into its slot

  std::shared_ptr<const CudaWeights> weights_;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  std::vector<uint32_t> order_;        // the streamed layers, in layer order
  std::vector<int> rank_;              // by layer: its place in order_, or -1 when resident
  std::vector<CudaLayerWeights> in_slot_;  // by place in order_: its weights in its slot
  std::vector<cuda::DeviceBuffer> slot_buffers_;
  std::vector<cudaEvent_t> loaded_, freed_;  // by slot
  cudaEvent_t pass_start_ = nullptr;
  uint64_t slot_bytes_ = 0, bytes_per_pass_ = 0;
};

}  // namespace lathe
