// Chained kernel launches (programmatic dependent launch, sm_90 and later): a kernel launched with
// launch_chained may be scheduled while the kernel before it in the stream is still finishing, and
// waits in wait_for_previous_kernel() until that kernel has completed and its writes are visible.
// The decode step is a chain of ~150-300 small dependent kernels, and this hides most of the
// launch latency between them (inside the captured CUDA graph too). Every kernel launched with
// launch_chained must call wait_for_previous_kernel() before it touches memory that a kernel
// writes (before it, only what no kernel writes may be read: the weights); without a chained
// launch (older GPUs, LATHE_CUDA_PDL=0) the call costs nothing.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "backend/cuda/memory.hpp"
#include "backend/cuda/switches.hpp"

namespace lathe::cuda {

// Waits until the kernel before has completed, then lets the next chained kernel be scheduled
// (its blocks wait here in turn). Calling the second step only after the wait keeps at most two
// kernels of the chain resident: the running one and the next, whose blocks can fetch what does
// not depend on this one (weights) meanwhile.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Facts about the current device that launch paths need on every launch, asked from the driver
// once per device.
struct DeviceFacts {
  int major = 0;            // compute capability
  int multiprocessors = 0;
  int l2_bytes = 0;
};
inline DeviceFacts current_device_facts() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> major[kMaxDevices] = {}, multiprocessors[kMaxDevices] = {},
                          l2_bytes[kMaxDevices] = {};  // 0: not asked yet
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return {};
  DeviceFacts f{major[device].load(std::memory_order_relaxed), multiprocessors[device].load(std::memory_order_relaxed),
                l2_bytes[device].load(std::memory_order_relaxed)};
  if (f.major == 0 || f.multiprocessors == 0 || f.l2_bytes == 0) {
    if (cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&f.multiprocessors, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&f.l2_bytes, cudaDevAttrL2CacheSize, device) != cudaSuccess)
      return {};
    major[device].store(f.major, std::memory_order_relaxed);
    multiprocessors[device].store(f.multiprocessors, std::memory_order_relaxed);
    l2_bytes[device].store(f.l2_bytes, std::memory_order_relaxed);
  }
  return f;
}

// Whether the current device takes chained launches (compute capability 9.0 or later), unless
// LATHE_CUDA_PDL=0 turns them off (to measure what they bring).
inline bool chained_launch_enabled() {
  static const bool turned_off = turned_off_by_env("LATHE_CUDA_PDL");
  return !turned_off && current_device_facts().major >= 9;
}

// Whether kernels fetch what does not depend on the kernel before (weights, earlier KV rows) into
// L2 before they wait for it: only useful when launches are chained (LATHE_CUDA_PREFETCH=0 turns
// it off, to measure what it brings). Only the blocks scheduled while the kernel before still runs
// gain from it, and prefetching more than L2 holds evicts lines before they are read (Llama-3.1-8B
// BF16 decode lost 13% that way), so each launch prefetches at most 1/kPrefetchL2Fraction of L2.
// Less also pays at the other end: the prefetches compete with the tail of the kernel before.
// H200 decode, same call, 1/16 against 1/8: 8B BF16 +1.2%, Q4_0 +1.5%, Q8_0 +0.4%, 0.5B BF16
// +1.4%, Q4_0 -0.7%, Q8_0 -0.9% (1/32 was no better on the 8B shape; docs/PERFORMANCE.md).
constexpr int kPrefetchL2Fraction = 16;  // 1/16 of L2: 3 MiB on an H100, 3.75 MiB on an H200, ~1 us of reading
inline bool prefetch_before_wait_enabled() {
  static const bool turned_off = turned_off_by_env("LATHE_CUDA_PREFETCH");
  return !turned_off && chained_launch_enabled();
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
