// The weights seam: the forward passes ask a layer source for layer i's weights at the top of each
// layer (acquire) and hand them back when the layer is done (release), instead of indexing the
// model's weight vectors. Resident weights — the whole model loaded (CPU: mapped; CUDA: uploaded)
// — are one source; a source that streams layers from the model's files into a few device
// buffers, copying ahead while earlier layers compute, is another (the streaming issue).
#pragma once

#include <cstdint>
#include <vector>

namespace lathe {

template <class Layer>
class LayerSourceOf {
 public:
  virtual ~LayerSourceOf() = default;
  // Layer `layer`'s weights, valid until release(layer).
  virtual const Layer& acquire(uint32_t layer) = 0;
  virtual void release(uint32_t layer) = 0;
  // Whether every layer stays at one address for the source's lifetime, with nothing to do per pass.
  virtual bool resident() const noexcept = 0;
  // Called at the top of every forward pass, before the first acquire (a streaming source starts
  // its first copies here).
  virtual void begin_pass() {}
  // Whether a captured CUDA graph may replay the pass's use of the source: every weight address
  // fixed, and all the source's work (copies included) ordered on the device streams, so that the
  // capture records it.
  virtual bool capturable() const noexcept { return resident(); }
};

// Every layer already in place: acquire is an index, release nothing.
template <class Layer>
class ResidentLayersOf final : public LayerSourceOf<Layer> {
 public:
  explicit ResidentLayersOf(const std::vector<Layer>& layers) : layers_(layers) {}
  const Layer& acquire(uint32_t layer) override { return layers_[layer]; }
  void release(uint32_t) override {}
  bool resident() const noexcept override { return true; }

 private:
  const std::vector<Layer>& layers_;
};

}  // namespace lathe
