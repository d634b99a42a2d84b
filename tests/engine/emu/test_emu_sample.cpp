// Runs tests/engine/emu/sample_kernels.cuh (the file nvcc also compiles) under the emulator,
// through the portable HMOE_LAUNCH helper, against CPU references.
#include <cmath>

#include "engine/dtype.h"
#include "tests/engine/emu/emu_test_util.h"
#include "tests/engine/emu/sample_kernels.cuh"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;

using EmuSample = Scheduled;

TEST_P(EmuSample, ReduceAndHistogram) {
  const int n = 3000;
  Buffer<float> in(n), total(1, 0.0f);
  Buffer<unsigned> hist(8, 0u);
  for (int i = 0; i < n; ++i) in[i] = float(i % 10);
  HMOE_LAUNCH(hmoe_sample::reduce_and_histogram, dim3(4), dim3(256), 0, nullptr, in.data(), n, total.data(),
              hist.data());
  double ref = 0;
  unsigned ref_hist[8] = {};
  for (int i = 0; i < n; ++i) {
    ref += in[i];
    ++ref_hist[int(in[i]) % 8];
  }
  EXPECT_EQ(double(total[0]), ref);  // small integers: exact in any order
  for (int b = 0; b < 8; ++b) EXPECT_EQ(hist[b], ref_hist[b]);
}

TEST_P(EmuSample, WmmaTileFromDynamicSharedMemory) {
  Buffer<__nv_bfloat16> a(256), b(256);
  Buffer<float> c(256);
  for (int i = 0; i < 256; ++i) {
    a[i] = __nv_bfloat16(float(i % 9) * 0.125f);
    b[i] = __nv_bfloat16(float(i % 4) - 1.5f);  // column-major
  }
  HMOE_LAUNCH(hmoe_sample::wmma_tile, dim3(1), dim3(32), 1024, nullptr, a.data(), b.data(), c.data());
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float ref = 0;
      for (int k = 0; k < 16; ++k) ref += float(a[r * 16 + k]) * float(b[col * 16 + k]);
      EXPECT_NEAR(c[r * 16 + col], ref, 1e-5);
    }
}

TEST_P(EmuSample, ConvertAndVote) {
  const int n = 300;
  Buffer<float> in(n);
  Buffer<__nv_bfloat16> out(n);
  Buffer<int> count(1, 0);
  for (int i = 0; i < n; ++i) in[i] = float(i) / 100.0f + 1.0f / 3.0f;
  HMOE_LAUNCH(hmoe_sample::convert_and_vote, dim3((n + 127) / 128), dim3(128), 0, nullptr, in.data(), out.data(),
              count.data(), n);
  int ref = 0;
  for (int i = 0; i < n; ++i) {
    ref += in[i] > 1.0f;
    ASSERT_EQ(out[i].__x, hmoe::bf16(in[i]).bits) << i;  // same rounding as the CPU backend
  }
  EXPECT_EQ(count[0], ref);
}

INSTANTIATE_TEST_SUITE_P(Schedules, EmuSample, ::testing::ValuesIn(all_schedules()), schedule_name);

TEST(EmuHalf, ConversionsMatchTheCpuBackendBitForBit) {
  // Every bf16 / f16 value round-trips, and a sweep of floats (ties, subnormals,
  // overflow, NaN) rounds exactly as engine/dtype.h does.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float fb = __bfloat162float(__ushort_as_bfloat16((unsigned short)h));
    const float fh = __half2float(__ushort_as_half((unsigned short)h));
    ASSERT_EQ(std::bit_cast<uint32_t>(fh), std::bit_cast<uint32_t>(float(hmoe::f16::to_float(uint16_t(h)))));
    if (!std::isnan(fb)) {
      ASSERT_EQ(__float2bfloat16(fb).__x, h);
    }
    if (!std::isnan(fh)) {
      ASSERT_EQ(__float2half(fh).__x, h);
    }
  }
  uint32_t x = 0x12345u;
  for (int i = 0; i < 200000; ++i) {
    x = x * 1664525u + 1013904223u;
    const float f = std::bit_cast<float>(x);
    ASSERT_EQ(__float2bfloat16(f).__x, hmoe::bf16(f).bits) << std::hex << x;
    ASSERT_EQ(__float2half(f).__x, hmoe::f16(f).bits) << std::hex << x;
  }
}

}  // namespace
