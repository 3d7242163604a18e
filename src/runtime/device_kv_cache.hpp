// The KV caches of an engine's slots on a CUDA device, owned by the runtime as the CPU engine owns
// its KvCache per slot: one allocation holding, per slot and layer, n_ctx rows of keys and of
// values, plus device tables of those rows' addresses that the kernels index by [layer][slot].
// Header without CUDA types; the implementation exists in CUDA builds only.
#pragma once

#include <cstdint>
#include <memory>

#include "arch/hparams.hpp"
#include "forward/cuda_forward.hpp"

namespace lathe::runtime {

class DeviceKvCache {
 public:
  // OutOfMemoryError naming the cache's size and what is free; DeviceError for a bad device.
  DeviceKvCache(const HParams& hp, int device, uint32_t n_slots, uint32_t n_ctx, KvFormat format);
  ~DeviceKvCache();
  DeviceKvCache(const DeviceKvCache&) = delete;
  DeviceKvCache& operator=(const DeviceKvCache&) = delete;
  const DeviceKvView& view() const noexcept { return view_; }

 private:
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
  DeviceKvView view_;
};

}  // namespace lathe::runtime
