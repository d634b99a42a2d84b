// Broken kernels the emulator must catch: missing and divergent barriers, barriers
// after exit, deadlock, shared-memory overruns and poison, bad warp collectives,
// bad launch configurations, exceptions and traps.
#include <cmath>
#include <stdexcept>

#include "tests/engine/emu/emu_test_util.h"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;

// --- kernels ---------------------------------------------------------------------------
template <bool WithBarrier>
__global__ void neighbour_read(float* out) {
  HMOE_SHARED(float, s, [128]);
  const unsigned t = threadIdx.x;
  s[t] = float(t + 1);
  if (WithBarrier) __syncthreads();
  out[t] = s[(t + 1) % 128];
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void barrier_after_return(int* out) {
  if (threadIdx.x >= 48) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_vs_barrier(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x == 0) v = __shfl_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

__global__ void shared_overrun(float* out) {
  HMOE_SHARED(float, a, [64]);
  HMOE_SHARED(float, b, [64]);
  a[threadIdx.x] = 1.0f;  // 65 threads: one float past the end of a
  if (threadIdx.x < 64) b[threadIdx.x] = 2.0f;
  __syncthreads();
  out[0] = a[0] + b[0];
}

__global__ void shared_underrun(float* out) {
  HMOE_SHARED(float, c, [32]);
  c[int(threadIdx.x) - 1] = 1.0f;  // thread 0 writes c[-1]
  if (threadIdx.x == 0) out[0] = 0.0f;
}

__global__ void dynamic_overrun(float* out) {
  HMOE_DYNAMIC_SHARED(float, d);
  d[threadIdx.x + 16] = 1.0f;  // 16 floats were allocated
  if (threadIdx.x == 0) out[0] = 0.0f;
}

__global__ void read_unwritten(float* out, int* iout) {
  HMOE_SHARED(float, s, [64]);
  HMOE_SHARED(int, si, [64]);
  if (threadIdx.x % 2 == 0) {
    s[threadIdx.x] = 1.0f;
    si[threadIdx.x] = 1;
  }
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
  iout[threadIdx.x] = si[threadIdx.x];
}

__global__ void lane_not_in_mask(int* out) { out[threadIdx.x] = __shfl_sync(0xfffffffeu, int(threadIdx.x), 1); }

__global__ void masks_disagree(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, 0);
  else v = __shfl_sync(0xffffffffu, v, 0);
  out[threadIdx.x] = v;
  __syncwarp();
}

// The same disagreement when the half-warp exits right away: caught once the
// full-mask shuffle was already waiting for it (reverse and random orders); in order,
// the 0xffff group finishes before the other starts, and the exited lanes read as poison.
__global__ void masks_disagree_then_exit(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, 0);
  else v = __shfl_sync(0xffffffffu, v, 0);
  out[threadIdx.x] = v;
}

__global__ void ops_disagree(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x % 2) v = __shfl_xor_sync(0xffffffffu, v, 1);
  else v = __shfl_down_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void widths_disagree(int* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 1, threadIdx.x < 8 ? 16 : 32);
}

__global__ void bad_width(int* out) { out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 1, 3); }

__global__ void partial_warp_shuffle(float* out) {
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 8);  // 20-thread block
}

__global__ void too_much_static_smem(float* out) {
  HMOE_SHARED(float, big, [13000]);  // 52000 bytes > 48 KiB
  big[threadIdx.x] = 0.0f;
  out[0] = big[0];
}

__global__ void throws_kernel(int* out) {
  if (threadIdx.x == 5) throw std::runtime_error("bad thing");
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void trap_kernel(int* out) {
  if (blockIdx.x == 2 && threadIdx.x == 3) __trap();
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = 0;
}

__global__ void noop(int*) {}

// --- tests ------------------------------------------------------------------------------
TEST(EmuErrors, MissingBarrierGivesWrongResultsUnderRandomSchedules) {
#ifdef HMOE_EMU_TSAN
  // This kernel races on purpose; under TSan the race report is the check, made by
  // the emu_tsan_missing_barrier test, and would fail this binary.
  GTEST_SKIP() << "deliberate race: checked by emu_tsan_missing_barrier in the TSan build";
#endif
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    Buffer<float> good(128), bad(128);
    launch(LaunchConfig{dim3(1), dim3(128), 0, "with_barrier", s}, neighbour_read<true>, good.data());
    for (unsigned t = 0; t < 128; ++t) ASSERT_EQ(good[t], float((t + 1) % 128 + 1));
    launch(LaunchConfig{dim3(1), dim3(128), 0, "missing_barrier", s}, neighbour_read<false>, bad.data());
    int wrong = 0;
    for (unsigned t = 0; t < 128; ++t) wrong += !(bad[t] == good[t]);
    // Reverse order happens to run every writer before its reader; in-order and
    // random schedules read the poison (NaN) of not-yet-written slots.
    if (s.mode == ScheduleMode::reverse) EXPECT_LE(wrong, 1) << to_string(s);
    else EXPECT_GT(wrong, 0) << to_string(s);
  }
}

TEST(EmuErrors, BarrierInDivergentCode) {
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    ScopedSchedule scope(s);
    Buffer<int> out(64);
    expect_error([&] { launch(LaunchConfig{dim3(1), dim3(64), 0, "divergent_barrier"}, divergent_barrier, out.data()); },
                 {"kernel 'divergent_barrier'", "different __syncthreads call sites", "test_emu_errors.cpp:",
                  "HMOE_EMU_SEED=", "waiting at __syncthreads"});
  }
}

TEST(EmuErrors, BarrierAfterSomeThreadsReturned) {
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    ScopedSchedule scope(s);
    Buffer<int> out(64, 0);
    expect_error([&] { launch(barrier_after_return, dim3(2), dim3(64), 0, out.data()); }, {"exited", "strict"});
  }
  // CUDA itself lets the barrier complete with the remaining threads.
  Buffer<int> out(64, 0);
  LaunchConfig c{dim3(1), dim3(64), 0, "lenient"};
  c.strict = false;
  launch(c, barrier_after_return, out.data());
  for (int i = 0; i < 48; ++i) EXPECT_EQ(out[i], 1);
}

TEST(EmuErrors, DeadlockIsReportedWithEveryThreadsPosition) {
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    ScopedSchedule scope(s);
    Buffer<int> out(64);
    const std::string msg = expect_error([&] { launch(shuffle_vs_barrier, dim3(1), dim3(64), 0, out.data()); },
                                         {"deadlock", "__shfl_sync", "waits for lanes {1-31}", "waiting at __syncthreads"});
    EXPECT_NE(msg.find("thread (0,0,0): waiting in __shfl_sync"), std::string::npos) << msg;
  }
}

TEST(EmuErrors, OutOfBoundsSharedWriteHitsRedZone) {
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    ScopedSchedule scope(s);
    Buffer<float> out(1);
    expect_error([&] { launch(shared_overrun, dim3(1), dim3(65), 0, out.data()); },
                 {"out-of-bounds shared memory write", "after shared array 'a'", "detected at __syncthreads"});
    expect_error([&] { launch(shared_underrun, dim3(1), dim3(32), 0, out.data()); },
                 {"out-of-bounds shared memory write", "before shared array 'c'", "block end"});
    expect_error([&] { launch(dynamic_overrun, dim3(1), dim3(8), 16 * sizeof(float), out.data()); },
                 {"after dynamic shared memory (64 bytes)"});
  }
}

TEST(EmuErrors, NeverWrittenSharedMemoryReadsAsPoison) {
  Buffer<float> out(64);
  Buffer<int> iout(64);
  launch(read_unwritten, dim3(1), dim3(64), 0, out.data(), iout.data());
  for (int i = 0; i < 64; ++i) {
    if (i % 2 == 0) {
      EXPECT_EQ(out[i], 1.0f);
      EXPECT_EQ(iout[i], 1);
    } else {
      EXPECT_TRUE(std::isnan(out[i]));
      EXPECT_EQ(iout[i], -1);  // 0xFFFFFFFF
    }
  }
}

TEST(EmuErrors, WrongShuffleMasks) {
  for (Schedule s : all_schedules()) {
    SCOPED_TRACE(to_string(s));
    ScopedSchedule scope(s);
    Buffer<int> out(32);
    expect_error([&] { launch(lane_not_in_mask, dim3(1), dim3(32), 0, out.data()); },
                 {"lane 0 of warp 0", "does not include the lane itself", "mask=0xfffffffe"});
    expect_error([&] { launch(masks_disagree, dim3(1), dim3(32), 0, out.data()); },
                 {"disagree", "__syncwarp(mask=0xffffffff)", "__shfl_sync(mask=0xffffffff"});
    // (A single warp runs the same way in order and interleaved.)
    if (s.mode != ScheduleMode::in_order && s.mode != ScheduleMode::interleave) {
      expect_error([&] { launch(masks_disagree_then_exit, dim3(1), dim3(32), 0, out.data()); },
                   {"lanes disagree", "called __shfl_sync(mask=0x0000ffff", "instead and exited"});
    } else {
      launch(masks_disagree_then_exit, dim3(1), dim3(32), 0, out.data());
      EXPECT_EQ(out[16], -1);  // read from exited lane 0: poison
    }
    expect_error([&] { launch(ops_disagree, dim3(1), dim3(32), 0, out.data()); },
                 {"disagree", "__shfl_xor_sync", "__shfl_down_sync"});
    expect_error([&] { launch(widths_disagree, dim3(1), dim3(32), 0, out.data()); },
                 {"lanes disagree", "width=16", "width=32"});
    expect_error([&] { launch(bad_width, dim3(1), dim3(32), 0, out.data()); }, {"width must be a power of two"});
  }
}

TEST(EmuErrors, ShuffleFromMissingLaneIsPoison) {
  Buffer<float> out(20);
  launch(partial_warp_shuffle, dim3(1), dim3(20), 0, out.data());
  for (int i = 0; i < 20; ++i) {
    if (i + 8 < 20) EXPECT_EQ(out[i], float(i + 8));
    else EXPECT_TRUE(std::isnan(out[i])) << i;  // lanes 20-31 do not exist
  }
}

TEST(EmuErrors, BadLaunchConfigurations) {
  Buffer<int> out(1);
  expect_error([&] { launch(LaunchConfig{dim3(1), dim3(32, 64), 0, "big_block"}, noop, out.data()); },
               {"kernel 'big_block'", "2048 threads, more than 1024"});
  expect_error([&] { launch(noop, dim3(1), dim3(1, 1, 65), 0, out.data()); }, {"per-dimension limit"});
  expect_error([&] { launch(noop, dim3(0), dim3(32), 0, out.data()); }, {"grid (0,1,1) is empty"});
  expect_error([&] { launch(noop, dim3(1, 70000), dim3(32), 0, out.data()); }, {"exceeds the limit"});
  expect_error([&] { launch(noop, dim3(1), dim3(32), 300 * 1024, out.data()); },
               {"307200 bytes of dynamic shared memory exceed the 232448-byte limit"});
  Buffer<float> f(1);
  expect_error([&] { launch(too_much_static_smem, dim3(1), dim3(32), 0, f.data()); },
               {"static shared memory exceeds 49152 bytes", "'big'"});
}

TEST(EmuErrors, ExceptionsAndTrapsUnwindCleanly) {
  Buffer<int> out(256);
  // Repeated failures must not leak fibers or stacks, or disturb the next launch.
  for (int i = 0; i < 50; ++i) {
    expect_error([&] { launch(throws_kernel, dim3(3), dim3(256), 0, out.data()); },
                 {"thread (5,0,0) threw: bad thing"});
  }
  expect_error([&] { launch(trap_kernel, dim3(4), dim3(32), 0, out.data()); },
               {"block (2,0,0)", "thread (3,0,0) executed __trap()"});
  Buffer<float> good(128);
  launch(neighbour_read<true>, dim3(1), dim3(128), 0, good.data());
  EXPECT_EQ(good[0], 2.0f);
}

TEST(EmuErrors, BuiltinsOutsideAKernel) {
  expect_error([] { (void)threadIdx.x; }, {"outside a kernel"});
}

}  // namespace
