// ldmatrix / mma.sync kernels for both builds: run by the emulator tests
// (test_emu_mma_sync.cpp, test_emu_counters.cpp) and compiled by nvcc to real ldmatrix /
// mma.sync PTX (nvcc_sample.cu). Matrix elements travel as raw 16-bit bits.
#pragma once

#include "engine/cuda/cp_async.h"
#include "engine/cuda/device_code.h"
#include "engine/cuda/mma_ptx.h"

namespace hmoe_mma_sample {
namespace dev = hmoe::device;

// Num 8x8 matrices in shared memory (matrix i: rows 8i to 8i + 7 of an 8-element-wide
// tile), one ldmatrix by one warp: out[lane * Num + i] = the lane's register r[i]. Lanes
// that supply no row pass a misaligned address, which the instruction ignores.
template <int Num, bool Trans>
__global__ void __launch_bounds__(32) ldmatrix_probe(const unsigned short* in, unsigned* out) {
  HMOE_SHARED_ALIGNED(16, unsigned short, s, [Num * 64]);
  const unsigned lane = threadIdx.x;
  for (unsigned i = lane; i < Num * 64; i += 32) s[i] = in[i];
  __syncwarp();
  unsigned r[Num];
  dev::ldmatrix_m8n8<Num, Trans>(r, lane < 8 * Num ? s + lane * 8 : s + 1);
  for (int i = 0; i < Num; ++i) out[lane * Num + i] = r[i];
}

// Two consecutive 16-bit elements as one register, the first in the low half.
__device__ __forceinline__ unsigned pack2(const unsigned short* p) { return unsigned(p[0]) | unsigned(p[1]) << 16; }

// One m16n8k16 MMA by one warp, fragments built from global memory by the PTX ISA's
// tables (no ldmatrix): D = A B + C with A 16x16 [m][k], B 16x8 [k][n], C and D 16x8
// [m][n]. The accumulator is updated in place (d is c).
template <typename T>
__global__ void __launch_bounds__(32)
    mma_probe(const unsigned short* A, const unsigned short* B, const float* C, float* D) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  unsigned a[4], b[2];
  float acc[4];
  for (int j = 0; j < 4; ++j) a[j] = pack2(A + (g + 8 * (j & 1)) * 16 + 2 * t + 8 * (j >> 1));
  for (int j = 0; j < 2; ++j)
    b[j] = unsigned(B[(2 * t + 8 * j) * 8 + g]) | unsigned(B[(2 * t + 8 * j + 1) * 8 + g]) << 16;
  for (int i = 0; i < 4; ++i) acc[i] = C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
  dev::mma_m16n8k16<T>(acc, a, b, acc);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

// The same product fed by ldmatrix: A [16][16] by .x4, B stored [k][n] (8 wide) by
// .x2.trans, from shared memory; D = A B.
template <typename T>
__global__ void __launch_bounds__(32) mma_ldmatrix_probe(const unsigned short* A, const unsigned short* B, float* D) {
  HMOE_SHARED_ALIGNED(16, unsigned short, sa, [16 * 16]);
  HMOE_SHARED_ALIGNED(16, unsigned short, sb, [16 * 8]);
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  for (int i = lane; i < 16 * 16; i += 32) sa[i] = A[i];
  for (int i = lane; i < 16 * 8; i += 32) sb[i] = B[i];
  __syncwarp();
  unsigned a[4], b[2];
  dev::ldmatrix_m8n8<4>(a, sa + (lane % 16) * 16 + (lane / 16) * 8);  // matrices: rows 0-7 / 8-15 x k 0-7 / 8-15
  dev::ldmatrix_m8n8<2, true>(b, sb + (lane % 16) * 8);               // k 0-7, k 8-15
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  dev::mma_m16n8k16<T>(acc, a, b, acc);
  for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}

// How tile_gemm64 places a row's eight 16-byte chunks in shared memory: XOR-swizzled
// (chunk c of row r at c ^ (r % 8): no padding, no bank conflict for ldmatrix), plain
// (unpadded: the eight rows of a matrix share their banks), or mismatched (stored plain,
// read as if swizzled: a broken kernel, whose result must be wrong).
enum class TileLayout { swizzled, plain, mismatched };
constexpr int kGemmThreads = 128;
constexpr size_t kGemmSmem = 2 * 64 * 64 * sizeof(unsigned short);

template <TileLayout L>
__device__ __forceinline__ int stored_chunk(int row, int c) {
  return L == TileLayout::swizzled ? c ^ (row & 7) : c;
}
template <TileLayout L>
__device__ __forceinline__ int read_chunk(int row, int c) {
  return L == TileLayout::plain ? c : c ^ (row & 7);
}

// C = A B for 64x64 tiles (A [m][k], B [k][n], 16-bit; C f32 [m][n]) by four warps of
// 32x32: cp.async fills both tiles, ldmatrix.x4 reads A fragments and ldmatrix.x4.trans
// B fragments (two n-tiles of 8 each), mma.sync accumulates in registers, and the
// epilogue stores the accumulators straight to global memory.
template <TileLayout L, typename T>
__global__ void __launch_bounds__(kGemmThreads)
    tile_gemm64(const unsigned short* A, const unsigned short* B, float* C) {
  HMOE_DYNAMIC_SHARED(unsigned short, sa);
  unsigned short* sb = sa + 64 * 64;
  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  for (int i = tid; i < 64 * 8; i += kGemmThreads) {
    const int row = i / 8, c = i % 8;
    dev::cp_async_16(sa + row * 64 + stored_chunk<L>(row, c) * 8, A + row * 64 + c * 8, 16);
    dev::cp_async_16(sb + row * 64 + stored_chunk<L>(row, c) * 8, B + row * 64 + c * 8, 16);
  }
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  __syncthreads();
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  float acc[2][4][4] = {};
  for (int k0 = 0; k0 < 64; k0 += 16) {
    unsigned a[2][4], b[4][2];
    for (int mt = 0; mt < 2; ++mt) {
      const int row = wm + mt * 16 + lane % 16, c = k0 / 8 + lane / 16;
      dev::ldmatrix_m8n8<4>(a[mt], sa + row * 64 + read_chunk<L>(row, c) * 8);
    }
    for (int np = 0; np < 2; ++np) {
      const int row = k0 + lane % 16, c = (wn + np * 16) / 8 + lane / 16;
      unsigned r[4];
      dev::ldmatrix_m8n8<4, true>(r, sb + row * 64 + read_chunk<L>(row, c) * 8);
      b[2 * np][0] = r[0];
      b[2 * np][1] = r[1];
      b[2 * np + 1][0] = r[2];
      b[2 * np + 1][1] = r[3];
    }
    for (int mt = 0; mt < 2; ++mt)
      for (int nt = 0; nt < 4; ++nt) dev::mma_m16n8k16<T>(acc[mt][nt], a[mt], b[nt], acc[mt][nt]);
  }
  const int g = lane / 4, t = lane % 4;
  for (int mt = 0; mt < 2; ++mt)
    for (int nt = 0; nt < 4; ++nt)
      for (int i = 0; i < 4; ++i)
        C[(wm + mt * 16 + g + 8 * (i >> 1)) * 64 + wn + nt * 8 + 2 * t + (i & 1)] = acc[mt][nt][i];
}

}  // namespace hmoe_mma_sample
