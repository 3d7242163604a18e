// LoRA adapters in llama.cpp's GGUF format (what convert_lora_to_gguf.py writes and `llama-cli
// --lora` reads): metadata general.type = "adapter", adapter.type = "lora", adapter.lora.alpha,
// general.architecture; per adapted matrix W (canonical name N) two tensors N.lora_a, ggml shape
// [n_in, rank], and N.lora_b, [rank, n_out]. The adapted product is y = W x + s B (A x) with
// s = scale * alpha / rank (alpha 0: s = scale), as llama.cpp computes it.
//
// lathe merges an adapter into the weights at load (W += s B A, row by row in float32, then
// stored back in W's type), so every backend, the server and the editing tools run the adapted
// model at the base model's speed. For float32 weights that is the function llama.cpp computes;
// for 16-bit and quantized weights the merged matrix is rounded once more to its type (the
// relative size of that rounding is reported in LoraMergeStats).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "io/gguf.hpp"
#include "weights/model_weights.hpp"

namespace lathe {

struct LoraPair {
  std::string target;  // canonical name of the adapted matrix, e.g. "blk.3.attn_q.weight"
  int64_t rank = 0, n_in = 0, n_out = 0;
  std::vector<float> a;  // [rank x n_in], row-major: row k is A's k-th input projection
  std::vector<float> b;  // [n_out x rank], row-major
};

struct LoraAdapter {
  std::string source;        // the file, for messages
  std::string architecture;  // general.architecture ("llama", "qwen2", ...)
  float alpha = 0;           // adapter.lora.alpha; 0 when absent
  std::vector<LoraPair> pairs;
  std::vector<std::string> ignored;  // tensors llama.cpp also skips (per-layer norm vectors)

  // The factor s of W + s B A for one pair at the user's scale (llama.cpp's rule).
  float factor(const LoraPair& pair, float scale) const noexcept {
    return alpha != 0 ? scale * alpha / static_cast<float>(pair.rank) : scale;
  }
};

// Reads and checks an adapter file: FormatError naming the file and tensor for a file that is not
// a LoRA adapter (general.type, adapter.type), a lora_a without its lora_b (or the reverse),
// shapes that do not fit together, a rank of 0, an unexpected tensor name, or non-finite values;
// UnsupportedError for tensor types lathe cannot read. Tensors of any readable type are converted
// to float32.
LoraAdapter read_lora_adapter(const std::filesystem::path& path);
// The same for a GGUF file already parsed (its display name is the adapter's source).
LoraAdapter read_lora_adapter(const gguf::File& file);

// Writes `adapter` as a GGUF LoRA adapter (float32 tensors, general.name = `name`, plus string
// `metadata`) that llama.cpp loads with --lora; through AtomicFileWriter, so an existing file is
// only replaced by a whole one.
void write_lora_adapter(const LoraAdapter& adapter, const std::filesystem::path& path, const std::string& name,
                        const std::vector<std::pair<std::string, std::string>>& metadata = {});

// A trained adapter's update is mostly smaller than the rounding step of a type under 8 bits per
// weight, so merged back into Q4_0/Q4_1/Q4_K/... it is largely rounded away (measured on the
// default model: facts a LoRA taught, merged into its Q4_1 weights, kept 0 of 40 exact answers;
// merged into Q8_0 or F16, 30 of 40, as the unmerged adapter). merge_lora therefore converts such
// targets to Q8_0 (F16 where a row is not a whole number of Q8_0 blocks) first: more memory for
// those matrices, the adapter's function kept.
struct LoraPromotion {
  size_t matrices = 0;       // converted
  std::string from, to;      // e.g. "Q4_1" (the first one's type), "Q8_0"
  uint64_t added_bytes = 0;  // memory the converted copies take beyond the originals
};

struct LoraMergeStats {
  size_t matrices = 0;                // matrices changed
  double requantization_rel_rms = 0;  // ||Q(W') - W'|| / ||W'|| over them (0 when all are float32)
  LoraPromotion promotion;            // targets converted before the merge (above)
};

// W += factor * B A for every pair, on `n_threads` threads (0: one per physical core). Checks
// everything before changing any weight: the adapter's architecture against the model's
// (InvalidArgumentError), every target exists with the adapter's shape (NotFoundError /
// InvalidArgumentError naming tensor, both shapes and the likely cause), and its stored type can
// be written back, after the conversion of types under 8 bits (LoraPromotion), or else
// UnsupportedError advising --requantize; LoRA on the token embeddings, or on an output matrix
// tied to them, is refused (UnsupportedError). Matrices are made writable first (owned copies,
// weights/editable.hpp). For a Llama model loaded from a Hugging Face directory the adapter's Q/K
// output rows (in llama.cpp's permuted order) are put back in Hugging Face order.
LoraMergeStats merge_lora(ModelWeights& weights, const LoraAdapter& adapter, float scale, int n_threads = 0);

}  // namespace lathe
