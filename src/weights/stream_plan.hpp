// Which layers stay on the GPU and which stream (the streaming issue, docs/STREAMING.md): given the
// device bytes of the parts that always stay (embedding, output layer, final norm) and of each
// layer, and the room the weights may take, keep as many whole layers resident as fit beside the
// slots the others stream through. Plain C++: the choice is unit-tested without a GPU.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace lathe {

struct StreamPlan {
  std::vector<bool> streamed;  // by layer
  uint32_t n_streamed = 0;
  uint32_t slots = 0;          // device buffers the streamed layers take turns in (0: none streamed)
  uint64_t slot_bytes = 0;     // each: the largest streamed layer
  uint64_t device_bytes = 0;   // always-resident parts + resident layers + slots
  uint64_t min_bytes = 0;      // the least room streaming can run in (every layer streamed)
};

// The plan for `room` bytes of weights. Everything resident when it fits. Else layers stream
// through `slots` buffers (at least 2: one computes while the next copies), keeping the most
// layers resident that fit; the streamed ones are the last layers and then every other one
// towards the front, so that a streamed layer's copy overlaps the compute of the resident layers
// before it and the first layers (whose copies nothing before them could hide) stay resident.
// `max_resident` caps the resident layers (tests and benchmarks: 0 streams them all).
// Throws InvalidArgumentError naming `what_budget` (the flag) and the minimum when room is
// smaller than always_resident + slots x the largest layer.
StreamPlan plan_layer_streaming(uint64_t always_resident, std::span<const uint64_t> layer_bytes, uint64_t room,
                                uint32_t slots = 2, uint32_t max_resident = UINT32_MAX,
                                const char* what_budget = "--vram-budget");

// The least room streaming runs in: the always-resident part and `slots` slots of the largest
// layer (fewer slots when there are fewer layers). StreamPlan::min_bytes.
uint64_t streaming_minimum(uint64_t always_resident, std::span<const uint64_t> layer_bytes, uint32_t slots = 2);

// The layers streamed when `n_streamed` of `n_layers` stream (see above), in increasing order.
std::vector<uint32_t> streamed_layers(uint32_t n_layers, uint32_t n_streamed);

}  // namespace lathe
