// A copy of only the matrices abliteration edits (per layer: attention output, MLP down), kept in
// their stored type next to the weights, so that a trial can edit those matrices in place and put
// the originals back with one memcpy per matrix instead of reloading the model.
//
// restore() validates the cache against the model first: every inconsistency (a cache built for
// another model, a layer or component that went missing, a shape that changed) is a typed
// WeightCacheError that names the model file, layer, component and tensor and says what to do.
// A dtype or device difference is not an error: the matrix is converted on the way back (through
// float32, or through host memory) and a warning goes to WeightCacheOptions::warn.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.hpp"
#include "lathe/error.hpp"
#include "weights/editable.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

enum class WeightCacheErrorKind {
  EmptyCache,               // no layer cached (or no component asked for)
  ComponentMissingInModel,  // build: a layer has no matrix for a requested component
  LayerAccess,              // build: the model's layer could not be read (component_matrices threw)
  OutOfMemory,              // build: over WeightCacheOptions::max_bytes, or the allocation failed
  EmptyLayer,               // a cached layer holds no component
  LayerCountMismatch,       // the cache and the model have different numbers of layers
  MissingLayer,             // a model layer (or a layer asked to restore) is not in the cache
  MissingComponent,         // a cached layer lacks a component the cache was built with
  MatrixCountMismatch,      // a component has a different number of matrices (e.g. MoE experts)
  ShapeMismatch,            // a cached matrix and the model's disagree in rows/cols (or byte size)
  CopyFailure,              // restore: the model's matrix is not writable, or cannot be converted
};

// "empty_cache", "component_missing_in_model", ... : stable names for logs and tests.
std::string_view weight_cache_error_kind_name(WeightCacheErrorKind kind) noexcept;

class WeightCacheError : public Error {
 public:
  // ErrorCode: OutOfMemory for kind OutOfMemory, Internal for LayerAccess (the model's own tables
  // disagree), InvalidArgument otherwise (the cache does not fit the model it is used with).
  WeightCacheError(WeightCacheErrorKind kind, const std::string& message);
  WeightCacheErrorKind kind() const noexcept { return kind_; }

 private:
  WeightCacheErrorKind kind_;
};

// The device the weights live on: host memory for the CPU backend.
inline constexpr std::string_view kWeightCacheHostDevice = "cpu";

struct CachedMatrix {
  std::string tensor;  // the tensor's name in the model file
  DType type = DType::F32;
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  std::string device = std::string(kWeightCacheHostDevice);
  std::vector<uint8_t> bytes;  // rows * row_bytes, the original bytes in `type`
};

struct CachedLayer {
  uint32_t layer = 0;
  std::map<EditComponent, std::vector<CachedMatrix>> components;
};

struct WeightCacheOptions {
  uint64_t max_bytes = 0;  // 0 = no limit; above it -> OutOfMemory error (also what a real bad_alloc becomes)
  std::function<void(std::string_view)> warn;  // dtype/device conversions during restore
};

class WeightCache {
 public:
  // Copies every layer's matrices of `components` (layers 0..hp.n_layer-1). Throws
  // WeightCacheError: EmptyCache (no component, no layer), LayerAccess, ComponentMissingInModel,
  // OutOfMemory.
  static WeightCache build(const ModelWeights& w, std::span<const EditComponent> components,
                           const WeightCacheOptions& options = {});

  // Validates the cache against the model, then copies the originals back into the writable
  // views (make_editable must have run: else CopyFailure naming layer/component/matrix and the fix).
  // `layers`: only these layers (trials restore just what they dirtied); empty = all.
  void restore(ModelWeights& w, std::span<const uint32_t> layers = {}) const;
  // Throws the first inconsistency between the cache and the model as a WeightCacheError.
  void validate(const ModelWeights& w) const;

  uint64_t bytes() const;     // cached bytes
  uint64_t n_params() const;  // cached elements
  size_t n_matrices() const;
  // "weight cache: 12.4 MB, 6.2 M parameters (4.6% of the model), 60 matrices"
  std::string summary(const ModelWeights& w) const;

  const std::vector<EditComponent>& components() const noexcept { return components_; }
  std::vector<CachedLayer>& layers() { return layers_; }  // tests break the cache on purpose
  const std::vector<CachedLayer>& layers() const { return layers_; }

 private:
  std::vector<EditComponent> components_;
  std::vector<CachedLayer> layers_;
  std::function<void(std::string_view)> warn_;
};

}  // namespace lathe
