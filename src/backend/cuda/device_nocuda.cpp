#include "backend/cuda/device.hpp"

namespace lathe::cuda {

bool built_with_cuda() noexcept { return false; }
std::vector<DeviceInfo> list_devices() { return {}; }
std::string no_device_reason() {
  return "this build of lathe has no CUDA backend; install the CUDA toolkit (nvcc) and reconfigure with "
         "-DLATHE_CUDA=ON";
}

double pinned_host_to_device_gbps(int, uint64_t) { return 0; }

}  // namespace lathe::cuda
