// The grouped GEMM on tensor cores, for bf16/f16 inputs with f32 accumulation: a WMMA
// 16x16x16 main loop over operand panels in a three-stage cp.async pipeline, an epilogue
// that goes through shared memory (store_matrix_sync; a fragment's element-to-lane
// layout is unspecified, so no element of fragment.x is ever indexed), and the forward
// and dW kernels built from them.
#pragma once

#include "ops/moe/cuda/grouped_gemm_tiles.cuh"

namespace hmoe::ops::cuda::moe_gemm {

namespace wmma = nvcuda::wmma;

constexpr size_t align128(size_t v) { return (v + 127) / 128 * 128; }

// Block tile BM x 128 x 32, 8 warps as (BM / WM) x 4, each warp WM x 32 of output
// (WM / 16 x 2 accumulator fragments). BM = 128 for long groups, 64 when most groups are
// short (less padding wasted), chosen on the host.
template <int BM_, int WM_>
struct MmaCfg {
  static constexpr int BM = BM_, BN = 128, BK = 32, WM = WM_, WN = 32, NT = 256;
  static constexpr int WARPS_N = BN / WN, WARPS_M = BM / WM, FM = WM / 16, FN = WN / 16;
  static_assert(WARPS_M * WARPS_N * 32 == NT, "8 warps tile the block");
};
using MmaLarge = MmaCfg<128, 64>;
using MmaSmall = MmaCfg<64, 32>;

// Stages of the cp.async pipeline: two panels in flight while the MMAs read a third.
constexpr int kMmaStages = 3;

// Shared memory of one configuration: kMmaStages stages of the A and B panels, each
// stored as [line][along + 8] (the 16-byte padding keeps the 8 rows an ldmatrix phase
// reads on distinct banks and every fragment pointer 32-byte aligned); the f32 output
// staging (one warp row, WM x (BN + 4)) reuses the panels once the main loop is done.
// Over 48 KiB for the 128-row tiles: launch_checked opts the kernel in.
template <typename Cfg, bool A_LINES_M, bool B_LINES_N>
struct MmaSmem {
  static constexpr int A_LINES = A_LINES_M ? Cfg::BM : Cfg::BK, A_ALONG = A_LINES_M ? Cfg::BK : Cfg::BM;
  static constexpr int B_LINES = B_LINES_N ? Cfg::BN : Cfg::BK, B_ALONG = B_LINES_N ? Cfg::BK : Cfg::BN;
  static constexpr int LDA = A_ALONG + 8, LDB = B_ALONG + 8, LDC = Cfg::BN + 4;
  static constexpr size_t a_bytes = align128(size_t(A_LINES) * LDA * 2);
  static constexpr size_t b_bytes = align128(size_t(B_LINES) * LDB * 2);
  static constexpr size_t panels = kMmaStages * (a_bytes + b_bytes);
  static constexpr size_t staging = size_t(Cfg::WM) * LDC * 4;
  static constexpr size_t bytes = panels > staging ? panels : staging;
  // Two blocks fit an sm_80 SM (164 KiB, 1 KiB of it reserved per block).
  static_assert(2 * (bytes + 1024) <= 164 * 1024, "two blocks fit an sm_80 SM");
};

using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Blocks an SM must hold (__launch_bounds__): two for the vector-load kernels (128
// registers a thread), one for the element-load fallbacks, whose per-element address
// arithmetic needs more registers than that and would otherwise spill. Three for the
// 64-row tiles (80 registers) was tried: their bf16 kernels then spill 20-52 bytes.
template <int V>
inline constexpr int kMinBlocks = V > 1 ? 2 : 1;

// acc += the products of one stage of panels in shared memory (as, bs) for the warp's
// WM x WN block (warp row wm, column wn); the layouts as in mma_mainloop.
template <typename T, typename Cfg, bool A_LINES_M, bool B_LINES_N>
__device__ __forceinline__ void mma_stage(const T* as, const T* bs, FragC (&acc)[Cfg::FM][Cfg::FN]) {
  using S = MmaSmem<Cfg, A_LINES_M, B_LINES_N>;
  constexpr int BK = Cfg::BK, WM = Cfg::WM, WN = Cfg::WN, FM = Cfg::FM, FN = Cfg::FN;
  using FragA =
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, std::conditional_t<A_LINES_M, wmma::row_major, wmma::col_major>>;
  using FragB =
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, std::conditional_t<B_LINES_N, wmma::col_major, wmma::row_major>>;
  const int warp = int(threadIdx.x) / 32, wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
#pragma unroll
  for (int kk = 0; kk < BK / 16; ++kk) {
    FragB fb[FN];
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      const int c = wn * WN + 16 * j;
      wmma::load_matrix_sync(fb[j], B_LINES_N ? bs + c * S::LDB + 16 * kk : bs + 16 * kk * S::LDB + c, S::LDB);
    }
#pragma unroll
    for (int i = 0; i < FM; ++i) {
      const int r = wm * WM + 16 * i;
      FragA fa;
      wmma::load_matrix_sync(fa, A_LINES_M ? as + r * S::LDA + 16 * kk : as + 16 * kk * S::LDA + r, S::LDA);
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa, fb[j], acc[i][j]);
    }
  }
}

// The kMmaStages-deep cp.async pipeline over `steps` panels: issue(s, buf) starts step
// s's copies into stage buf, ready(buf) runs on this thread's landed copies of a stage
// before the barrier (the fused activation), compute(buf) reads the stage after it. Each
// step waits for its own copies of the oldest stage, meets the others at the barrier
// (after which the stage read in the previous step is free), refills that stage, then
// computes. Ends with a barrier (the stages are free for an epilogue or the next tile).
template <typename Issue, typename Ready, typename Compute>
__device__ __forceinline__ void cp_async_pipeline(int steps, Issue&& issue, Ready&& ready, Compute&& compute) {
  constexpr int ST = kMmaStages;
  // Every step commits one group (empty past the end), so wait_group ST - 2 always
  // means "step s has landed".
#pragma unroll
  for (int s = 0; s < ST - 1; ++s) {
    if (s < steps) issue(s, s);
    ::hmoe::device::cp_async_commit();
  }
  // Step s reads stage s % ST and refills stage (s - 1) % ST, read by step s - 1.
  for (int s = 0, rd = 0, wr = ST - 1; s < steps; ++s) {
    ::hmoe::device::cp_async_wait<ST - 2>();
    ready(rd);
    __syncthreads();
    if (s + ST - 1 < steps) issue(s + ST - 1, wr);
    ::hmoe::device::cp_async_commit();
    compute(rd);
    wr = rd;
    rd = rd == ST - 1 ? 0 : rd + 1;
  }
  __syncthreads();
}

// acc = sum over `steps` panels of A B for the warp's WM x WN block. A_LINES_M: A's
// lines are output rows (x rows, [m][k]: matrix_a row-major), else reduction rows
// ([k][m]: col-major); B_LINES_N: B's lines are output columns (W^T rows, [n][k]:
// matrix_b col-major), else reduction rows ([k][n]: row-major). Vector panels (V > 1)
// run cp_async_pipeline (a.act applied to each landed stage). Element panels (V = 1, no 16-byte chunks) load through registers into two stages.
// Ends with a barrier (the panels are free for the epilogue's staging).
template <typename T, typename Cfg, bool A_LINES_M, bool B_LINES_N, int V>
__device__ __forceinline__ void mma_mainloop(const Lines<T>& a, const Lines<T>& b, int steps, unsigned char* smem,
                                             FragC (&acc)[Cfg::FM][Cfg::FN]) {
  using S = MmaSmem<Cfg, A_LINES_M, B_LINES_N>;
  constexpr int BK = Cfg::BK, NT = Cfg::NT, FM = Cfg::FM, FN = Cfg::FN;
  using PA = Panel<T, S::A_LINES, S::A_ALONG, NT, V, A_LINES_M>;
  using PB = Panel<T, S::B_LINES, S::B_ALONG, NT, V, B_LINES_N>;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  if (steps == 0) return;
  auto a_panel = [&](int buf) { return reinterpret_cast<T*>(smem + buf * (S::a_bytes + S::b_bytes)); };
  auto b_panel = [&](int buf) { return reinterpret_cast<T*>(smem + buf * (S::a_bytes + S::b_bytes) + S::a_bytes); };
  // Panel offsets of step s: the reduction advances along A's lines or elements.
  auto a_dl = [](int s) { return A_LINES_M ? 0 : s * BK; };
  auto a_da = [](int s) { return A_LINES_M ? s * BK : 0; };
  auto b_dl = [](int s) { return B_LINES_N ? 0 : s * BK; };
  auto b_da = [](int s) { return B_LINES_N ? s * BK : 0; };
  PA pa;
  PB pb;
  pa.prepare(a);
  pb.prepare(b);
  if constexpr (V > 1) {
    cp_async_pipeline(
        steps,
        [&](int s, int buf) {
          pa.copy_async(a, a_dl(s), a_da(s), a_panel(buf), S::LDA);
          pb.copy_async(b, b_dl(s), b_da(s), b_panel(buf), S::LDB);
        },
        [&](int buf) {
          if (a.act != FusedAct::none) pa.act_in_place(a_panel(buf), S::LDA, a.act);
        },
        [&](int buf) { mma_stage<T, Cfg, A_LINES_M, B_LINES_N>(a_panel(buf), b_panel(buf), acc); });
  } else {
    auto put = [&](int buf) {
      pa.store(a_panel(buf), S::LDA);
      pb.store(b_panel(buf), S::LDB);
    };
    auto fetch = [&](int s) {
      pa.load(a, a_dl(s), a_da(s));
      pb.load(b, b_dl(s), b_da(s));
    };
    fetch(0);
    put(0);
    __syncthreads();
    for (int s = 0; s < steps; ++s) {
      // The next panels go straight to the other stage, read last before the previous
      // barrier; holding them in registers across the MMAs would spill.
      if (s + 1 < steps) {
        fetch(s + 1);
        put((s + 1) & 1);
      }
      mma_stage<T, Cfg, A_LINES_M, B_LINES_N>(a_panel(s & 1), b_panel(s & 1), acc);
      __syncthreads();
    }
  }
}

// Writes the block tile through the epilogue, one warp row (WM rows) at a time: its
// warps store their fragments to the f32 staging, then all threads apply bias and scale
// to 8 consecutive columns each, round once to T and store them (one 16-byte store when
// e.vec). Ends with a barrier (shared memory is free for the next tile).
template <typename T, typename Cfg, bool A_LINES_M, bool B_LINES_N>
__device__ __forceinline__ void mma_epilogue(const Epilogue<T, float>& e, unsigned char* smem,
                                             const FragC (&acc)[Cfg::FM][Cfg::FN]) {
  using S = MmaSmem<Cfg, A_LINES_M, B_LINES_N>;
  constexpr int BN = Cfg::BN, WM = Cfg::WM, WN = Cfg::WN, NT = Cfg::NT, LDC = S::LDC, CV = 8;
  float* cs = reinterpret_cast<float*>(smem);
  const int warp = int(threadIdx.x) / 32, wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
  for (int h = 0; h < Cfg::WARPS_M; ++h) {
    if (wm == h) {
#pragma unroll
      for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::FN; ++j)
          wmma::store_matrix_sync(cs + 16 * i * LDC + wn * WN + 16 * j, acc[i][j], LDC, wmma::mem_row_major);
    }
    __syncthreads();
    for (int idx = int(threadIdx.x); idx < WM * (BN / CV); idx += NT) {
      // 32 consecutive idx cover two rows of BN / CV = 16 column groups: bits 0-1 and
      // 3-4 pick the group, bit 2 the row. Each 8-lane phase of the 16-byte reads then
      // takes 4 groups 32 bytes apart from each of two rows whose LDC stride is 16 bytes
      // past a multiple of 128: 8 distinct 16-byte bank slots. (Lanes 0-15 on one row
      // would put lanes i and i + 4 on one slot: 2-way conflicts.)
      static_assert(BN / CV == 16 && WM % 2 == 0, "the epilogue's lane map covers two 128-column rows");
      const int r = (idx >> 5) * 2 + ((idx >> 2) & 1), c = (((idx >> 3) & 3) * 4 + (idx & 3)) * CV;
      const int row = e.row0 + h * WM + r, col = e.col0 + c;
      if (row >= e.row_end || col >= e.col_end) continue;
      const float s = e.scale != nullptr ? e.scale[row] : 1.0f;
      const Pack<float, 4> lo = load_pack<float, 4>(cs + r * LDC + c), hi = load_pack<float, 4>(cs + r * LDC + c + 4);
      float v[CV];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        v[q] = lo.v[q];
        v[q + 4] = hi.v[q];
      }
      Pack<T, CV> o;
#pragma unroll
      for (int q = 0; q < CV; ++q) {
        const float bq = (e.bias != nullptr && col + q < e.col_end) ? e.bias[col + q] : 0.0f;
        o.v[q] = from_compute<T>(e.scale != nullptr ? (v[q] + bq) * s : v[q] + bq);
      }
      T* dst = e.out + int64_t(row) * e.ldo + col;
      if (e.act_grad != FusedAct::none) {  // dst holds h: read, then written, by this thread only
#pragma unroll
        for (int q = 0; q < CV; ++q)
          if (col + q < e.col_end) o.v[q] = fused_act_grad<T>(e.act_grad, dst[q], o.v[q]);
      }
      if (e.vec && col + CV <= e.col_end) {
        store_pack<T, CV>(dst, o);
      } else {
#pragma unroll
        for (int q = 0; q < CV; ++q)
          if (col + q < e.col_end) dst[q] = o.v[q];
      }
    }
    __syncthreads();  // the staging is rewritten by the next warp row / the next tile
  }
}

// Forward, bf16/f16: out[r] = scale[r] * (xrow(r) op(W_g) + bias[g]) (scale, bias f32),
// accumulated in f32 and rounded once (x read as x_act(x); with out_act_grad, out = that
// * act'(out), rounded again as the unfused kernels round). Launch: grid min(tiles,
// 2^31 - 1) (grid-stride over the forward group table), block 256, MmaSmem<Cfg, true,
// TRANS>::bytes dynamic shared memory. TRANS: w is [G, n, k]. ACT: the fused steps are
// compiled in (else x_act and out_act_grad are ignored): the host takes the 64-row tiles
// for them, since with 128 rows their registers spill.
template <typename T, typename Cfg, bool TRANS, int V, bool ACT>
__global__ void __launch_bounds__(256, kMinBlocks<V>)
    grouped_gemm_wmma(GroupTable tab, const T* __restrict__ x, const int64_t* __restrict__ index,
                      const T* __restrict__ w, const float* __restrict__ scale, const float* __restrict__ bias,
                      T* __restrict__ out, int64_t k, int64_t n, bool vec_out, FusedAct x_act, FusedAct out_act_grad) {
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  for (int64_t t = blockIdx.x; t < tab.tiles; t += gridDim.x) {
    const ForwardSpan sp = forward_span<Cfg::BM, Cfg::BN>(tab, forward_tile(tab, t));
    const ForwardOperands<T> op = forward_operands<T, TRANS>(sp, x, index, w, k, n, ACT ? x_act : FusedAct::none);
    FragC acc[Cfg::FM][Cfg::FN];
    mma_mainloop<T, Cfg, true, TRANS, V>(op.a, op.b, int((k + Cfg::BK - 1) / Cfg::BK), smem, acc);
    const Epilogue<T, float> e =
        forward_epilogue<T>(sp, out, n, scale, bias, vec_out, ACT ? out_act_grad : FusedAct::none);
    mma_epilogue<T, Cfg, true, TRANS>(e, smem, acc);
  }
}

// dW, bf16/f16: dw[g] = sum over the group's rows of x_act(xrow(r))^T dy[r] in f32,
// rounded once (zeros for an empty group). A = x^T is read as [rows][k] panels (matrix_a
// col-major), B = dY as [rows][n]. Launch: as the forward, over the dW group table,
// MmaSmem<MmaLarge, false, false>::bytes.
template <typename T, int V>
__global__ void __launch_bounds__(256, kMinBlocks<V>)
    grouped_dw_wmma(GroupTable tab, const T* __restrict__ x, const int64_t* __restrict__ index,
                    const T* __restrict__ dy, T* __restrict__ dw, int64_t k, int64_t n, bool vec_out, FusedAct x_act) {
  using Cfg = MmaLarge;
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  for (int64_t t = blockIdx.x; t < tab.tiles; t += gridDim.x) {
    const Tile tl = dw_tile(tab, t);
    const int64_t r0 = tab.offsets[tl.g], r1 = tab.offsets[tl.g + 1];
    const int64_t m0 = tl.mb * Cfg::BM, c0 = tl.nb * Cfg::BN;
    const Lines<T> a{x, index, int(k), int(r0), int(r1), int(m0), int(k), x_act};
    const Lines<T> b{dy, nullptr, int(n), int(r0), int(r1), int(c0), int(n)};
    FragC acc[Cfg::FM][Cfg::FN];
    mma_mainloop<T, Cfg, false, false, V>(a, b, int((r1 - r0 + Cfg::BK - 1) / Cfg::BK), smem, acc);
    const Epilogue<T, float> e{dw + tl.g * k * n, int(n), int(m0), int(k), int(c0), int(n), nullptr, nullptr, vec_out};
    mma_epilogue<T, Cfg, false, false>(e, smem, acc);
  }
}

}  // namespace hmoe::ops::cuda::moe_gemm
