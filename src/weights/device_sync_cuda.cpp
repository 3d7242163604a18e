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
      for (EditComponent c : components) {
        const auto hosts = component_matrices(weights, layer, c);
        const cuda::DeviceMatrix& dm = c == EditComponent::AttnOutput ? cw.layers[layer].wo : cw.layers[layer].w_down;
        if (hosts.empty() || hosts[0]->data == nullptr) continue;
        cw.refresh(*hosts[0], dm);
      }
    }
  }
}

}  // namespace lathe
