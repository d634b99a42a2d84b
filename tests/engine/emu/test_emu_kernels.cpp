// Correct kernels with known results, each run under every schedule: barriers,
// shared memory, warp shuffles and votes, atomics, dynamic shared memory, grids.
#include <algorithm>
#include <numeric>

#include "tests/engine/emu/emu_test_util.h"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;

// --- kernels ---------------------------------------------------------------------------
constexpr int kReduceThreads = 256;

__global__ void block_reduce(const float* __restrict__ in, float* __restrict__ out, int n) {
  HMOE_SHARED(float, partial, [kReduceThreads]);
  const int tid = int(threadIdx.x);
  float s = 0.0f;
  for (int i = int(blockIdx.x) * kReduceThreads + tid; i < n; i += int(gridDim.x) * kReduceThreads) s += in[i];
  partial[tid] = s;
  __syncthreads();
  for (int stride = kReduceThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

__device__ float warp_sum_down(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}
__device__ float warp_sum_xor(float v) {
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

__global__ void warp_reduce(const float* in, float* lane0_sum, float* all_sum) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = in[i];
  const float a = warp_sum_down(v);
  const float b = warp_sum_xor(v);
  if (threadIdx.x % 32 == 0) lane0_sum[i / 32] = a;
  all_sum[i] = b;
}

__global__ void warp_scan(const int* in, int* out, int width) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane_in_seg = int(threadIdx.x % 32) % width;
  int v = in[i];
  for (int d = 1; d < width; d *= 2) {
    const int u = __shfl_up_sync(0xffffffffu, v, unsigned(d), width);
    if (lane_in_seg >= d) v += u;
  }
  out[i] = v;
}

constexpr int kTile = 32;
__global__ void transpose(const float* in, float* out, int rows, int cols) {
  HMOE_SHARED(float, tile, [kTile][kTile + 1]);
  const int x = int(blockIdx.x) * kTile + int(threadIdx.x);
  const int y0 = int(blockIdx.y) * kTile;
  for (int j = int(threadIdx.y); j < kTile; j += int(blockDim.y))
    if (x < cols && y0 + j < rows) tile[j][threadIdx.x] = in[size_t(y0 + j) * size_t(cols) + size_t(x)];
  __syncthreads();
  const int ox = y0 + int(threadIdx.x);
  const int oy0 = int(blockIdx.x) * kTile;
  for (int j = int(threadIdx.y); j < kTile; j += int(blockDim.y))
    if (ox < rows && oy0 + j < cols) out[size_t(oy0 + j) * size_t(rows) + size_t(ox)] = tile[threadIdx.x][j];
}

struct AtomicOut {
  unsigned* hist;
  int* max_v;
  int* min_v;
  unsigned* cas_count;
  unsigned* inc;
  float* fsum;
  unsigned long long* u64sum;
  unsigned* or_bits;
};

__global__ void atomics_kernel(const int* keys, int n, int bins, AtomicOut o) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const int k = keys[i];
  atomicAdd(&o.hist[k % bins], 1u);
  atomicMax(o.max_v, k);
  atomicMin(o.min_v, k);
  unsigned old = atomicOr(o.cas_count, 0u), seen;
  do {
    seen = old;
    old = atomicCAS(o.cas_count, seen, seen + 1);
  } while (old != seen);
  atomicInc(o.inc, 999u);
  atomicAdd(o.fsum, 1.0f);
  atomicAdd(o.u64sum, (unsigned long long)k);
  atomicOr(o.or_bits, 1u << (k % 32));
}

__global__ void votes(const int* pred, unsigned* ballot, int* any, int* all, int* all_true) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = pred[i];
  const unsigned b = __ballot_sync(0xffffffffu, p);
  const int a = __any_sync(0xffffffffu, p);
  const int l = __all_sync(0xffffffffu, p);
  const int t = __all_sync(0xffffffffu, 1);
  if (threadIdx.x % 32 == 0) {
    ballot[i / 32] = b;
    any[i / 32] = a;
    all[i / 32] = l;
    all_true[i / 32] = t;
  }
}

// Two halves of a warp reduce independently with disjoint masks, then the even and
// odd lanes do; finally the whole warp agrees.
__global__ void divergent_collectives(const int* in, int* half_sum, int* parity_sum, int* total) {
  const unsigned lane = threadIdx.x % 32;
  const int v = in[threadIdx.x];
  int s = v;
  if (lane < 16) {
    for (int m = 8; m > 0; m /= 2) s += __shfl_xor_sync(0x0000ffffu, s, m, 16);
  } else {
    for (int m = 8; m > 0; m /= 2) s += __shfl_xor_sync(0xffff0000u, s, m, 16);
  }
  half_sum[threadIdx.x] = s;
  int p;
  if (lane % 2 == 0) {
    p = __reduce_add_sync(0x55555555u, v);
  } else {
    p = __reduce_add_sync(0xaaaaaaaau, v);
    p += __shfl_sync(0xaaaaaaaau, 0, 1) * 0;  // another collective on the odd lanes only
  }
  parity_sum[threadIdx.x] = p;
  __syncwarp();
  total[threadIdx.x] = __reduce_add_sync(0xffffffffu, v);
}

__global__ void reverse_dynamic(const float* in, float* out) {
  HMOE_DYNAMIC_SHARED(float, buf);
  const unsigned n = blockDim.x;
  const unsigned t = threadIdx.x;
  buf[n - 1 - t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = buf[t];
}

// Touches the last byte of a large dynamic region (sm_90 sizes).
__global__ void big_dynamic(unsigned char* out, size_t bytes) {
  HMOE_DYNAMIC_SHARED(unsigned char, buf);
  for (size_t i = threadIdx.x; i < bytes; i += blockDim.x) buf[i] = (unsigned char)(i * 7);
  __syncthreads();
  if (threadIdx.x == 0) *out = buf[bytes - 1];
  if (threadIdx.x == 1) out[1] = (unsigned char)(hmoe::emu::dynamic_shared_size() == bytes);
}

__global__ void grid3d(unsigned* out) {
  const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
  out[bx * nt + tx] = (blockIdx.x << 24) | (blockIdx.y << 20) | (blockIdx.z << 16) | (threadIdx.x << 8) |
                      (threadIdx.y << 4) | threadIdx.z;
}

__global__ void barrier_predicates(int* out) {
  const int t = int(threadIdx.x);
  const int c = __syncthreads_count(t % 3 == 0);
  const int a = __syncthreads_and(t >= 0);
  const int o = __syncthreads_or(t == 77);
  const int z = __syncthreads_or(t > 1000);
  if (t == 0) {
    out[0] = c;
    out[1] = a;
    out[2] = o;
    out[3] = z;
  }
}

__global__ void match_kernel(const int* in, unsigned* any_out, unsigned* all_out, int* pred_out) {
  const int v = in[threadIdx.x];
  any_out[threadIdx.x] = __match_any_sync(0xffffffffu, v);
  int pred = -1;
  all_out[threadIdx.x] = __match_all_sync(0xffffffffu, v / 100, &pred);
  pred_out[threadIdx.x] = pred;
}

__global__ void typed_shuffles(double* d, long long* ll, float* bf, float* h) {
  const unsigned lane = threadIdx.x;
  d[lane] = __shfl_sync(0xffffffffu, 0.5 * lane, 31 - int(lane));
  ll[lane] = __shfl_down_sync(0xffffffffu, (long long)lane << 40, 1);
  bf[lane] = __bfloat162float(__shfl_xor_sync(0xffffffffu, __float2bfloat16(float(lane)), 1));
  h[lane] = __half2float(__shfl_up_sync(0xffffffffu, __float2half(float(lane)), 2));
}

// Thread 0 spins until thread 40 (another warp) sets a flag: the sleep lets the
// scheduler run the writer under every schedule.
__global__ void spin_wait(int* out) {
  HMOE_SHARED(int, flag, );
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    while (atomicAdd(&flag, 0) == 0) __nanosleep(100);
    out[0] = 1;
  }
  if (threadIdx.x == 40) atomicExch(&flag, 1);
}

__global__ void arrival_order(int* counter, int* order) { order[threadIdx.x] = atomicAdd(counter, 1); }

template <typename T, int N>
__global__ void scale_kernel(T* x, T a) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < unsigned(N)) x[i] = x[i] * a;
}

// --- tests ------------------------------------------------------------------------------
using EmuKernels = Scheduled;

TEST_P(EmuKernels, BlockReduction) {
  const int n = 5000, blocks = 7;
  Buffer<float> in(n), out(blocks, -1.0f);
  for (int i = 0; i < n; ++i) in[i] = float((i * 37) % 101) * 0.25f;
  launch(LaunchConfig{dim3(blocks), dim3(kReduceThreads), 0, "block_reduce"}, block_reduce, in.data(), out.data(), n);
  double total = 0, ref = 0;
  for (int b = 0; b < blocks; ++b) total += out[b];
  for (int i = 0; i < n; ++i) ref += in[i];
  EXPECT_NEAR(total, ref, 1e-3);
}

TEST_P(EmuKernels, WarpShuffleReduction) {
  Buffer<float> in(128), lane0(4), all(128);
  for (int i = 0; i < 128; ++i) in[i] = float(i % 13);
  launch(warp_reduce, dim3(2), dim3(64), 0, in.data(), lane0.data(), all.data());
  for (int w = 0; w < 4; ++w) {
    float ref = 0;
    for (int l = 0; l < 32; ++l) ref += in[w * 32 + l];
    EXPECT_EQ(lane0[w], ref);
    for (int l = 0; l < 32; ++l) EXPECT_EQ(all[w * 32 + l], ref);
  }
}

TEST_P(EmuKernels, InclusiveScanWithShflUpAndWidth) {
  for (int width : {32, 8}) {
    Buffer<int> in(96), out(96, -1);
    for (int i = 0; i < 96; ++i) in[i] = i % 7 + 1;
    launch(warp_scan, dim3(1), dim3(96), 0, in.data(), out.data(), width);
    for (int i = 0; i < 96; ++i) {
      int ref = 0;
      for (int j = i - (i % 32) % width; j <= i; ++j) ref += in[j];
      ASSERT_EQ(out[i], ref) << "i=" << i << " width=" << width;
    }
  }
}

TEST_P(EmuKernels, TransposeThroughSharedMemory) {
  const int rows = 70, cols = 45;
  Buffer<float> in(rows * cols), out(rows * cols, -1.0f);
  for (int i = 0; i < rows * cols; ++i) in[i] = float(i);
  launch(LaunchConfig{dim3((cols + kTile - 1) / kTile, (rows + kTile - 1) / kTile), dim3(kTile, 8), 0, "transpose"},
         transpose, in.data(), out.data(), rows, cols);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) ASSERT_EQ(out[c * rows + r], in[r * cols + c]);
}

TEST_P(EmuKernels, AtomicsAcrossManyBlocks) {
  const int n = 4000, bins = 10;
  Buffer<int> keys(n);
  for (int i = 0; i < n; ++i) keys[i] = (i * 7919) % 1000 + 3;
  Buffer<unsigned> hist(bins, 0u), cas(1, 0u), inc(1, 0u), orb(1, 0u);
  Buffer<int> mx(1, -1), mn(1, 1 << 30);
  Buffer<float> fsum(1, 0.0f);
  Buffer<unsigned long long> u64(1, 0ull);
  AtomicOut o{hist.data(), mx.data(), mn.data(), cas.data(), inc.data(), fsum.data(), u64.data(), orb.data()};
  launch(LaunchConfig{dim3((n + 127) / 128), dim3(128), 0, "atomics", std::nullopt, std::nullopt, 2}, atomics_kernel,
         keys.data(), n, bins, o);
  std::vector<unsigned> ref(bins, 0);
  unsigned long long s = 0;
  unsigned bits = 0;
  for (int i = 0; i < n; ++i) {
    ++ref[size_t(keys[i] % bins)];
    s += unsigned(keys[i]);
    bits |= 1u << (keys[i] % 32);
  }
  for (int b = 0; b < bins; ++b) EXPECT_EQ(hist[b], ref[size_t(b)]);
  EXPECT_EQ(mx[0], *std::max_element(keys.data(), keys.data() + n));
  EXPECT_EQ(mn[0], *std::min_element(keys.data(), keys.data() + n));
  EXPECT_EQ(cas[0], unsigned(n));
  EXPECT_EQ(inc[0], unsigned(n % 1000));  // wraps to 0 after 999
  EXPECT_EQ(fsum[0], float(n));
  EXPECT_EQ(u64[0], s);
  EXPECT_EQ(orb[0], bits);
}

TEST_P(EmuKernels, BallotAnyAll) {
  Buffer<int> pred(64);
  for (int i = 0; i < 64; ++i) pred[i] = i < 32 ? (i % 3 == 0) : 0;
  Buffer<unsigned> ballot(2);
  Buffer<int> any(2), all(2), all_true(2);
  launch(votes, dim3(1), dim3(64), 0, pred.data(), ballot.data(), any.data(), all.data(), all_true.data());
  unsigned ref = 0;
  for (int i = 0; i < 32; ++i) ref |= unsigned(pred[i]) << i;
  EXPECT_EQ(ballot[0], ref);
  EXPECT_EQ(ballot[1], 0u);
  EXPECT_EQ(any[0], 1);
  EXPECT_EQ(any[1], 0);
  EXPECT_EQ(all[0], 0);
  EXPECT_EQ(all_true[0], 1);
  EXPECT_EQ(all_true[1], 1);
}

TEST_P(EmuKernels, DivergentCollectivesWithDisjointMasks) {
  Buffer<int> in(32), half(32), parity(32), total(32);
  for (int i = 0; i < 32; ++i) in[i] = i * i + 1;
  launch(divergent_collectives, dim3(1), dim3(32), 0, in.data(), half.data(), parity.data(), total.data());
  int h[2] = {0, 0}, p[2] = {0, 0}, t = 0;
  for (int i = 0; i < 32; ++i) {
    h[i / 16] += in[i];
    p[i % 2] += in[i];
    t += in[i];
  }
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(half[i], h[i / 16]);
    EXPECT_EQ(parity[i], p[i % 2]);
    EXPECT_EQ(total[i], t);
  }
}

TEST_P(EmuKernels, DynamicSharedMemory) {
  const unsigned n = 96, blocks = 3;
  Buffer<float> in(n * blocks), out(n * blocks);
  for (unsigned i = 0; i < n * blocks; ++i) in[i] = float(i);
  launch(reverse_dynamic, dim3(blocks), dim3(n), n * sizeof(float), in.data(), out.data());
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < n; ++t) EXPECT_EQ(out[b * n + t], in[b * n + n - 1 - t]);
  const size_t big = 200 * 1024;
  Buffer<unsigned char> r(2);
  launch(big_dynamic, dim3(1), dim3(256), big, r.data(), big);
  EXPECT_EQ(r[0], (unsigned char)((big - 1) * 7));
  EXPECT_EQ(r[1], 1);
}

TEST_P(EmuKernels, ThreeDimensionalGridAndBlock) {
  const dim3 grid(2, 3, 2), block(4, 2, 3);
  const unsigned nt = 24, nb = 12;
  Buffer<unsigned> out(nt * nb, ~0u);
  launch(grid3d, grid, block, 0, out.data());
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 3; ++by)
      for (unsigned bx = 0; bx < 2; ++bx)
        for (unsigned tz = 0; tz < 3; ++tz)
          for (unsigned ty = 0; ty < 2; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const unsigned b = bx + 2 * (by + 3 * bz), t = tx + 4 * (ty + 2 * tz);
              ASSERT_EQ(out[b * nt + t], (bx << 24) | (by << 20) | (bz << 16) | (tx << 8) | (ty << 4) | tz);
            }
}

TEST_P(EmuKernels, BarrierPredicates) {
  Buffer<int> out(4, -1);
  launch(barrier_predicates, dim3(1), dim3(100), 0, out.data());
  EXPECT_EQ(out[0], 34);
  EXPECT_EQ(out[1], 1);
  EXPECT_EQ(out[2], 1);
  EXPECT_EQ(out[3], 0);
}

TEST_P(EmuKernels, MatchAnyAll) {
  Buffer<int> in(32);
  for (int i = 0; i < 32; ++i) in[i] = 100 + i % 3;
  Buffer<unsigned> any(32), all(32);
  Buffer<int> pred(32);
  launch(match_kernel, dim3(1), dim3(32), 0, in.data(), any.data(), all.data(), pred.data());
  for (int i = 0; i < 32; ++i) {
    unsigned ref = 0;
    for (int j = 0; j < 32; ++j) ref |= unsigned(in[j] == in[i]) << j;
    EXPECT_EQ(any[i], ref);
    EXPECT_EQ(all[i], 0xffffffffu);
    EXPECT_EQ(pred[i], 1);
  }
}

TEST_P(EmuKernels, ShufflesOfEveryType) {
  Buffer<double> d(32);
  Buffer<long long> ll(32);
  Buffer<float> bf(32), h(32);
  launch(typed_shuffles, dim3(1), dim3(32), 0, d.data(), ll.data(), bf.data(), h.data());
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(d[l], 0.5 * (31 - l));
    EXPECT_EQ(ll[l], (long long)(l < 31 ? l + 1 : l) << 40);  // shfl_down keeps its own past the end
    EXPECT_EQ(bf[l], float(l ^ 1));
    EXPECT_EQ(h[l], float(l < 2 ? l : l - 2));  // shfl_up keeps its own below the start
  }
}

TEST_P(EmuKernels, SpinWaitWithNanosleepMakesProgress) {
  Buffer<int> out(1, 0);
  launch(spin_wait, dim3(1), dim3(64), 0, out.data());
  EXPECT_EQ(out[0], 1);
}

TEST_P(EmuKernels, PortableLaunchMacroAndTemplateKernel) {
  Buffer<float> x(100, 2.0f);
  auto k = &scale_kernel<float, 100>;
  HMOE_LAUNCH(k, dim3(4), dim3(32), 0, nullptr, x.data(), 1.5f);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(x[i], 3.0f);
}

INSTANTIATE_TEST_SUITE_P(Schedules, EmuKernels, ::testing::ValuesIn(all_schedules()), schedule_name);

// --- schedule behaviour -----------------------------------------------------------------
std::vector<int> arrivals(Schedule s) {
  Buffer<int> counter(1, 0), order(128, -1);
  launch(LaunchConfig{dim3(1), dim3(128), 0, "arrival_order", s}, arrival_order, counter.data(), order.data());
  return std::vector<int>(order.data(), order.data() + 128);
}

TEST(EmuSchedule, ModesGiveTheirOrderAndRandomIsSeeded) {
  const auto in = arrivals({ScheduleMode::in_order, 0});
  const auto rev = arrivals({ScheduleMode::reverse, 0});
  const auto il = arrivals({ScheduleMode::interleave, 0});
  for (int t = 0; t < 128; ++t) {
    EXPECT_EQ(in[size_t(t)], t);
    EXPECT_EQ(rev[size_t(t)], 127 - t);
    EXPECT_EQ(il[size_t(t)], (t % 32) * 4 + t / 32);
  }
  EXPECT_EQ(arrivals({ScheduleMode::random, 5}), arrivals({ScheduleMode::random, 5}));
  EXPECT_NE(arrivals({ScheduleMode::random, 5}), arrivals({ScheduleMode::random, 6}));
  EXPECT_NE(arrivals({ScheduleMode::random, 5}), in);
}

TEST(EmuSchedule, ParseAndDefaults) {
  EXPECT_EQ(parse_schedule_mode("inorder"), ScheduleMode::in_order);
  EXPECT_EQ(parse_schedule_mode("reverse"), ScheduleMode::reverse);
  EXPECT_EQ(parse_schedule_mode("interleave"), ScheduleMode::interleave);
  EXPECT_EQ(parse_schedule_mode("random"), ScheduleMode::random);
  expect_error([] { parse_schedule_mode("sideways"); }, {"unknown schedule 'sideways'"});
  const Schedule saved = default_schedule();
  set_default_schedule({ScheduleMode::reverse, 9});
  EXPECT_EQ(default_schedule(), (Schedule{ScheduleMode::reverse, 9}));
  {
    ScopedSchedule s({ScheduleMode::in_order, 3});
    EXPECT_EQ(arrivals(Schedule{ScheduleMode::in_order, 0})[5], 5);
  }
  set_default_schedule(saved);
  const unsigned w = worker_count();
  set_worker_count(1);
  EXPECT_EQ(worker_count(), 1u);
  set_worker_count(w);
}

TEST(EmuSchedule, BlocksSpreadOverWorkers) {
  // Many blocks on two workers give the same answer as one worker.
  const int n = 64 * 256;
  Buffer<float> in(n), out1(64), out2(64);
  for (int i = 0; i < n; ++i) in[i] = float(i % 17);
  for (unsigned workers : {1u, 2u}) {
    LaunchConfig c{dim3(64), dim3(kReduceThreads), 0, "block_reduce", Schedule{ScheduleMode::random, 3}, true, workers};
    launch(c, block_reduce, in.data(), workers == 1 ? out1.data() : out2.data(), n);
  }
  for (int b = 0; b < 64; ++b) EXPECT_EQ(out1[b], out2[b]);
}

}  // namespace
