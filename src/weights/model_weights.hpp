// A model's weights placed for the CPU backend: matrices stay memory-mapped in their stored type
// (GGUF or safetensors), small vectors (norms, biases, rope factors) are converted to float32.
// One table per architecture says which tensors a layer has; a missing or misshapen tensor is a
// FormatError naming the file, tensor and both shapes.
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arch/hparams.hpp"
#include "io/gguf.hpp"
#include "backend/cpu/matmul.hpp"
#include "backend/cpu/ops.hpp"
#include "weights/layer_source.hpp"

namespace lathe {

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;
  // Separate Q/K/V (Llama, Qwen) or one fused QKV matrix (Phi-3: Q rows, then K, then V).
  MatrixView wq, wk, wv, wqkv;
  std::vector<float> bq, bk, bv;          // Qwen2 biases; empty when absent
  std::vector<float> q_norm, k_norm;      // Qwen3 per-head RMSNorm weights (head_dim); empty when absent
  MatrixView wo;
  // Separate gate/up or one fused matrix (Phi-3: gate rows, then up rows).
  MatrixView w_gate, w_up, w_gate_up;
  MatrixView w_down;
  // Mixture of experts (HParams::is_moe(); the dense w_gate/w_up/w_down are then absent): the
  // router [n_expert x n_embd] and every expert's gate/up [n_ff_exp x n_embd] and down
  // [n_embd x n_ff_exp], views into GGUF's stacked tensors or one tensor each (Hugging Face).
  MatrixView router;
  std::vector<MatrixView> exp_gate, exp_up, exp_down;
  // qwen2moe's shared expert (absent elsewhere) and its gate, a vector w: scaled by sigmoid(w . x).
  MatrixView shexp_gate, shexp_up, shexp_down;
  std::vector<float> shexp_gate_inp;

  bool fused_qkv() const noexcept { return wqkv.data != nullptr; }
  bool fused_gate_up() const noexcept { return w_gate_up.data != nullptr; }
  bool moe() const noexcept { return router.data != nullptr; }

  // f(view) for every matrix this layer has, in one fixed order (absent ones skipped): the one
  // list of a layer's matrices, used by device upload, requantization and export. The experts'
  // matrices are not in it: what uses it refuses mixtures of experts (refuse_moe) for now.
  template <class F>
  void for_each_matrix(F&& f) {
    for (MatrixView* m : {&wq, &wk, &wv, &wqkv, &wo, &w_gate, &w_up, &w_gate_up, &w_down})
      if (m->data != nullptr) f(*m);
  }
  template <class F>
  void for_each_matrix(F&& f) const {
    for (const MatrixView* m : {&wq, &wk, &wv, &wqkv, &wo, &w_gate, &w_up, &w_gate_up, &w_down})
      if (m->data != nullptr) f(*m);
  }
};

struct ModelWeights {
  HParams hp;
  std::string source;   // path for messages
  std::string format;   // "gguf" or "safetensors"
  MatrixView token_embd;  // [n_vocab rows x n_embd]
  MatrixView output;      // [n_vocab rows x n_embd]; the embedding matrix when tied
  std::vector<float> output_norm;
  std::vector<LayerWeights> layers;
  RopeTable rope;
  uint64_t n_params = 0;
  uint64_t weight_bytes = 0;
  std::string weight_type;  // most common matrix type

  // Keeps the mapped files alive (the views above point into them).
  std::shared_ptr<const void> storage;
  // Writable copies of edited matrices (weights/editable.hpp); their views point here instead.
  struct OwnedMatrix {
    std::unique_ptr<uint8_t[]> bytes;
    size_t size = 0;
  };
  std::vector<OwnedMatrix> owned_matrices;

  // Copies of these weights placed on GPUs (weights/cuda_weights.hpp), made by the first CUDA
  // session on a device and kept as long as the model: weights cross PCIe once.
  struct DeviceCopies {
    std::mutex mutex;
    std::map<int, std::shared_ptr<void>> by_device;
  };
  std::shared_ptr<DeviceCopies> device_copies = std::make_shared<DeviceCopies>();
};

struct WeightLoadOptions {
  bool check_tensors = false;  // scan every tensor for NaN/Inf (FormatError naming the first bad tensor)
};

// A view of one expert of a stacked expert tensor (GGUF's ffn_*_exps) is named
// "<tensor name> (expert <e>)": that tensor's name and e; nullopt for any other view's name.
std::optional<std::pair<std::string_view, uint32_t>> stacked_expert_of(std::string_view view_name);
std::string stacked_expert_view_name(std::string_view tensor, uint32_t expert);

// The CPU forward pass's weights seam (weights/layer_source.hpp).
using LayerSource = LayerSourceOf<LayerWeights>;
using ResidentLayers = ResidentLayersOf<LayerWeights>;

// A GGUF file or a Hugging Face model directory (see io/model_dir.hpp).
ModelWeights load_model_weights(const std::filesystem::path& path, const WeightLoadOptions& options = {});
// A GGUF file already open (the model's file is parsed once: Model::load reads its tokenizer and
// chat template from the same parse); the weights keep the file (and its mapping) alive.
ModelWeights load_model_weights(std::shared_ptr<const gguf::File> file, const WeightLoadOptions& options = {});

}  // namespace lathe
