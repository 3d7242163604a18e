#include "weights/editable.hpp"

#include <cstring>
#include <fmt/format.h>
#include <new>

#include "lathe/error.hpp"

namespace lathe {

std::string_view component_name(EditComponent component) noexcept {
  switch (component) {
    case EditComponent::AttnOutput: return "attn_output";
    case EditComponent::MlpDown: return "mlp_down";
  }
  return "?";
}

EditComponent parse_component(std::string_view name) {
  if (name == "attn_output" || name == "attn.o_proj" || name == "o_proj") return EditComponent::AttnOutput;
  if (name == "mlp_down" || name == "mlp.down_proj" || name == "down_proj") return EditComponent::MlpDown;
  throw InvalidArgumentError(fmt::format("unknown component '{}': use attn_output (attn.o_proj) or mlp_down "
                                         "(mlp.down_proj)",
                                         name));
}

namespace {
template <class Weights>
auto matrices_of(Weights& weights, uint32_t layer, EditComponent component) {
  using View = std::conditional_t<std::is_const_v<Weights>, const MatrixView, MatrixView>;
  if (layer >= weights.layers.size()) {
    throw NotFoundError(fmt::format("{}: layer {} does not exist (the model has layers 0..{})", weights.source, layer,
                                    weights.layers.size() == 0 ? 0 : weights.layers.size() - 1));
  }
  auto& lw = weights.layers[layer];
  std::vector<View*> views;
  if (component == EditComponent::AttnOutput) {
    views.push_back(&lw.wo);
  } else if (lw.moe()) {
    // Every expert's down projection writes into the residual stream, and so does the shared one.
    for (auto& down : lw.exp_down) views.push_back(&down);
    if (lw.shexp_down.data != nullptr) views.push_back(&lw.shexp_down);
  } else {
    views.push_back(&lw.w_down);
  }
  return views;
}
}  // namespace

std::vector<MatrixView*> component_matrices(ModelWeights& weights, uint32_t layer, EditComponent component) {
  return matrices_of(weights, layer, component);
}

std::vector<const MatrixView*> component_matrices(const ModelWeights& weights, uint32_t layer,
                                                       EditComponent component) {
  return matrices_of(weights, layer, component);
}

bool is_editable(const ModelWeights& weights, const MatrixView& view) noexcept {
  for (const auto& owned : weights.owned_matrices)
    if (view.data == owned.bytes.get()) return true;
  return false;
}

void make_writable(ModelWeights& weights, MatrixView& view) {
  if (view.data == nullptr || is_editable(weights, view)) return;
  const size_t size = static_cast<size_t>(view.rows) * view.row_bytes;
  ModelWeights::OwnedMatrix owned;
  try {
    owned.bytes.reset(new uint8_t[size]);
  } catch (const std::bad_alloc&) {
    throw OutOfMemoryError(fmt::format("{}: cannot allocate {:.1f} MiB for a writable copy of {}", weights.source,
                                       size / 1048576.0, view.name));
  }
  owned.size = size;
  std::memcpy(owned.bytes.get(), view.data, size);
  view.data = owned.bytes.get();
  weights.owned_matrices.push_back(std::move(owned));
}

void make_editable(ModelWeights& weights, std::span<const EditComponent> components) {
  for (uint32_t layer = 0; layer < weights.layers.size(); ++layer)
    for (EditComponent component : components)
      for (MatrixView* view : component_matrices(weights, layer, component)) make_writable(weights, *view);
}

std::span<uint8_t> writable_bytes(ModelWeights& weights, const MatrixView& view) {
  for (auto& owned : weights.owned_matrices)
    if (view.data == owned.bytes.get()) return {owned.bytes.get(), owned.size};
  throw InvalidArgumentError(fmt::format("{}: tensor {} is read-only (memory-mapped); make it editable first "
                                         "(make_editable) before writing to it",
                                         weights.source, view.name));
}

}  // namespace lathe
