// The keys and values of one context: per layer, n_ctx rows of n_head_kv * head_dim elements in
// IEEE half (default) or float32, allocated once for the requested context length.
#pragma once

#include <cstdint>
#include <vector>

#include "arch/hparams.hpp"
#include "forward/forward.hpp"

namespace lathe {

class KvCache {
 public:
  // Throws OutOfMemoryError saying how many bytes were requested for how many tokens.
  KvCache(const HParams& hp, uint32_t n_ctx, bool f16);
  KvCacheView& view() noexcept { return view_; }
  uint32_t n_ctx() const noexcept { return view_.n_ctx; }
  uint64_t bytes() const noexcept { return bytes_; }

 private:
  std::vector<std::vector<uint8_t>> storage_;  // keys then values per layer
  KvCacheView view_;
  uint64_t bytes_ = 0;
};

}  // namespace lathe
