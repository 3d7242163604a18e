#include "weights/weight_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <optional>

#include "arch/tensor_names.hpp"
#include "core/quant.hpp"

namespace lathe {

std::string_view weight_cache_error_kind_name(WeightCacheErrorKind kind) noexcept {
  switch (kind) {
    case WeightCacheErrorKind::EmptyCache: return "empty_cache";
    case WeightCacheErrorKind::ComponentMissingInModel: return "component_missing_in_model";
    case WeightCacheErrorKind::LayerAccess: return "layer_access";
    case WeightCacheErrorKind::OutOfMemory: return "out_of_memory";
    case WeightCacheErrorKind::EmptyLayer: return "empty_layer";
    case WeightCacheErrorKind::LayerCountMismatch: return "layer_count_mismatch";
    case WeightCacheErrorKind::MissingLayer: return "missing_layer";
    case WeightCacheErrorKind::MissingComponent: return "missing_component";
    case WeightCacheErrorKind::MatrixCountMismatch: return "matrix_count_mismatch";
    case WeightCacheErrorKind::ShapeMismatch: return "shape_mismatch";
    case WeightCacheErrorKind::CopyFailure: return "copy_failure";
  }
  return "?";
}

namespace {

ErrorCode code_for(WeightCacheErrorKind kind) {
  switch (kind) {
    case WeightCacheErrorKind::OutOfMemory: return ErrorCode::OutOfMemory;
    case WeightCacheErrorKind::LayerAccess: return ErrorCode::Internal;
    default: return ErrorCode::InvalidArgument;
  }
}

}  // namespace

WeightCacheError::WeightCacheError(WeightCacheErrorKind kind, const std::string& message)
    : Error(code_for(kind), message), kind_(kind) {}

namespace {

using Kind = WeightCacheErrorKind;
constexpr std::string_view kRebuild = "rebuild the weight cache from this model (WeightCache::build) after loading it";

[[noreturn]] void fail(Kind kind, const std::string& message) { throw WeightCacheError(kind, message); }

// The tensor's name for messages, also when the model has no view for it (name empty).
std::string tensor_name(const ModelWeights& w, uint32_t layer, EditComponent component, const MatrixView* view) {
  if (view != nullptr && !view->name.empty()) return std::string(view->name);
  const std::string canonical =
      fmt::format("blk.{}.{}.weight", layer, component == EditComponent::AttnOutput ? "attn_output" : "ffn_down");
  if (w.format == "safetensors")
    if (auto hf = canonical_to_hf_name(w.hp.arch, canonical)) return *hf;
  return canonical;
}

// "layer 3, mlp_down, matrix 0 (blk.3.ffn_down.weight)"
std::string where(const ModelWeights& w, uint32_t layer, EditComponent component, size_t index,
                  const MatrixView* view) {
  return fmt::format("layer {}, {}, matrix {} ({})", layer, component_name(component), index,
                     tensor_name(w, layer, component, view));
}

std::string component_list(std::span<const EditComponent> components) {
  std::vector<std::string_view> names;
  for (auto c : components) names.push_back(component_name(c));
  return names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "));
}

std::string cached_layer_list(const std::vector<CachedLayer>& layers) {
  std::vector<uint32_t> ids;
  for (const auto& l : layers) ids.push_back(l.layer);
  return ids.empty() ? std::string("none") : fmt::format("{}", fmt::join(ids, ", "));
}

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / 1e6; }

// rows * row_bytes, or nullopt when negative or overflowing.
std::optional<uint64_t> matrix_bytes(int64_t rows, size_t row_bytes) {
  if (rows < 0) return std::nullopt;
  const auto r = static_cast<uint64_t>(rows);
  if (row_bytes != 0 && r > std::numeric_limits<uint64_t>::max() / row_bytes) return std::nullopt;
  return r * row_bytes;
}

CachedMatrix copy_matrix(const ModelWeights& w, uint32_t layer, EditComponent component, size_t index,
                         const MatrixView& view, uint64_t& total, const WeightCacheOptions& options) {
  const auto size = matrix_bytes(view.rows, view.row_bytes);
  const auto over_limit = [&](uint64_t bytes) {
    return options.max_bytes != 0 && (bytes > options.max_bytes || total > options.max_bytes - bytes);
  };
  if (!size || over_limit(*size)) {
    fail(Kind::OutOfMemory,
         fmt::format("{}: caching {} ({} rows x {} bytes) would take the weight cache over its limit of {:.1f} MB "
                     "({:.1f} MB cached so far); raise the limit, edit fewer components, or run with "
                     "--cache-weights false (each trial then reloads the weights instead)",
                     w.source, where(w, layer, component, index, &view), view.rows, view.row_bytes,
                     megabytes(options.max_bytes), megabytes(total)));
  }
  CachedMatrix m{std::string(view.name), view.type, view.rows, view.cols, view.row_bytes,
                 std::string(kWeightCacheHostDevice), {}};
  try {
    m.bytes.resize(static_cast<size_t>(*size));
  } catch (const std::bad_alloc&) {
    fail(Kind::OutOfMemory,
         fmt::format("{}: out of memory allocating {:.1f} MB for the weight cache copy of {} ({:.1f} MB cached so "
                     "far); free memory, edit fewer components, or run with --cache-weights false (each trial then "
                     "reloads the weights instead)",
                     w.source, megabytes(*size), where(w, layer, component, index, &view), megabytes(total)));
  } catch (const std::length_error&) {
    fail(Kind::OutOfMemory, fmt::format("{}: {} needs {} bytes, more than one buffer can hold; run with "
                                        "--cache-weights false",
                                        w.source, where(w, layer, component, index, &view), *size));
  }
  if (*size != 0) std::memcpy(m.bytes.data(), view.data, static_cast<size_t>(*size));
  total += *size;
  return m;
}

std::vector<const MatrixView*> layer_matrices(const ModelWeights& w, uint32_t layer, EditComponent component) {
  try {
    return component_matrices(w, layer, component);
  } catch (const std::exception& e) {
    fail(Kind::LayerAccess,
         fmt::format("{}: cannot read layer {}'s {} matrices ({}) to build the weight cache: {}; the model declares "
                     "{} layers but its layer table disagrees: reload the model, and report a bug if it persists",
                     w.source, layer, component_name(component), tensor_name(w, layer, component, nullptr), e.what(),
                     w.hp.n_layer));
  }
}

const CachedLayer* find_layer(const std::vector<CachedLayer>& layers, uint32_t layer) {
  if (layer < layers.size() && layers[layer].layer == layer) return &layers[layer];  // the usual layout
  for (const auto& l : layers)
    if (l.layer == layer) return &l;
  return nullptr;
}

bool convertible(DType from, DType to, int64_t cols) {
  return can_dequantize(from) && can_quantize(to) && cols >= 0 &&
         static_cast<uint64_t>(cols) % dtype_info(from).block_size == 0 &&
         static_cast<uint64_t>(cols) % dtype_info(to).block_size == 0;
}

void check_matrix(const ModelWeights& w, uint32_t layer, EditComponent component, size_t index,
                  const CachedMatrix& cached, const MatrixView& view) {
  const std::string at = where(w, layer, component, index, &view);
  if (view.data == nullptr) {
    fail(Kind::ComponentMissingInModel,
         fmt::format("{}: {}: the model has no such matrix but the weight cache holds one; the cache was built for "
                     "another model: {}",
                     w.source, at, kRebuild));
  }
  if (cached.rows != view.rows || cached.cols != view.cols) {
    fail(Kind::ShapeMismatch,
         fmt::format("{}: {}: the weight cache holds a [{}, {}] matrix but the model's is [{}, {}] (rows, cols); the "
                     "cache was built for another model: {}",
                     w.source, at, cached.rows, cached.cols, view.rows, view.cols, kRebuild));
  }
  const auto row_bytes = dtype_bytes(cached.type, static_cast<uint64_t>(std::max<int64_t>(cached.cols, 0)));
  const auto size = matrix_bytes(cached.rows, cached.row_bytes);
  if (!row_bytes || *row_bytes != cached.row_bytes || !size || *size != cached.bytes.size()) {
    fail(Kind::ShapeMismatch,
         fmt::format("{}: {}: the cached copy holds {} bytes with {} bytes per row, but [{}, {}] in {} needs {} bytes "
                     "per row; the cache is corrupt: {}",
                     w.source, at, cached.bytes.size(), cached.row_bytes, cached.rows, cached.cols,
                     dtype_name(cached.type), row_bytes ? fmt::format("{}", *row_bytes) : std::string("a whole number of"),
                     kRebuild));
  }
  if (cached.type != view.type && !convertible(cached.type, view.type, view.cols)) {
    fail(Kind::CopyFailure,
         fmt::format("{}: {}: the weight cache holds {} but the model's matrix is {}, and lathe cannot convert {} "
                     "rows of {} elements to {}; {}",
                     w.source, at, dtype_name(cached.type), dtype_name(view.type), dtype_name(cached.type), view.cols,
                     dtype_name(view.type), kRebuild));
  }
}

}  // namespace

WeightCache WeightCache::build(const ModelWeights& w, std::span<const EditComponent> components,
                               const WeightCacheOptions& options) {
  WeightCache cache;
  for (EditComponent c : components)
    if (std::find(cache.components_.begin(), cache.components_.end(), c) == cache.components_.end())
      cache.components_.push_back(c);
  if (cache.components_.empty()) {
    fail(Kind::EmptyCache, fmt::format("{}: no component to cache, so the weight cache would be empty; pass at least "
                                       "one of attn_output, mlp_down",
                                       w.source));
  }
  if (w.hp.n_layer == 0) {
    fail(Kind::EmptyCache, fmt::format("{}: the model has no layers, so the weight cache for {} would be empty; "
                                       "check that the file is a complete model",
                                       w.source, component_list(cache.components_)));
  }
  cache.warn_ = options.warn;
  uint64_t total = 0;
  cache.layers_.reserve(w.hp.n_layer);
  for (uint32_t layer = 0; layer < w.hp.n_layer; ++layer) {
    CachedLayer cached{layer, {}};
    for (EditComponent component : cache.components_) {
      const auto views = layer_matrices(w, layer, component);
      auto& matrices = cached.components[component];
      for (size_t i = 0; i < views.size(); ++i) {
        if (views[i]->data == nullptr) {
          fail(Kind::ComponentMissingInModel,
               fmt::format("{}: {}: the model has no such matrix to cache (this architecture or file lacks {}); "
                           "leave {} out of the components to edit",
                           w.source, where(w, layer, component, i, views[i]), component_name(component),
                           component_name(component)));
        }
        matrices.push_back(copy_matrix(w, layer, component, i, *views[i], total, options));
      }
    }
    cache.layers_.push_back(std::move(cached));
  }
  return cache;
}

void WeightCache::validate(const ModelWeights& w) const {
  if (layers_.empty()) {
    fail(Kind::EmptyCache, fmt::format("{}: the weight cache is empty (no layer of {} is cached), so there is nothing "
                                       "to restore; {}",
                                       w.source, component_list(components_), kRebuild));
  }
  if (layers_.size() != w.layers.size()) {
    fail(Kind::LayerCountMismatch,
         fmt::format("{}: the weight cache holds {} layers of {} but the model has {}; the cache was built for another "
                     "model: {}",
                     w.source, layers_.size(), component_list(components_), w.layers.size(), kRebuild));
  }
  for (const auto& cached : layers_) {
    if (cached.components.empty()) {
      fail(Kind::EmptyLayer, fmt::format("{}: layer {}: the weight cache entry holds no component (expected {}); {}",
                                         w.source, cached.layer, component_list(components_), kRebuild));
    }
  }
  for (uint32_t layer = 0; layer < w.layers.size(); ++layer) {
    const CachedLayer* cached = find_layer(layers_, layer);
    if (cached == nullptr) {
      fail(Kind::MissingLayer,
           fmt::format("{}: layer {} ({}) is not in the weight cache (cached layers: {}); {}", w.source, layer,
                       tensor_name(w, layer, components_.empty() ? EditComponent::AttnOutput : components_.front(),
                                   nullptr),
                       cached_layer_list(layers_), kRebuild));
    }
    for (EditComponent component : components_) {
      const auto it = cached->components.find(component);
      if (it == cached->components.end()) {
        std::vector<EditComponent> available;
        for (const auto& [c, m] : cached->components) available.push_back(c);
        fail(Kind::MissingComponent,
             fmt::format("{}: layer {}: component {} ({}) is not in the weight cache (cached in this layer: {}); {}",
                         w.source, layer, component_name(component), tensor_name(w, layer, component, nullptr),
                         component_list(available), kRebuild));
      }
      const auto views = component_matrices(w, layer, component);
      if (it->second.size() != views.size()) {
        fail(Kind::MatrixCountMismatch,
             fmt::format("{}: layer {}, {} ({}): the weight cache holds {} matrices but the model has {} (a different "
                         "expert count?); {}",
                         w.source, layer, component_name(component), tensor_name(w, layer, component, views.empty() ? nullptr : views.front()),
                         it->second.size(), views.size(), kRebuild));
      }
      for (size_t i = 0; i < views.size(); ++i) check_matrix(w, layer, component, i, it->second[i], *views[i]);
    }
  }
}

namespace {

void copy_back(ModelWeights& w, uint32_t layer, EditComponent component, size_t index, const CachedMatrix& cached,
               const MatrixView& view, const std::function<void(std::string_view)>& warn) {
  std::span<uint8_t> dst;
  try {
    dst = writable_bytes(w, view);
  } catch (const InvalidArgumentError&) {
    fail(Kind::CopyFailure,
         fmt::format("{}: {}: cannot copy the original back, the model's matrix is read-only (memory-mapped); call "
                     "make_editable() for {} after loading the model and before editing or restoring it",
                     w.source, where(w, layer, component, index, &view), component_name(component)));
  }
  const auto size = matrix_bytes(view.rows, view.row_bytes);
  if (!size || *size != dst.size()) {
    fail(Kind::CopyFailure, fmt::format("{}: {}: the writable buffer holds {} bytes but [{}, {}] needs {}; the "
                                        "model's editable copy is inconsistent: reload the model and make it editable "
                                        "again",
                                        w.source, where(w, layer, component, index, &view), dst.size(), view.rows,
                                        view.cols, size ? *size : 0));
  }
  if (cached.device != kWeightCacheHostDevice && warn) {
    warn(fmt::format("{}: {}: cached on device '{}' but the model is on '{}'; copying through host memory",
                     w.source, where(w, layer, component, index, &view), cached.device, kWeightCacheHostDevice));
  }
  if (cached.type == view.type) {
    if (!dst.empty()) std::memcpy(dst.data(), cached.bytes.data(), dst.size());
    return;
  }
  if (warn) {
    warn(fmt::format("{}: {}: cached as {} but the model's matrix is {}; converting (re-quantizing may lose precision; "
                     "rebuild the cache from this model to avoid it)",
                     w.source, where(w, layer, component, index, &view), dtype_name(cached.type),
                     dtype_name(view.type)));
  }
  std::vector<float> row(static_cast<size_t>(view.cols));
  for (int64_t r = 0; r < view.rows; ++r) {
    dequantize_row(cached.type, cached.bytes.data() + static_cast<size_t>(r) * cached.row_bytes, row.data(), view.cols);
    quantize_row(view.type, row.data(), dst.data() + static_cast<size_t>(r) * view.row_bytes, view.cols);
  }
}

}  // namespace

void WeightCache::restore(ModelWeights& w, std::span<const uint32_t> layers) const {
  validate(w);
  std::vector<uint32_t> targets(layers.begin(), layers.end());
  if (targets.empty())
    for (const auto& cached : layers_) targets.push_back(cached.layer);
  for (uint32_t layer : targets) {
    const CachedLayer* cached = find_layer(layers_, layer);
    if (cached == nullptr || layer >= w.layers.size()) {
      fail(Kind::MissingLayer,
           fmt::format("{}: cannot restore layer {} ({}): it is not in the weight cache (cached layers: {}; the model "
                       "has layers 0..{}); restore only layers of this model",
                       w.source, layer,
                       tensor_name(w, layer, components_.empty() ? EditComponent::AttnOutput : components_.front(),
                                   nullptr),
                       cached_layer_list(layers_), w.layers.empty() ? 0 : w.layers.size() - 1));
    }
    for (EditComponent component : components_) {
      const auto& matrices = cached->components.at(component);  // present: validate() checked it
      const auto views = component_matrices(w, layer, component);
      for (size_t i = 0; i < views.size(); ++i) copy_back(w, layer, component, i, matrices[i], *views[i], warn_);
    }
  }
}

uint64_t WeightCache::bytes() const {
  uint64_t total = 0;
  for (const auto& layer : layers_)
    for (const auto& [c, matrices] : layer.components)
      for (const auto& m : matrices) total += m.bytes.size();
  return total;
}

uint64_t WeightCache::n_params() const {
  uint64_t total = 0;
  for (const auto& layer : layers_)
    for (const auto& [c, matrices] : layer.components)
      for (const auto& m : matrices) total += static_cast<uint64_t>(m.rows) * static_cast<uint64_t>(m.cols);
  return total;
}

size_t WeightCache::n_matrices() const {
  size_t total = 0;
  for (const auto& layer : layers_)
    for (const auto& [c, matrices] : layer.components) total += matrices.size();
  return total;
}

std::string WeightCache::summary(const ModelWeights& w) const {
  const double share = w.n_params == 0 ? 0.0 : 100.0 * static_cast<double>(n_params()) / static_cast<double>(w.n_params);
  return fmt::format("weight cache: {:.1f} MB, {:.1f} M parameters ({:.1f}% of the model), {} matrices",
                     megabytes(bytes()), static_cast<double>(n_params()) / 1e6, share, n_matrices());
}

}  // namespace lathe
