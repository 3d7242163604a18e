// The device form of an SAE gate (SaeGate::prepare_device / apply_on_device): the gate's
// weights and edits in the memory of one CUDA device, and the kernel of backend/cuda/sae_gate.cu
// over device rows. CUDA builds only (sae_device_nocuda.cpp stands in without: no device form).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "edit/sae.hpp"

namespace lathe::edit {

class SaeGateDevice {
 public:
  virtual ~SaeGateDevice() = default;
  virtual int device() const noexcept = 0;
  // Gates device rows [n_rows][d_in] on `stream` (a cudaStream_t); enqueues kernels only.
  virtual void apply(float* rows, int64_t n_rows, void* stream) = 0;
  // Rows the device path changed so far (reads the device counter: waits for the device).
  virtual uint64_t rows_changed() const = 0;
};

// The gate's device form on CUDA device `device`, or nullptr when there is none: a build without
// CUDA, or a gate too wide for one block's shared memory on that device. Out of device memory is
// an OutOfMemoryError naming the SAE.
std::unique_ptr<SaeGateDevice> make_sae_gate_device(const Sae& sae, const std::vector<SaeFeatureEdit>& edits,
                                                    const SaeGateOptions& options, int device);

}  // namespace lathe::edit
