#include "lathe/convert.hpp"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

#include "arch/hparams.hpp"
#include "arch/tensor_names.hpp"
#include "core/quant.hpp"
#include "io/gguf.hpp"
#include "io/mapped_file.hpp"
#include "io/output_path.hpp"
#include "io/safetensors.hpp"
#include "lathe/error.hpp"
#include "tokenizer/export_hf.hpp"
#include "tokenizer/tokenizer.hpp"

namespace lathe {
namespace {

namespace fs = std::filesystem;

struct PlannedTensor {
  const gguf::TensorInfo* gguf;
  std::string hf_name;
  std::vector<uint64_t> hf_shape;  // outermost first
  uint64_t out_bytes;
};

DType parse_out_type(const std::string& name) {
  const auto t = dtype_from_name(name);
  if (!t || (*t != DType::F32 && *t != DType::F16 && *t != DType::BF16))
    throw InvalidArgumentError(fmt::format("convert: output type '{}' is not supported; use F32, F16 or BF16", name));
  return *t;
}

// Names convert writes besides the safetensors weights: replaced or removed in an earlier export.
bool is_convert_file(std::string_view name) {
  return name == "config.json" || name == "generation_config.json" || name == "tokenizer.json" ||
         name == "tokenizer_config.json";
}

void write_text(const fs::path& path, const std::string& text) {
  AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

// Dequantizes one GGUF tensor into the HF layout (row permutation undone) in the output type.
std::vector<uint8_t> export_tensor(const gguf::File& file, const PlannedTensor& t, const HParams& hp, DType out_type) {
  const auto& info = *t.gguf;
  if (!can_dequantize(info.type))
    throw UnsupportedError(fmt::format("{}: tensor '{}' has type {}, which lathe cannot dequantize yet",
                                       file.display_name(), info.name, dtype_name(info.type)));
  std::vector<float> values = dequantize(info.type, file.tensor_data(info), static_cast<int64_t>(info.n_elements()));
  if (const auto heads = qk_permute_heads(hp, info.name)) {
    const uint64_t cols = info.shape.size() > 1 ? info.shape[0] : 1;
    permute_qk_rows_hf_from_gguf(values, values.size() / cols, cols, *heads);
  }
  if (out_type == DType::F32) {
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
  }
  return quantize(out_type, values);
}

std::string shard_name(size_t index, size_t count) {
  return count == 1 ? std::string("model.safetensors")
                    : fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

std::optional<uint32_t> optional_id(const gguf::File& file, const char* key) {
  const auto* v = file.find(key);
  if (!v) return std::nullopt;
  return static_cast<uint32_t>(v->as_u64(file.display_name() + ": " + key));
}

}  // namespace

ConvertResult convert_gguf_to_hf(const std::string& gguf_path, const ConvertOptions& options) {
  const DType out_type = parse_out_type(options.out_type);
  if (options.out_dir.empty()) throw InvalidArgumentError("convert: no output directory given; pass -o DIR");
  if (options.max_shard_bytes == 0)
    throw InvalidArgumentError("convert: the largest shard size is 0; pass a positive --max-shard-size such as 5GB");
  check_output({.flag = "convert: -o",
                .path = options.out_dir,
                .kind = OutputRequest::Kind::Directory,
                .force = options.force,
                .inputs = {{"the input model", gguf_path}},
                .managed = is_convert_file});
  const auto file = gguf::File::open(gguf_path);
  const HParams hp = hparams_from_gguf(file);
  refuse_moe(hp, file.display_name(), "lathe convert");

  ConvertResult result;
  std::vector<PlannedTensor> plan;
  for (const auto& t : file.tensors()) {
    auto hf = canonical_to_hf_name(hp.arch, t.name);
    if (!hf) {
      result.skipped.push_back(t.name);
      continue;
    }
    std::vector<uint64_t> shape(t.shape.rbegin(), t.shape.rend());
    const uint64_t bytes = *dtype_bytes(out_type, t.n_elements());
    plan.push_back({&t, std::move(*hf), std::move(shape), bytes});
  }
  if (plan.empty())
    throw FormatError(fmt::format("{}: no tensor maps to a Hugging Face name; is this a {} model?", gguf_path,
                                  supported_arch_list()));

  // Plan shards greedily in file order (like transformers), then write one shard at a time so that
  // memory holds at most one shard of converted data.
  std::vector<std::vector<const PlannedTensor*>> shards(1);
  uint64_t in_shard = 0;
  for (const auto& t : plan) {
    if (!shards.back().empty() && in_shard + t.out_bytes > options.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.out_bytes;
  }

  StagedDirectory staged{fs::path(options.out_dir)};
  const fs::path& dir = staged.staging();
  nlohmann::json weight_map = nlohmann::json::object();
  size_t done = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = shard_name(s, shards.size());
    std::vector<std::vector<uint8_t>> buffers;
    buffers.reserve(shards[s].size());
    safetensors::Writer writer;
    writer.set_metadata("format", "pt");  // transformers refuses safetensors files without it
    writer.set_metadata("lathe.source", fs::path(gguf_path).filename().string());
    for (const auto* t : shards[s]) {
      buffers.push_back(export_tensor(file, *t, hp, out_type));
      writer.add_tensor(t->hf_name, out_type, t->hf_shape, buffers.back());
      weight_map[t->hf_name] = name;
      result.tensor_bytes += t->out_bytes;
      ++result.n_tensors;
      if (options.progress) options.progress(++done, plan.size(), t->gguf->name);
    }
    writer.write(dir / name);
    result.files_written.push_back(name);
  }
  if (shards.size() > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", result.tensor_bytes}}}, {"weight_map", weight_map}};
    write_text(dir / "model.safetensors.index.json", index.dump(2) + "\n");
    result.files_written.push_back("model.safetensors.index.json");
  }

  const auto bos = optional_id(file, "tokenizer.ggml.bos_token_id");
  const auto eos = optional_id(file, "tokenizer.ggml.eos_token_id");
  nlohmann::json config = hf_config_from_hparams(hp, bos, eos);
  config["torch_dtype"] = out_type == DType::F32 ? "float32" : out_type == DType::F16 ? "float16" : "bfloat16";
  write_text(dir / "config.json", config.dump(2) + "\n");
  nlohmann::json gen = nlohmann::json::object();
  if (bos) gen["bos_token_id"] = *bos;
  if (eos) gen["eos_token_id"] = *eos;
  write_text(dir / "generation_config.json", gen.dump(2) + "\n");
  result.files_written.insert(result.files_written.end(), {"config.json", "generation_config.json"});
  if (file.find("tokenizer.ggml.model")) {
    // The vocabulary as tokenizer.json, so the export tokenizes like the GGUF (tested against HF
    // tokenizers in tests/tokenizer/export_hf_test.cpp).
    const auto tok = tokenizer::Tokenizer::from_gguf(file);
    const auto options = tokenizer::hf_export_options_from_gguf(file);
    write_text(dir / "tokenizer.json", tokenizer::tokenizer_json_from_vocabulary(tok.vocab(), options).dump(2) + "\n");
    write_text(dir / "tokenizer_config.json",
               tokenizer::tokenizer_config_from_vocabulary(tok.vocab(), options).dump(2) + "\n");
    result.files_written.insert(result.files_written.end(), {"tokenizer.json", "tokenizer_config.json"});
  }
  staged.commit(is_convert_file);
  return result;
}

}  // namespace lathe
