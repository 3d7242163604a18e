// Which layers stream under a GPU memory budget (weights/stream_plan.hpp): everything resident
// when it fits; else the most layers resident that fit beside two slots, the streamed ones the
// last layers and then every other one towards the front; below the minimum an error naming the
// flag and the minimum.
#include <gtest/gtest.h>

#include <vector>

#include "common/test_support.hpp"
#include "lathe/error.hpp"
#include "weights/stream_plan.hpp"

namespace lathe {
namespace {

constexpr uint64_t kLayer = 100, kGlobals = 50;

std::vector<uint32_t> streamed_of(const StreamPlan& p) {
  std::vector<uint32_t> out;
  for (uint32_t l = 0; l < p.streamed.size(); ++l)
    if (p.streamed[l]) out.push_back(l);
  return out;
}

TEST(StreamPlan, EverythingResidentWhenItFits) {
  const std::vector<uint64_t> layers(8, kLayer);
  const StreamPlan p = plan_layer_streaming(kGlobals, layers, kGlobals + 8 * kLayer);
  EXPECT_EQ(p.n_streamed, 0u);
  EXPECT_EQ(p.slots, 0u);
  EXPECT_EQ(p.device_bytes, kGlobals + 8 * kLayer);
  EXPECT_EQ(p.min_bytes, kGlobals + 2 * kLayer);
  EXPECT_TRUE(streamed_of(p).empty());
}

TEST(StreamPlan, KeepsTheMostLayersThatFitBesideTwoSlots) {
  const std::vector<uint64_t> layers(8, kLayer);
  // One byte short of everything. Streaming n layers holds n_layers - n + 2 layers' worth (one
  // streamed layer: n_layers - 1 + 1 slot), so nothing is saved below 3.
  StreamPlan p = plan_layer_streaming(kGlobals, layers, kGlobals + 8 * kLayer - 1);
  EXPECT_EQ(p.n_streamed, 3u);
  EXPECT_EQ(p.slots, 2u);
  EXPECT_EQ(p.device_bytes, kGlobals + 5 * kLayer + 2 * kLayer);
  EXPECT_EQ(streamed_of(p), (std::vector<uint32_t>{2, 5, 7}));
  // Room for 3 layers beside the slots: 5 stream.
  p = plan_layer_streaming(kGlobals, layers, kGlobals + 5 * kLayer + 50);
  EXPECT_EQ(p.n_streamed, 5u);
  EXPECT_EQ(p.device_bytes, kGlobals + 5 * kLayer);
  EXPECT_LE(p.device_bytes, kGlobals + 5 * kLayer + 50);
  EXPECT_FALSE(p.streamed[0]) << "the first layer stays: nothing before it hides its copy";
  EXPECT_TRUE(p.streamed[7]) << "the last layer streams: every layer before it hides its copy";
  // The minimum: every layer streams through two slots.
  p = plan_layer_streaming(kGlobals, layers, kGlobals + 2 * kLayer);
  EXPECT_EQ(p.n_streamed, 8u);
  EXPECT_EQ(p.slots, 2u);
  EXPECT_EQ(p.slot_bytes, kLayer);
  EXPECT_EQ(p.device_bytes, kGlobals + 2 * kLayer);
}

TEST(StreamPlan, StreamedLayersSpreadFromTheBack) {
  EXPECT_EQ(streamed_layers(8, 1), (std::vector<uint32_t>{7}));
  EXPECT_EQ(streamed_layers(8, 4), (std::vector<uint32_t>{1, 3, 5, 7}));
  EXPECT_EQ(streamed_layers(8, 8), (std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(streamed_layers(30, 3), (std::vector<uint32_t>{9, 19, 29}));
  for (uint32_t n = 1; n <= 30; ++n) {
    const auto s = streamed_layers(30, n);
    ASSERT_EQ(s.size(), n);
    for (size_t i = 1; i < s.size(); ++i) EXPECT_LT(s[i - 1], s[i]) << n;
    EXPECT_EQ(s.back(), 29u);
  }
}

TEST(StreamPlan, UnevenLayersSizeTheSlotsByTheLargestStreamed) {
  // A quantization mix (e.g. Q4_K_M's larger ffn_down in some layers).
  const std::vector<uint64_t> layers = {100, 150, 100, 150, 100, 150};
  const StreamPlan p = plan_layer_streaming(kGlobals, layers, kGlobals + 2 * 150);
  EXPECT_EQ(p.n_streamed, 6u);
  EXPECT_EQ(p.slot_bytes, 150u);
  const StreamPlan q = plan_layer_streaming(kGlobals, layers, 600);
  EXPECT_EQ(q.n_streamed, 4u);
  EXPECT_EQ(q.slot_bytes, 150u);
  EXPECT_LE(q.device_bytes, 600u);
  uint64_t resident = kGlobals;
  for (uint32_t l = 0; l < layers.size(); ++l)
    if (!q.streamed[l]) resident += layers[l];
  EXPECT_EQ(q.device_bytes, resident + q.slots * q.slot_bytes);
}

TEST(StreamPlan, BelowTheMinimumIsAnErrorSayingIt) {
  const std::vector<uint64_t> layers(8, uint64_t{1} << 30);
  test::expect_error<InvalidArgumentError>(
      [&] { plan_layer_streaming(uint64_t{1} << 30, layers, uint64_t{2} << 30); },
      {"--vram-budget", "at least 3.00 GiB", "2 layer slots of 1.00 GiB", "1.00 GiB more"});
}

TEST(StreamPlan, MaxResidentCapsTheResidentLayers) {
  const std::vector<uint64_t> layers(8, kLayer);
  const StreamPlan p = plan_layer_streaming(kGlobals, layers, 1u << 20, 2, 0);
  EXPECT_EQ(p.n_streamed, 8u);
  const StreamPlan q = plan_layer_streaming(kGlobals, layers, 1u << 20, 2, 5);
  EXPECT_EQ(q.n_streamed, 3u);
}

}  // namespace
}  // namespace lathe
