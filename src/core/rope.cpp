#include "core/rope.hpp"

#include <cmath>
#include <numbers>

namespace lathe {

RopeTable make_rope_table(RopeOrder order, int32_t rope_dim, float base, std::span<const float> freq_factors,
                          float position_scale) {
  RopeTable table;
  table.order = order;
  table.rope_dim = rope_dim;
  table.position_scale = position_scale;
  table.inv_freq.resize(static_cast<size_t>(rope_dim / 2));
  for (int32_t i = 0; i < rope_dim / 2; ++i) {
    double inv = std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    if (!freq_factors.empty()) inv /= freq_factors[static_cast<size_t>(i)];
    table.inv_freq[static_cast<size_t>(i)] = static_cast<float>(inv);
  }
  return table;
}

std::vector<float> llama3_freq_factors(int32_t rope_dim, float base, float factor, float low_freq_factor,
                                       float high_freq_factor, uint32_t original_context) {
  std::vector<float> factors(static_cast<size_t>(rope_dim / 2), 1.0f);
  const double low_freq_wavelen = original_context / static_cast<double>(low_freq_factor);
  const double high_freq_wavelen = original_context / static_cast<double>(high_freq_factor);
  for (int32_t i = 0; i < rope_dim / 2; ++i) {
    const double inv_freq = std::pow(static_cast<double>(base), -2.0 * i / rope_dim);
    const double wavelen = 2.0 * std::numbers::pi / inv_freq;
    double scaled = inv_freq;
    if (wavelen > low_freq_wavelen) {
      scaled = inv_freq / factor;
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      scaled = (1.0 - smooth) * inv_freq / factor + smooth * inv_freq;
    }
    factors[static_cast<size_t>(i)] = static_cast<float>(inv_freq / scaled);
  }
  return factors;
}

}  // namespace lathe
