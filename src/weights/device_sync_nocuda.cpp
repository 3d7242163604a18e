// Builds without CUDA have no device copies to keep current.
#include "weights/device_sync.hpp"

namespace lathe {

void sync_device_copies(const ModelWeights&, std::span<const uint32_t>, std::span<const EditComponent>) {}

}  // namespace lathe
