#include <fmt/format.h>

#include "lathe/error.hpp"
#include "weights/cuda_weights.hpp"
#include "weights/device_sync.hpp"

namespace lathe {

void sync_device_copies(const ModelWeights& weights, std::span<const uint32_t> layers,
                        std::span<const EditComponent> components) {
  std::lock_guard lock(weights.device_copies->mutex);
  for (const auto& [device, copy] : weights.device_copies->by_device) {
    if (!copy) continue;
    const auto& cw = *std::static_pointer_cast<CudaWeights>(copy);
    for (uint32_t layer : layers) {
      if (layer >= cw.layers.size())
        throw InternalError(fmt::format("sync_device_copies: layer {} of {}", layer, cw.layers.size()));
      for (EditComponent c : components)
        for (const MatrixView* host : component_matrices(weights, layer, c))
          if (host->data != nullptr) cw.refresh(layer, *host);
    }
  }
}

}  // namespace lathe
