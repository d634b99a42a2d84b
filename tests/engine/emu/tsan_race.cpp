// TSan build only: `emu_tsan_race missing` runs a kernel that lacks a __syncthreads
// between a shared write and another thread's read (TSan must report a data race,
// under a schedule where the result happens to be right), after a correct launch that
// warms the workers' fiber contexts (they are reused from launch to launch, which must
// not hide a race); `emu_tsan_race blocks` runs blocks that store to one global word
// without atomics (a race between blocks on different workers); `emu_tsan_race
// correct` runs correct kernels (barriers, shuffles, atomics, WMMA, a cp.async pipeline)
// that must stay silent; `emu_tsan_race cp_async` reads another thread's cp.async
// destination after the reader's own wait_group but with no __syncthreads (a race).
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/cuda/device_code.h"
#include "tests/engine/emu/async_copy_kernels.cuh"
#include "tests/engine/emu/sample_kernels.cuh"

namespace {

template <bool WithBarrier>
__global__ void neighbour_read(float* out) {
  HMOE_SHARED(float, s, [64]);
  const unsigned t = threadIdx.x;
  s[t] = float(t + 1);
  if (WithBarrier) __syncthreads();
  out[blockIdx.x * 64 + t] = s[(t + 1) % 64];
}

// Every block's thread 0 stores its index to out[0]: unordered plain stores from
// different blocks. The other threads work on their own slots first, so that both
// workers are still taking blocks when the stores happen.
__global__ void last_block_wins(int* out, float* scratch) {
  float acc = 0;
  for (int i = 0; i < 64; ++i) acc += float(i * threadIdx.x);
  scratch[blockIdx.x * blockDim.x + threadIdx.x] = acc;
  if (threadIdx.x == 0) out[0] = int(blockIdx.x);
}

// Each thread copies 16 bytes by cp.async and waits for them, then reads its
// neighbour's: the wait orders only the thread's own copies, so without a barrier the
// read races with the neighbour's copy.
__global__ void cp_async_neighbour(const float* in, float* out) {
  HMOE_SHARED_ALIGNED(16, float, s, [64 * 4]);
  const unsigned t = threadIdx.x;
  hmoe::device::cp_async_16(s + 4 * t, in + 4 * t, 16);
  hmoe::device::cp_async_commit();
  hmoe::device::cp_async_wait<0>();
  out[t] = s[4 * ((t + 1) % 64)];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace hmoe::emu;
  const bool missing = argc > 1 && std::strcmp(argv[1], "missing") == 0;
  std::vector<float> out(4 * 64);
  // Reverse order runs every writer before its reader: the answer is right, the race
  // is still there.
  const Schedule rev{ScheduleMode::reverse, 0};
  if (argc > 1 && std::strcmp(argv[1], "blocks") == 0) {
    int last = -1;
    std::vector<float> scratch(256 * 32);
    launch(LaunchConfig{dim3(256), dim3(32), 0, "last_block_wins", rev, true, 2}, last_block_wins, &last,
           scratch.data());
    std::printf("blocks: last = %d\n", last);
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "cp_async") == 0) {
    alignas(16) static float in[256];
    for (int i = 0; i < 256; ++i) in[i] = float(i);
    launch(LaunchConfig{dim3(1), dim3(64), 0, "cp_async_neighbour", rev, true, 1}, cp_async_neighbour, in, out.data());
    std::printf("cp.async without a barrier: out[0] = %g (expected 4)\n", double(out[0]));
    return 0;
  }
  if (missing) {
    launch(LaunchConfig{dim3(4), dim3(64), 0, "neighbour_read<true>", rev, true, 2}, neighbour_read<true>, out.data());
    launch(LaunchConfig{dim3(4), dim3(64), 0, "neighbour_read<false>", rev, true, 2}, neighbour_read<false>,
           out.data());
    std::printf("missing barrier: out[0] = %g (expected 2)\n", double(out[0]));
    return 0;
  }
  for (Schedule s : {rev, Schedule{ScheduleMode::random, 3}}) {
    launch(LaunchConfig{dim3(4), dim3(64), 0, "neighbour_read<true>", s, true, 2}, neighbour_read<true>, out.data());
    const int n = 2000;
    std::vector<float> in(n, 1.0f);
    float total = 0;
    std::vector<unsigned> hist(8, 0);
    launch(LaunchConfig{dim3(4), dim3(256), 0, "reduce_and_histogram", s, true, 2}, hmoe_sample::reduce_and_histogram,
           in.data(), n, &total, hist.data());
    alignas(256) static __nv_bfloat16 a[256], b[256];
    alignas(256) static float c[256];
    for (int i = 0; i < 256; ++i) a[i] = b[i] = __nv_bfloat16(1.0f);
    launch(LaunchConfig{dim3(1), dim3(32), 1024, "wmma_tile", s}, hmoe_sample::wmma_tile, a, b, c);
    namespace as = hmoe_async_sample;
    std::vector<float> ring_in(3 * as::kChunk, 1.0f), ring_out(3 * as::kChunk);
    launch(LaunchConfig{dim3(1), dim3(as::kThreads), as::kStages * as::kChunk * sizeof(float), "ring_reverse", s},
           as::ring_reverse, ring_in.data(), ring_out.data(), 3);
    std::printf("correct kernels: total = %g (expected %d), c[0] = %g (expected 16), ring %g (expected 1)\n",
                double(total), n, double(c[0]), double(ring_out[0]));
  }
  return 0;
}
