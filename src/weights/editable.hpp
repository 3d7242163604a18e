// Writable matrices for model editing. Loaded weights stay memory-mapped read-only; before an
// edit, make_editable() copies the chosen components' matrices (per layer: attention output, MLP
// down projection) into heap buffers owned by the ModelWeights and repoints their views there.
// Everything else keeps reading the map, so editing costs memory only for what it touches.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "weights/model_weights.hpp"

namespace lathe {

// The matrices abliteration edits: those that write into the residual stream.
enum class EditComponent { AttnOutput, MlpDown };
inline constexpr EditComponent kAllEditComponents[] = {EditComponent::AttnOutput, EditComponent::MlpDown};

std::string_view component_name(EditComponent component) noexcept;  // "attn_output", "mlp_down"
// Parses "attn_output"/"attn.o_proj"/"o_proj" and "mlp_down"/"mlp.down_proj"/"down_proj"; throws
// InvalidArgumentError listing the accepted names.
EditComponent parse_component(std::string_view name);

// The views of one component in one layer: one matrix for dense models; for a mixture of experts'
// mlp_down, every expert's down projection in expert order, then the shared expert's (qwen2moe).
// Throws NotFoundError when the layer index is out of range.
std::vector<MatrixView*> component_matrices(ModelWeights& weights, uint32_t layer, EditComponent component);
std::vector<const MatrixView*> component_matrices(const ModelWeights& weights, uint32_t layer,
                                                       EditComponent component);

// Copies every layer's matrices of `components` into owned, writable buffers (no-op for those
// already writable). Throws OutOfMemoryError naming the tensor when the copy cannot be allocated.
void make_editable(ModelWeights& weights, std::span<const EditComponent> components);

// Copies one matrix into an owned, writable buffer and repoints `view` there (no-op when it is
// writable already). Throws OutOfMemoryError naming the tensor when the copy cannot be allocated.
void make_writable(ModelWeights& weights, MatrixView& view);

// Whether `view` points into a buffer made by make_editable() / make_writable().
bool is_editable(const ModelWeights& weights, const MatrixView& view) noexcept;

// The writable bytes behind `view` (rows * row_bytes). Throws InvalidArgumentError naming the
// tensor when it was not made editable first.
std::span<uint8_t> writable_bytes(ModelWeights& weights, const MatrixView& view);

}  // namespace lathe
