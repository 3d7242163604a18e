#include "runtime/kv_cache.hpp"

#include <fmt/format.h>
#include <new>

#include "lathe/error.hpp"

namespace lathe {

void require_kv_format_fits(const HParams& hp, KvFormat format) {
  if (format == KvFormat::Q8_0 && hp.head_dim % kKvQ8Block != 0)
    throw UnsupportedError(fmt::format("a Q8_0 KV cache needs a head size that is a multiple of {}; this model's is {}; "
                                       "use --kv-type f16",
                                       kKvQ8Block, hp.head_dim));
}

KvCache::KvCache(const HParams& hp, uint32_t n_ctx, KvFormat format) {
  require_kv_format_fits(hp, format);
  view_.format = format;
  view_.n_ctx = n_ctx;
  view_.row_elements = int64_t{hp.n_head_kv} * hp.head_dim;
  const uint64_t layer_bytes = kv_layer_bytes(format, n_ctx, view_.row_elements);
  bytes_ = layer_bytes * 2 * hp.n_layer;
  try {
    storage_.resize(2 * size_t{hp.n_layer});
    // Zero-filled: rows past n_past are never read, but zero pages cost nothing until touched.
    for (auto& buffer : storage_) buffer.resize(layer_bytes);
  } catch (const std::bad_alloc&) {
    throw OutOfMemoryError(fmt::format("could not allocate the KV cache: {:.1f} MiB for {} tokens x {} layers ({}); "
                                       "use a smaller context (-c) or a smaller --kv-type (f16, q8_0)",
                                       bytes_ / 1048576.0, n_ctx, hp.n_layer, kv_format_name(format)));
  }
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    view_.keys.push_back(storage_[2 * il].data());
    view_.values.push_back(storage_[2 * il + 1].data());
  }
}

}  // namespace lathe
