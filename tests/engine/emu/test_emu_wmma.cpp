// WMMA under the emulator: a correctly written tiled GEMM matches the CPU for bf16 and
// f16 under every schedule and seed; a kernel relying on a guessed fragment layout
// fails; misaligned pointers, bad ldm and partial warps are reported.
#include <cmath>

#include "tests/engine/emu/emu_test_util.h"

namespace {
using namespace hmoe::emu;
using namespace hmoe::emu::testing;
using namespace nvcuda;

// C = alpha * A(MxK, row-major) * B(KxN, row- or column-major); 2x2 warps per block,
// each warp one 16x16 tile of C.
template <typename T, typename LayoutB>
__global__ void wmma_gemm(const T* a, const T* b, float* c, int m, int n, int k, float alpha) {
  const int warp = int(threadIdx.x) / 32;
  const int tile_m = int(blockIdx.y) * 32 + (warp / 2) * 16;
  const int tile_n = int(blockIdx.x) * 32 + (warp % 2) * 16;
  constexpr bool b_row = std::is_same_v<LayoutB, wmma::row_major>;
  if (tile_m >= m) return;  // whole warps only: WMMA needs all 32 lanes
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int kk = 0; kk < k; kk += 16) {
    wmma::load_matrix_sync(fa, a + size_t(tile_m) * size_t(k) + size_t(kk), unsigned(k));
    const T* pb = b_row ? b + size_t(kk) * size_t(n) + size_t(tile_n) : b + size_t(tile_n) * size_t(k) + size_t(kk);
    wmma::load_matrix_sync(fb, pb, unsigned(b_row ? n : k));
    wmma::mma_sync(acc, fa, fb, acc);
  }
  for (int i = 0; i < acc.num_elements; ++i) acc.x[i] *= alpha;  // uniform element-wise op
  wmma::store_matrix_sync(c + size_t(tile_m) * size_t(n) + size_t(tile_n), acc, unsigned(n), wmma::mem_row_major);
}

// Wrong: assumes lane l holds row l/2, columns (l%2)*8 .. +7 of the accumulator.
__global__ void guessed_layout(const __nv_bfloat16* a, const __nv_bfloat16* b, float* c) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  const unsigned lane = threadIdx.x;
  for (int i = 0; i < acc.num_elements; ++i) c[(lane / 2) * 16 + (lane % 2) * 8 + unsigned(i)] = acc.x[i];
}

__global__ void misaligned_load(const __half* a, unsigned ldm, int offset) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, a + offset, ldm);
}

__global__ void tall_tile(const __half* a, const __half* b, float* c) {
  wmma::fragment<wmma::matrix_a, 32, 8, 16, __half, wmma::col_major> fa;
  wmma::fragment<wmma::matrix_b, 32, 8, 16, __half, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 32, 8, 16, float> acc;
  wmma::load_matrix_sync(acc, c, 32, wmma::mem_col_major);
  wmma::load_matrix_sync(fa, a, 32);
  wmma::load_matrix_sync(fb, b, 8);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 32, wmma::mem_col_major);
}

template <typename T>
std::vector<float> run_gemm(bool b_row, int m, int n, int k, Buffer<T>& a, Buffer<T>& b) {
  Buffer<float> c(size_t(m * n), -7.0f);
  const dim3 grid(unsigned(n / 32), unsigned(m / 32));
  if (b_row) launch(wmma_gemm<T, wmma::row_major>, grid, dim3(128), 0, a.data(), b.data(), c.data(), m, n, k, 0.5f);
  else launch(wmma_gemm<T, wmma::col_major>, grid, dim3(128), 0, a.data(), b.data(), c.data(), m, n, k, 0.5f);
  return std::vector<float>(c.data(), c.data() + m * n);
}

template <typename T>
void check_gemm() {
  const int m = 64, n = 32, k = 48;
  Buffer<T> a(size_t(m * k)), b_rm(size_t(k * n)), b_cm(size_t(k * n));
  for (int i = 0; i < m * k; ++i) a[size_t(i)] = T(float((i * 37) % 19 - 9) / 8.0f);
  for (int r = 0; r < k; ++r)
    for (int col = 0; col < n; ++col) {
      const T v = T(float((r * 11 + col * 5) % 23 - 11) / 16.0f);
      b_rm[size_t(r * n + col)] = v;
      b_cm[size_t(col * k + r)] = v;
    }
  const auto c1 = run_gemm(true, m, n, k, a, b_rm);
  const auto c2 = run_gemm(false, m, n, k, a, b_cm);
  for (int r = 0; r < m; ++r)
    for (int col = 0; col < n; ++col) {
      double ref = 0;
      for (int x = 0; x < k; ++x) ref += double(float(a[size_t(r * k + x)])) * double(float(b_rm[size_t(x * n + col)]));
      ref *= 0.5;
      ASSERT_NEAR(c1[size_t(r * n + col)], ref, 1e-4) << r << "," << col;
      ASSERT_NEAR(c2[size_t(r * n + col)], ref, 1e-4) << r << "," << col;
    }
}

using EmuWmma = Scheduled;

TEST_P(EmuWmma, GemmBf16) { check_gemm<__nv_bfloat16>(); }
TEST_P(EmuWmma, GemmF16) { check_gemm<__half>(); }

TEST_P(EmuWmma, TallTileColumnMajor) {
  Buffer<__half> a(32 * 16), b(16 * 8);
  Buffer<float> c(32 * 8);
  for (int i = 0; i < 32 * 16; ++i) a[size_t(i)] = __half(float(i % 5) - 2.0f);  // column-major 32x16
  for (int i = 0; i < 16 * 8; ++i) b[size_t(i)] = __half(float(i % 3) - 1.0f);   // row-major 16x8
  for (int i = 0; i < 32 * 8; ++i) c[size_t(i)] = float(i);                      // column-major 32x8
  Buffer<float> c0(32 * 8);
  for (int i = 0; i < 32 * 8; ++i) c0[size_t(i)] = c[size_t(i)];
  launch(tall_tile, dim3(1), dim3(32), 0, a.data(), b.data(), c.data());
  for (int r = 0; r < 32; ++r)
    for (int col = 0; col < 8; ++col) {
      float ref = c0[size_t(col * 32 + r)];
      for (int x = 0; x < 16; ++x) ref += float(a[size_t(x * 32 + r)]) * float(b[size_t(x * 8 + col)]);
      EXPECT_EQ(c[size_t(col * 32 + r)], ref);
    }
}

INSTANTIATE_TEST_SUITE_P(Schedules, EmuWmma, ::testing::ValuesIn(all_schedules()), schedule_name);

TEST(EmuWmmaErrors, GuessedFragmentLayoutFails) {
  Buffer<__nv_bfloat16> a(256), b(256);
  for (int i = 0; i < 256; ++i) {
    a[size_t(i)] = __nv_bfloat16(float(i % 7));
    b[size_t(i)] = __nv_bfloat16(float(i % 5));
  }
  std::vector<float> ref(256, 0.0f);
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col)
      for (int x = 0; x < 16; ++x) ref[size_t(r * 16 + col)] += float(a[size_t(r * 16 + x)]) * float(b[size_t(x * 16 + col)]);
  std::vector<std::vector<float>> outs;
  for (uint64_t seed : {1u, 2u, 3u}) {
    Buffer<float> c(256);
    launch(LaunchConfig{dim3(1), dim3(32), 0, "guessed_layout", Schedule{ScheduleMode::in_order, seed}}, guessed_layout,
           a.data(), b.data(), c.data());
    int wrong = 0;
    for (int i = 0; i < 256; ++i) wrong += c[size_t(i)] != ref[size_t(i)];
    EXPECT_GT(wrong, 128) << "seed " << seed;
    outs.emplace_back(c.data(), c.data() + 256);
  }
  EXPECT_NE(outs[0], outs[1]);  // the mapping depends on the seed
}

TEST(EmuWmmaErrors, AlignmentLdmAndPartialWarps) {
  Buffer<__half> a(1024);
  expect_error([&] { launch(misaligned_load, dim3(1), dim3(32), 0, a.data(), 16u, 8); },
               {"wmma::load_matrix_sync", "not 32-byte (256-bit) aligned", "thread (0,0,0)"});
  expect_error([&] { launch(misaligned_load, dim3(1), dim3(32), 0, a.data(), 20u, 0); },
               {"ldm 20 is not a multiple of 8 elements"});
  expect_error([&] { launch(misaligned_load, dim3(1), dim3(32), 0, a.data(), 8u, 0); },
               {"ldm 8 is smaller than the tile's 16"});
  expect_error([&] { launch(misaligned_load, dim3(1), dim3(16), 0, a.data(), 16u, 0); },
               {"need all 32 lanes", "lanes {16-31}"});
}

}  // namespace
