// ldmatrix / mma.sync under the emulator (engine/cuda/mma_ptx.h): lane-by-lane fragment
// layouts against the PTX ISA's tables, an m16n8k16 MMA against the CPU, a 64x64x64 tile
// GEMM over an XOR-swizzled shared tile under every schedule, a kernel reading the wrong
// layout, and misuse (alignment, address space, divergent or partial warps).
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include "engine/half_bits.h"
#include "tests/engine/emu/emu_test_util.h"
#include "tests/engine/emu/mma_kernels.cuh"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;
using namespace hmoe_mma_sample;
namespace hb = hmoe::half_bits;

// The ids 0 .. n-1 as 16-bit elements: element (matrix m, row j, column c) of the probe
// tile holds 64m + 8j + c.
Buffer<unsigned short> ids(size_t n) {
  Buffer<unsigned short> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<unsigned short>(i);
  return b;
}

template <int Num, bool Trans>
std::vector<unsigned> run_ldmatrix() {
  Buffer<unsigned short> in = ids(Num * 64);
  Buffer<unsigned> out(32 * Num, 0xdeadbeefu);
  launch(&ldmatrix_probe<Num, Trans>, dim3(1), dim3(32), 0, in.data(), out.data());
  return {out.data(), out.data() + 32 * Num};
}

unsigned lo(unsigned r) { return r & 0xffffu; }
unsigned hi(unsigned r) { return r >> 16; }

// PTX ISA, ldmatrix: "each thread in a warp holds a fragment of a row of the matrix": for
// .m8n8.b16 lane l gets row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 (low half first)
// of every matrix, r[i] from matrix i; .trans loads the matrix in column-major order.
template <int Num, bool Trans>
void check_ldmatrix() {
  const std::vector<unsigned> r = run_ldmatrix<Num, Trans>();
  for (unsigned lane = 0; lane < 32; ++lane)
    for (unsigned m = 0; m < unsigned(Num); ++m) {
      const unsigned row = lane / 4, col = 2 * (lane % 4), reg = r[lane * Num + m];
      const unsigned want_lo = Trans ? 64 * m + 8 * col + row : 64 * m + 8 * row + col;
      const unsigned want_hi = Trans ? 64 * m + 8 * (col + 1) + row : 64 * m + 8 * row + col + 1;
      EXPECT_EQ(lo(reg), want_lo) << "x" << Num << (Trans ? ".trans" : "") << " lane " << lane << " r[" << m << "]";
      EXPECT_EQ(hi(reg), want_hi) << "x" << Num << (Trans ? ".trans" : "") << " lane " << lane << " r[" << m << "]";
    }
}

class EmuMmaSync : public Scheduled {};

TEST_P(EmuMmaSync, LdmatrixFragmentsFollowThePtxTable) {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}

// A few entries of the PTX ISA's figure, spelled out: lane 0 holds (0,0),(0,1); lane 1
// (0,2),(0,3); lane 4 (1,0),(1,1); lane 31 (7,6),(7,7). Transposed, lane 1 holds the
// stored (2,0),(3,0) and lane 4 the stored (0,1),(1,1).
TEST_P(EmuMmaSync, LdmatrixSpotChecks) {
  const std::vector<unsigned> r = run_ldmatrix<4, false>(), t = run_ldmatrix<4, true>();
  EXPECT_EQ(r[0 * 4], 0u | 1u << 16);
  EXPECT_EQ(r[1 * 4], 2u | 3u << 16);
  EXPECT_EQ(r[4 * 4], 8u | 9u << 16);
  EXPECT_EQ(r[31 * 4], 62u | 63u << 16);
  EXPECT_EQ(r[31 * 4 + 3], (192u + 62u) | (192u + 63u) << 16);  // matrix 3
  EXPECT_EQ(t[1 * 4], 16u | 24u << 16);
  EXPECT_EQ(t[4 * 4], 1u | 9u << 16);
  EXPECT_EQ(t[31 * 4 + 1], (64u + 6 * 8 + 7) | (64u + 7 * 8 + 7) << 16);
}

// Random values that 16-bit floats hold exactly, as bits of type T.
template <typename T>
Buffer<unsigned short> random_bits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-64, 64);
  Buffer<unsigned short> b(n);
  for (size_t i = 0; i < n; ++i) {
    const float v = float(d(rng)) / 32.0f;
    b[i] = std::is_same_v<T, __nv_bfloat16> ? hb::float_to_bf16_bits(v) : hb::float_to_half_bits(v);
  }
  return b;
}
template <typename T>
float value(unsigned short bits) {
  return std::is_same_v<T, __nv_bfloat16> ? hb::bf16_bits_to_float(bits) : hb::half_bits_to_float(bits);
}

// D = C + A B with the emulator's documented order: per (m, n), C then k = 0, 1, ... in f32.
template <typename T>
std::vector<float> cpu_gemm(const Buffer<unsigned short>& a, const Buffer<unsigned short>& b, const float* c, int m,
                            int n, int k) {
  std::vector<float> d(size_t(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float s = c ? c[i * n + j] : 0.0f;
      for (int p = 0; p < k; ++p) s += value<T>(a[size_t(i * k + p)]) * value<T>(b[size_t(p * n + j)]);
      d[size_t(i) * n + j] = s;
    }
  return d;
}

template <typename T>
void check_mma() {
  const Buffer<unsigned short> a = random_bits<T>(16 * 16, 1), b = random_bits<T>(16 * 8, 2);
  Buffer<float> c(16 * 8), d(16 * 8, -1.0f), e(16 * 8, -1.0f);
  for (int i = 0; i < 16 * 8; ++i) c[size_t(i)] = float(i % 7) - 3.0f;
  launch(&mma_probe<T>, dim3(1), dim3(32), 0, a.data(), b.data(), c.data(), d.data());
  launch(&mma_ldmatrix_probe<T>, dim3(1), dim3(32), 0, a.data(), b.data(), e.data());
  const std::vector<float> want = cpu_gemm<T>(a, b, c.data(), 16, 8, 16), want0 = cpu_gemm<T>(a, b, nullptr, 16, 8, 16);
  for (int i = 0; i < 16 * 8; ++i) {
    EXPECT_EQ(d[size_t(i)], want[size_t(i)]) << "mma_probe element (" << i / 8 << ", " << i % 8 << ")";
    EXPECT_EQ(e[size_t(i)], want0[size_t(i)]) << "mma_ldmatrix_probe element (" << i / 8 << ", " << i % 8 << ")";
  }
}

TEST_P(EmuMmaSync, M16n8k16MatchesTheCpu) {
  check_mma<__nv_bfloat16>();
  check_mma<__half>();
}

template <TileLayout L, typename T>
std::vector<float> run_tile_gemm(const Buffer<unsigned short>& a, const Buffer<unsigned short>& b) {
  Buffer<float> c(64 * 64, -1.0f);
  launch(&tile_gemm64<L, T>, dim3(1), dim3(kGemmThreads), kGemmSmem, a.data(), b.data(), c.data());
  return {c.data(), c.data() + 64 * 64};
}

TEST_P(EmuMmaSync, SwizzledTileGemmMatchesTheCpu) {
  const Buffer<unsigned short> a = random_bits<__nv_bfloat16>(64 * 64, 3), b = random_bits<__nv_bfloat16>(64 * 64, 4);
  const std::vector<float> want = cpu_gemm<__nv_bfloat16>(a, b, nullptr, 64, 64, 64);
  EXPECT_EQ((run_tile_gemm<TileLayout::swizzled, __nv_bfloat16>(a, b)), want);
  EXPECT_EQ((run_tile_gemm<TileLayout::plain, __nv_bfloat16>(a, b)), want);
  const Buffer<unsigned short> h = random_bits<__half>(64 * 64, 5), w = random_bits<__half>(64 * 64, 6);
  EXPECT_EQ((run_tile_gemm<TileLayout::swizzled, __half>(h, w)), (cpu_gemm<__half>(h, w, nullptr, 64, 64, 64)));
}

// Stored plain, read as swizzled: rows r % 8 != 0 get other columns' data.
TEST_P(EmuMmaSync, WrongTileLayoutGivesWrongResults) {
  const Buffer<unsigned short> a = random_bits<__nv_bfloat16>(64 * 64, 3), b = random_bits<__nv_bfloat16>(64 * 64, 4);
  const std::vector<float> want = cpu_gemm<__nv_bfloat16>(a, b, nullptr, 64, 64, 64);
  const std::vector<float> got = run_tile_gemm<TileLayout::mismatched, __nv_bfloat16>(a, b);
  size_t wrong = 0;
  for (size_t i = 0; i < want.size(); ++i) wrong += got[i] != want[i];
  EXPECT_GT(wrong, want.size() / 2);
}

INSTANTIATE_TEST_SUITE_P(Schedules, EmuMmaSync, ::testing::ValuesIn(all_schedules()), schedule_name);

// --- misuse ------------------------------------------------------------------------------
namespace dev = hmoe::device;

__global__ void ldmatrix_misaligned() {
  HMOE_SHARED_ALIGNED(16, unsigned short, s, [8 * 8 + 8]);
  unsigned r[1];
  dev::ldmatrix_m8n8<1>(r, s + 4 + threadIdx.x % 8 * 8);  // 8 bytes past a row start
}

__global__ void ldmatrix_from_global(const unsigned short* g) {
  unsigned r[2];
  dev::ldmatrix_m8n8<2, true>(r, g + threadIdx.x % 16 * 8);
}

__global__ void ldmatrix_divergent() {
  HMOE_SHARED_ALIGNED(16, unsigned short, s, [8 * 8]);
  unsigned r[1];
  if (threadIdx.x < 16)
    dev::ldmatrix_m8n8<1>(r, s + threadIdx.x % 8 * 8);
  else
    dev::ldmatrix_m8n8<1>(r, s + threadIdx.x % 8 * 8);
}

__global__ void ldmatrix_half_warp() {
  HMOE_SHARED_ALIGNED(16, unsigned short, s, [8 * 8]);
  if (threadIdx.x >= 16) return;
  unsigned r[1];
  dev::ldmatrix_m8n8<1>(r, s + threadIdx.x % 8 * 8);
}

__global__ void mma_partial_block() {  // launched with 48 threads: warp 1 has 16 lanes
  unsigned a[4] = {}, b[2] = {};
  float c[4] = {};
  dev::mma_m16n8k16<__nv_bfloat16>(c, a, b, c);
}

__global__ void mma_mixed_types() {
  unsigned a[4] = {}, b[2] = {};
  float c[4] = {};
  if (threadIdx.x % 2)
    dev::mma_m16n8k16<__nv_bfloat16>(c, a, b, c);
  else
    dev::mma_m16n8k16<__half>(c, a, b, c);
}

TEST(EmuMmaSyncErrors, MisuseIsReported) {
  Buffer<unsigned short> g(256);
  expect_error(
      [] { launch(&ldmatrix_misaligned, dim3(1), dim3(32), 0); },
      {"ldmatrix.sync.aligned.m8n8.x1.shared.b16", "test_emu_mma_sync.cpp", "is not 16-byte aligned", "of matrix 0"});
  expect_error([&] { launch(&ldmatrix_from_global, dim3(1), dim3(32), 0, g.data()); },
               {"ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", "is not in the block's shared memory"});
  expect_error([] { launch(&ldmatrix_divergent, dim3(1), dim3(32), 0); },
               {"lanes disagree on a warp collective", "ldmatrix.x1"});
  expect_error([] { launch(&ldmatrix_half_warp, dim3(1), dim3(32), 0); }, {"ldmatrix.x1", "need all 32 lanes"});
  expect_error([] { launch(&mma_partial_block, dim3(1), dim3(48), 0); },
               {"mma.sync.m16n8k16.bf16", "need all 32 lanes"});
  expect_error([] { launch(&mma_mixed_types, dim3(1), dim3(32), 0); },
               {"lanes disagree on a warp collective", "mma.sync.m16n8k16"});
}

}  // namespace
