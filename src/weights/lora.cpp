#include "weights/lora.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <type_traits>

#include "arch/tensor_names.hpp"
#include "backend/cpu/thread_pool.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"
#include "weights/editable.hpp"
#include "weights/requantize.hpp"

namespace lathe {
namespace {

constexpr std::string_view kSuffixA = ".lora_a", kSuffixB = ".lora_b";

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string metadata_string(const gguf::File& file, std::string_view key) {
  const auto* value = file.find(key);
  if (value == nullptr) return {};
  if (value->type != gguf::ValueType::STRING)
    throw FormatError(fmt::format("{}: metadata {} is a {}, expected a string", file.display_name(), key,
                                  gguf::value_type_name(value->type)));
  return value->as_string(fmt::format("{}: {}", file.display_name(), key));
}

// A tensor of any type lathe reads, as float32 [rows x cols] (ggml shape [cols, rows]).
std::vector<float> read_matrix(const gguf::File& file, const gguf::TensorInfo& info) {
  if (info.shape.size() != 2)
    throw FormatError(fmt::format("{}: LoRA tensor {} has {} dimensions, expected 2", file.display_name(), info.name,
                                  info.shape.size()));
  if (!can_dequantize(info.type))
    throw UnsupportedError(fmt::format("{}: LoRA tensor {} is stored as {}, which lathe cannot read; store the adapter "
                                       "as F32, F16, BF16 or Q8_0",
                                       file.display_name(), info.name, dtype_name(info.type)));
  auto values = dequantize(info.type, file.tensor_data(info), static_cast<int64_t>(info.n_elements()));
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw FormatError(fmt::format("{}: LoRA tensor {} has a non-finite value ({}) at element {}; the adapter is "
                                    "damaged",
                                    file.display_name(), info.name, values[i], i));
  return values;
}

// Every matrix of the model under its canonical (GGUF) name, whatever file it came from.
template <class Weights, class View = std::conditional_t<std::is_const_v<Weights>, const MatrixView, MatrixView>>
std::map<std::string, View*, std::less<>> matrices_by_canonical_name(Weights& w) {
  std::map<std::string, View*, std::less<>> views;
  views.emplace("token_embd.weight", &w.token_embd);
  views.emplace("output.weight", &w.output);
  for (size_t il = 0; il < w.layers.size(); ++il) {
    auto& lw = w.layers[il];
    const std::pair<View*, const char*> table[] = {
        {&lw.wq, "attn_q"},     {&lw.wk, "attn_k"},   {&lw.wv, "attn_v"},        {&lw.wqkv, "attn_qkv"},
        {&lw.wo, "attn_output"}, {&lw.w_gate, "ffn_gate"}, {&lw.w_up, "ffn_up"}, {&lw.w_gate_up, "ffn_up"},
        {&lw.w_down, "ffn_down"}};
    for (const auto& [view, suffix] : table)
      if (view->data != nullptr) views.emplace(fmt::format("blk.{}.{}.weight", il, suffix), view);
  }
  return views;
}

}  // namespace

LoraAdapter read_lora_adapter(const std::filesystem::path& path) { return read_lora_adapter(gguf::File::open(path)); }

LoraAdapter read_lora_adapter(const gguf::File& file) {
  LoraAdapter adapter;
  adapter.source = file.display_name();
  const auto general_type = metadata_string(file, "general.type");
  if (general_type != "adapter")
    throw FormatError(fmt::format("{}: general.type is \"{}\", expected \"adapter\": this is not a LoRA adapter (a "
                                  "model file goes to -m, an adapter to --lora)",
                                  adapter.source, general_type));
  const auto adapter_type = metadata_string(file, "adapter.type");
  if (adapter_type != "lora")
    throw FormatError(fmt::format("{}: adapter.type is \"{}\", expected \"lora\" (lathe applies LoRA adapters only)",
                                  adapter.source, adapter_type));
  adapter.architecture = metadata_string(file, "general.architecture");
  if (const auto* alpha = file.find("adapter.lora.alpha")) {
    const double value = alpha->as_f64(fmt::format("{}: adapter.lora.alpha", adapter.source));
    if (!std::isfinite(value))
      throw FormatError(fmt::format("{}: adapter.lora.alpha is {}, expected a finite number", adapter.source, value));
    adapter.alpha = static_cast<float>(value);
  }
  if (file.find("adapter.alora.invocation_tokens") != nullptr)
    throw UnsupportedError(fmt::format("{}: this is an activated LoRA (adapter.alora.invocation_tokens), which lathe "
                                       "does not apply",
                                       adapter.source));

  // Pair every lora_a with its lora_b by the adapted matrix's name.
  std::map<std::string, std::pair<const gguf::TensorInfo*, const gguf::TensorInfo*>> halves;
  for (const auto& info : file.tensors()) {
    if (ends_with(info.name, kSuffixA)) {
      halves[info.name.substr(0, info.name.size() - kSuffixA.size())].first = &info;
    } else if (ends_with(info.name, kSuffixB)) {
      halves[info.name.substr(0, info.name.size() - kSuffixB.size())].second = &info;
    } else if (ends_with(info.name, "_norm.weight")) {
      adapter.ignored.push_back(info.name);  // as llama.cpp: norm vectors of an adapter are skipped
    } else {
      throw FormatError(fmt::format("{}: tensor {} is neither a .lora_a nor a .lora_b tensor", adapter.source,
                                    info.name));
    }
  }
  for (const auto& [target, ab] : halves) {
    const auto [a, b] = ab;
    if (a == nullptr || b == nullptr)
      throw FormatError(fmt::format("{}: {}{} has no matching {}{}; the adapter is incomplete", adapter.source, target,
                                    a ? kSuffixA : kSuffixB, target, a ? kSuffixB : kSuffixA));
    LoraPair pair;
    pair.target = target;
    pair.a = read_matrix(file, *a);
    pair.b = read_matrix(file, *b);
    pair.n_in = static_cast<int64_t>(a->shape[0]);
    pair.rank = static_cast<int64_t>(a->shape[1]);
    pair.n_out = static_cast<int64_t>(b->shape[1]);
    if (pair.rank == 0 || pair.n_in == 0 || pair.n_out == 0)
      throw FormatError(fmt::format("{}: {} has an empty dimension ({}: [{}, {}], {}: [{}, {}])", adapter.source, target,
                                    a->name, a->shape[0], a->shape[1], b->name, b->shape[0], b->shape[1]));
    if (static_cast<int64_t>(b->shape[0]) != pair.rank)
      throw FormatError(fmt::format("{}: {} has rank {} but {} has {} columns; lora_a must have ggml shape [n_in, "
                                    "rank] and lora_b [rank, n_out] (adapters of llama.cpp's old finetune example "
                                    "are not supported)",
                                    adapter.source, a->name, pair.rank, b->name, b->shape[0]));
    adapter.pairs.push_back(std::move(pair));
  }
  return adapter;
}

void write_lora_adapter(const LoraAdapter& adapter, const std::filesystem::path& path, const std::string& name,
                        const std::vector<std::pair<std::string, std::string>>& metadata) {
  gguf::Writer writer;
  writer.set("general.architecture", gguf::Value::str(adapter.architecture));
  writer.set("general.type", gguf::Value::str("adapter"));
  writer.set("general.name", gguf::Value::str(name));
  writer.set("adapter.type", gguf::Value::str("lora"));
  writer.set("adapter.lora.alpha", gguf::Value::f32(adapter.alpha));
  for (const auto& [key, value] : metadata) writer.set(key, gguf::Value::str(value));
  auto bytes = [](const std::vector<float>& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float));
  };
  for (const auto& pair : adapter.pairs) {
    writer.add_tensor(pair.target + std::string(kSuffixA), DType::F32,
                      {static_cast<uint64_t>(pair.n_in), static_cast<uint64_t>(pair.rank)}, bytes(pair.a));
    writer.add_tensor(pair.target + std::string(kSuffixB), DType::F32,
                      {static_cast<uint64_t>(pair.rank), static_cast<uint64_t>(pair.n_out)}, bytes(pair.b));
  }
  writer.write(path);
}

namespace {

// Quantized under 8 bits per weight: a merge back into such a type would round the update away.
bool coarse(DType type) {
  const auto& info = dtype_info(type);
  return info.quantized && info.block_bytes * 8 < 8 * info.block_size;
}

// The coarse targets (already checked by merge_lora) to Q8_0, or F16 where a row is not whole
// Q8_0 blocks. The views are changed in place, so the caller's pointers stay valid.
LoraPromotion promote_coarse_targets(ModelWeights& weights, const std::vector<MatrixView*>& targets, int n_threads) {
  LoraPromotion promotion;
  std::set<const MatrixView*> chosen[2];  // to Q8_0, to F16
  for (const MatrixView* target : targets) {
    if (!coarse(target->type)) continue;
    const MatrixView& view = *target;
    if (promotion.from.empty()) promotion.from = std::string(dtype_name(view.type));
    const bool q8 = view.cols % static_cast<int64_t>(dtype_info(DType::Q8_0).block_size) == 0;
    if (chosen[q8 ? 0 : 1].insert(&view).second) {
      const DType to = q8 ? DType::Q8_0 : DType::F16;
      promotion.added_bytes += *dtype_bytes(to, static_cast<uint64_t>(view.cols)) * static_cast<uint64_t>(view.rows) -
                               static_cast<uint64_t>(view.row_bytes) * static_cast<uint64_t>(view.rows);
      ++promotion.matrices;
    }
  }
  const DType types[2] = {DType::Q8_0, DType::F16};
  for (int k = 0; k < 2; ++k) {
    if (chosen[k].empty()) continue;
    promotion.to = promotion.to.empty() ? std::string(dtype_name(types[k])) : promotion.to + "/" + std::string(dtype_name(types[k]));
    requantize_matrices(weights, types[k], n_threads, [&](const MatrixView& v) { return chosen[k].count(&v) > 0; });
  }
  return promotion;
}

}  // namespace

LoraMergeStats merge_lora(ModelWeights& weights, const LoraAdapter& adapter, float scale, int n_threads) {
  if (!std::isfinite(scale))
    throw InvalidArgumentError(fmt::format("{}: the LoRA scale {} is not a finite number", adapter.source, scale));
  if (!adapter.architecture.empty() && arch_from_name(adapter.architecture, adapter.source) != weights.hp.arch)
    throw InvalidArgumentError(fmt::format("{}: the adapter is for a {} model but {} is {}; use the adapter with the "
                                           "model it was trained on",
                                           adapter.source, adapter.architecture, weights.source,
                                           arch_name(weights.hp.arch)));
  auto views = matrices_by_canonical_name(weights);
  // Every check before the first write: a bad adapter leaves the weights as they were.
  std::vector<MatrixView*> targets;
  for (const auto& pair : adapter.pairs) {
    const auto it = views.find(pair.target);
    if (it == views.end())
      throw NotFoundError(fmt::format("{}: the adapter changes {}, which {} does not have (is the adapter for another "
                                      "model?)",
                                      adapter.source, pair.target, weights.source));
    MatrixView* view = it->second;
    if (view == &weights.token_embd)
      throw UnsupportedError(fmt::format("{}: a LoRA on the token embeddings ({}) is not supported by lathe",
                                         adapter.source, pair.target));
    if (view == &weights.output && weights.output.data == weights.token_embd.data)
      throw UnsupportedError(fmt::format("{}: the adapter changes output.weight, but {} ties its output matrix to the "
                                         "token embeddings, so merging it would change the embeddings too",
                                         adapter.source, weights.source));
    if (view->rows != pair.n_out || view->cols != pair.n_in)
      throw InvalidArgumentError(fmt::format("{}: the adapter's {} is {} x {} (out x in) but the model's {} is {} x {} "
                                             "(is the adapter for another model?)",
                                             adapter.source, pair.target, pair.n_out, pair.n_in, view->name, view->rows,
                                             view->cols));
    if (!can_quantize(view->type) && !coarse(view->type))
      throw UnsupportedError(fmt::format("{}: {} is stored as {}, which lathe cannot write back after merging the "
                                         "adapter; load with --requantize Q8_0 (or F16) to apply it",
                                         adapter.source, view->name, dtype_name(view->type)));
    targets.push_back(view);
  }

  LoraMergeStats stats;
  stats.promotion = promote_coarse_targets(weights, targets, n_threads);
  cpu::ThreadPool pool(n_threads);
  double err2 = 0, ref2 = 0;
  for (size_t p = 0; p < adapter.pairs.size(); ++p) {
    const LoraPair& pair = adapter.pairs[p];
    MatrixView& view = *targets[p];
    make_writable(weights, view);
    auto bytes = writable_bytes(weights, view);
    // B's rows are in llama.cpp's order; a Llama loaded from safetensors keeps Q/K in HF's.
    const std::vector<float>* b = &pair.b;
    std::vector<float> b_hf;
    if (const auto heads = qk_permute_heads(weights.hp, pair.target); heads && weights.format != "gguf") {
      b_hf = pair.b;
      permute_qk_rows_hf_from_gguf(b_hf, static_cast<uint64_t>(pair.n_out), static_cast<uint64_t>(pair.rank), *heads);
      b = &b_hf;
    }
    const float factor = adapter.factor(pair, scale);
    std::vector<double> err_of(static_cast<size_t>(pool.size()), 0.0), ref_of(err_of.size(), 0.0);
    pool.run([&](int thread, int n) {
      std::vector<float> row(static_cast<size_t>(view.cols)), check(row.size());
      for (int64_t r = thread; r < view.rows; r += n) {
        uint8_t* stored = bytes.data() + static_cast<size_t>(r) * view.row_bytes;
        dequantize_row(view.type, stored, row.data(), view.cols);
        for (int64_t k = 0; k < pair.rank; ++k) {
          const float coef = factor * (*b)[static_cast<size_t>(r * pair.rank + k)];
          const float* a_row = pair.a.data() + k * pair.n_in;
          for (int64_t c = 0; c < view.cols; ++c) row[c] += coef * a_row[c];
        }
        quantize_row(view.type, row.data(), stored, view.cols);
        if (view.type == DType::F32) continue;
        dequantize_row(view.type, stored, check.data(), view.cols);
        for (int64_t c = 0; c < view.cols; ++c) {
          const double e = double(check[c]) - row[c];
          err_of[thread] += e * e;
          ref_of[thread] += double(row[c]) * row[c];
        }
      }
    });
    for (size_t t = 0; t < err_of.size(); ++t) err2 += err_of[t], ref2 += ref_of[t];
    ++stats.matrices;
  }
  stats.requantization_rel_rms = ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0;
  return stats;
}

}  // namespace lathe
