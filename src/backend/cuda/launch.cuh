// Chained kernel launches (programmatic dependent launch, sm_90 and later): a kernel launched with
// launch_chained may be scheduled while the kernel before it in the stream is still finishing, and
// waits in wait_for_previous_kernel() until that kernel has completed and its writes are visible.
// The decode step is a chain of ~150-300 small dependent kernels, and this hides most of the
// launch latency between them (inside the captured CUDA graph too). Every kernel launched with
// launch_chained must call wait_for_previous_kernel() before it touches memory; without a chained
// launch (older GPUs, LATHE_CUDA_PDL=0) the call costs nothing.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <string_view>

#include "backend/cuda/memory.hpp"

namespace lathe::cuda {

__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether the current device takes chained launches (compute capability 9.0 or later), unless
// LATHE_CUDA_PDL=0 turns them off (to measure what they bring).
inline bool chained_launch_enabled() {
  static const bool turned_off = [] {
    const char* e = std::getenv("LATHE_CUDA_PDL");
    return e != nullptr && std::string_view(e) == "0";
  }();
  if (turned_off) return false;
  constexpr int kMaxDevices = 64;
  static std::atomic<int> major[kMaxDevices] = {};  // 0: not asked yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return false;
  int m = major[device].load(std::memory_order_relaxed);
  if (m == 0) {
    if (cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
    major[device].store(m, std::memory_order_relaxed);
  }
  return m >= 9;
}

template <typename... Params, typename... Args>
void launch_chained(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                    const char* name, Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = chained_launch_enabled() ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), name);
}

}  // namespace lathe::cuda
