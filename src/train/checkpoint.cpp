#include "train/checkpoint.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "io/safetensors.hpp"
#include "lathe/error.hpp"

namespace lathe::train {
namespace {

constexpr const char* kKey = "lathe.checkpoint";
constexpr int kVersion = 1;

std::span<const uint8_t> bytes_of(const std::vector<float>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(float)};
}

std::vector<float> read_floats(const safetensors::File& file, const std::string& name, uint64_t count) {
  const auto* info = file.find_tensor(name);
  if (!info) throw FormatError(file.display_name(), name, 0, "the tensor is missing", "the checkpoint is damaged; remove it and start again");
  if (info->type != DType::F32 || info->n_elements() != count)
    throw FormatError(file.display_name(), name, info->file_offset,
                      fmt::format("{} {} values where {} F32 values belong", info->n_elements(), dtype_name(info->type),
                                  count),
                      "the checkpoint does not belong to this run or is damaged");
  std::vector<float> out(count);
  std::memcpy(out.data(), file.tensor_data(*info).data(), count * sizeof(float));
  for (float x : out)
    if (!std::isfinite(x))
      throw FormatError(file.display_name(), name, info->file_offset, "a value is not finite",
                        "the run diverged before this checkpoint; start again with a lower learning rate");
  return out;
}

}  // namespace

void write_checkpoint(const std::filesystem::path& path, const Checkpoint& checkpoint) {
  const TrainState& s = checkpoint.state;
  safetensors::Writer writer;
  nlohmann::json pairs = nlohmann::json::array(), cycles = nlohmann::json::array();
  for (size_t p = 0; p < s.lora.pairs.size(); ++p) {
    const auto& pair = s.lora.pairs[p];
    pairs.push_back({{"layer", pair.layer}, {"target", pair.target}, {"in", pair.in}, {"out", pair.out}});
    writer.add_tensor(fmt::format("lora.{}.a", p), DType::F32,
                      {static_cast<uint64_t>(s.lora.rank), static_cast<uint64_t>(pair.in)}, bytes_of(pair.a));
    writer.add_tensor(fmt::format("lora.{}.b", p), DType::F32,
                      {static_cast<uint64_t>(pair.out), static_cast<uint64_t>(s.lora.rank)}, bytes_of(pair.b));
  }
  for (size_t i = 0; i < s.adam_m.size(); ++i) {
    writer.add_tensor(fmt::format("adam.m.{}", i), DType::F32, {s.adam_m[i].size()}, bytes_of(s.adam_m[i]));
    writer.add_tensor(fmt::format("adam.v.{}", i), DType::F32, {s.adam_v[i].size()}, bytes_of(s.adam_v[i]));
  }
  for (const auto& c : s.cycles) cycles.push_back({{"order", c.order}, {"at", c.at}, {"rng", c.rng}});
  const nlohmann::json meta = {{"version", kVersion}, {"step", s.step},   {"rank", s.lora.rank},
                               {"alpha", s.lora.alpha}, {"pairs", pairs}, {"cycles", cycles},
                               {"optimizer_tensors", s.adam_m.size()},    {"settings", checkpoint.settings}};
  writer.set_metadata(kKey, meta.dump());
  writer.write(path);
}

Checkpoint read_checkpoint(const std::filesystem::path& path) {
  const auto file = safetensors::File::open(path);
  const std::string name = file.display_name();
  const auto it = file.metadata().find(kKey);
  if (it == file.metadata().end())
    throw FormatError(name, kKey, 0, "no lathe checkpoint metadata: this is not a lathe training checkpoint",
                      "give the file lathe finetune/unlearn --checkpoint wrote");
  Checkpoint out;
  try {
    const auto meta = nlohmann::json::parse(it->second);
    if (meta.at("version").get<int>() != kVersion)
      throw FormatError(name, kKey, 0, fmt::format("checkpoint version {} (this lathe reads {})",
                                                   meta.at("version").dump(), kVersion),
                        "resume with the lathe that wrote it, or start again");
    TrainState& s = out.state;
    s.step = meta.at("step").get<int64_t>();
    s.lora.rank = meta.at("rank").get<int64_t>();
    s.lora.alpha = meta.at("alpha").get<double>();
    if (s.step < 0 || s.lora.rank < 1 || s.lora.rank > 4096)
      throw FormatError(name, kKey, 0, fmt::format("step {} / rank {} out of range", s.step, s.lora.rank),
                        "the checkpoint is damaged; remove it and start again");
    const auto& pairs = meta.at("pairs");
    for (size_t p = 0; p < pairs.size(); ++p) {
      LoraSet<float>::Pair pair;
      pair.layer = pairs[p].at("layer").get<uint32_t>();
      pair.target = pairs[p].at("target").get<std::string>();
      pair.in = pairs[p].at("in").get<int64_t>();
      pair.out = pairs[p].at("out").get<int64_t>();
      if (pair.in < 1 || pair.out < 1 || pair.in > (int64_t{1} << 24) || pair.out > (int64_t{1} << 24))
        throw FormatError(name, fmt::format("pairs[{}]", p), 0, "a matrix size out of range",
                          "the checkpoint is damaged; remove it and start again");
      pair.a = read_floats(file, fmt::format("lora.{}.a", p), static_cast<uint64_t>(s.lora.rank * pair.in));
      pair.b = read_floats(file, fmt::format("lora.{}.b", p), static_cast<uint64_t>(pair.out * s.lora.rank));
      s.lora.pairs.push_back(std::move(pair));
    }
    const size_t n_optimizer = meta.at("optimizer_tensors").get<size_t>();
    if (n_optimizer != 2 * s.lora.pairs.size())
      throw FormatError(name, kKey, 0, fmt::format("{} optimizer tensors for {} adapter pairs", n_optimizer,
                                                   s.lora.pairs.size()),
                        "the checkpoint is damaged; remove it and start again");
    for (size_t i = 0; i < n_optimizer; ++i) {
      const auto& pair = s.lora.pairs[i / 2];
      const size_t size = i % 2 == 0 ? pair.a.size() : pair.b.size();
      s.adam_m.push_back(read_floats(file, fmt::format("adam.m.{}", i), size));
      s.adam_v.push_back(read_floats(file, fmt::format("adam.v.{}", i), size));
    }
    for (const auto& c : meta.at("cycles"))
      s.cycles.push_back({c.at("order").get<std::vector<size_t>>(), c.at("at").get<size_t>(),
                          c.at("rng").get<std::string>()});
    out.settings = meta.at("settings");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(name, kKey, 0, fmt::format("the checkpoint metadata is malformed ({})", e.what()),
                      "the checkpoint is damaged; remove it and start again");
  }
  return out;
}

std::vector<std::string> settings_differences(const nlohmann::json& saved, const nlohmann::json& now) {
  std::vector<std::string> out;
  for (const auto& [key, value] : now.items()) {
    const auto it = saved.find(key);
    if (it == saved.end())
      out.push_back(fmt::format("{}: (absent) -> {}", key, value.dump()));
    else if (*it != value)
      out.push_back(fmt::format("{}: {} -> {}", key, it->dump(), value.dump()));
  }
  for (const auto& [key, value] : saved.items())
    if (!now.contains(key)) out.push_back(fmt::format("{}: {} -> (absent)", key, value.dump()));
  return out;
}

}  // namespace lathe::train
