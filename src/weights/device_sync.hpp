// Keeping the GPU copies of edited weights current: after the bytes of edited matrices change on
// the host (an abliteration edit, or a restore from the weight cache), the same matrices are
// copied again into every device copy of the model (weights/cuda_weights.hpp), in place, so that
// sessions and captured CUDA graphs on the device see the edit. A no-op when the model has no
// device copy (CPU runs, builds without CUDA).
#pragma once

#include <cstdint>
#include <span>

#include "weights/editable.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

void sync_device_copies(const ModelWeights& weights, std::span<const uint32_t> layers,
                        std::span<const EditComponent> components);

}  // namespace lathe
