// Device and pinned host memory with owners (RAII), and the checks that turn CUDA failures into
// lathe errors: an allocation failure is an OutOfMemoryError naming what was being allocated, how
// much, what is free and what to do; any other failure a DeviceError naming the operation. After
// either, the device stays usable (the sticky error state is cleared where CUDA allows it).
// CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lathe::cuda {

// Throws DeviceError("<what>: <CUDA error>; <advice>") unless err is cudaSuccess.
void check(cudaError_t err, std::string_view what);
// After a kernel launch: throws DeviceError naming the kernel when the launch failed.
void check_launch(const char* kernel);

// "1.50 GiB"
std::string human_bytes(uint64_t bytes);

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocates `bytes` on the current device; `what` names the allocation in an OutOfMemoryError
  // ("KV cache (4096 tokens x 24 layers)").
  DeviceBuffer(size_t bytes, std::string_view what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const noexcept { return ptr_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(ptr_); }
  size_t bytes() const noexcept { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory (fast, asynchronous copies).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(size_t bytes, std::string_view what);
  ~PinnedBuffer();
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  void* data() const noexcept { return ptr_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(ptr_); }
  size_t bytes() const noexcept { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Makes `index` the calling thread's current device; DeviceError listing the devices when it
// does not exist.
void use_device(int index);

// Free and total memory of the current device.
struct MemInfo {
  uint64_t free = 0, total = 0;
};
MemInfo mem_info();

}  // namespace lathe::cuda
