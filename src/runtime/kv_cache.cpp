#include "runtime/kv_cache.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>

#include <utility>

#include "lathe/error.hpp"

namespace lathe {

namespace {

// Each layer's buffer starts on a cache line (the Q8_0 scales and the vector kernels' loads rely
// on natural alignment; 64 covers every element type).
constexpr uint64_t kLayerAlign = 64;

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

// RAM + swap: a cache larger than this could never be filled, so it is refused up front even
// though its pages are committed lazily (the system's overcommit policy may not refuse it).
uint64_t memory_limit_bytes() {
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) return UINT64_MAX;
  return (uint64_t{info.totalram} + info.totalswap) * info.mem_unit;
}

}  // namespace

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
  const uint64_t stride = round_up(layer_bytes, kLayerAlign);
  const uint64_t total = stride * 2 * hp.n_layer;
  auto refuse = [&](const char* why) {
    return OutOfMemoryError(fmt::format("could not allocate the KV cache: {:.1f} MiB for {} tokens x {} layers ({}){}; "
                                        "use a smaller context (-c) or a smaller --kv-type (f16, q8_0)",
                                        bytes_ / 1048576.0, n_ctx, hp.n_layer, kv_format_name(format), why));
  };
  const uint64_t limit = memory_limit_bytes();
  if (total > limit)
    throw refuse(fmt::format(", more than this machine's {:.1f} MiB of memory", limit / 1048576.0).c_str());
  if (total == 0) return;
  // An anonymous mapping is zero pages the system commits on first write: the cache costs memory
  // only for the positions a context has used.
  void* p = ::mmap(nullptr, static_cast<size_t>(total), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw refuse("");
  mapping_ = p;
  mapping_bytes_ = static_cast<size_t>(total);
  auto* base = static_cast<uint8_t*>(p);
  for (uint32_t il = 0; il < hp.n_layer; ++il) {
    view_.keys.push_back(base + (2 * uint64_t{il}) * stride);
    view_.values.push_back(base + (2 * uint64_t{il} + 1) * stride);
  }
}

KvCache::~KvCache() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
}

KvCache::KvCache(KvCache&& other) noexcept
    : mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_bytes_(std::exchange(other.mapping_bytes_, 0)),
      view_(std::move(other.view_)),
      bytes_(std::exchange(other.bytes_, 0)) {}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this != &other) {
    if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
    view_ = std::move(other.view_);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

}  // namespace lathe
