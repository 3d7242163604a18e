#include "weights/stream_plan.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "lathe/error.hpp"

namespace lathe {
namespace {

std::string gib(uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30)); }

}  // namespace

std::vector<uint32_t> streamed_layers(uint32_t n_layers, uint32_t n_streamed) {
  // k-th streamed layer counted from the back: n_layers - 1 - floor(k * n_layers / n_streamed).
  // The steps are at least 1 (n_streamed <= n_layers), so the layers are distinct.
  std::vector<uint32_t> out;
  out.reserve(n_streamed);
  for (uint32_t k = 0; k < n_streamed; ++k)
    out.push_back(n_layers - 1 - static_cast<uint32_t>(uint64_t{k} * n_layers / n_streamed));
  std::reverse(out.begin(), out.end());
  return out;
}

uint64_t streaming_minimum(uint64_t always_resident, std::span<const uint64_t> layer_bytes, uint32_t slots) {
  const uint64_t largest = layer_bytes.empty() ? 0 : *std::max_element(layer_bytes.begin(), layer_bytes.end());
  return always_resident + std::min<uint64_t>(layer_bytes.size(), slots) * largest;
}

StreamPlan plan_layer_streaming(uint64_t always_resident, std::span<const uint64_t> layer_bytes, uint64_t room,
                                uint32_t slots, uint32_t max_resident, const char* what_budget) {
  const auto n_layers = static_cast<uint32_t>(layer_bytes.size());
  if (slots < 2) throw InternalError(fmt::format("plan_layer_streaming: {} slots (at least 2)", slots));
  const uint64_t all = std::accumulate(layer_bytes.begin(), layer_bytes.end(), always_resident);
  StreamPlan plan;
  plan.streamed.assign(n_layers, false);
  const uint64_t largest = n_layers == 0 ? 0 : *std::max_element(layer_bytes.begin(), layer_bytes.end());
  plan.min_bytes = streaming_minimum(always_resident, layer_bytes, slots);
  if (all <= room && max_resident >= n_layers) {
    plan.device_bytes = all;
    return plan;
  }
  if (room < plan.min_bytes)
    throw InvalidArgumentError(fmt::format(
        "{}: the weights get {} of GPU memory after the KV cache and scratch, and streaming them needs at least {} "
        "(the embedding and output layer {} + {} layer slots of {}); raise the budget to give the weights {} more, "
        "or shorten the context (-c) or use fewer sequences to shrink the KV cache",
        what_budget, gib(room), gib(plan.min_bytes), gib(always_resident), slots, gib(largest),
        gib(plan.min_bytes - room)));
  // Fewest streamed layers that fit. Layers of one model are mostly the same size, so the count
  // decides; the exact sizes of the chosen layers are checked.
  for (uint32_t n_streamed = std::max<uint32_t>(1, n_layers - std::min(max_resident, n_layers)); n_streamed <= n_layers;
       ++n_streamed) {
    const auto chosen = streamed_layers(n_layers, n_streamed);
    std::vector<bool> streamed(n_layers, false);
    for (uint32_t l : chosen) streamed[l] = true;
    uint64_t resident = always_resident, slot = 0;
    for (uint32_t l = 0; l < n_layers; ++l) {
      if (streamed[l]) slot = std::max(slot, layer_bytes[l]);
      else resident += layer_bytes[l];
    }
    const uint32_t n_slots = std::min(slots, n_streamed);
    const uint64_t total = resident + n_slots * slot;
    if (total > room && n_streamed < n_layers) continue;
    plan.streamed = std::move(streamed);
    plan.n_streamed = n_streamed;
    plan.slots = n_slots;
    plan.slot_bytes = slot;
    plan.device_bytes = total;
    return plan;
  }
  throw InternalError("plan_layer_streaming: no plan (unreachable: every layer streamed fits the minimum)");
}

}  // namespace lathe
