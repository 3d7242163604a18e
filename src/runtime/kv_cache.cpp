#include "runtime/kv_cache.hpp"

#include <fmt/format.h>
#include <new>

#include "lathe/error.hpp"

namespace lathe {

KvCache::KvCache(const HParams& hp, uint32_t n_ctx, bool f16) {
  view_.f16 = f16;
  view_.n_ctx = n_ctx;
  view_.row_elements = int64_t{hp.n_head_kv} * hp.head_dim;
  const uint64_t layer_bytes = uint64_t{n_ctx} * view_.row_elements * (f16 ? 2 : 4);
  bytes_ = layer_bytes * 2 * hp.n_layer;
  try {
    storage_.resize(2 * size_t{hp.n_layer});
    // Zero-filled: rows past n_past are never read, but zero pages cost nothing until touched.
    for (auto& buffer : storage_) buffer.resize(layer_bytes);
  } catch (const std::bad_alloc&) {
    throw OutOfMemoryError(fmt::format("could not allocate the KV cache: {:.1f} MiB for {} tokens x {} layers ({}); "
                                       "use a smaller context (-c) or --kv-type f16",
                                       bytes_ / 1048576.0, n_ctx, hp.n_layer, f16 ? "f16" : "f32"));
  }
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    view_.keys.push_back(storage_[2 * il].data());
    view_.values.push_back(storage_[2 * il + 1].data());
  }
}

}  // namespace lathe
