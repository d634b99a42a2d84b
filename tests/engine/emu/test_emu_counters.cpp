// The access counters against the hardware rules: coalesced and strided global
// accesses, 16-byte vector loads, a shared-memory transpose with and without padding,
// broadcasts, divergent lanes, ldmatrix over swizzled and plain tiles; under several
// schedules (built with HMOE_EMU_COUNTERS).
#include <numeric>

#include "engine/emu/counters.h"
#include "tests/engine/emu/emu_test_util.h"
#include "tests/engine/emu/mma_kernels.cuh"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;
namespace cnt = hmoe::emu::counters;

// --- kernels ---------------------------------------------------------------------------
__global__ void copy_f32(const float* in, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[i];
}

__global__ void copy_strided(const float* in, float* out, int stride) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[i * unsigned(stride)];
}

__global__ void copy_f4(const float4* in, float4* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = in[i];
}

// A 32 x 32 tile through shared memory: row-wise stores, column-wise loads.
template <int Pitch>
__global__ void transpose32(const float* in, float* out) {
  HMOE_SHARED(float, tile, [32][Pitch]);
  const unsigned x = threadIdx.x, y = threadIdx.y;
  tile[y][x] = in[y * 32 + x];
  __syncthreads();
  out[y * 32 + x] = tile[x][y];
}

// Every lane reads the same shared word and the same global word.
__global__ void broadcast(const float* in, float* out) {
  HMOE_SHARED(float, s, [32]);
  s[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[0] + in[0];
}

// 16-byte shared accesses: consecutive float4 per lane (no conflict, 4 wavefronts).
__global__ void shared_f4(const float4* in, float4* out) {
  HMOE_SHARED_ALIGNED(16, float4, s, [32]);
  s[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = s[31 - threadIdx.x];
}

// Only lanes 0..15 load: one request of 16 lanes (64 bytes, 2 sectors).
__global__ void half_warp(const float* in, float* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = in[threadIdx.x];
}

// A WMMA A-tile (16 x 16 bf16, row-major) loaded from shared memory with row pitch Ldm.
template <int Ldm>
__global__ void wmma_tile(float* out) {
  HMOE_SHARED_ALIGNED(32, __nv_bfloat16, a, [16 * Ldm]);
  for (unsigned i = threadIdx.x; i < 16 * Ldm; i += 32) a[i] = __float2bfloat16(1.0f);
  __syncwarp();
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::row_major> f;
  nvcuda::wmma::load_matrix_sync(f, a, Ldm);
  out[threadIdx.x] = __bfloat162float(f.x[0]);
}

// --- helpers ---------------------------------------------------------------------------
class Counting : public Scheduled {
 protected:
  void SetUp() override {
    cnt::reset();
    cnt::set_enabled(true);
  }
  void TearDown() override {
    cnt::set_enabled(false);
    cnt::reset();
  }
};

cnt::KernelCounts only_kernel(const char* name) {
  auto k = cnt::snapshot(false);
  EXPECT_EQ(k.size(), 1u);
  if (k.empty()) return {};
  EXPECT_EQ(k[0].name, name);
  return k[0];
}

template <typename T>
struct Device {
  explicit Device(size_t n) : buf(n), range(buf.data(), n * sizeof(T)) {}
  Buffer<T> buf;
  cnt::ScopedGlobalRange range;
  T* data() { return buf.data(); }
};

// --- the hardware rules, on hand-made requests -----------------------------------------
TEST(EmuCounterRules, GlobalSectors) {
  uint64_t a[32];
  for (unsigned l = 0; l < 32; ++l) a[l] = 4096 + 4 * l;
  EXPECT_EQ(cnt::global_sectors(a, ~0u, 4), 4u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 4096 + 4 + 4 * l;  // misaligned by 4 bytes: 5 sectors
  EXPECT_EQ(cnt::global_sectors(a, ~0u, 4), 5u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 4096 + 128 * l;
  EXPECT_EQ(cnt::global_sectors(a, ~0u, 4), 32u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 4096 + 8 * l;
  EXPECT_EQ(cnt::global_sectors(a, ~0u, 8), 8u);
  EXPECT_EQ(cnt::global_sectors(a, 0x1u, 8), 1u);
}

TEST(EmuCounterRules, SharedWavefronts) {
  uint64_t a[32], ideal = 0;
  for (unsigned l = 0; l < 32; ++l) a[l] = 4 * l;
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 4, &ideal), 1u);
  EXPECT_EQ(ideal, 1u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 8 * l;  // stride 2 words: 2-way conflict
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 4, &ideal), 2u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 8 * l;  // doubles, consecutive: two half-warp phases
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 8, &ideal), 2u);
  EXPECT_EQ(ideal, 2u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 16 * l;  // float4, consecutive: four quarter-warp phases
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 16, &ideal), 4u);
  EXPECT_EQ(ideal, 4u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 32 * l;  // float4 with a 32-byte stride: 2-way per phase
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 16, &ideal), 8u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 4 * (l % 2);  // two words, many lanes each: multicast
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 4, &ideal), 1u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 128 * (l % 4);  // four words of bank 0
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 4, &ideal), 4u);
  for (unsigned l = 0; l < 32; ++l) a[l] = 2 * l;  // 16-bit, consecutive: 16 words
  EXPECT_EQ(cnt::shared_wavefronts(a, ~0u, 2, &ideal), 1u);
}

// --- kernels under the counters ------------------------------------------------------------
TEST_P(Counting, CoalescedCopyIsFourSectorsPerRequest) {
  Device<float> in(1024), out(1024);
  launch(LaunchConfig{dim3(8), dim3(128), 0, "copy_f32"}, copy_f32, in.data(), out.data());
  const cnt::KernelCounts k = only_kernel("copy_f32");
  const cnt::Totals ld = cnt::totals(k, false, false), st = cnt::totals(k, false, true);
  EXPECT_EQ(ld.requests, 32u);  // 1024 threads = 32 warps, one load each
  EXPECT_DOUBLE_EQ(ld.sectors_per_request(), 4.0);
  EXPECT_DOUBLE_EQ(ld.efficiency(), 1.0);
  EXPECT_EQ(st.requests, 32u);
  EXPECT_DOUBLE_EQ(st.sectors_per_request(), 4.0);
  EXPECT_EQ(k.unique_sectors, 2u * 1024 * 4 / 32);
  EXPECT_EQ(cnt::totals(k, true, false).requests, 0u);
}

TEST_P(Counting, StridedCopyIsThirtyTwoSectorsPerRequest) {
  Device<float> in(256 * 32), out(256);
  launch(LaunchConfig{dim3(2), dim3(128), 0, "copy_strided"}, copy_strided, in.data(), out.data(), 32);
  const cnt::KernelCounts k = only_kernel("copy_strided");
  const cnt::Totals ld = cnt::totals(k, false, false);
  EXPECT_EQ(ld.requests, 8u);
  EXPECT_DOUBLE_EQ(ld.sectors_per_request(), 32.0);
  EXPECT_DOUBLE_EQ(ld.efficiency(), 0.125);
  EXPECT_DOUBLE_EQ(cnt::totals(k, false, true).sectors_per_request(), 4.0);
}

TEST_P(Counting, Float4LoadsAreSixteenSectorsPerRequest) {
  Device<float4> in(256), out(256);
  launch(LaunchConfig{dim3(2), dim3(128), 0, "copy_f4"}, copy_f4, in.data(), out.data());
  const cnt::KernelCounts k = only_kernel("copy_f4");
  const cnt::Totals ld = cnt::totals(k, false, false);
  EXPECT_EQ(ld.requests, 8u);
  EXPECT_DOUBLE_EQ(ld.sectors_per_request(), 16.0);
  EXPECT_DOUBLE_EQ(ld.efficiency(), 1.0);
  ASSERT_FALSE(k.sites.empty());
  EXPECT_EQ(k.sites[0].width, 16u);
}

TEST_P(Counting, UnpaddedTransposeIsAThirtyTwoWayConflict) {
  Device<float> in(1024), out(1024);
  std::iota(in.buf.span().begin(), in.buf.span().end(), 0.0f);
  launch(LaunchConfig{dim3(1), dim3(32, 32), 0, "transpose32"}, transpose32<32>, in.data(), out.data());
  EXPECT_EQ(out.buf[1], 32.0f);
  const cnt::KernelCounts k = only_kernel("transpose32");
  const cnt::Totals st = cnt::totals(k, true, true), ld = cnt::totals(k, true, false);
  EXPECT_EQ(st.requests, 32u);
  EXPECT_DOUBLE_EQ(st.wavefronts_per_request(), 1.0);  // rows: 32 consecutive words
  EXPECT_EQ(ld.requests, 32u);
  EXPECT_DOUBLE_EQ(ld.wavefronts_per_request(), 32.0);  // a column: 32 words of one bank
  EXPECT_EQ(ld.conflicts(), 32u * 31u);
}

TEST_P(Counting, PaddedTransposeHasNoConflict) {
  Device<float> in(1024), out(1024);
  launch(LaunchConfig{dim3(1), dim3(32, 32), 0, "transpose33"}, transpose32<33>, in.data(), out.data());
  const cnt::KernelCounts k = only_kernel("transpose33");
  EXPECT_DOUBLE_EQ(cnt::totals(k, true, false).wavefronts_per_request(), 1.0);
  EXPECT_EQ(cnt::totals(k, true, false).conflicts(), 0u);
  EXPECT_EQ(cnt::totals(k, true, true).conflicts(), 0u);
}

TEST_P(Counting, BroadcastIsOneWavefrontAndOneSector) {
  Device<float> in(32), out(32);
  launch(LaunchConfig{dim3(1), dim3(32), 0, "broadcast"}, broadcast, in.data(), out.data());
  const cnt::KernelCounts k = only_kernel("broadcast");
  const cnt::Totals sl = cnt::totals(k, true, false), gl = cnt::totals(k, false, false);
  EXPECT_EQ(sl.requests, 1u);
  EXPECT_EQ(sl.wavefronts, 1u);
  EXPECT_EQ(gl.requests, 1u);
  EXPECT_EQ(gl.sectors, 1u);
}

TEST_P(Counting, SharedFloat4IsFourWavefronts) {
  Device<float4> in(32), out(32);
  launch(LaunchConfig{dim3(1), dim3(32), 0, "shared_f4"}, shared_f4, in.data(), out.data());
  const cnt::KernelCounts k = only_kernel("shared_f4");
  EXPECT_EQ(cnt::totals(k, true, true).wavefronts, 4u);
  EXPECT_EQ(cnt::totals(k, true, false).wavefronts, 4u);
  EXPECT_EQ(cnt::totals(k, true, false).conflicts(), 0u);
}

TEST_P(Counting, DivergentLanesMakeOneSmallerRequest) {
  Device<float> in(32), out(32);
  launch(LaunchConfig{dim3(1), dim3(32), 0, "half_warp"}, half_warp, in.data(), out.data());
  const cnt::Totals ld = cnt::totals(only_kernel("half_warp"), false, false);
  EXPECT_EQ(ld.requests, 1u);
  EXPECT_EQ(ld.sectors, 2u);
  EXPECT_EQ(ld.bytes, 64u);
}

// WMMA tile loads are modelled as ldmatrix reads: 32 chunks of 16 bytes, eight rows a
// phase. A 32-byte row pitch puts rows 0 and 4 in the same banks (2-way); 48 bytes does not.
TEST_P(Counting, WmmaTileLoadsAreModelledAsLdmatrix) {
  Device<float> out(32);
  launch(LaunchConfig{dim3(1), dim3(32), 0, "wmma16"}, wmma_tile<16>, out.data());
  launch(LaunchConfig{dim3(1), dim3(32), 0, "wmma24"}, wmma_tile<24>, out.data());
  const auto k = cnt::snapshot(true);
  ASSERT_EQ(k.size(), 2u);
  const cnt::Totals a = cnt::totals(k[0], true, false), b = cnt::totals(k[1], true, false);
  EXPECT_EQ(a.requests, 1u);
  EXPECT_EQ(a.wavefronts, 8u);
  EXPECT_EQ(a.ideal, 4u);
  EXPECT_EQ(b.wavefronts, 4u);
  bool named = false;
  for (const cnt::SiteCounts& s : k[0].sites)
    named = named || s.location.find("load_matrix_sync (modelled)") != std::string::npos;
  EXPECT_TRUE(named) << cnt::report(k);
}

// ldmatrix is one request per warp instruction whose lanes each read one 16-byte row,
// eight rows (one matrix) a quarter-warp phase: .x1 is one wavefront.
TEST_P(Counting, LdmatrixIsOneRequestOfSixteenByteRows) {
  Device<unsigned short> in(64);
  Device<unsigned> out(32);
  launch(LaunchConfig{dim3(1), dim3(32), 0, "ldmatrix_x1"}, hmoe_mma_sample::ldmatrix_probe<1, false>, in.data(),
         out.data());
  const cnt::Totals ld = cnt::totals(only_kernel("ldmatrix_x1"), true, false);
  EXPECT_EQ(ld.requests, 1u);
  EXPECT_EQ(ld.bytes, 128u);
  EXPECT_EQ(ld.wavefronts, 1u);
  EXPECT_EQ(ld.conflicts(), 0u);
}

// The 64x64x64 ldmatrix + mma.sync tile GEMM (4 warps, 4 k-steps, 4 ldmatrix.x4 each):
// over XOR-swizzled tiles its reads are conflict-free (4 wavefronts per request); over
// the same tiles unpadded and unswizzled, a matrix's 8 rows lie 128 bytes apart in the
// same four banks: 8-way, 32 wavefronts per request.
TEST_P(Counting, SwizzledLdmatrixTilesHaveNoBankConflict) {
  using namespace hmoe_mma_sample;
  Device<unsigned short> a(64 * 64), b(64 * 64);
  Device<float> c(64 * 64);
  launch(LaunchConfig{dim3(1), dim3(kGemmThreads), kGemmSmem, "swizzled"},
         tile_gemm64<TileLayout::swizzled, __nv_bfloat16>, a.data(), b.data(), c.data());
  launch(LaunchConfig{dim3(1), dim3(kGemmThreads), kGemmSmem, "plain"}, tile_gemm64<TileLayout::plain, __nv_bfloat16>,
         a.data(), b.data(), c.data());
  const auto k = cnt::snapshot(false);
  ASSERT_EQ(k.size(), 2u);
  const cnt::Totals sw = cnt::totals(k[0], true, false), plain = cnt::totals(k[1], true, false);
  EXPECT_EQ(sw.requests, 64u);
  EXPECT_EQ(sw.ideal, 4u * 64u);
  EXPECT_EQ(sw.conflicts(), 0u);
  EXPECT_EQ(cnt::totals(k[0], true, true).conflicts(), 0u);  // the cp.async tile stores
  EXPECT_EQ(plain.requests, 64u);
  EXPECT_DOUBLE_EQ(plain.wavefronts_per_request(), 32.0);
  EXPECT_EQ(plain.conflicts(), 28u * 64u);
}

TEST_P(Counting, ReportNamesTheSourceLine) {
  Device<float> in(1024), out(1024);
  launch(LaunchConfig{dim3(1), dim3(32, 32), 0, "transpose32"}, transpose32<32>, in.data(), out.data());
  const auto k = cnt::snapshot(true);
  ASSERT_EQ(k.size(), 1u);
  for (const cnt::SiteCounts& s : k[0].sites) EXPECT_NE(s.location.find("test_emu_counters.cpp"), std::string::npos);
  const std::string text = cnt::report(k);
  EXPECT_NE(text.find("32.00 wavefronts/request"), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Schedules, Counting, ::testing::ValuesIn(all_schedules()), schedule_name);

TEST(EmuCounters, OffRecordsNothing) {
  cnt::reset();
  Device<float> in(128), out(128);
  launch(LaunchConfig{dim3(1), dim3(128), 0, "copy_f32"}, copy_f32, in.data(), out.data());
  EXPECT_TRUE(cnt::snapshot(false).empty());
}

}  // namespace
