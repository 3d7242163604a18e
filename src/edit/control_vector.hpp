// Control vectors in llama.cpp's GGUF format, and applying them as residual-stream hooks.
//
// The format (llama.cpp common/common.cpp common_control_vector_load_one, src/llama-adapter.cpp,
// tools/cvector-generator):
//  * general.architecture = "controlvector"; controlvector.model_hint (the model's architecture)
//    and controlvector.layer_count (the number of direction tensors) are informative only.
//  * one F32 1-D tensor "direction.N" of n_embd floats per steered layer, N >= 1; llama.cpp
//    rejects a file with direction.0 (the embeddings / block 0's input cannot be steered).
//  * llama.cpp copies direction.N into its per-layer tensor il = N and build_cvec adds it to the
//    block's output "l_out" of block il (0-based), right after the MLP's residual add, for every
//    token (prompt included). That is lathe's blocks.{N}.resid_post. So usable N are 1..n_layer-1.
//  * several files are summed, each direction multiplied by its file's scale
//    (--control-vector-scaled FILE SCALE), and --control-vector-layer-range A B keeps N in [A, B]
//    (default 1..n_layer).
// Differences from llama.cpp, on purpose: lathe checks general.architecture (llama.cpp reads no
// metadata), and a direction.N with N >= n_layer is an error (llama.cpp ignores it silently).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lathe/hooks.hpp"

namespace lathe::edit {

inline constexpr std::string_view kControlVectorArchitecture = "controlvector";

struct ControlVector {
  uint32_t n_embd = 0;
  std::string model_hint;                                 // e.g. "llama"; may be empty
  std::map<uint32_t, std::vector<float>> directions;      // key = layer index as in the file (N >= 1)
};

// NotFoundError for a missing file; FormatError naming the file and the key or tensor (with its
// byte offset) for a file that is not a control vector: another architecture, no direction
// tensors, a name other than direction.N, direction.0, a non-F32 or non-1-D tensor, sizes that
// differ between tensors, non-finite values.
ControlVector read_control_vector(const std::filesystem::path& path);

// Writes `cv` atomically (an existing file is replaced only by a complete new one), directions in
// layer order, with controlvector.layer_count = the number of directions as llama.cpp's
// cvector-generator writes it. InvalidArgumentError for n_embd = 0, no directions, layer 0, or a
// direction whose length is not n_embd.
void write_control_vector(const std::filesystem::path& path, const ControlVector& cv);

struct ControlVectorSpec {
  std::filesystem::path path;
  float scale = 1.0f;
};

// "FILE" or "FILE:SCALE". A path may contain ':'; only a trailing ":<number>" (a finite decimal
// number such as 0.5, -2, +1e-1) is taken as the scale. InvalidArgumentError for an empty spec, an
// empty path before the scale, or a non-finite scale.
ControlVectorSpec parse_control_vector_spec(std::string_view spec);

// "A-B" (inclusive, A <= B) or "A" (= "A-A"); `flag` names the option in InvalidArgumentError.
std::pair<uint32_t, uint32_t> parse_layer_range(std::string_view text, std::string_view flag);

// Reads every spec, sums the scaled directions per layer and adds each sum at
// blocks.{N}.resid_post, keeping only N in layer_range (default [1, n_layer - 1]).
// Errors (naming the file): read_control_vector's; InvalidArgumentError when a file's n_embd
// differs from the model's (both named), a direction is for a layer the model does not have, or
// the range has A > B.
void add_control_vectors(ResidualHooks& hooks, const std::vector<ControlVectorSpec>& specs, uint32_t n_layer,
                         uint32_t n_embd, std::optional<std::pair<uint32_t, uint32_t>> layer_range);

}  // namespace lathe::edit
