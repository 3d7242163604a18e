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
#include <utility>

namespace lathe::cuda {

// Throws DeviceError("<what>: <CUDA error>; <advice>") unless err is cudaSuccess.
void check(cudaError_t err, std::string_view what);
// After a kernel launch: throws DeviceError naming the kernel when the launch failed.
void check_launch(const char* kernel);

// "1.50 GiB"
std::string human_bytes(uint64_t bytes);

// Where a CudaBuffer's memory lives.
enum class MemoryKind { Device, Pinned };

// An owned allocation of device memory (cudaMalloc) or page-locked host memory (cudaMallocHost:
// fast, asynchronous copies), freed on destruction.
template <MemoryKind Kind>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  // Allocates `bytes`; `what` names the allocation in an OutOfMemoryError ("the KV cache (1
  // sequence(s) x 4096 tokens x 24 layers, f16)").
  CudaBuffer(size_t bytes, std::string_view what);
  ~CudaBuffer() { release(); }
  CudaBuffer(CudaBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  CudaBuffer& operator=(CudaBuffer&& other) noexcept {
    if (this != &other) {
      release();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  void* data() const noexcept { return ptr_; }
  template <typename T>
  T* as() const noexcept { return static_cast<T*>(ptr_); }
  size_t bytes() const noexcept { return bytes_; }

 private:
  void release() noexcept;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

using DeviceBuffer = CudaBuffer<MemoryKind::Device>;
using PinnedBuffer = CudaBuffer<MemoryKind::Pinned>;

// Makes `index` the calling thread's current device; DeviceError listing the devices when it
// does not exist.
void use_device(int index);

// Free and total memory of the current device.
struct MemInfo {
  uint64_t free = 0, total = 0;
};
MemInfo mem_info();

}  // namespace lathe::cuda
