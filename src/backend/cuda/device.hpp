// CUDA device discovery. Compiled as CUDA when the build has it (device.cu), otherwise as a
// stub (no_cuda.cpp) that reports no devices and explains how to get CUDA support.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lathe::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  uint64_t total_bytes = 0, free_bytes = 0;
  int multiprocessors = 0;
};

bool built_with_cuda() noexcept;
// Devices visible to this process; empty when the build has no CUDA or no driver/device exists.
std::vector<DeviceInfo> list_devices();
// Why list_devices() is empty, as advice for the user ("" when devices exist).
std::string no_device_reason();
// The rate of host-to-device copies from pinned memory on cuda:`device`, in GB/s (10^9 bytes),
// measured with `bytes`-long copies after a warm-up: the link that layer streaming waits on
// (docs/STREAMING.md). 0 without CUDA; DeviceError / OutOfMemoryError when the buffers fail.
double pinned_host_to_device_gbps(int device, uint64_t bytes = uint64_t{256} << 20);

}  // namespace lathe::cuda
