// cp.async under the emulator (engine/cuda/cp_async.h): a three-stage pipeline that
// waits correctly matches the input under every schedule; copies land only at the
// wait_group that covers their group, so a kernel that omits the wait (or waits for too
// few groups) reads poison; zero fill; misuse is reported.
#include <bit>
#include <cmath>
#include <cstdint>

#include "tests/engine/emu/async_copy_kernels.cuh"
#include "tests/engine/emu/emu_test_util.h"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;
using namespace hmoe_async_sample;

// Copies a chunk, commits, and reads another thread's part after a barrier. WAIT: waits
// for the group first (wait_group 0); without it the barrier alone lands nothing.
template <bool WAIT>
__global__ void single_stage(const float* in, float* out) {
  HMOE_DYNAMIC_SHARED(float, s);
  const int t = int(threadIdx.x);
  dev::cp_async_16(s + t * kVec, in + t * kVec, 16);
  dev::cp_async_commit();
  if constexpr (WAIT) dev::cp_async_wait<0>();
  __syncthreads();
  for (int e = 0; e < kVec; ++e) out[t * kVec + e] = s[kChunk - 1 - (t * kVec + e)];
}

// Two groups, then wait_group 1: the older group landed, the newer one not yet; a copy
// issued after the last commit is in no committed group and wait_group 0 leaves it too.
__global__ void two_groups(const float* in, float* out) {
  HMOE_DYNAMIC_SHARED(float, s);
  const int t = int(threadIdx.x);
  dev::cp_async_16(s + t * kVec, in + t * kVec, 16);
  dev::cp_async_commit();
  dev::cp_async_16(s + kChunk + t * kVec, in + kChunk + t * kVec, 16);
  dev::cp_async_commit();
  dev::cp_async_wait<1>();
  for (int e = 0; e < kVec; ++e) out[t * kVec + e] = s[t * kVec + e];                    // landed
  for (int e = 0; e < kVec; ++e) out[kChunk + t * kVec + e] = s[kChunk + t * kVec + e];  // not yet
  dev::cp_async_16(s + 2 * kChunk + t * kVec, in + 2 * kChunk + t * kVec, 16);           // left uncommitted
  dev::cp_async_wait<0>();
  for (int e = 0; e < kVec; ++e) out[2 * kChunk + t * kVec + e] = s[2 * kChunk + t * kVec + e];
  for (int e = 0; e < kVec; ++e) out[3 * kChunk + t * kVec + e] = s[kChunk + t * kVec + e];  // landed now
}

// src_bytes below 16 zero-fills the rest: thread t reads (t % 3) * 8 bytes.
__global__ void zero_fill(const float* in, float* out) {
  HMOE_DYNAMIC_SHARED(float, s);
  const int t = int(threadIdx.x);
  dev::cp_async_16(s + t * kVec, in + t * kVec, (t % 3) * 8);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  for (int e = 0; e < kVec; ++e) out[t * kVec + e] = s[t * kVec + e];
}

__global__ void misaligned(const float* in, int offset) {
  HMOE_DYNAMIC_SHARED(float, s);
  dev::cp_async_16(s + offset, in, 16);
}

__global__ void global_destination(const float* in, float* out) { dev::cp_async_16(out, in, 16); }

Buffer<float> iota_floats(size_t n) {
  Buffer<float> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = float(i) + 0.5f;
  return b;
}

bool poisoned(float v) { return std::bit_cast<uint32_t>(v) == 0xFFFFFFFFu; }

class EmuAsyncCopy : public Scheduled {};

TEST_P(EmuAsyncCopy, PipelineThatWaitsMatches) {
  for (int chunks : {1, 2, 3, 7}) {
    Buffer<float> in = iota_floats(size_t(chunks) * kChunk), out(size_t(chunks) * kChunk, -1.0f);
    launch(&ring_reverse, dim3(1), dim3(kThreads), size_t(kStages) * kChunk * sizeof(float), in.data(), out.data(),
           chunks);
    for (int c = 0; c < chunks; ++c)
      for (int i = 0; i < kChunk; ++i)
        ASSERT_EQ(out[size_t(c * kChunk + i)], in[size_t(c * kChunk + kChunk - 1 - i)]) << "chunk " << c << " i " << i;
  }
}

TEST_P(EmuAsyncCopy, MissingWaitReadsPoison) {
  Buffer<float> in = iota_floats(kChunk), out(kChunk, -1.0f);
  launch(&single_stage<true>, dim3(1), dim3(kThreads), kChunk * sizeof(float), in.data(), out.data());
  for (int i = 0; i < kChunk; ++i) ASSERT_EQ(out[size_t(i)], in[size_t(kChunk - 1 - i)]);
  launch(&single_stage<false>, dim3(1), dim3(kThreads), kChunk * sizeof(float), in.data(), out.data());
  for (int i = 0; i < kChunk; ++i) ASSERT_TRUE(poisoned(out[size_t(i)])) << i << ": " << out[size_t(i)];
}

TEST_P(EmuAsyncCopy, WaitGroupLandsOnlyOlderGroups) {
  Buffer<float> in = iota_floats(3 * kChunk), out(4 * kChunk, -1.0f);
  launch(&two_groups, dim3(1), dim3(kThreads), 3 * kChunk * sizeof(float), in.data(), out.data());
  for (int i = 0; i < kChunk; ++i) {
    const size_t u = size_t(i);
    EXPECT_EQ(out[u], in[u]);
    EXPECT_TRUE(poisoned(out[kChunk + u])) << "the newest group landed before its wait";
    EXPECT_TRUE(poisoned(out[2 * kChunk + u])) << "an uncommitted copy landed";
    EXPECT_EQ(out[3 * kChunk + u], in[kChunk + u]);
  }
}

TEST_P(EmuAsyncCopy, ShortSourceZeroFills) {
  Buffer<float> in = iota_floats(kChunk), out(kChunk, -1.0f);
  launch(&zero_fill, dim3(1), dim3(kThreads), kChunk * sizeof(float), in.data(), out.data());
  for (int t = 0; t < kThreads; ++t)
    for (int e = 0; e < kVec; ++e) {
      const size_t i = size_t(t * kVec + e);
      EXPECT_EQ(out[i], e < (t % 3) * 2 ? in[i] : 0.0f) << "thread " << t << " element " << e;
    }
}

INSTANTIATE_TEST_SUITE_P(Schedules, EmuAsyncCopy, ::testing::ValuesIn(all_schedules()), schedule_name);

TEST(EmuAsyncCopyErrors, MisuseIsReported) {
  Buffer<float> in = iota_floats(kChunk), out(kChunk);
  expect_error([&] { launch(&misaligned, dim3(1), dim3(32), 256, in.data(), 1); },
               {"cp.async", "shared destination must be 16-byte aligned"});
  expect_error([&] { launch(&misaligned, dim3(1), dim3(32), 256, in.data() + 1, 0); },
               {"cp.async", "global source must be 16-byte aligned"});
  expect_error([&] { launch(&global_destination, dim3(1), dim3(32), 0, in.data(), out.data()); },
               {"cp.async", "destination must be shared memory"});
}

}  // namespace
