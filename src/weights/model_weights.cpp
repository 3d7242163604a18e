#include "weights/model_weights.hpp"

#include <charconv>
#include <cmath>
#include <fmt/format.h>
#include <functional>
#include <list>
#include <map>

#include "arch/tensor_names.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "io/model_dir.hpp"
#include "lathe/error.hpp"

namespace lathe {
namespace {

// One tensor as the loader sees it, whichever file format holds it. Shapes are in row-major
// (Hugging Face) order: {rows, cols} for matrices, {n} for vectors.
struct RawTensor {
  std::string name;  // as stored in the file
  DType type = DType::F32;
  std::vector<uint64_t> shape;
  std::span<const uint8_t> data;
};

// Looks tensors up by their canonical (GGUF) name in either format.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::optional<RawTensor> find(std::string_view canonical_name) const = 0;
  virtual void for_each(const std::function<void(const RawTensor&)>& visit) const = 0;
  virtual std::string display_name() const = 0;
  virtual std::string format() const = 0;
  // A canonical name as this source's files spell it (what a message about it names).
  virtual std::string stored_name(std::string_view canonical_name) const { return std::string(canonical_name); }
};

class GgufSource : public TensorSource {
 public:
  explicit GgufSource(std::shared_ptr<const gguf::File> file) : owner_(std::move(file)), file_(*owner_) {}
  const gguf::File& file() const { return file_; }
  std::optional<RawTensor> find(std::string_view name) const override {
    const auto* info = file_.find_tensor(name);
    if (info == nullptr) return std::nullopt;
    return to_raw(*info);
  }
  void for_each(const std::function<void(const RawTensor&)>& visit) const override {
    for (const auto& info : file_.tensors()) visit(to_raw(info));
  }
  std::string display_name() const override { return file_.display_name(); }
  std::string format() const override { return "gguf"; }

 private:
  RawTensor to_raw(const gguf::TensorInfo& info) const {
    RawTensor t{info.name, info.type, {info.shape.rbegin(), info.shape.rend()}, file_.tensor_data(info)};
    return t;
  }
  std::shared_ptr<const gguf::File> owner_;
  const gguf::File& file_;
};

class ModelDirSource : public TensorSource {
 public:
  ModelDirSource(ModelDir dir, Arch arch) : dir_(std::move(dir)), arch_(arch) {}
  const ModelDir& dir() const { return dir_; }
  std::optional<RawTensor> find(std::string_view canonical_name) const override {
    const auto hf_name = canonical_to_hf_name(arch_, canonical_name);
    if (!hf_name) return std::nullopt;
    const auto ref = dir_.find_tensor(*hf_name);
    if (!ref) return std::nullopt;
    return RawTensor{*hf_name, ref->info->type, ref->info->shape, ref->data};
  }
  void for_each(const std::function<void(const RawTensor&)>& visit) const override {
    for (const auto& name : dir_.tensor_names()) {
      const auto ref = dir_.tensor(name);
      visit(RawTensor{name, ref.info->type, ref.info->shape, ref.data});
    }
  }
  std::string display_name() const override { return dir_.path().string(); }
  std::string format() const override { return "safetensors"; }
  std::string stored_name(std::string_view canonical_name) const override {
    const auto hf_name = canonical_to_hf_name(arch_, canonical_name);
    return hf_name ? *hf_name : std::string(canonical_name);
  }

 private:
  ModelDir dir_;
  Arch arch_;
};

std::string shape_text(const std::vector<uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

class Loader {
 public:
  Loader(const TensorSource& source, const HParams& hp) : source_(source), hp_(hp) {}

  std::optional<RawTensor> find(const std::string& name) const { return source_.find(name); }

  RawTensor require(const std::string& name) const {
    auto t = source_.find(name);
    if (!t) {
      throw FormatError(fmt::format("{}: tensor {} is missing; a {} model needs it (the file is incomplete or "
                                    "not a {} checkpoint; re-download or re-convert it)",
                                    source_.display_name(), source_.stored_name(name), arch_name(hp_.arch),
                                    arch_name(hp_.arch)));
    }
    return *t;
  }

  MatrixView matrix(const RawTensor& t, uint64_t rows, uint64_t cols) const {
    if (t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != cols) {
      throw FormatError(fmt::format("{}: tensor {} has shape {} but the model's hyper-parameters need [{}, {}] "
                                    "(rows, cols); the file and its configuration disagree",
                                    source_.display_name(), t.name, shape_text(t.shape), rows, cols));
    }
    if (!cpu::matmul_supports(t.type)) {
      throw UnsupportedError(fmt::format("{}: tensor {} is stored as {}, which lathe cannot multiply yet; "
                                         "re-quantize the model to one of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, "
                                         "Q8_0, Q2_K..Q6_K",
                                         source_.display_name(), t.name, dtype_name(t.type)));
    }
    const auto row_bytes = dtype_bytes(t.type, cols);
    if (!row_bytes || *row_bytes * rows != t.data.size()) {
      throw FormatError(fmt::format("{}: tensor {} ({}, shape {}) holds {} bytes, which is not a whole number of "
                                    "{}-element rows",
                                    source_.display_name(), t.name, dtype_name(t.type), shape_text(t.shape),
                                    t.data.size(), cols));
    }
    count_type(t.type, rows * cols);
    return MatrixView{t.type, t.data.data(), static_cast<int64_t>(rows), static_cast<int64_t>(cols),
                           static_cast<size_t>(*row_bytes), names_.emplace_back(t.name)};
  }

  MatrixView matrix(const std::string& name, uint64_t rows, uint64_t cols) const {
    return matrix(require(name), rows, cols);
  }

  // Each expert's [rows x cols] matrix of `stacked` (ffn_gate_exps, ffn_up_exps, ffn_down_exps)
  // of layer il: slices of the stacked [n_expert, rows, cols] tensor (GGUF), else one tensor per
  // expert (Hugging Face checkpoints).
  std::vector<MatrixView> experts(uint32_t il, std::string_view stacked, uint32_t n_expert, uint64_t rows,
                                  uint64_t cols) const {
    std::vector<MatrixView> views;
    views.reserve(n_expert);
    if (auto t = find(fmt::format("blk.{}.{}.weight", il, stacked))) {
      if (t->shape.size() != 3 || t->shape[0] != n_expert || t->shape[1] != rows || t->shape[2] != cols) {
        throw FormatError(fmt::format("{}: tensor {} has shape {} but the model's hyper-parameters need [{}, {}, {}] "
                                      "(experts, rows, cols); the file and its configuration disagree",
                                      source_.display_name(), t->name, shape_text(t->shape), n_expert, rows, cols));
      }
      // Each slice is one expert's [rows x cols] matrix; matrix() checks its type and byte size.
      const size_t expert_bytes = t->data.size() / n_expert;
      for (uint32_t e = 0; e < n_expert; ++e)
        views.push_back(matrix(RawTensor{stacked_expert_view_name(t->name, e), t->type, {rows, cols},
                                         t->data.subspan(e * expert_bytes, expert_bytes)},
                               rows, cols));
      return views;
    }
    for (uint32_t e = 0; e < n_expert; ++e) {
      const std::string name = expert_tensor_name(il, stacked, e);
      if (!find(name)) {
        throw FormatError(fmt::format("{}: expert {} of layer {} is missing: no tensor {} (nor the stacked {}); the "
                                      "checkpoint is incomplete: re-download or re-convert it",
                                      source_.display_name(), e, il, source_.stored_name(name),
                                      source_.stored_name(fmt::format("blk.{}.{}.weight", il, stacked))));
      }
      views.push_back(matrix(name, rows, cols));
    }
    return views;
  }

  std::vector<float> vector(const RawTensor& t, uint64_t n) const {
    if (t.shape.size() != 1 || t.shape[0] != n) {
      throw FormatError(fmt::format("{}: tensor {} has shape {} but the model's hyper-parameters need [{}]",
                                    source_.display_name(), t.name, shape_text(t.shape), n));
    }
    if (!can_dequantize(t.type)) {
      throw UnsupportedError(fmt::format("{}: tensor {} is stored as {}, which lathe cannot read",
                                         source_.display_name(), t.name, dtype_name(t.type)));
    }
    return dequantize(t.type, t.data, static_cast<int64_t>(n));
  }
  std::vector<float> vector(const std::string& name, uint64_t n) const { return vector(require(name), n); }
  std::vector<float> optional_vector(const std::string& name, uint64_t n) const {
    auto t = find(name);
    return t ? vector(*t, n) : std::vector<float>{};
  }

  std::string dominant_type() const {
    std::string best;
    uint64_t best_count = 0;
    for (const auto& [type, count] : type_counts_)
      if (count > best_count) best_count = count, best = std::string(dtype_name(type));
    return best;
  }

 private:
  void count_type(DType type, uint64_t n) const { type_counts_[type] += n; }
  const TensorSource& source_;
  const HParams& hp_;
  // MatrixView::name points into these (deque-like stability: std::vector<std::string> reallocates
  // but short strings move their storage, so use a list).
  mutable std::list<std::string> names_;
  mutable std::map<DType, uint64_t> type_counts_;

 public:
  std::list<std::string> take_names() { return std::move(names_); }
};

std::string layer_name(uint32_t layer, std::string_view suffix) { return fmt::format("blk.{}.{}", layer, suffix); }

// A mixture-of-experts MLP: the router, every expert, and qwen2moe's shared expert.
void load_experts(const Loader& loader, const HParams& hp, uint32_t il, LayerWeights& lw) {
  auto name = [&](std::string_view suffix) { return layer_name(il, suffix); };
  const uint64_t n_embd = hp.n_embd, ff = hp.n_ff_exp;
  lw.router = loader.matrix(name("ffn_gate_inp.weight"), hp.n_expert, n_embd);
  lw.exp_gate = loader.experts(il, "ffn_gate_exps", hp.n_expert, ff, n_embd);
  lw.exp_up = loader.experts(il, "ffn_up_exps", hp.n_expert, ff, n_embd);
  lw.exp_down = loader.experts(il, "ffn_down_exps", hp.n_expert, n_embd, ff);
  if (hp.n_ff_shexp > 0) {
    lw.shexp_gate = loader.matrix(name("ffn_gate_shexp.weight"), hp.n_ff_shexp, n_embd);
    lw.shexp_up = loader.matrix(name("ffn_up_shexp.weight"), hp.n_ff_shexp, n_embd);
    lw.shexp_down = loader.matrix(name("ffn_down_shexp.weight"), n_embd, hp.n_ff_shexp);
    // GGUF stores the shared expert's gate as a vector, Hugging Face as a [1, n_embd] matrix.
    auto gate = loader.require(name("ffn_gate_inp_shexp.weight"));
    if (gate.shape.size() == 2 && gate.shape[0] == 1) gate.shape = {gate.shape[1]};
    lw.shexp_gate_inp = loader.vector(gate, n_embd);
  }
}

LayerWeights load_layer(const Loader& loader, const HParams& hp, uint32_t il) {
  const uint64_t n_embd = hp.n_embd, head_dim = hp.head_dim;
  const uint64_t q_rows = hp.n_head * head_dim, kv_rows = hp.n_head_kv * head_dim;
  auto name = [&](std::string_view suffix) { return layer_name(il, suffix); };
  LayerWeights lw;
  lw.attn_norm = loader.vector(name("attn_norm.weight"), n_embd);
  lw.ffn_norm = loader.vector(name("ffn_norm.weight"), n_embd);
  if (auto qkv = loader.find(name("attn_qkv.weight"))) {
    lw.wqkv = loader.matrix(*qkv, q_rows + 2 * kv_rows, n_embd);
  } else {
    lw.wq = loader.matrix(name("attn_q.weight"), q_rows, n_embd);
    lw.wk = loader.matrix(name("attn_k.weight"), kv_rows, n_embd);
    lw.wv = loader.matrix(name("attn_v.weight"), kv_rows, n_embd);
  }
  lw.bq = loader.optional_vector(name("attn_q.bias"), q_rows);
  lw.bk = loader.optional_vector(name("attn_k.bias"), kv_rows);
  lw.bv = loader.optional_vector(name("attn_v.bias"), kv_rows);
  if (hp.arch == Arch::Qwen2 && (lw.bq.empty() || lw.bk.empty() || lw.bv.empty()))
    loader.require(name(lw.bq.empty() ? "attn_q.bias" : lw.bk.empty() ? "attn_k.bias" : "attn_v.bias"));
  if (hp.arch == Arch::Qwen2Moe && (lw.bq.empty() || lw.bk.empty() || lw.bv.empty()))
    loader.require(name(lw.bq.empty() ? "attn_q.bias" : lw.bk.empty() ? "attn_k.bias" : "attn_v.bias"));
  // Q/K norms: per head (qwen3, qwen3moe) or over the whole projection (olmoe).
  const bool whole_row_norms = hp.arch == Arch::Olmoe;
  lw.q_norm = loader.optional_vector(name("attn_q_norm.weight"), whole_row_norms ? q_rows : head_dim);
  lw.k_norm = loader.optional_vector(name("attn_k_norm.weight"), whole_row_norms ? kv_rows : head_dim);
  if ((hp.arch == Arch::Qwen3 || hp.arch == Arch::Qwen3Moe || hp.arch == Arch::Olmoe) &&
      (lw.q_norm.empty() || lw.k_norm.empty()))
    loader.require(name(lw.q_norm.empty() ? "attn_q_norm.weight" : "attn_k_norm.weight"));
  lw.wo = loader.matrix(name("attn_output.weight"), n_embd, q_rows);
  if (const auto bias = loader.find(name("attn_output.bias"))) {
    throw UnsupportedError(fmt::format("tensor {} (an attention output bias) is not supported by the {} architecture",
                                       bias->name, arch_name(hp.arch)));
  }
  if (hp.is_moe()) {
    load_experts(loader, hp, il, lw);
  } else if (auto gate = loader.find(name("ffn_gate.weight"))) {
    lw.w_gate = loader.matrix(*gate, hp.n_ff, n_embd);
    lw.w_up = loader.matrix(name("ffn_up.weight"), hp.n_ff, n_embd);
  } else if (hp.arch == Arch::Phi3) {
    lw.w_gate_up = loader.matrix(name("ffn_up.weight"), 2ull * hp.n_ff, n_embd);
  } else {
    loader.require(name("ffn_gate.weight"));
  }
  if (!hp.is_moe()) lw.w_down = loader.matrix(name("ffn_down.weight"), n_embd, hp.n_ff);
  return lw;
}

RopeTable make_rope(const HParams& hp, const Loader& loader, const TensorSource& source) {
  // GGUF Llama checkpoints had their Q/K rows permuted by the converter so that RoPE rotates
  // adjacent pairs; every other combination keeps Hugging Face's half-split (NeoX) layout.
  const bool adjacent_pairs = hp.arch == Arch::Llama && source.format() == "gguf";
  const auto order = adjacent_pairs ? RopeOrder::Normal : RopeOrder::NeoX;
  const auto rope_dim = static_cast<int32_t>(hp.rope_dim);
  std::vector<float> factors;
  float position_scale = 1.0f;
  if (auto freqs = loader.find("rope_freqs.weight")) {
    factors = loader.vector(*freqs, hp.rope_dim / 2);
  } else if (hp.rope_scaling) {
    const auto& rs = *hp.rope_scaling;
    if (rs.type == "llama3") {
      if (rs.original_context == 0) {
        throw FormatError(fmt::format("{}: llama3 rope scaling without original_max_position_embeddings; "
                                      "add it to rope_scaling in config.json",
                                      source.display_name()));
      }
      factors = llama3_freq_factors(rope_dim, hp.rope_freq_base, rs.factor, rs.low_freq_factor, rs.high_freq_factor,
                                    rs.original_context);
    } else if (rs.type == "linear") {
      position_scale = 1.0f / rs.factor;
    } else {
      throw UnsupportedError(fmt::format("{}: rope scaling type '{}' is not supported (supported: llama3, linear)",
                                         source.display_name(), rs.type));
    }
  }
  return make_rope_table(order, rope_dim, hp.rope_freq_base, factors, position_scale);
}

void check_finite(const TensorSource& source) {
  std::vector<float> row;
  source.for_each([&](const RawTensor& t) {
    if (!can_dequantize(t.type)) return;
    const uint64_t cols = t.shape.empty() ? 1 : t.shape.back();
    const auto row_bytes = dtype_bytes(t.type, cols);
    if (!row_bytes || *row_bytes == 0) return;
    row.resize(cols);
    for (uint64_t offset = 0; offset + *row_bytes <= t.data.size(); offset += *row_bytes) {
      dequantize_row(t.type, t.data.data() + offset, row.data(), static_cast<int64_t>(cols));
      for (uint64_t i = 0; i < cols; ++i) {
        if (!std::isfinite(row[i])) {
          throw FormatError(fmt::format("{}: tensor {} holds a non-finite value ({}) at element {}; the weights are "
                                        "corrupted: re-download or re-convert the model",
                                        source.display_name(), t.name, row[i], (offset / *row_bytes) * cols + i));
        }
      }
    }
  });
}

ModelWeights build(std::shared_ptr<TensorSource> source, HParams hp, const WeightLoadOptions& options) {
  if (options.check_tensors) check_finite(*source);
  Loader loader(*source, hp);
  ModelWeights w;
  w.hp = hp;
  w.source = source->display_name();
  w.format = source->format();
  w.token_embd = loader.matrix("token_embd.weight", hp.n_vocab, hp.n_embd);
  w.output_norm = loader.vector("output_norm.weight", hp.n_embd);
  if (auto output = loader.find("output.weight")) {
    w.output = loader.matrix(*output, hp.n_vocab, hp.n_embd);
  } else {
    w.output = w.token_embd;  // tied embeddings
  }
  // No reserve(n_layer): the block count is the file's word, and a corrupt one (billions) must end
  // at the first layer whose tensors are missing, not in an allocation of that many layers.
  for (uint32_t il = 0; il < hp.n_layer; ++il) w.layers.push_back(load_layer(loader, hp, il));
  w.rope = make_rope(hp, loader, *source);
  source->for_each([&](const RawTensor& t) {
    w.n_params += t.data.empty() ? 0 : [&] {
      uint64_t n = 1;
      for (auto d : t.shape) n *= d;
      return n;
    }();
    w.weight_bytes += t.data.size();
  });
  w.weight_type = loader.dominant_type();
  auto names = std::make_shared<std::list<std::string>>(loader.take_names());
  struct Storage {
    std::shared_ptr<TensorSource> source;
    std::shared_ptr<std::list<std::string>> names;
  };
  w.storage = std::make_shared<Storage>(Storage{std::move(source), std::move(names)});
  return w;
}

}  // namespace

std::string stacked_expert_view_name(std::string_view tensor, uint32_t expert) {
  return fmt::format("{} (expert {})", tensor, expert);
}

std::optional<std::pair<std::string_view, uint32_t>> stacked_expert_of(std::string_view view_name) {
  constexpr std::string_view kMark = " (expert ";
  const auto at = view_name.rfind(kMark);
  if (at == std::string_view::npos || !view_name.ends_with(')')) return std::nullopt;
  const std::string_view digits = view_name.substr(at + kMark.size(), view_name.size() - 1 - at - kMark.size());
  uint32_t expert = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), expert);
  if (digits.empty() || ec != std::errc{} || ptr != digits.data() + digits.size()) return std::nullopt;
  return std::pair{view_name.substr(0, at), expert};
}

ModelWeights load_model_weights(const std::filesystem::path& path, const WeightLoadOptions& options) {
  if (std::filesystem::is_directory(path)) {
    auto dir = ModelDir::open(path);
    const HParams hp = hparams_from_hf_config(dir.config(), dir.config_path().string());
    return build(std::make_shared<ModelDirSource>(std::move(dir), hp.arch), hp, options);
  }
  return load_model_weights(std::make_shared<const gguf::File>(gguf::File::open(path)), options);
}

ModelWeights load_model_weights(std::shared_ptr<const gguf::File> file, const WeightLoadOptions& options) {
  const HParams hp = hparams_from_gguf(*file);
  return build(std::make_shared<GgufSource>(std::move(file)), hp, options);
}

}  // namespace lathe
