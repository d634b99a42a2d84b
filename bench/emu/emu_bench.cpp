// Micro-benchmarks of the SIMT emulator: raw fiber switches, launch overhead, a
// block-reduction kernel's throughput, barrier- and shuffle-heavy kernels.
#include <benchmark/benchmark.h>

#include <vector>

#include "engine/cuda/device_code.h"
#include "engine/emu/fiber.h"

namespace {
using namespace hmoe::emu;

// --- raw context switches ---------------------------------------------------------------
struct PingPong {
  hmoe::emu::detail::Fiber fiber;
  bool stop = false;
};

void ping_pong_entry(void* arg) {
  auto& p = *static_cast<PingPong*>(arg);
  while (!p.stop) p.fiber.suspend();
}

void BM_FiberSwitch(benchmark::State& state) {
  hmoe::emu::detail::StackCache stacks(128 * 1024);
  PingPong p;
  p.fiber.start(stacks, &ping_pong_entry, &p);
  for (auto _ : state) p.fiber.resume();  // two switches: in and back out
  p.stop = true;
  p.fiber.resume();
  state.SetItemsProcessed(state.iterations() * 2);
  state.SetLabel("items = switches");
}
BENCHMARK(BM_FiberSwitch);

// --- kernels -----------------------------------------------------------------------------
constexpr int kThreads = 256;

__global__ void block_reduce(const float* in, float* out, int n) {
  HMOE_SHARED(float, partial, [kThreads]);
  const int tid = int(threadIdx.x);
  float s = 0.0f;
  for (int i = int(blockIdx.x) * kThreads + tid; i < n; i += int(gridDim.x) * kThreads) s += in[i];
  partial[tid] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

__global__ void barrier_loop(int* out, int rounds) {
  HMOE_SHARED(int, s, [kThreads]);
  const int tid = int(threadIdx.x);
  int acc = 0;
  for (int r = 0; r < rounds; ++r) {
    s[tid] = r + tid;
    __syncthreads();
    acc += s[(tid + 1) % kThreads];
    __syncthreads();
  }
  out[blockIdx.x * kThreads + unsigned(tid)] = acc;
}

__global__ void shuffle_loop(float* out, int rounds) {
  float v = float(threadIdx.x);
  for (int r = 0; r < rounds; ++r) v += __shfl_xor_sync(0xffffffffu, v, 1 + r % 16);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void empty_kernel(int) {}

Schedule schedule_arg(int64_t v) { return v == 0 ? Schedule{ScheduleMode::in_order, 0} : Schedule{ScheduleMode::random, 1}; }

void BM_EmptyLaunch(benchmark::State& state) {
  const unsigned threads = unsigned(state.range(0));
  for (auto _ : state) launch(LaunchConfig{dim3(1), dim3(threads), 0, "empty", Schedule{ScheduleMode::in_order, 0}, true, 1}, empty_kernel, 0);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel("items = launches of 1 block");
}
BENCHMARK(BM_EmptyLaunch)->Arg(32)->Arg(256)->Arg(1024);

// Arguments: schedule (0 in order, 1 random), workers.
void BM_BlockReduce(benchmark::State& state) {
  const int n = 1 << 20, blocks = 64;
  std::vector<float> in(n, 1.0f), out(blocks);
  const LaunchConfig c{dim3(blocks), dim3(kThreads), 0, "block_reduce", schedule_arg(state.range(0)), true,
                       unsigned(state.range(1))};
  for (auto _ : state) {
    launch(c, block_reduce, in.data(), out.data(), n);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel("items = elements");
}
BENCHMARK(BM_BlockReduce)->Args({0, 1})->Args({1, 1})->Args({0, 2})->UseRealTime();

// Each round is two block-wide barriers; items = barriers crossed by one thread.
void BM_SyncthreadsHeavy(benchmark::State& state) {
  const int rounds = 64, blocks = 8;
  std::vector<int> out(blocks * kThreads);
  const LaunchConfig c{dim3(blocks), dim3(kThreads), 0, "barrier_loop", schedule_arg(state.range(0)), true, 1};
  for (auto _ : state) launch(c, barrier_loop, out.data(), rounds);
  state.SetItemsProcessed(state.iterations() * blocks * kThreads * rounds * 2);
  state.SetLabel("items = thread-barrier crossings");
}
BENCHMARK(BM_SyncthreadsHeavy)->Arg(0)->Arg(1);

void BM_WarpShuffle(benchmark::State& state) {
  const int rounds = 64, blocks = 8;
  std::vector<float> out(blocks * kThreads);
  const LaunchConfig c{dim3(blocks), dim3(kThreads), 0, "shuffle_loop", schedule_arg(state.range(0)), true, 1};
  for (auto _ : state) launch(c, shuffle_loop, out.data(), rounds);
  state.SetItemsProcessed(state.iterations() * blocks * kThreads * rounds);
  state.SetLabel("items = lane-shuffles");
}
BENCHMARK(BM_WarpShuffle)->Arg(0)->Arg(1);

}  // namespace

BENCHMARK_MAIN();
