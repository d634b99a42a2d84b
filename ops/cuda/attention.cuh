// Kernel bodies of the cuda attention family, CUDA-core (FMA) part: shared helpers
// (operands, tile loads), the tiled causal attention forward and backward
// for f32/f64, the backward's D = rowsum(dO * O) pre-pass, and dropout.
// The tensor-core (WMMA) kernels for bf16/f16 are in attention_wmma.cuh.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "ops/attention_kernels.h"
#include "ops/cuda/kernel_utils.cuh"

namespace hmoe::ops::cuda::attn {

// One [B, H, T, Dh] operand: base pointer and the strides of b, h and t (elements);
// unit stride along Dh. vec: every row start is 16-byte aligned and Dh is a multiple
// of the vector width, so rows may be read with 16-byte loads (checked on the host).
template <typename T>
struct Operand {
  const T* p;
  int64_t sb, sh, st;
  bool vec;
};

__device__ __forceinline__ float exp_c(float x) { return __expf(x); }  // exp(-inf) = 0
__device__ __forceinline__ double exp_c(double x) { return exp(x); }

// Copies rows [r0, r0 + R) x columns [0, DM) of one head (row stride st) into shared
// memory dst (row stride LD), converting to S. Rows at or past n_rows and columns at
// or past Dh are zero, so padded products add nothing and nothing reads poison.
template <int R, int DM, int LD, int NT, typename S, typename T>
__device__ __forceinline__ void load_tile(S* dst, const T* head, int64_t st, bool vec, int r0, int n_rows, int Dh) {
  const S zero = convert_hw<S>(0.0f);
  // Fixed trip counts, unrolled: each thread issues all its global loads before the
  // first shared store needs one, instead of one load latency per element.
  if (vec) {
    constexpr int V = 16 / int(sizeof(T));
    constexpr int CPR = DM / V;  // 16-byte chunks per row
    constexpr int ITERS = (R * CPR + NT - 1) / NT;
#pragma unroll
    for (int it = 0; it < ITERS; ++it) {
      const int idx = int(threadIdx.x) + it * NT;
      if (R * CPR % NT != 0 && idx >= R * CPR) break;
      const int r = idx / CPR, c = (idx % CPR) * V;
      S* d = dst + r * LD + c;
      if (r0 + r < n_rows && c < Dh) {
        const uint4 raw = *reinterpret_cast<const uint4*>(head + int64_t(r0 + r) * st + c);
        if constexpr (std::is_same_v<S, T> && LD % V == 0) {
          *reinterpret_cast<uint4*>(d) = raw;
        } else {
          T vals[V];
          memcpy(vals, &raw, sizeof(raw));
#pragma unroll
          for (int e = 0; e < V; ++e) d[e] = convert_hw<S>(vals[e]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) d[e] = zero;
      }
    }
  } else {
    constexpr int ITERS = (R * DM + NT - 1) / NT;
#pragma unroll 8
    for (int it = 0; it < ITERS; ++it) {
      const int idx = int(threadIdx.x) + it * NT;
      if (R * DM % NT != 0 && idx >= R * DM) break;
      const int r = idx / DM, c = idx % DM;
      dst[r * LD + c] = (r0 + r < n_rows && c < Dh) ? convert_hw<S>(head[int64_t(r0 + r) * st + c]) : zero;
    }
  }
}

// Tile shapes of the FMA kernels by compute type: f64 halves them so the shared tiles
// (Q, K, V, dO at Dh = 128) fit the 163 KiB an sm_80 block may use; the f32 forward
// streams 32-key tiles so two blocks fit an SM at Dh = 128.
template <typename C>
struct SimtTiles {
  static constexpr int fwd_q = 64, fwd_k = 32;  // forward: query tile, key tile (2 blocks/SM at Dh 128)
  static constexpr int kv_k = 64, kv_q = 32;    // dK/dV: key tile (owned), query tile (streamed)
  static constexpr int dq_q = 64, dq_k = 64;    // dQ: query tile (owned), key tile (streamed)
};
template <>
struct SimtTiles<double> {
  static constexpr int fwd_q = 32, fwd_k = 32, kv_k = 32, kv_q = 32, dq_q = 32, dq_k = 32;
};

constexpr int kSimtFwdThreads = 128;  // 16 x 8: 16 lanes share each row group
constexpr int kSimtBwdThreads = 256;  // 16 x 16

// Shared-memory bytes of each FMA kernel (row stride DM + 1 avoids bank conflicts when
// 16 lanes read 16 rows at one column; score tiles use +16 so two row groups of a warp
// land in different bank halves).
template <typename C, int DM>
constexpr size_t simt_fwd_smem() {
  using Tl = SimtTiles<C>;
  return sizeof(C) * size_t(Tl::fwd_q * (DM + 1) + 2 * Tl::fwd_k * (DM + 1) + Tl::fwd_q * (Tl::fwd_k + 16));
}
template <typename C, int DM>
constexpr size_t simt_dkdv_smem() {
  using Tl = SimtTiles<C>;
  return sizeof(C) *
         size_t(2 * Tl::kv_k * (DM + 1) + 2 * Tl::kv_q * (DM + 1) + 2 * Tl::kv_k * (Tl::kv_q + 16) + 2 * Tl::kv_q);
}
template <typename C, int DM>
constexpr size_t simt_dq_smem() {
  using Tl = SimtTiles<C>;
  return sizeof(C) * size_t(2 * Tl::dq_q * (DM + 1) + 2 * Tl::dq_k * (DM + 1) + Tl::dq_q * (Tl::dq_k + 16));
}

// Causal attention forward, FMA path (C = T = float or double).
// Launch: grid (B * H, ceil(T / BQ)), block 128, simt_fwd_smem<C, DM>() bytes.
// A block owns BQ query rows (largest causal tiles first) and streams the key/value
// tiles up to its diagonal through shared memory. Thread (tx, ty) owns rows
// ty + 8 i of every tile product, so its row statistics (running max, partial sum)
// stay in registers and the 16 lanes of a row group agree through xor shuffles; the
// probability rows a warp writes are read only by that warp (a __syncwarp suffices).
template <typename C, int DM>
__global__ void __launch_bounds__(kSimtFwdThreads, 1)
    attn_fwd_simt(Operand<C> q, Operand<C> k, Operand<C> v, int H, int Tn, int Dh, C scale, C* out, C* lse) {
  constexpr int BQ = SimtTiles<C>::fwd_q, BK = SimtTiles<C>::fwd_k;
  constexpr int NT = kSimtFwdThreads, TX = 16, TY = NT / TX;
  constexpr int RM = BQ / TY, RS = BK / TX, RO = DM / TX, LD = DM + 1, LDP = BK + 16;
  HMOE_DYNAMIC_SHARED(C, smem);
  C* Qs = smem;
  C* Ks = Qs + BQ * LD;
  C* Vs = Ks + BK * LD;
  C* Ps = Vs + BK * LD;
  const int tx = int(threadIdx.x) % TX, ty = int(threadIdx.x) / TX;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int i0 = int(gridDim.y - 1 - blockIdx.y) * BQ;
  const C* qh = q.p + b * q.sb + h * q.sh;
  const C* kh = k.p + b * k.sb + h * k.sh;
  const C* vh = v.p + b * v.sb + h * v.sh;
  load_tile<BQ, DM, LD, NT>(Qs, qh, q.st, q.vec, i0, Tn, Dh);

  C o[RM][RO], m[RM], l[RM];
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    m[i] = neg_inf<C>();
    l[i] = C(0);
#pragma unroll
    for (int j = 0; j < RO; ++j) o[i][j] = C(0);
  }
  const int last_row = min(i0 + BQ, Tn) - 1;
  for (int j0 = 0; j0 <= last_row; j0 += BK) {
    load_tile<BK, DM, LD, NT>(Ks, kh, k.st, k.vec, j0, Tn, Dh);
    load_tile<BK, DM, LD, NT>(Vs, vh, v.st, v.vec, j0, Tn, Dh);
    __syncthreads();
    C s[RM][RS];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < RS; ++j) s[i][j] = C(0);
#pragma unroll 4
    for (int d = 0; d < DM; ++d) {
      C a[RM], kk[RS];
#pragma unroll
      for (int i = 0; i < RM; ++i) a[i] = Qs[(ty + TY * i) * LD + d];
#pragma unroll
      for (int j = 0; j < RS; ++j) kk[j] = Ks[(tx + TX * j) * LD + d];
#pragma unroll
      for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RS; ++j) s[i][j] += a[i] * kk[j];
    }
    // Online softmax: key 0 is in the first tile, so every row's max is finite from
    // the first tile on and exp(m_old - m_new) is 0 there (m_old = -inf).
#pragma unroll
    for (int i = 0; i < RM; ++i) {
      const int row = i0 + ty + TY * i;
      C mx = m[i];
#pragma unroll
      for (int j = 0; j < RS; ++j) {
        s[i][j] = (j0 + tx + TX * j <= row) ? s[i][j] * scale : neg_inf<C>();
        mx = s[i][j] > mx ? s[i][j] : mx;
      }
      mx = warp_allreduce<true>(mx, Larger{}, TX);
      const C alpha = exp_c(m[i] - mx);
      m[i] = mx;
      C psum = C(0);
#pragma unroll
      for (int j = 0; j < RS; ++j) {
        const C p = exp_c(s[i][j] - mx);
        psum += p;
        Ps[(ty + TY * i) * LDP + tx + TX * j] = p;
      }
      l[i] = l[i] * alpha + psum;  // this lane's share of the row sum
#pragma unroll
      for (int j = 0; j < RO; ++j) o[i][j] *= alpha;
    }
    __syncwarp();
#pragma unroll 4
    for (int kk = 0; kk < BK; ++kk) {
      C p[RM], vv[RO];
#pragma unroll
      for (int i = 0; i < RM; ++i) p[i] = Ps[(ty + TY * i) * LDP + kk];
#pragma unroll
      for (int j = 0; j < RO; ++j) vv[j] = Vs[kk * LD + tx + TX * j];
#pragma unroll
      for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RO; ++j) o[i][j] += p[i] * vv[j];
    }
    __syncthreads();  // K, V and P are overwritten by the next tile
  }
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const C sum = warp_allreduce<true>(l[i], Plus{}, TX);  // every lane ends with the same bits
    const int row = i0 + ty + TY * i;
    if (row < Tn) {
      const C inv = C(1) / sum;
      C* orow = out + (int64_t(bh) * Tn + row) * Dh;
#pragma unroll
      for (int j = 0; j < RO; ++j)
        if (tx + TX * j < Dh) orow[tx + TX * j] = o[i][j] * inv;
      if (tx == 0) lse[int64_t(bh) * Tn + row] = m[i] + d_log(sum);
    }
  }
}

// D_i = sum_d dO[i, d] * O[i, d] per query row (the backward's softmax correction),
// in the compute type. Launch: grid-stride, block 256, one warp per row.
template <typename T, typename C>
__global__ void __launch_bounds__(256)
    attn_bwd_rowdot(Operand<T> o, Operand<T> go, int H, int Tn, int Dh, int64_t rows, C* dout) {
  const int lane = int(threadIdx.x) % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int64_t bh = r / Tn, t = r % Tn, b = bh / H, h = bh % H;
    const T* orow = o.p + b * o.sb + h * o.sh + t * o.st;
    const T* grow = go.p + b * go.sb + h * go.sh + t * go.st;
    C acc = C(0);
    for (int d = lane; d < Dh; d += 32) acc += convert_hw<C>(grow[d]) * convert_hw<C>(orow[d]);
    acc = warp_allreduce<true>(acc, Plus{});
    if (lane == 0) dout[r] = acc;
  }
}

// dK and dV, FMA path. Launch: grid (B * H, ceil(T / BK)), block 256,
// simt_dkdv_smem<C, DM>() bytes. A block owns BK keys and loops over the query tiles
// at or after its diagonal in order (a fixed summation order, no atomics). Thread
// (tx, ty) owns key rows ty + 16 i and query columns tx + 16 j of the transposed
// score tile, so P^T and dS^T = P^T (dP^T - D) are formed in registers.
template <typename C, int DM>
__global__ void __launch_bounds__(kSimtBwdThreads, 1)
    attn_dkdv_simt(Operand<C> q, Operand<C> k, Operand<C> v, Operand<C> go, const C* lse, const C* drow, int H,
                   int Tn, int Dh, C scale, C* dk, C* dv) {
  constexpr int BK = SimtTiles<C>::kv_k, BQ = SimtTiles<C>::kv_q;
  constexpr int NT = kSimtBwdThreads, TX = 16, TY = NT / TX;
  constexpr int RK = BK / TY, RQ = BQ / TX, RO = DM / TX, LD = DM + 1, LDP = BQ + 16;
  HMOE_DYNAMIC_SHARED(C, smem);
  C* Ks = smem;
  C* Vs = Ks + BK * LD;
  C* Qs = Vs + BK * LD;
  C* Gs = Qs + BQ * LD;  // dO
  C* Pt = Gs + BQ * LD;
  C* St = Pt + BK * LDP;  // dS^T
  C* Ls = St + BK * LDP;  // lse of the tile's rows
  C* Ds = Ls + BQ;        // D of the tile's rows
  const int tx = int(threadIdx.x) % TX, ty = int(threadIdx.x) / TX;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int j0 = int(blockIdx.y) * BK;
  load_tile<BK, DM, LD, NT>(Ks, k.p + b * k.sb + h * k.sh, k.st, k.vec, j0, Tn, Dh);
  load_tile<BK, DM, LD, NT>(Vs, v.p + b * v.sb + h * v.sh, v.st, v.vec, j0, Tn, Dh);
  const C* qh = q.p + b * q.sb + h * q.sh;
  const C* gh = go.p + b * go.sb + h * go.sh;
  const C* lrow = lse + int64_t(bh) * Tn;
  const C* drw = drow + int64_t(bh) * Tn;

  C adk[RK][RO], adv[RK][RO];
#pragma unroll
  for (int i = 0; i < RK; ++i)
#pragma unroll
    for (int j = 0; j < RO; ++j) adk[i][j] = adv[i][j] = C(0);
  for (int i0 = (j0 / BQ) * BQ; i0 < Tn; i0 += BQ) {
    load_tile<BQ, DM, LD, NT>(Qs, qh, q.st, q.vec, i0, Tn, Dh);
    load_tile<BQ, DM, LD, NT>(Gs, gh, go.st, go.vec, i0, Tn, Dh);
    for (int r = int(threadIdx.x); r < BQ; r += NT) {
      Ls[r] = i0 + r < Tn ? lrow[i0 + r] : C(0);
      Ds[r] = i0 + r < Tn ? drw[i0 + r] : C(0);
    }
    __syncthreads();
    C st[RK][RQ], dpt[RK][RQ];
#pragma unroll
    for (int i = 0; i < RK; ++i)
#pragma unroll
      for (int j = 0; j < RQ; ++j) st[i][j] = dpt[i][j] = C(0);
#pragma unroll 4
    for (int d = 0; d < DM; ++d) {
      C kk[RK], vv[RK], qq[RQ], gg[RQ];
#pragma unroll
      for (int i = 0; i < RK; ++i) {
        kk[i] = Ks[(ty + TY * i) * LD + d];
        vv[i] = Vs[(ty + TY * i) * LD + d];
      }
#pragma unroll
      for (int j = 0; j < RQ; ++j) {
        qq[j] = Qs[(tx + TX * j) * LD + d];
        gg[j] = Gs[(tx + TX * j) * LD + d];
      }
#pragma unroll
      for (int i = 0; i < RK; ++i)
#pragma unroll
        for (int j = 0; j < RQ; ++j) {
          st[i][j] += kk[i] * qq[j];
          dpt[i][j] += vv[i] * gg[j];
        }
    }
#pragma unroll
    for (int i = 0; i < RK; ++i)
#pragma unroll
      for (int j = 0; j < RQ; ++j) {
        const int key = j0 + ty + TY * i, c = tx + TX * j, row = i0 + c;
        const bool valid = key <= row && row < Tn;
        const C p = valid ? exp_c(st[i][j] * scale - Ls[c]) : C(0);
        Pt[(ty + TY * i) * LDP + c] = p;
        St[(ty + TY * i) * LDP + c] = p * (dpt[i][j] - Ds[c]);
      }
    __syncwarp();
#pragma unroll 4
    for (int r = 0; r < BQ; ++r) {
      C p[RK], ds[RK], gg[RO], qq[RO];
#pragma unroll
      for (int i = 0; i < RK; ++i) {
        p[i] = Pt[(ty + TY * i) * LDP + r];
        ds[i] = St[(ty + TY * i) * LDP + r];
      }
#pragma unroll
      for (int j = 0; j < RO; ++j) {
        gg[j] = Gs[r * LD + tx + TX * j];
        qq[j] = Qs[r * LD + tx + TX * j];
      }
#pragma unroll
      for (int i = 0; i < RK; ++i)
#pragma unroll
        for (int j = 0; j < RO; ++j) {
          adv[i][j] += p[i] * gg[j];
          adk[i][j] += ds[i] * qq[j];
        }
    }
    __syncthreads();  // Q, dO, P^T, dS^T are overwritten by the next tile
  }
#pragma unroll
  for (int i = 0; i < RK; ++i) {
    const int key = j0 + ty + TY * i;
    if (key >= Tn) continue;
    const int64_t base = (int64_t(bh) * Tn + key) * Dh;
#pragma unroll
    for (int j = 0; j < RO; ++j)
      if (tx + TX * j < Dh) {
        dk[base + tx + TX * j] = adk[i][j] * scale;
        dv[base + tx + TX * j] = adv[i][j];
      }
  }
}

// dQ, FMA path. Launch: grid (B * H, ceil(T / BQ)), block 256, simt_dq_smem<C, DM>()
// bytes. A block owns BQ query rows (largest causal tiles first) and loops over the key
// tiles up to its diagonal in order; thread (tx, ty) owns rows ty + 16 i.
template <typename C, int DM>
__global__ void __launch_bounds__(kSimtBwdThreads, 1)
    attn_dq_simt(Operand<C> q, Operand<C> k, Operand<C> v, Operand<C> go, const C* lse, const C* drow, int H,
                 int Tn, int Dh, C scale, C* dq) {
  constexpr int BQ = SimtTiles<C>::dq_q, BK = SimtTiles<C>::dq_k;
  constexpr int NT = kSimtBwdThreads, TX = 16, TY = NT / TX;
  constexpr int RQ = BQ / TY, RS = BK / TX, RO = DM / TX, LD = DM + 1, LDP = BK + 16;
  HMOE_DYNAMIC_SHARED(C, smem);
  C* Qs = smem;
  C* Gs = Qs + BQ * LD;
  C* Ks = Gs + BQ * LD;
  C* Vs = Ks + BK * LD;
  C* Ss = Vs + BK * LD;  // dS
  const int tx = int(threadIdx.x) % TX, ty = int(threadIdx.x) / TX;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int i0 = int(gridDim.y - 1 - blockIdx.y) * BQ;
  load_tile<BQ, DM, LD, NT>(Qs, q.p + b * q.sb + h * q.sh, q.st, q.vec, i0, Tn, Dh);
  load_tile<BQ, DM, LD, NT>(Gs, go.p + b * go.sb + h * go.sh, go.st, go.vec, i0, Tn, Dh);
  const C* kh = k.p + b * k.sb + h * k.sh;
  const C* vh = v.p + b * v.sb + h * v.sh;
  C lr[RQ], dr[RQ], acc[RQ][RO];
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    const int row = i0 + ty + TY * i;
    lr[i] = row < Tn ? lse[int64_t(bh) * Tn + row] : C(0);
    dr[i] = row < Tn ? drow[int64_t(bh) * Tn + row] : C(0);
#pragma unroll
    for (int j = 0; j < RO; ++j) acc[i][j] = C(0);
  }
  const int last_row = min(i0 + BQ, Tn) - 1;
  for (int j0 = 0; j0 <= last_row; j0 += BK) {
    load_tile<BK, DM, LD, NT>(Ks, kh, k.st, k.vec, j0, Tn, Dh);
    load_tile<BK, DM, LD, NT>(Vs, vh, v.st, v.vec, j0, Tn, Dh);
    __syncthreads();
    C s[RQ][RS], dp[RQ][RS];
#pragma unroll
    for (int i = 0; i < RQ; ++i)
#pragma unroll
      for (int j = 0; j < RS; ++j) s[i][j] = dp[i][j] = C(0);
#pragma unroll 4
    for (int d = 0; d < DM; ++d) {
      C qq[RQ], gg[RQ], kk[RS], vv[RS];
#pragma unroll
      for (int i = 0; i < RQ; ++i) {
        qq[i] = Qs[(ty + TY * i) * LD + d];
        gg[i] = Gs[(ty + TY * i) * LD + d];
      }
#pragma unroll
      for (int j = 0; j < RS; ++j) {
        kk[j] = Ks[(tx + TX * j) * LD + d];
        vv[j] = Vs[(tx + TX * j) * LD + d];
      }
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int j = 0; j < RS; ++j) {
          s[i][j] += qq[i] * kk[j];
          dp[i][j] += gg[i] * vv[j];
        }
    }
#pragma unroll
    for (int i = 0; i < RQ; ++i)
#pragma unroll
      for (int j = 0; j < RS; ++j) {
        const int row = i0 + ty + TY * i, key = j0 + tx + TX * j;
        const C p = key <= row && row < Tn ? exp_c(s[i][j] * scale - lr[i]) : C(0);
        Ss[(ty + TY * i) * LDP + tx + TX * j] = p * (dp[i][j] - dr[i]);
      }
    __syncwarp();
#pragma unroll 4
    for (int kk = 0; kk < BK; ++kk) {
      C ds[RQ], kv[RO];
#pragma unroll
      for (int i = 0; i < RQ; ++i) ds[i] = Ss[(ty + TY * i) * LDP + kk];
#pragma unroll
      for (int j = 0; j < RO; ++j) kv[j] = Ks[kk * LD + tx + TX * j];
#pragma unroll
      for (int i = 0; i < RQ; ++i)
#pragma unroll
        for (int j = 0; j < RO; ++j) acc[i][j] += ds[i] * kv[j];
    }
    __syncthreads();  // K, V and dS are overwritten by the next tile
  }
#pragma unroll
  for (int i = 0; i < RQ; ++i) {
    const int row = i0 + ty + TY * i;
    if (row >= Tn) continue;
    C* drow_out = dq + (int64_t(bh) * Tn + row) * Dh;
#pragma unroll
    for (int j = 0; j < RO; ++j)
      if (tx + TX * j < Dh) drow_out[tx + TX * j] = acc[i][j] * scale;
  }
}

// Dropout: out[i] = keep(i) ? T(C(in[i]) * scale) : 0 with the Philox mask rule of
// ops/attention_kernels.h (identical to the CPU's bits). Launch: grid-stride, block 256.
template <typename T, typename C>
__global__ void __launch_bounds__(256)
    dropout_kernel(const T* in, T* out, int64_t n, float p, C scale, uint64_t seed, uint64_t offset) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = dropout_keep(seed, offset, uint64_t(i), p) ? convert_hw<T>(convert_hw<C>(in[i]) * scale) : convert_hw<T>(C(0));
}

}  // namespace hmoe::ops::cuda::attn
