// The emulated cuda device names itself and exists only for programs that opt in
// (HMOE_EMULATE_CUDA=1): ctest runs this binary twice, with and without the variable.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "engine/cuda/runtime.h"
#include "engine/profiler.h"
#include "hmoe.h"

namespace hmoe {
namespace {

constexpr const char* kName = "emulated CUDA device (SIMT emulator on the CPU)";

bool opted_in() {
  const char* v = std::getenv("HMOE_EMULATE_CUDA");
  return v != nullptr && std::string(v) == "1";
}

TEST(EmulatedDevice, NamesItselfInPropertiesAndTraces) {
  if (!cuda::is_emulated()) GTEST_SKIP() << "a real CUDA build";
  if (!opted_in()) GTEST_SKIP() << "runs with HMOE_EMULATE_CUDA=1";
  EXPECT_EQ(cuda::properties(0).name, kName);
  EXPECT_NE(cuda::properties(0).str().find(kName), std::string::npos);
  Profiler prof;
  const Tensor y = full({4}, 2.0).to(Device::cuda()) * 3.0;
  EXPECT_EQ(y.to(Device::cpu()).to_vector()[3], 6.0);
  EXPECT_NE(prof.chrome_trace().find(std::string("\"cuda:0\": \"") + kName + "\""), std::string::npos);
}

TEST(EmulatedDevice, IsOffWithoutTheOptIn) {
  if (!cuda::is_emulated()) GTEST_SKIP() << "a real CUDA build";
  if (opted_in()) GTEST_SKIP() << "runs without HMOE_EMULATE_CUDA (test_cuda_emulated_device_off)";
  EXPECT_EQ(cuda::device_count(), 0);
  EXPECT_FALSE(cuda::device_available());
  try {
    (void)full({4}, 1.0).to(Device::cuda());
    FAIL() << "to(Device::cuda()) succeeded without the opt-in";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(kName), std::string::npos) << msg;
    EXPECT_NE(msg.find("HMOE_EMULATE_CUDA=1"), std::string::npos) << msg;
  }
  EXPECT_THROW((void)cuda::properties(0), Error);
}

}  // namespace
}  // namespace hmoe
