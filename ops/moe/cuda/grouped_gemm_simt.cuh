// The grouped GEMM on CUDA cores, for f32 and f64: a register-tiled SIMT main loop
// (operand panels double-buffered in shared memory as k-major [BK][BM] / [BK][BN],
// each thread a TM x TN block of FMAs), the forward kernel (rows gathered, scale and
// bias in the epilogue) and the dW kernel (the reduction runs over a group's rows).
#pragma once

#include "ops/moe/cuda/grouped_gemm_tiles.cuh"

namespace hmoe::ops::cuda::moe_gemm {

// Tile shapes by element type: 256 threads; f32 64 x 128 x 16 with 8 x 4 outputs a
// thread (32 accumulators), f64 64 x 64 x 8 with 4 x 4 (32 registers of accumulators).
template <typename T>
struct SimtCfg;
template <>
struct SimtCfg<float> {
  static constexpr int BM = 64, BN = 128, BK = 16, TM = 8, TN = 4, NT = 256;
};
template <>
struct SimtCfg<double> {
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4, NT = 256;
};

// Shared-memory strides (elements) and bytes: rows padded by one 16-byte word.
template <typename T>
struct SimtSmem {
  using Cfg = SimtCfg<T>;
  static constexpr int PAD = 16 / int(sizeof(T));
  static constexpr int LDA = Cfg::BM + PAD, LDB = Cfg::BN + PAD;
  static constexpr int A_ELEMS = Cfg::BK * LDA, B_ELEMS = Cfg::BK * LDB;
  static constexpr size_t bytes = 2 * size_t(A_ELEMS + B_ELEMS) * sizeof(T);
};

// acc[i][j] (row ty*TM + i, column tx*TN + j of the tile) = sum over `steps` panels of
// A^T B. A_LINES_M: A's lines are output rows (x rows: stored transposed), else they
// run along the reduction (x rows in dW); B_LINES_N: B's lines are output columns
// (W^T rows with trans_w), else reduction rows (W rows, dY rows). Panels advance along
// the reduction by BK each step. Ends with a barrier (shared memory is free again).
template <typename T, bool A_LINES_M, bool B_LINES_N, int V>
__device__ __forceinline__ void simt_mainloop(const Lines<T>& a, const Lines<T>& b, int steps, T* smem,
                                              T (&acc)[SimtCfg<T>::TM][SimtCfg<T>::TN]) {
  using Cfg = SimtCfg<T>;
  using S = SimtSmem<T>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN, NT = Cfg::NT;
  constexpr int TX = BN / TN, VW = 16 / int(sizeof(T));  // VW: elements in one 16-byte shared read
  static_assert(TM % VW == 0 && TN % VW == 0 && TX * (BM / TM) == NT, "thread tile must tile the block tile");
  using PA = Panel<T, A_LINES_M ? BM : BK, A_LINES_M ? BK : BM, NT, V, A_LINES_M>;
  using PB = Panel<T, B_LINES_N ? BN : BK, B_LINES_N ? BK : BN, NT, V, B_LINES_N>;
  const int tx = int(threadIdx.x) % TX, ty = int(threadIdx.x) / TX;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);
  if (steps == 0) return;
  PA pa;
  PB pb;
  pa.prepare(a);
  pb.prepare(b);
  auto fetch = [&](int s) {
    pa.load(a, A_LINES_M ? 0 : s * BK, A_LINES_M ? s * BK : 0);
    pb.load(b, B_LINES_N ? 0 : s * BK, B_LINES_N ? s * BK : 0);
  };
  auto put = [&](int buf) {
    T* as = smem + buf * S::A_ELEMS;
    T* bs = smem + 2 * S::A_ELEMS + buf * S::B_ELEMS;
    if constexpr (A_LINES_M)
      pa.store_t(as, S::LDA);
    else
      pa.store(as, S::LDA);
    if constexpr (B_LINES_N)
      pb.store_t(bs, S::LDB);
    else
      pb.store(bs, S::LDB);
  };
  fetch(0);
  put(0);
  __syncthreads();
  for (int s = 0; s < steps; ++s) {
    const int buf = s & 1;
    // Vector panels are staged in registers across the MMAs (loads in flight while they
    // run); element panels go straight to the other stage (their many registers would
    // spill): it was last read before the previous barrier either way.
    if (s + 1 < steps) {
      fetch(s + 1);
      if constexpr (V == 1) put(buf ^ 1);
    }  // global loads in flight during the FMAs
    const T* as = smem + buf * S::A_ELEMS + ty * TM;
    const T* bs = smem + 2 * S::A_ELEMS + buf * S::B_ELEMS + tx * TN;
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; i += VW) {
        const Pack<T, VW> p = load_pack<T, VW>(as + kk * S::LDA + i);
#pragma unroll
        for (int e = 0; e < VW; ++e) av[i + e] = p.v[e];
      }
#pragma unroll
      for (int j = 0; j < TN; j += VW) {
        const Pack<T, VW> p = load_pack<T, VW>(bs + kk * S::LDB + j);
#pragma unroll
        for (int e = 0; e < VW; ++e) bv[j + e] = p.v[e];
      }
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = d_fma(av[i], bv[j], acc[i][j]);
    }
    if (V > 1 && s + 1 < steps) put(buf ^ 1);
    __syncthreads();
  }
}

// Writes a thread's TM x TN block through the epilogue (rows ty*TM + i, columns
// tx*TN + j of the tile), TN columns as 16-byte stores when e.vec.
template <typename T>
__device__ __forceinline__ void simt_epilogue(const Epilogue<T, T>& e, const T (&acc)[SimtCfg<T>::TM][SimtCfg<T>::TN]) {
  using Cfg = SimtCfg<T>;
  constexpr int TM = Cfg::TM, TN = Cfg::TN, TX = Cfg::BN / TN, VW = 16 / int(sizeof(T));
  const int tx = int(threadIdx.x) % TX, ty = int(threadIdx.x) / TX;
  const int col = e.col0 + tx * TN;
  if (col >= e.col_end) return;
  T bias[TN];
#pragma unroll
  for (int j = 0; j < TN; ++j) bias[j] = (e.bias != nullptr && col + j < e.col_end) ? e.bias[col + j] : T(0);
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int row = e.row0 + ty * TM + i;
    if (row >= e.row_end) break;
    const T s = e.scale != nullptr ? e.scale[row] : T(1);
    T v[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) v[j] = e.scale != nullptr ? (acc[i][j] + bias[j]) * s : acc[i][j] + bias[j];
    T* o = e.out + int64_t(row) * e.ldo + col;
    if (e.act_grad != FusedAct::none) {  // o holds h: each element is read, then written, by this thread
#pragma unroll
      for (int j = 0; j < TN; ++j)
        if (col + j < e.col_end) v[j] = fused_act_grad<T>(e.act_grad, o[j], v[j]);
    }
    if (e.vec && col + TN <= e.col_end) {
#pragma unroll
      for (int j = 0; j < TN; j += VW) {
        Pack<T, VW> p;
#pragma unroll
        for (int q = 0; q < VW; ++q) p.v[q] = v[j + q];
        store_pack<T, VW>(o + j, p);
      }
    } else {
#pragma unroll
      for (int j = 0; j < TN; ++j)
        if (col + j < e.col_end) o[j] = v[j];
    }
  }
}

// Forward, f32/f64: out[r] = scale[r] * (xrow(r) op(W_g) + bias[g]) for every tile of
// the group table (x read as x_act(x); with out_act_grad, out = that * act'(out)).
// Launch: grid min(tiles, 2^31 - 1) (tiles grid-stride), block NT, SimtSmem<T>::bytes of
// dynamic shared memory. TRANS: w is [G, n, k].
template <typename T, bool TRANS, int V>
__global__ void __launch_bounds__(SimtCfg<T>::NT)
    grouped_gemm_simt(GroupTable tab, const T* __restrict__ x, const int64_t* __restrict__ index,
                      const T* __restrict__ w, const T* __restrict__ scale, const T* __restrict__ bias,
                      T* __restrict__ out, int64_t k, int64_t n, bool vec_out, FusedAct x_act, FusedAct out_act_grad) {
  using Cfg = SimtCfg<T>;
  HMOE_DYNAMIC_SHARED(T, smem);
  for (int64_t t = blockIdx.x; t < tab.tiles; t += gridDim.x) {
    const Tile tl = forward_tile(tab, t);
    const int64_t r0 = tab.offsets[tl.g] + tl.mb * Cfg::BM, r1 = tab.offsets[tl.g + 1], c0 = tl.nb * Cfg::BN;
    const T* wg = w + tl.g * k * n;
    const Lines<T> a{x, index, int(k), int(r0), int(r1), 0, int(k), x_act};
    const Lines<T> b = TRANS ? Lines<T>{wg, nullptr, int(k), int(c0), int(n), 0, int(k)}
                             : Lines<T>{wg, nullptr, int(n), 0, int(k), int(c0), int(n)};
    T acc[Cfg::TM][Cfg::TN];
    simt_mainloop<T, true, TRANS, V>(a, b, int((k + Cfg::BK - 1) / Cfg::BK), smem, acc);
    const auto* bias_g = bias != nullptr ? bias + tl.g * n : nullptr;
    const Epilogue<T, T> e{out, int(n), int(r0), int(r1), int(c0), int(n), scale, bias_g, vec_out, out_act_grad};
    simt_epilogue<T>(e, acc);
  }
}

// dW, f32/f64: dw[g] = sum over the group's rows r of x_act(xrow(r))^T dy[r] ([k, n];
// zeros for an empty group). Launch: as the forward, over the dW group table.
template <typename T, int V>
__global__ void __launch_bounds__(SimtCfg<T>::NT)
    grouped_dw_simt(GroupTable tab, const T* __restrict__ x, const int64_t* __restrict__ index,
                    const T* __restrict__ dy, T* __restrict__ dw, int64_t k, int64_t n, bool vec_out, FusedAct x_act) {
  using Cfg = SimtCfg<T>;
  HMOE_DYNAMIC_SHARED(T, smem);
  for (int64_t t = blockIdx.x; t < tab.tiles; t += gridDim.x) {
    const Tile tl = dw_tile(tab, t);
    const int64_t r0 = tab.offsets[tl.g], r1 = tab.offsets[tl.g + 1];
    const int64_t m0 = tl.mb * Cfg::BM, c0 = tl.nb * Cfg::BN;
    const Lines<T> a{x, index, int(k), int(r0), int(r1), int(m0), int(k), x_act};
    const Lines<T> b{dy, nullptr, int(n), int(r0), int(r1), int(c0), int(n)};
    T acc[Cfg::TM][Cfg::TN];
    simt_mainloop<T, false, false, V>(a, b, int((r1 - r0 + Cfg::BK - 1) / Cfg::BK), smem, acc);
    const Epilogue<T, T> e{dw + tl.g * k * n, int(n), int(m0), int(k), int(c0), int(n), nullptr, nullptr, vec_out};
    simt_epilogue<T>(e, acc);
  }
}

}  // namespace hmoe::ops::cuda::moe_gemm
