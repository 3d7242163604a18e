#include "runtime/device_kv_cache.hpp"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <vector>

#include "backend/cuda/memory.hpp"

namespace lathe::runtime {

struct DeviceKvCache::Buffers {
  cuda::DeviceBuffer rows, tables;
};

DeviceKvCache::DeviceKvCache(const HParams& hp, int device, uint32_t n_slots, uint32_t n_ctx, KvFormat format)
    : buffers_(std::make_unique<Buffers>()) {
  cuda::use_device(device);
  const int64_t row_elements = int64_t{hp.n_head_kv} * hp.head_dim;
  const size_t per_cache = kv_layer_bytes(format, n_ctx, row_elements);  // one layer's K (or V)
  const size_t n_caches = size_t{n_slots} * hp.n_layer * 2;
  buffers_->rows = cuda::DeviceBuffer(per_cache * n_caches,
                                      fmt::format("the KV cache ({} sequence(s) x {} tokens x {} layers, {})", n_slots,
                                                  n_ctx, hp.n_layer, kv_format_name(format)));
  // Table entry [layer][slot]: keys in the first half, values in the second.
  std::vector<void*> tables(n_caches);
  auto* base = buffers_->rows.as<uint8_t>();
  for (uint32_t l = 0; l < hp.n_layer; ++l)
    for (uint32_t s = 0; s < n_slots; ++s) {
      const size_t index = (size_t{s} * hp.n_layer + l) * 2;
      tables[size_t{l} * n_slots + s] = base + index * per_cache;
      tables[n_caches / 2 + size_t{l} * n_slots + s] = base + (index + 1) * per_cache;
    }
  buffers_->tables = cuda::DeviceBuffer(n_caches * sizeof(void*), "the KV cache tables");
  cuda::check(cudaMemcpy(buffers_->tables.data(), tables.data(), n_caches * sizeof(void*), cudaMemcpyHostToDevice),
              "copying the KV cache tables");
  view_.k_tables = buffers_->tables.as<void*>();
  view_.v_tables = view_.k_tables + n_caches / 2;
  view_.n_slots = n_slots;
  view_.n_ctx = n_ctx;
  view_.format = format;
  view_.bytes = buffers_->rows.bytes();
  view_.table_bytes = buffers_->tables.bytes();
}

DeviceKvCache::~DeviceKvCache() = default;

}  // namespace lathe::runtime
