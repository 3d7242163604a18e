#include "forward/moe_routing.hpp"

#include <algorithm>
#include <cmath>

namespace lathe {

void route_tokens(const HParams& hp, float* logits, int64_t ld, int64_t n_tokens, ExpertRoutes& routes) {
  const int64_t n_expert = hp.n_expert, n_used = hp.n_expert_used;
  routes.by_expert.resize(static_cast<size_t>(n_expert));
  routes.order.resize(static_cast<size_t>(n_expert));
  for (auto& routed : routes.by_expert) routed.clear();
  auto& order = routes.order;
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* p = logits + t * ld;
    const float top = *std::max_element(p, p + n_expert);
    float sum = 0;
    for (int64_t e = 0; e < n_expert; ++e) sum += (p[e] = std::exp(p[e] - top));
    for (int64_t e = 0; e < n_expert; ++e) p[e] /= sum;
    for (int64_t e = 0; e < n_expert; ++e) order[static_cast<size_t>(e)] = static_cast<int32_t>(e);
    std::partial_sort(order.begin(), order.begin() + n_used, order.end(),
                      [&](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float chosen = 0;
    for (int64_t k = 0; k < n_used; ++k) chosen += p[order[static_cast<size_t>(k)]];
    for (int64_t k = 0; k < n_used; ++k) {
      const int32_t e = order[static_cast<size_t>(k)];
      float weight = hp.expert_weights_norm ? p[e] / chosen : p[e];
      if (hp.expert_weights_scale != 0.0f && hp.expert_weights_scale != 1.0f) weight *= hp.expert_weights_scale;
      routes.by_expert[static_cast<size_t>(e)].emplace_back(t, weight);
    }
  }
}

}  // namespace lathe
