#include "edit/sae_device.hpp"

namespace lathe::edit {

std::unique_ptr<SaeGateDevice> make_sae_gate_device(const Sae&, const std::vector<SaeFeatureEdit>&,
                                                    const SaeGateOptions&, int) {
  return nullptr;
}

}  // namespace lathe::edit
