// The grouped GEMM forward (and dX) on tensor cores through ldmatrix + mma.sync
// (engine/cuda/mma_ptx.h) for 16-byte-aligned bf16/f16 operands: the operand panels sit
// unpadded and XOR-swizzled in the cp.async pipeline (the fragment layouts are the PTX
// ISA's, so any shared layout can be addressed), and the epilogue works on the
// accumulators in registers, without a shared staging tile.
#pragma once

#include "engine/cuda/mma_ptx.h"
#include "ops/moe/cuda/grouped_gemm_mma.cuh"

namespace hmoe::ops::cuda::moe_gemm {

// Shared memory of the ldmatrix kernels: kMmaStages stages of the A panel [BM][BK] and
// the B panel ([BN][BK] with B_LINES_N, else [BK][BN]), unpadded lines with swizzled
// chunks (swizzle_chunk). No epilogue staging.
template <typename Cfg, bool B_LINES_N>
struct MmaSyncSmem {
  static constexpr int A_ALONG = Cfg::BK, B_LINES = B_LINES_N ? Cfg::BN : Cfg::BK;
  static constexpr int B_ALONG = B_LINES_N ? Cfg::BK : Cfg::BN;
  static constexpr size_t a_bytes = size_t(Cfg::BM) * Cfg::BK * 2, b_bytes = size_t(Cfg::BN) * Cfg::BK * 2;
  static constexpr size_t bytes = kMmaStages * (a_bytes + b_bytes);
  static_assert(a_bytes % 128 == 0 && b_bytes % 128 == 0, "stages stay 128-byte aligned");
};

// The warp's accumulators: FM m16 tiles x (WN / 8) n8 tiles of 4 floats each, in the
// m16n8k16 C layout (element i of tile (f, j): row 16 f + lane / 4 + 8 (i >> 1), column
// 8 j + 2 (lane % 4) + (i & 1) of the warp's block).
template <typename Cfg>
using MmaAcc = float[Cfg::FM][Cfg::WN / 8][4];

// acc += the products of one stage (as: [BM][BK], bs: as in MmaSyncSmem) for the warp's
// WM x WN block. Per 16-wide k step: B by ldmatrix.x4 (two n8 tiles per call: .trans
// from [k][n] lines, plain from [n][k] lines), A by ldmatrix.x4 per m16 tile, then one
// mma.sync per tile pair, each adding its 16 products in k order (the WMMA kernels'
// order: the same bits under the emulator).
template <typename T, typename Cfg, bool B_LINES_N>
__device__ __forceinline__ void mma_sync_stage(const T* as, const T* bs, MmaAcc<Cfg>& acc) {
  using S = MmaSyncSmem<Cfg, B_LINES_N>;
  constexpr int BK = Cfg::BK, WM = Cfg::WM, WN = Cfg::WN, FM = Cfg::FM, FN = WN / 8;
  constexpr int A_CHUNKS = S::A_ALONG / 8, B_CHUNKS = S::B_ALONG / 8;
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    unsigned b[FN][2];
#pragma unroll
    for (int np = 0; np < FN / 2; ++np) {
      // Matrices 0-3 of the call: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15),
      // (k 8-15, n 8-15) of the pair; lane 8i + j addresses row j of matrix i.
      unsigned r[4];
      if constexpr (B_LINES_N) {
        const int line = wn * WN + 16 * np + (lane & 7) + ((lane >> 4) << 3), c = 2 * kk + ((lane >> 3) & 1);
        ::hmoe::device::ldmatrix_m8n8<4>(r, bs + line * S::B_ALONG + swizzle_chunk<B_CHUNKS>(line, c) * 8);
      } else {
        const int line = 16 * kk + (lane & 15), c = (wn * WN + 16 * np) / 8 + (lane >> 4);
        ::hmoe::device::ldmatrix_m8n8<4, true>(r, bs + line * S::B_ALONG + swizzle_chunk<B_CHUNKS>(line, c) * 8);
      }
      b[2 * np][0] = r[0];
      b[2 * np][1] = r[1];
      b[2 * np + 1][0] = r[2];
      b[2 * np + 1][1] = r[3];
    }
#pragma unroll
    for (int f = 0; f < FM; ++f) {
      // Matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15,
      // k 8-15): the A fragment's registers 0-3.
      const int line = wm * WM + 16 * f + (lane & 15), c = 2 * kk + (lane >> 4);
      unsigned a[4];
      ::hmoe::device::ldmatrix_m8n8<4>(a, as + line * S::A_ALONG + swizzle_chunk<A_CHUNKS>(line, c) * 8);
#pragma unroll
      for (int j = 0; j < FN; ++j) ::hmoe::device::mma_m16n8k16<T>(acc[f][j], a, b[j], acc[f][j]);
    }
  }
}

// acc = sum over `steps` panels of A B (A: x rows [m][k]; B: W^T rows [n][k] with
// B_LINES_N, else W rows [k][n]) through cp_async_pipeline into swizzled stages, a.act
// applied to each landed A stage. Ends with a barrier.
template <typename T, typename Cfg, bool B_LINES_N>
__device__ __forceinline__ void mma_sync_mainloop(const Lines<T>& a, const Lines<T>& b, int steps, unsigned char* smem,
                                                  MmaAcc<Cfg>& acc) {
  using S = MmaSyncSmem<Cfg, B_LINES_N>;
  constexpr int BK = Cfg::BK, NT = Cfg::NT, V = 16 / int(sizeof(T));
  using PA = Panel<T, Cfg::BM, S::A_ALONG, NT, V, true>;
  using PB = Panel<T, S::B_LINES, S::B_ALONG, NT, V, B_LINES_N>;
#pragma unroll
  for (int f = 0; f < Cfg::FM; ++f)
#pragma unroll
    for (int j = 0; j < Cfg::WN / 8; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[f][j][i] = 0.0f;
  if (steps == 0) return;
  auto a_panel = [&](int buf) { return reinterpret_cast<T*>(smem + buf * (S::a_bytes + S::b_bytes)); };
  auto b_panel = [&](int buf) { return reinterpret_cast<T*>(smem + buf * (S::a_bytes + S::b_bytes) + S::a_bytes); };
  PA pa;
  PB pb;
  pa.prepare(a);
  pb.prepare(b);
  cp_async_pipeline(
      steps,
      [&](int s, int buf) {
        pa.template copy_async<true>(a, 0, s * BK, a_panel(buf), 0);
        pb.template copy_async<true>(b, B_LINES_N ? 0 : s * BK, B_LINES_N ? s * BK : 0, b_panel(buf), 0);
      },
      [&](int buf) {
        if (a.act != FusedAct::none) pa.template act_in_place<true>(a_panel(buf), 0, a.act);
      },
      [&](int buf) { mma_sync_stage<T, Cfg, B_LINES_N>(a_panel(buf), b_panel(buf), acc); });
}

// Writes the warp's accumulators: y = scale[row] * (acc + bias[col]) rounded to T (with
// act_grad: y * act'(h) of the stored h), as mma_epilogue computes it, from registers.
// Per m16 tile and pair of n8 tiles, a quad of lanes holds 2 rows x 16 columns; each
// lane rounds its own pairs, then three XOR shuffles give lane t of the quad row
// g + 8 (t >> 1), columns 8 (t & 1) to + 8 of the pair: one 16-byte store per lane, a
// warp's store covering 16 rows x 32 bytes (whole sectors).
template <typename T, typename Cfg>
__device__ __forceinline__ void mma_sync_epilogue(const Epilogue<T, float>& e, const MmaAcc<Cfg>& acc) {
  static_assert(sizeof(T) == 2, "16-bit outputs: a rounded pair is one 32-bit register");
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, t = lane % 4;
  const int row0 = e.row0 + (warp / Cfg::WARPS_N) * Cfg::WM + lane / 4, col0 = e.col0 + (warp % Cfg::WARPS_N) * Cfg::WN;
#pragma unroll
  for (int f = 0; f < Cfg::FM; ++f)
#pragma unroll
    for (int p = 0; p < Cfg::WN / 16; ++p) {
      // Round x: this lane rounds its pair for lane t ^ x of the quad (tile 2p + (dest &
      // 1), row half dest >> 1) and receives that lane's pair for it, its columns
      // 2 (t ^ x) and + 1 of this lane's chunk. The lane-dependent choices are selects
      // over compile-time indices: indexing acc or o by a lane value would put them in
      // local memory.
      Pack<T, 8> o;
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int dest = t ^ x, h = dest >> 1, row = row0 + 16 * f + 8 * h;
        const int col = col0 + 16 * p + 8 * (dest & 1) + 2 * t;
        const float s = (e.scale != nullptr && row < e.row_end) ? e.scale[row] : 1.0f;
        Pack<T, 2> pair;
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          const float *lo = acc[f][2 * p], *hi = acc[f][2 * p + 1];
          const float v = (dest & 1) ? (h ? hi[2 + q] : hi[q]) : (h ? lo[2 + q] : lo[q]);
          const float bq = (e.bias != nullptr && col + q < e.col_end) ? e.bias[col + q] : 0.0f;
          pair.v[q] = from_compute<T>(e.scale != nullptr ? (v + bq) * s : v + bq);
        }
        unsigned bits;
        memcpy(&bits, &pair, sizeof bits);
        if (x != 0) bits = __shfl_xor_sync(0xffffffffu, bits, x);
        memcpy(static_cast<void*>(&pair), &bits, sizeof bits);
#pragma unroll
        for (int u = 0; u < 4; ++u)
          if ((t ^ x) == u) {
            o.v[2 * u] = pair.v[0];
            o.v[2 * u + 1] = pair.v[1];
          }
      }
      const int row = row0 + 16 * f + 8 * (t >> 1), col = col0 + 16 * p + 8 * (t & 1);
      if (row >= e.row_end || col >= e.col_end) continue;
      T* dst = e.out + int64_t(row) * e.ldo + col;
      if (e.act_grad != FusedAct::none) {  // dst holds h: read, then written, by this lane only
#pragma unroll
        for (int q = 0; q < 8; ++q)
          if (col + q < e.col_end) o.v[q] = fused_act_grad<T>(e.act_grad, dst[q], o.v[q]);
      }
      if (e.vec && col + 8 <= e.col_end) {
        store_pack<T, 8>(dst, o);
      } else {
#pragma unroll
        for (int q = 0; q < 8; ++q)
          if (col + q < e.col_end) dst[q] = o.v[q];
      }
    }
}

// Forward, bf16/f16, 16-byte-aligned operands: what grouped_gemm_wmma<T, Cfg, TRANS, V,
// ACT> computes, bit for bit under the emulator (same products, same order, same
// rounding). Launch: as grouped_gemm_wmma, MmaSyncSmem<Cfg, TRANS>::bytes of dynamic
// shared memory.
template <typename T, typename Cfg, bool TRANS, bool ACT>
__global__ void __launch_bounds__(256, 2)
    grouped_gemm_mma_sync(GroupTable tab, const T* __restrict__ x, const int64_t* __restrict__ index,
                          const T* __restrict__ w, const float* __restrict__ scale, const float* __restrict__ bias,
                          T* __restrict__ out, int64_t k, int64_t n, bool vec_out, FusedAct x_act,
                          FusedAct out_act_grad) {
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  for (int64_t t = blockIdx.x; t < tab.tiles; t += gridDim.x) {
    const ForwardSpan sp = forward_span<Cfg::BM, Cfg::BN>(tab, forward_tile(tab, t));
    const ForwardOperands<T> op = forward_operands<T, TRANS>(sp, x, index, w, k, n, ACT ? x_act : FusedAct::none);
    MmaAcc<Cfg> acc;
    mma_sync_mainloop<T, Cfg, TRANS>(op.a, op.b, int((k + Cfg::BK - 1) / Cfg::BK), smem, acc);
    const Epilogue<T, float> e =
        forward_epilogue<T>(sp, out, n, scale, bias, vec_out, ACT ? out_act_grad : FusedAct::none);
    mma_sync_epilogue<T, Cfg>(e, acc);
  }
}

}  // namespace hmoe::ops::cuda::moe_gemm
