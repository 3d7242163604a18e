#include <fmt/format.h>

#include "lathe/error.hpp"
#include "weights/cuda_weights.hpp"
#include "weights/device_sync.hpp"

namespace lathe {
namespace {

// The device copies of component_matrices(weights, layer, c), in its order.
std::vector<const cuda::DeviceMatrix*> device_matrices(const CudaLayerWeights& layer, EditComponent c) {
  if (c == EditComponent::AttnOutput) return {&layer.wo};
  if (!layer.moe()) return {&layer.w_down};
  std::vector<const cuda::DeviceMatrix*> out;
  for (const auto& down : layer.exp_down) out.push_back(&down);
  if (layer.shared_expert()) out.push_back(&layer.shexp_down);
  return out;
}

}  // namespace

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
        const auto devices = device_matrices(cw.layers[layer], c);
        if (hosts.size() != devices.size())
          throw InternalError(fmt::format("sync_device_copies: layer {} has {} host and {} device matrices", layer,
                                          hosts.size(), devices.size()));
        for (size_t i = 0; i < hosts.size(); ++i)
          if (hosts[i]->data != nullptr) cw.refresh(*hosts[i], *devices[i]);
      }
    }
  }
}

}  // namespace lathe
