#include "backend/cuda/device.hpp"

namespace lathe::cuda {

bool built_with_cuda() noexcept { return false; }
std::vector<DeviceInfo> list_devices() { return {}; }
std::string no_device_reason() {
  return "this build of lathe has no CUDA backend; install the CUDA toolkit (nvcc) and reconfigure with "
         "-DLATHE_CUDA=ON";
}

}  // namespace lathe::cuda
