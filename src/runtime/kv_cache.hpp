// The keys and values of one context: per layer, n_ctx rows of n_head_kv * head_dim elements in
// IEEE half (default), float32 or Q8_0 (core/kv_format.hpp). The whole cache is reserved at once
// for the requested context length (a context that cannot fit in this machine's memory is refused
// up front), but its pages are committed by the system only when a position is first written, so
// a large -c costs memory only as the context fills.
#pragma once

#include <cstdint>
#include <vector>

#include "arch/hparams.hpp"
#include "forward/forward.hpp"

namespace lathe {

// UnsupportedError when the model cannot keep its cache in `format` (Q8_0 blocks must not
// straddle heads: head_dim % 32 == 0). Both engines call it before allocating.
void require_kv_format_fits(const HParams& hp, KvFormat format);

class KvCache {
 public:
  // Throws OutOfMemoryError saying how many bytes were requested for how many tokens (also when
  // the cache is larger than this machine's memory, though only its used part is ever committed),
  // and UnsupportedError for Q8_0 with a head size that is not a multiple of 32.
  KvCache(const HParams& hp, uint32_t n_ctx, KvFormat format);
  ~KvCache();
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  KvCacheView& view() noexcept { return view_; }
  uint32_t n_ctx() const noexcept { return view_.n_ctx; }
  // Bytes reserved for all n_ctx positions (what a full context commits).
  uint64_t bytes() const noexcept { return bytes_; }

 private:
  // One anonymous mapping holding keys then values per layer. Its pages are never read before a
  // position's row is written (attention reads rows 0..pos of positions already stored), so they
  // stay uncommitted until then.
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  KvCacheView view_;
  uint64_t bytes_ = 0;
};

}  // namespace lathe
