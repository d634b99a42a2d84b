// The roofline bound and the fraction of it a kernel reaches, against hand-worked cases
// on the H100's and A100's published peaks (engine/cuda/roofline.h).
#include <gtest/gtest.h>

#include "engine/cuda/roofline.h"

namespace {
using namespace hmoe::cuda;

TEST(Roofline, DramBoundAtTheMinimumBytesIsTheWholeRoofline) {
  // 3352 GB/s = 3352e3 B/us: 3352e3 bytes take 1 us.
  const Roofline r = roofline(kH100, {0, false, 3352e3, 0, 3352e3});
  EXPECT_DOUBLE_EQ(r.dram_us, 1.0);
  EXPECT_DOUBLE_EQ(r.bound_us, 1.0);
  EXPECT_EQ(r.limiter, "DRAM");
  EXPECT_DOUBLE_EQ(r.ideal_us, 1.0);
  EXPECT_DOUBLE_EQ(r.fraction, 1.0);
}

TEST(Roofline, ExtraSectorsLowerTheFraction) {
  // Four times the minimum bytes (e.g. 8 of every 32 bytes of a sector used): 25%.
  const Roofline r = roofline(kA100, {0, true, 4 * 2039e3, 0, 2039e3});
  EXPECT_DOUBLE_EQ(r.bound_us, 4.0);
  EXPECT_DOUBLE_EQ(r.ideal_us, 1.0);
  EXPECT_DOUBLE_EQ(r.fraction, 0.25);
}

TEST(Roofline, SharedMemoryBound) {
  // 132 SMs x 1.98 GHz = 261.36e3 wavefronts per us; twice that is 2 us, above DRAM's 1.
  const Roofline r = roofline(kH100, {0, false, 3352e3, 2 * 132 * 1.98e3, 3352e3});
  EXPECT_DOUBLE_EQ(r.shared_us, 2.0);
  EXPECT_DOUBLE_EQ(r.bound_us, 2.0);
  EXPECT_EQ(r.limiter, "shared memory");
  EXPECT_DOUBLE_EQ(r.fraction, 0.5);
}

TEST(Roofline, FlopBoundOnTensorAndCudaCores) {
  // 989.4 TFLOP/s = 989.4e6 FLOP/us (bf16); 66.9e6 (fp32).
  const Roofline t = roofline(kH100, {989.4e6, false, 0, 0, 0});
  EXPECT_DOUBLE_EQ(t.flops_us, 1.0);
  EXPECT_EQ(t.limiter, "tensor-core FLOPs");
  EXPECT_DOUBLE_EQ(t.fraction, 1.0);
  const Roofline f = roofline(kH100, {989.4e6, true, 0, 0, 0});
  EXPECT_DOUBLE_EQ(f.flops_us, 989.4 / 66.9);
  EXPECT_EQ(f.limiter, "fp32 FLOPs");
  // The ideal is the larger of FLOPs and minimum bytes: a FLOP-bound kernel whose
  // minimum bytes alone would take longer than its FLOPs is held to the bytes.
  const Roofline m = roofline(kA100, {312e6, false, 2 * 2039e3, 0, 2 * 2039e3});
  EXPECT_DOUBLE_EQ(m.flops_us, 1.0);
  EXPECT_DOUBLE_EQ(m.ideal_us, 2.0);
  EXPECT_DOUBLE_EQ(m.fraction, 1.0);
}

TEST(Roofline, NoWorkIsNoFraction) {
  const Roofline r = roofline(kA100, {});
  EXPECT_DOUBLE_EQ(r.bound_us, 0.0);
  EXPECT_DOUBLE_EQ(r.fraction, 0.0);
}

}  // namespace
