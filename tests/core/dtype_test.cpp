#include <gtest/gtest.h>

#include "core/dtype.hpp"

namespace lathe {

TEST(DType, GgmlIdsRoundTrip) {
  for (const auto& info : all_dtypes()) {
    if (info.ggml_id < 0) continue;
    auto back = dtype_from_ggml_id(static_cast<uint32_t>(info.ggml_id));
    ASSERT_TRUE(back.has_value()) << info.name;
    EXPECT_EQ(*back, info.type) << info.name;
  }
  EXPECT_FALSE(dtype_from_ggml_id(4).has_value());  // removed Q4_2
  EXPECT_FALSE(dtype_from_ggml_id(1000).has_value());
}

TEST(DType, NamesAreCaseInsensitive) {
  EXPECT_EQ(dtype_from_name("q4_k"), DType::Q4_K);
  EXPECT_EQ(dtype_from_name("BF16"), DType::BF16);
  EXPECT_FALSE(dtype_from_name("Q4_2").has_value());
}

TEST(DType, BytesRequireWholeBlocks) {
  EXPECT_EQ(dtype_bytes(DType::Q4_1, 64), 40u);
  EXPECT_EQ(dtype_bytes(DType::Q6_K, 512), 420u);
  EXPECT_FALSE(dtype_bytes(DType::Q4_0, 33).has_value());
  EXPECT_FALSE(dtype_bytes(DType::F32, UINT64_MAX).has_value());  // overflow
  EXPECT_EQ(dtype_bytes(DType::U8, 7), 7u);
}

}  // namespace lathe
