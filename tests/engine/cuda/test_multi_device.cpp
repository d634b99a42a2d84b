// Ops on a cuda device other than the calling thread's current one (one process, several
// GPUs; under emulation HMOE_EMU_DEVICES=2): each kernel runs with its tensors' device
// current and the caller's restored after; tensors on two devices are refused, naming
// both; the emulator refuses a launch on another device's stream as a GPU does.
#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

constexpr const char* kNeedsTwo = "needs two cuda devices (the emulated build: HMOE_EMULATE_CUDA=1 HMOE_EMU_DEVICES=2)";

// A forward and backward of a small graph on device d; the results on the CPU.
std::vector<std::vector<double>> run_on(Device d) {
  Generator gen(11);
  const Tensor a = normal({16, 24}, gen), b = normal({24, 8}, gen), c = normal({16, 8}, gen);
  Tensor x = a.to(d).detach();
  x.set_requires_grad(true);
  const Tensor y = softmax(matmul(x, b.to(d)) + c.to(d), 1);
  const Tensor loss = sum(gelu(y) * y);
  loss.backward();
  return {y.to(Device::cpu()).to_vector(), loss.to(Device::cpu()).to_vector(), x.grad().to(Device::cpu()).to_vector()};
}

TEST(MultiDevice, OpsRunOnTheirTensorsDeviceAndRestoreTheCurrentOne) {
  if (cuda::device_count() < 2) GTEST_SKIP() << kNeedsTwo;
  const cuda::DeviceGuard at0(0);
  const auto on0 = run_on(Device::cuda(0));
  EXPECT_EQ(cuda::current_device(), 0);
  const auto on1 = run_on(Device::cuda(1));  // from a thread whose current device is 0
  EXPECT_EQ(cuda::current_device(), 0);
  EXPECT_EQ(on0, on1);
  {
    const cuda::DeviceGuard at1(1);  // and the other way round
    EXPECT_EQ(run_on(Device::cuda(0)), on0);
    EXPECT_EQ(cuda::current_device(), 1);
  }
  EXPECT_EQ(cuda::current_device(), 0);
}

TEST(MultiDevice, TensorsOnTwoDevicesAreRefusedNamingBoth) {
  if (cuda::device_count() < 2) GTEST_SKIP() << kNeedsTwo;
  const Tensor x = ones({4}, {DType::f32, Device::cuda(0)}), y = ones({4}, {DType::f32, Device::cuda(1)});
  try {
    (void)add(x, y);
    ADD_FAILURE() << "no error adding tensors on cuda:0 and cuda:1";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cuda:0"), std::string::npos) << m;
    EXPECT_NE(m.find("cuda:1"), std::string::npos) << m;
  }
  EXPECT_EQ(cuda::current_device(), 0);
}

TEST(MultiDevice, EmulatorRefusesALaunchOnAnotherDevicesStream) {
  if (cuda::device_count() < 2) GTEST_SKIP() << kNeedsTwo;
  if (!cuda::is_emulated()) GTEST_SKIP() << "a GPU's own launch check";
  const cuda::DeviceGuard at0(0);
  EXPECT_HMOE_ERROR(cuda::check_launch_stream("k", cuda::current_stream(1).native()), "cuda:1");
  cuda::check_launch_stream("k", cuda::current_stream(0).native());
}

}  // namespace
}  // namespace hmoe
