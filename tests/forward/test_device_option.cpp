// Device selection without a GPU (CI, laptops) and in builds without CUDA: asking for CUDA is a
// clear error with the fix, device names parse strictly, and the CPU keeps working.
#include <gtest/gtest.h>

#include "backend/cuda/device.hpp"
#include "common/test_support.hpp"
#include "common/tiny_model.hpp"
#include "lathe/lathe.hpp"

namespace lathe {
namespace {

std::shared_ptr<const Model> load_tiny(const test::TempDir& dir) {
  test::TinyModel m;
  m.add_tokenizer();
  return Model::load(m.write(dir, "tiny.gguf"));
}

// No GPU (or no CUDA in the build): asking for one fails with advice, and nothing else breaks.
TEST(DeviceOption, RequestingCudaWithoutADeviceIsAClearError) {
  if (!cuda::list_devices().empty()) GTEST_SKIP() << "a CUDA device exists here";
  test::TempDir dir("cuda_none");
  const auto model = load_tiny(dir);
  try {
    Session session(model, {.n_ctx = 32, .compute = {.device = Device::cuda(0)}});
    FAIL() << "a CUDA session was created without a device";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("--device cpu"), std::string::npos) << message;
    EXPECT_TRUE(e.code() == ErrorCode::Device || e.code() == ErrorCode::Unsupported) << message;
  }
  Session cpu(model, {.n_ctx = 32, .compute = {.n_threads = 1}});
  cpu.eval(std::vector<TokenId>{1, 2, 3, 4});
  EXPECT_EQ(cpu.n_past(), 4u);
}

TEST(DeviceOption, CliRefusesCudaWithoutADeviceAndUnknownNames) {
  if (!cuda::list_devices().empty()) GTEST_SKIP() << "a CUDA device exists here";
  test::TempDir dir("cuda_none_cli");
  test::TinyModel m;
  m.add_tokenizer();
  const auto path = m.write(dir, "tiny.gguf");
  auto r = test::run_command({test::cli_path().string(), "run", "-m", path.string(), "-p", "ab", "-n", "2", "--device",
                              "cuda"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--device cpu"), std::string::npos) << r.err;
  r = test::run_command({test::cli_path().string(), "bench", "-m", path.string(), "-p", "4", "-n", "2", "--device",
                         "tpu:0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("use cpu, cuda or cuda:N"), std::string::npos) << r.err;
}

TEST(DeviceOption, DeviceNamesParse) {
  EXPECT_FALSE(Device::parse("cpu").is_cuda());
  EXPECT_EQ(Device::parse("cuda").index, 0);
  EXPECT_EQ(Device::parse("cuda:3").index, 3);
  EXPECT_EQ(Device::parse("cuda:3").name(), "cuda:3");
  for (const char* bad : {"", "gpu:1", "cuda:", "cuda:x", "cuda:-1", "cuda:99999", "tpu"})
    EXPECT_THROW(Device::parse(bad), InvalidArgumentError) << bad;
}

}  // namespace
}  // namespace lathe
