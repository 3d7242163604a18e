#include "backend/cuda/memory.hpp"

#include <fmt/format.h>


#include "lathe/error.hpp"

namespace lathe::cuda {

std::string human_bytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) return fmt::format("{:.2f} GiB", b / (1ull << 30));
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", b / (1ull << 20));
  if (bytes >= (1ull << 10)) return fmt::format("{:.1f} KiB", b / (1ull << 10));
  return fmt::format("{} B", bytes);
}

void check(cudaError_t err, std::string_view what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so that the device stays usable
  int device = -1;
  cudaGetDevice(&device);
  throw DeviceError(fmt::format("cuda:{}: {} failed: {} ({}); check the driver with nvidia-smi, or use --device cpu",
                                device, what, cudaGetErrorString(err), cudaGetErrorName(err)));
}

void check_launch(const char* kernel) { check(cudaGetLastError(), fmt::format("launching kernel {}", kernel)); }

MemInfo mem_info() {
  size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  return {free_b, total_b};
}

namespace {
[[noreturn]] void out_of_memory(size_t bytes, std::string_view what, bool pinned) {
  cudaGetLastError();
  int device = -1;
  cudaGetDevice(&device);
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  cudaGetLastError();
  if (pinned)
    throw OutOfMemoryError(fmt::format("cuda:{}: out of pinned host memory allocating {} ({}); free host memory or "
                                       "use a smaller context (-c)",
                                       device, what, human_bytes(bytes)));
  throw OutOfMemoryError(fmt::format(
      "cuda:{}: out of device memory allocating {} ({}); {} free of {}. Use a smaller context (-c), fewer parallel "
      "sequences, a smaller or more quantized model, or the CPU backend (--device cpu)",
      device, what, human_bytes(bytes), human_bytes(free_b), human_bytes(total_b)));
}
}  // namespace

template <MemoryKind Kind>
CudaBuffer<Kind>::CudaBuffer(size_t bytes, std::string_view what) : bytes_(bytes) {
  if (bytes == 0) return;
  constexpr bool pinned = Kind == MemoryKind::Pinned;
  const cudaError_t err = pinned ? cudaMallocHost(&ptr_, bytes) : cudaMalloc(&ptr_, bytes);
  if (err == cudaErrorMemoryAllocation) out_of_memory(bytes, what, pinned);
  check(err, fmt::format("{} of {} for {}", pinned ? "cudaMallocHost" : "cudaMalloc", human_bytes(bytes), what));
}

template <MemoryKind Kind>
void CudaBuffer<Kind>::release() noexcept {
  if (ptr_ == nullptr) return;
  if constexpr (Kind == MemoryKind::Pinned) cudaFreeHost(ptr_);
  else cudaFree(ptr_);
  ptr_ = nullptr;
}

template class CudaBuffer<MemoryKind::Device>;
template class CudaBuffer<MemoryKind::Pinned>;

void use_device(int index) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(fmt::format("cuda:{} was requested but no usable CUDA device exists ({}); check the NVIDIA "
                                  "driver (nvidia-smi) or use --device cpu",
                                  index, cudaGetErrorString(err)));
  }
  if (count == 0)
    throw DeviceError(fmt::format("cuda:{} was requested but this machine has no CUDA device; use --device cpu", index));
  if (index < 0 || index >= count)
    throw DeviceError(fmt::format("cuda:{} does not exist: this machine has {} CUDA device(s) (cuda:0..cuda:{}); "
                                  "see `lathe devices`",
                                  index, count, count - 1));
  check(cudaSetDevice(index), fmt::format("selecting cuda:{}", index));
}

}  // namespace lathe::cuda
