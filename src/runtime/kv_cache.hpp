// The keys and values of one context: per layer, n_ctx rows of n_head_kv * head_dim elements in
// IEEE half (default), float32 or Q8_0 (core/kv_format.hpp), allocated once for the requested
// context length.
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
  // Throws OutOfMemoryError saying how many bytes were requested for how many tokens, and
  // UnsupportedError for Q8_0 with a head size that is not a multiple of 32.
  KvCache(const HParams& hp, uint32_t n_ctx, KvFormat format);
  KvCacheView& view() noexcept { return view_; }
  uint32_t n_ctx() const noexcept { return view_.n_ctx; }
  uint64_t bytes() const noexcept { return bytes_; }

 private:
  std::vector<std::vector<uint8_t>> storage_;  // keys then values per layer
  KvCacheView view_;
  uint64_t bytes_ = 0;
};

}  // namespace lathe
