#include "edit/control_vector.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>

#include "io/file_spec.hpp"
#include "io/gguf.hpp"
#include "lathe/error.hpp"

namespace lathe::edit {
namespace {

constexpr std::string_view kDirectionPrefix = "direction.";
const std::string kArchitectureKey = "general.architecture";
const std::string kModelHintKey = std::string(kControlVectorArchitecture) + ".model_hint";
const std::string kLayerCountKey = std::string(kControlVectorArchitecture) + ".layer_count";

// The N of "direction.N" (decimal digits only), or nullopt.
std::optional<uint32_t> direction_layer(std::string_view name) {
  if (!name.starts_with(kDirectionPrefix)) return std::nullopt;
  const std::string_view digits = name.substr(kDirectionPrefix.size());
  if (digits.empty()) return std::nullopt;
  uint32_t layer = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), layer);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return layer;
}

void check_architecture(const gguf::File& file) {
  const std::string& name = file.display_name();
  const gguf::Value* arch = file.find(kArchitectureKey);
  const char* remedy = "give a control vector GGUF (general.architecture = \"controlvector\"), such as one written by "
                       "`lathe cvector` or llama.cpp's cvector-generator";
  if (arch == nullptr) throw FormatError(name, kArchitectureKey, 0, "the key is missing", remedy);
  if (arch->type != gguf::ValueType::STRING)
    throw FormatError(name, kArchitectureKey, 0, fmt::format("a {}, not a string", gguf::value_type_name(arch->type)),
                      remedy);
  const std::string& value = arch->as_string(kArchitectureKey);
  if (value != kControlVectorArchitecture)
    throw FormatError(name, kArchitectureKey, 0, fmt::format("\"{}\" is not \"controlvector\"", value), remedy);
}

std::string read_model_hint(const gguf::File& file) {
  const gguf::Value* hint = file.find(kModelHintKey);
  if (hint == nullptr) return {};
  if (hint->type != gguf::ValueType::STRING)
    throw FormatError(file.display_name(), kModelHintKey, 0,
                      fmt::format("a {}, not a string", gguf::value_type_name(hint->type)),
                      "write the model's architecture name as a string, or leave the key out");
  return hint->as_string(kModelHintKey);
}

// One direction tensor's values, after checking name, type, shape, size and finiteness.
std::vector<float> read_direction(const gguf::File& file, const gguf::TensorInfo& info, uint32_t& n_embd) {
  const std::string& name = file.display_name();
  const uint64_t at = info.file_offset;
  if (info.type != DType::F32)
    throw FormatError(name, info.name, at, fmt::format("a {} tensor, not F32", dtype_name(info.type)),
                      "store control vector directions as F32, as llama.cpp requires");
  // ggml counts trailing 1s as absent dimensions, so [n_embd, 1] is 1-D as well.
  for (size_t d = 1; d < info.shape.size(); ++d)
    if (info.shape[d] != 1)
      throw FormatError(name, info.name, at, fmt::format("shape [{}] is not 1-D", fmt::join(info.shape, ", ")),
                        "store each direction as a 1-D tensor of n_embd floats");
  const uint64_t n = info.shape.empty() ? 0 : info.shape[0];
  if (n == 0 || n > UINT32_MAX)
    throw FormatError(name, info.name, at, fmt::format("{} elements is not a usable width", n),
                      "store n_embd floats per direction");
  if (n_embd == 0) n_embd = static_cast<uint32_t>(n);
  if (n != n_embd)
    throw FormatError(name, info.name, at,
                      fmt::format("{} elements, but the directions before it have {}", n, n_embd),
                      "every direction of a file must have the model's n_embd elements");
  const std::span<const uint8_t> bytes = file.tensor_data(info);
  if (bytes.size() != n * sizeof(float))
    throw FormatError(name, info.name, at, "the tensor data lies outside the file", "the file is truncated; rewrite it");
  std::vector<float> values(n);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw FormatError(name, info.name, at + i * sizeof(float), fmt::format("element {} is not finite", i),
                        "regenerate the control vector");
  return values;
}

}  // namespace

ControlVector read_control_vector(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path))
    throw NotFoundError(fmt::format("{}: no such control vector file; check the path", path.string()));
  const gguf::File file = gguf::File::open(path);
  check_architecture(file);
  ControlVector cv;
  cv.model_hint = read_model_hint(file);
  for (const gguf::TensorInfo& info : file.tensors()) {
    const auto layer = direction_layer(info.name);
    if (!layer)
      throw FormatError(file.display_name(), info.name, info.file_offset,
                        "not a control vector tensor name (direction.N with N a layer number)",
                        "name each direction direction.N, N >= 1 being the block it is added after");
    if (*layer == 0)
      throw FormatError(file.display_name(), info.name, info.file_offset,
                        "layer 0 cannot be steered: direction.N is added to the output of block N, N >= 1, and "
                        "llama.cpp rejects direction.0",
                        "remove the tensor or renumber the directions from 1");
    cv.directions.emplace(*layer, read_direction(file, info, cv.n_embd));
  }
  if (cv.directions.empty())
    throw FormatError(file.display_name(), "tensors", file.data_offset(), "the file holds no direction tensors",
                      "give a control vector with at least one direction.N tensor");
  return cv;
}

void write_control_vector(const std::filesystem::path& path, const ControlVector& cv) {
  const std::string name = path.string();
  if (cv.n_embd == 0) throw InvalidArgumentError(fmt::format("{}: control vector n_embd is 0", name));
  if (cv.directions.empty())
    throw InvalidArgumentError(fmt::format("{}: the control vector has no directions to write", name));
  gguf::Writer writer;
  writer.set(kArchitectureKey, gguf::Value::str(std::string(kControlVectorArchitecture)));
  writer.set(kModelHintKey, gguf::Value::str(cv.model_hint));
  writer.set(kLayerCountKey, gguf::Value::i32(static_cast<int32_t>(cv.directions.size())));
  for (const auto& [layer, direction] : cv.directions) {
    if (layer == 0)
      throw InvalidArgumentError(fmt::format("{}: direction.0 cannot be written; llama.cpp's format starts at layer 1 "
                                             "(the output of block 1)",
                                             name));
    if (direction.size() != cv.n_embd)
      throw InvalidArgumentError(fmt::format("{}: direction.{} has {} elements, not n_embd = {}", name, layer,
                                             direction.size(), cv.n_embd));
    const auto bytes = std::as_bytes(std::span(direction));
    writer.add_tensor(fmt::format("{}{}", kDirectionPrefix, layer), DType::F32, {cv.n_embd},
                      {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  }
  writer.write(path);
}

ControlVectorSpec parse_control_vector_spec(std::string_view spec) {
  auto parsed = parse_file_with_scale(spec, "--control-vector");
  return {std::move(parsed.path), parsed.scale};
}

std::pair<uint32_t, uint32_t> parse_layer_range(std::string_view text, std::string_view flag) {
  auto bad = [&]() {
    return InvalidArgumentError(fmt::format("{} '{}' is not a layer range; give A-B (inclusive, A <= B) or A", flag, text));
  };
  auto number = [&](std::string_view digits) {
    uint32_t value = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) throw bad();
    return value;
  };
  const size_t dash = text.find('-');
  const uint32_t first = number(text.substr(0, dash));
  const uint32_t last = dash == std::string_view::npos ? first : number(text.substr(dash + 1));
  if (first > last) throw bad();
  return {first, last};
}

void add_control_vectors(ResidualHooks& hooks, const std::vector<ControlVectorSpec>& specs, uint32_t n_layer,
                         uint32_t n_embd, std::optional<std::pair<uint32_t, uint32_t>> layer_range) {
  if (specs.empty()) return;
  // llama.cpp's default range covers every layer a direction can exist for.
  const auto [first, last] = layer_range.value_or(std::pair<uint32_t, uint32_t>{1, n_layer > 0 ? n_layer - 1 : 0});
  if (first > last)
    throw InvalidArgumentError(fmt::format("control vector layer range {}-{} is empty; give A-B with A <= B", first, last));
  std::map<uint32_t, std::vector<float>> summed;
  for (const ControlVectorSpec& spec : specs) {
    const ControlVector cv = read_control_vector(spec.path);
    if (cv.n_embd != n_embd)
      throw InvalidArgumentError(fmt::format("{}: the control vector has n_embd = {} but the model has n_embd = {}; "
                                             "use a control vector made for this model (model_hint: {})",
                                             spec.path.string(), cv.n_embd, n_embd,
                                             cv.model_hint.empty() ? "none" : cv.model_hint));
    for (const auto& [layer, direction] : cv.directions) {
      if (layer >= n_layer)
        throw InvalidArgumentError(fmt::format("{}: direction.{} is for the output of block {}, but the model has {} "
                                               "blocks (0..{}); use a control vector made for this model",
                                               spec.path.string(), layer, layer, n_layer, n_layer - 1));
      if (layer < first || layer > last) continue;
      auto& sum = summed[layer];
      sum.resize(n_embd, 0.0f);
      for (size_t i = 0; i < n_embd; ++i) sum[i] += spec.scale * direction[i];
    }
  }
  for (auto& [layer, sum] : summed) hooks.add({HookPoint::ResidPost, layer}, std::move(sum));
}

}  // namespace lathe::edit
