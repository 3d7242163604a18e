// Writes small SAEs in SAELens's format (cfg.json + sae_weights.safetensors) for the SAE tests,
// with knobs to break them in one way at a time.
#pragma once

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/test_support.hpp"
#include "io/safetensors.hpp"

namespace lathe::test {

struct TestSae {
  std::string architecture = "standard";
  int64_t d_in = 8, d_sae = 16, k = 4;
  std::string hook = "blocks.2.hook_resid_post";
  uint32_t seed = 1;
  float enc_scale = 1.0f;                 // W_enc ~ N(0, enc_scale / sqrt(d_in))
  nlohmann::json cfg_extra = nlohmann::json::object();  // merged into cfg.json (null values delete)
  std::set<std::string> skip = {};        // tensors left out
  std::map<std::string, std::vector<uint64_t>> shapes = {};  // shapes written instead of the right ones
  std::string nan_in = "";                // tensor whose element 0 becomes NaN
};

inline nlohmann::json test_sae_cfg(const TestSae& s) {
  nlohmann::json cfg = {{"architecture", s.architecture}, {"d_in", s.d_in}, {"d_sae", s.d_sae},
                        {"dtype", "float32"}, {"apply_b_dec_to_input", true}, {"normalize_activations", "none"},
                        {"metadata", {{"hook_name", s.hook}, {"sae_lens_version", "6.5.1"}}}};
  if (s.architecture == "topk") cfg["k"] = s.k;
  for (const auto& [key, value] : s.cfg_extra.items()) {
    if (value.is_null())
      cfg.erase(key);
    else
      cfg[key] = value;
  }
  return cfg;
}

inline void write_test_sae(const std::filesystem::path& dir, const TestSae& s) {
  std::filesystem::create_directories(dir);
  write_file(dir / "cfg.json", test_sae_cfg(s).dump(2));
  std::mt19937 rng(s.seed);
  auto normal = [&](size_t n, double mean, double sd) {
    std::normal_distribution<float> d(static_cast<float>(mean), static_cast<float>(sd));
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
  };
  const auto d_in = static_cast<uint64_t>(s.d_in), d_sae = static_cast<uint64_t>(s.d_sae);
  std::map<std::string, std::pair<std::vector<uint64_t>, std::vector<float>>> tensors;
  tensors["W_enc"] = {{d_in, d_sae}, normal(d_in * d_sae, 0, s.enc_scale / std::sqrt(double(d_in)))};
  tensors["b_enc"] = {{d_sae}, normal(d_sae, -0.05, 0.1)};
  tensors["W_dec"] = {{d_sae, d_in}, normal(d_sae * d_in, 0, 1 / std::sqrt(double(d_sae)))};
  tensors["b_dec"] = {{d_in}, normal(d_in, 0, 0.1)};
  if (s.architecture == "jumprelu") tensors["threshold"] = {{d_sae}, normal(d_sae, 0.2, 0.05)};
  safetensors::Writer writer;
  for (auto& [name, t] : tensors) {
    if (s.skip.contains(name)) continue;
    if (name == s.nan_in) t.second[0] = std::numeric_limits<float>::quiet_NaN();
    const auto it = s.shapes.find(name);
    writer.add_tensor(name, DType::F32, it != s.shapes.end() ? it->second : t.first,
                      {reinterpret_cast<const uint8_t*>(t.second.data()), t.second.size() * sizeof(float)});
  }
  writer.write(dir / "sae_weights.safetensors");
}

}  // namespace lathe::test
