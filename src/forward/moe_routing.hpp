// The routing of a mixture-of-experts block, one definition for both backends (forward.cpp on
// the CPU, cuda_forward_cuda.cpp on the device): for each token a softmax over every expert's
// router logit, the n_expert_used most probable kept (ties: the lower index), their
// probabilities renormalized when the architecture says so (HParams::expert_weights_norm), then
// scaled (expert_weights_scale). The result is grouped by expert, so that each expert runs once
// over the tokens routed to it.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "arch/hparams.hpp"

namespace lathe {

struct ExpertRoutes {
  // Per expert, the (token, weight) pairs of the current layer, tokens in increasing order.
  std::vector<std::vector<std::pair<int64_t, float>>> by_expert;
  // Scratch: the experts by probability. Both are kept across calls, so that routing allocates
  // nothing once warm.
  std::vector<int32_t> order;
};

// Routes n_tokens tokens whose router logits are rows of `logits` (row t at logits + t * ld, the
// first hp.n_expert values used; overwritten with the probabilities).
void route_tokens(const HParams& hp, float* logits, int64_t ld, int64_t n_tokens, ExpertRoutes& routes);

}  // namespace lathe
