#include <cuda_runtime.h>

#include <cstring>

#include "backend/cuda/device.hpp"
#include "backend/cuda/memory.hpp"

namespace lathe::cuda {

bool built_with_cuda() noexcept { return true; }

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.total_bytes = prop.totalGlobalMem;
    info.multiprocessors = prop.multiProcessorCount;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) info.free_bytes = free_b;
    out.push_back(info);
  }
  return out;
}

std::string no_device_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("no usable CUDA device: ") + cudaGetErrorString(err) +
           "; check the NVIDIA driver (nvidia-smi) or use --device cpu";
  }
  if (count == 0) return "no CUDA device found; use --device cpu";
  return "";
}

double pinned_host_to_device_gbps(int device, uint64_t bytes) {
  use_device(device);
  PinnedBuffer host(bytes, "the link measurement's host buffer");
  DeviceBuffer dev(bytes, "the link measurement's device buffer");
  std::memset(host.data(), 1, bytes);  // touched: no first-use page faults in the timing
  cudaEvent_t start = nullptr, stop = nullptr;
  check(cudaEventCreate(&start), "measuring the host-to-device link");
  check(cudaEventCreate(&stop), "measuring the host-to-device link");
  constexpr int kCopies = 4;
  float ms = 0;
  cudaError_t err = cudaMemcpy(dev.data(), host.data(), bytes, cudaMemcpyHostToDevice);  // warm-up
  if (err == cudaSuccess) err = cudaEventRecord(start);
  for (int i = 0; i < kCopies && err == cudaSuccess; ++i)
    err = cudaMemcpyAsync(dev.data(), host.data(), bytes, cudaMemcpyHostToDevice);
  if (err == cudaSuccess) err = cudaEventRecord(stop);
  if (err == cudaSuccess) err = cudaEventSynchronize(stop);
  if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  check(err, "measuring the host-to-device link");
  return ms > 0 ? static_cast<double>(bytes) * kCopies / (static_cast<double>(ms) * 1e6) : 0;
}

}  // namespace lathe::cuda
