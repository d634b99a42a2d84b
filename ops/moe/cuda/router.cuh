// Kernel bodies of the router on the cuda device (launched by router.cu): fused softmax +
// top-k + gates and its backward, dense gates (scatter / gather), and the smooth load
// (per-token thresholds, then a fixed-order column sum) with its gradient. One group of
// lanes per token row (a warp; top-k and its backward: pow2_ceil(N) >= 4 lanes when N <= 32);
// every reduction is a fixed butterfly or a sequential loop: deterministic.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/cuda/device_code.h"
#include "ops/cuda/kernel_utils.cuh"

namespace hmoe::ops::cuda::moe_router {

inline constexpr unsigned kFull = 0xffffffffu;

// As ops/moe/cpu/router.cpp: Phi(x) = erfc(-x / sqrt 2) / 2 and the normal density.
template <typename T>
__device__ __forceinline__ T normal_cdf(T x) {
  return T(0.5) * d_erfc(-x / T(1.41421356237309504880));
}
template <typename T>
__device__ __forceinline__ T normal_pdf(T x) {
  return d_exp(T(-0.5) * x * x) / d_sqrt(T(2) * T(3.14159265358979323846));
}

// Butterfly reductions over aligned groups of w lanes (a power of two, 1..32), from lane
// distance w / 2 down: every lane ends with the same value (a + b == b + a exactly, so
// the partners of each step agree bit for bit); the tree is fixed, so is the result. A
// row's group of w < 32 lanes gives the bits the whole warp gave with the lanes past the
// row holding the identity: those lanes' steps came first and added +0 (a sum that starts
// from +0 is never -0) or took the max with -inf, each leaving the value as it was.
template <typename T>
__device__ __forceinline__ T warp_sum(T v, int w = 32) {
  return warp_allreduce<true>(
      v, [](T a, T b) { return a + b; }, w);
}
template <typename T>
__device__ __forceinline__ T warp_max(T v, int w = 32) {
  return warp_allreduce<true>(
      v, [](T a, T b) { return b > a ? b : a; }, w);
}

// The top-k order: a strictly better than b. Larger value first, ties to the lower index
// (-0 == +0, as the CPU's comparison); NaN after every number; index < 0 is "none", after all.
template <typename T>
__device__ __forceinline__ bool better(T av, int ai, T bv, int bi) {
  if (ai < 0) return false;
  if (bi < 0) return true;
  const bool an = av != av, bn = bv != bv;
  if (an != bn) return bn;
  if (!an && av != bv) return av > bv;
  return ai < bi;
}

// The best (v, i) over each aligned group of w lanes, in every lane of it (a total order,
// so the butterfly agrees, whatever the width).
template <typename T>
__device__ __forceinline__ void warp_best(T& v, int& i, int w = 32) {
  for (int o = w >> 1; o >= 1; o >>= 1) {
    const T ov = __shfl_xor_sync(kFull, v, o, w);
    const int oi = __shfl_xor_sync(kFull, i, o, w);
    if (better(ov, oi, v, i)) {
      v = ov;
      i = oi;
    }
  }
}

// Folds element (x, i) into this lane's candidate for the next pick: the best element
// strictly after the previous pick (pi < 0: no pick yet).
template <typename T>
__device__ __forceinline__ void consider(T x, int i, T pv, int pi, T& cv, int& ci) {
  if ((pi < 0 || better(pv, pi, x, i)) && better(x, i, cv, ci)) {
    cv = x;
    ci = i;
  }
}

// Rows to groups of w lanes (a power of two, 1..32) in a 1-d launch, grid-stride: the
// warp's first row (base), the group's offset from it, the grid's step (a multiple of
// 32 / w, so every base is a warp's) and the lane in the group. A loop over bases is
// uniform over the warp, so its shuffles see every lane; a group whose row base + sub is
// past the last row takes part with no elements.
struct WarpGrid {
  int64_t first, step;
  int sub, lane;
};
__device__ __forceinline__ WarpGrid warp_grid(int w = 32) {
  const int64_t per_block = blockDim.x / w;
  const int sub = int(threadIdx.x & 31) / w;
  return {int64_t(blockIdx.x) * per_block + threadIdx.x / w - sub, int64_t(gridDim.x) * per_block, sub,
          int(threadIdx.x) & (w - 1)};
}

// The group's row at warp base `base` of a loop over rows [0, rows) of N elements: its
// index (0 past the last row), whether it exists, and its element count (0 past the last
// row, so such a group reads and writes nothing but still joins the shuffles).
struct GroupRow {
  int64_t row;
  bool live;
  int n;
};
__device__ __forceinline__ GroupRow group_row(const WarpGrid& wg, int64_t base, int64_t rows, int N) {
  const bool live = base + wg.sub < rows;
  return {live ? base + wg.sub : 0, live, live ? N : 0};
}

// ---- route_topk ------------------------------------------------------------------------

// One group of W lanes per row of logits [rows, N] (W = 32, or pow2_ceil(N) >= 4 for
// N <= 32, so short rows share a warp and its loads): probs = softmax (max, exp(x - max)
// summed by a butterfly, times 1 / sum, as the CPU), then k picks (best first, ties to
// the lower index); gates = the picked probs, divided by their sum (in pick order) when
// renorm.
// Lane l of the group keeps pick j for j = l mod W and writes ids and gates once per W
// picks, one coalesced store instead of one single-lane store per pick.
// VPL > 0: lane l holds elements l + W q, q < VPL, in registers (N <= W VPL); VPL == 0:
// any N, each lane streaming its own elements of the row (no lane reads another's).
// A NaN logit flags its smallest row-major position.
template <typename T, int VPL, int W>
__global__ void router_topk_kernel(const T* __restrict__ logits, int64_t rows, int N, int k, bool renorm,
                                   T* __restrict__ probs, int32_t* __restrict__ ids, T* __restrict__ gates,
                                   unsigned long long* flag) {
  constexpr int w = W;
  const WarpGrid wg = warp_grid(w);
  for (int64_t base = wg.first; base < rows; base += wg.step) {
    const auto [row, live, n] = group_row(wg, base, rows, N);
    const int lane = wg.lane;
    const T* l = logits + row * N;
    T* p = probs + row * N;
    T v[VPL > 0 ? VPL : 1];
    T m = -T(INFINITY);
    if constexpr (VPL > 0) {
#pragma unroll
      for (int q = 0; q < VPL; ++q) {
        const int i = lane + w * q;
        v[q] = i < n ? l[i] : -T(INFINITY);
        if (v[q] != v[q]) atomicMin(flag, (unsigned long long)(row * N + i));
        m = v[q] > m ? v[q] : m;
      }
    } else {
      for (int i = lane; i < n; i += w) {
        const T x = l[i];
        if (x != x) atomicMin(flag, (unsigned long long)(row * N + i));
        m = x > m ? x : m;
      }
    }
    m = warp_max(m, w);
    T s = T(0);
    if constexpr (VPL > 0) {
#pragma unroll
      for (int q = 0; q < VPL; ++q)
        if (lane + w * q < n) {
          v[q] = d_exp(v[q] - m);
          s += v[q];
        }
    } else {
      for (int i = lane; i < n; i += w) {
        const T e = d_exp(l[i] - m);
        p[i] = e;
        s += e;
      }
    }
    const T inv = T(1) / warp_sum(s, w);
    if constexpr (VPL > 0) {
#pragma unroll
      for (int q = 0; q < VPL; ++q)
        if (lane + w * q < n) {
          v[q] *= inv;
          p[lane + w * q] = v[q];
        }
    } else {
      for (int i = lane; i < n; i += w) p[i] *= inv;
    }
    T z = T(0), pv = T(0), mv = T(0);
    int pi = -1, mi = -1;
    for (int j = 0; j < k; ++j) {
      T cv = T(0);
      int ci = -1;
      if constexpr (VPL > 0) {
#pragma unroll
        for (int q = 0; q < VPL; ++q)
          if (lane + w * q < n) consider(v[q], lane + w * q, pv, pi, cv, ci);
      } else {
        for (int i = lane; i < n; i += w) consider(p[i], i, pv, pi, cv, ci);
      }
      warp_best(cv, ci, w);
      z += cv;
      const int slot = j & (w - 1);
      if (lane == slot) {
        mv = cv;
        mi = ci;
      }
      if (slot == w - 1 || j == k - 1) {  // picks j - slot .. j are held by lanes 0 .. slot
        const int64_t at = row * k + (j - slot) + lane;
        if (live && lane <= slot) {
          ids[at] = int32_t(mi);
          gates[at] = renorm && k <= w ? mv / z : mv;  // z is complete when every pick is in this store
        }
      }
      pv = cv;
      pi = ci;
    }
    if (renorm && k > w && live)
      for (int j = lane; j < k; j += w) gates[row * k + j] = gates[row * k + j] / z;
  }
}

// One group of W lanes per row (as the forward): dlogits = p * (dp - <dp, p>) (dprobs
// optional), plus through the gates (optional): with renorm, g_j (dg_j - <dg, g>) at
// ids[j]; else -p <dg, g> on every element and p[id] dg_j at ids[j]. <dg, g> is summed in
// j order, as the CPU; each lane adds the picks' terms to its own elements in registers,
// in j order, before its one store (no read-modify-write of single elements after it).
template <typename T, int W>
__global__ void router_backward_kernel(const T* __restrict__ probs, const int32_t* __restrict__ ids,
                                       const T* __restrict__ gates, bool renorm, const T* __restrict__ dgates,
                                       const T* __restrict__ dprobs, T* __restrict__ dlogits, int64_t rows, int N,
                                       int k) {
  const WarpGrid wg = warp_grid(W);
  const int lane = wg.lane, w = W;
  for (int64_t base = wg.first; base < rows; base += wg.step) {
    const auto [row, live, n] = group_row(wg, base, rows, N);
    const int64_t o = row * N;
    const T* p = probs + o;
    const T* dp = dprobs ? dprobs + o : nullptr;
    T* out = dlogits + o;
    T c = T(0);
    if (dp) {
      for (int i = lane; i < n; i += w) c += dp[i] * p[i];
      c = warp_sum(c, w);
    }
    if (!live) continue;  // no shuffles below
    T cg = T(0);
    if (dgates)
      for (int j = 0; j < k; ++j) cg += dgates[row * k + j] * gates[row * k + j];
    for (int i = lane; i < N; i += w) {
      T v = dp ? p[i] * (dp[i] - c) : T(0);
      if (dgates) {
        if (!renorm) v -= p[i] * cg;
        for (int j = 0; j < k; ++j) {
          if (ids[row * k + j] != i) continue;
          const T dg = dgates[row * k + j];
          v += renorm ? gates[row * k + j] * (dg - cg) : p[i] * dg;
        }
      }
      out[i] = v;
    }
  }
}

// ---- dense gates ------------------------------------------------------------------------

// out[t, n] = sum over j in order of values[t, j] where ids[t, j] == n (zero elsewhere),
// one thread per output element, grid-stride. The n == 0 thread of each row checks the
// row's ids and flags the smallest out-of-range position.
template <typename T, typename I>
__global__ void scatter_gates_kernel(const T* __restrict__ values, const I* __restrict__ ids, T* __restrict__ out,
                                     int64_t tokens, int64_t N, int64_t k, unsigned long long* flag) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < tokens * N; e += step) {
    const int64_t t = e / N, n = e - t * N;
    T acc = T(0);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t id = int64_t(ids[t * k + j]);
      if (n == 0 && (id < 0 || id >= N)) atomicMin(flag, (unsigned long long)(t * k + j));
      if (id == n) acc += values[t * k + j];
    }
    out[e] = acc;
  }
}

// out[t, j] = dense[t, ids[t, j]] (ids valid: checked by the forward). Grid-stride.
template <typename T, typename I>
__global__ void gather_gates_kernel(const T* __restrict__ dense, const I* __restrict__ ids, T* __restrict__ out,
                                    int64_t total, int64_t N, int64_t k) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    out[i] = dense[(i / k) * N + int64_t(ids[i])];
}

// ---- smooth load ------------------------------------------------------------------------

// The thresholds of one row of noisy logits z (k < N): the k-th pick (worst selected,
// (ov, oi)) and the (k+1)-th (best unselected, (iv, ii)), in the top-k order. Every lane
// of the warp calls it and gets them.
template <typename T>
struct Thresholds {
  T ov, iv;
  int oi, ii;
  // Element (x, i) is among the k selected.
  __device__ __forceinline__ bool selected(T x, int i) const { return i == oi || better(x, i, ov, oi); }
};
template <typename T>
__device__ Thresholds<T> row_thresholds(const T* __restrict__ z, int N, int k, int lane) {
  Thresholds<T> th{T(0), T(0), -1, -1};
  T pv = T(0);
  int pi = -1;
  for (int j = 0; j <= k; ++j) {
    T cv = T(0);
    int ci = -1;
    for (int i = lane; i < N; i += 32) consider(z[i], i, pv, pi, cv, ci);
    warp_best(cv, ci);
    pv = cv;
    pi = ci;
    if (j == k - 1) {
      th.ov = cv;
      th.oi = ci;
    }
  }
  th.iv = pv;
  th.ii = pi;
  return th;
}

// prob[t, i] = Phi((clean - thr) / std) per element, thr from the row's thresholds (1
// everywhere when k >= N). One warp per row, grid-stride.
template <typename T>
__global__ void smooth_load_prob_kernel(const T* __restrict__ clean, const T* __restrict__ noisy,
                                        const T* __restrict__ sd, int64_t rows, int N, int k, T* __restrict__ prob) {
  const WarpGrid wg = warp_grid();
  const int lane = wg.lane;
  for (int64_t row = wg.first; row < rows; row += wg.step) {
    const int64_t o = row * N;
    if (k >= N) {
      for (int i = lane; i < N; i += 32) prob[o + i] = T(1);
      continue;
    }
    const Thresholds<T> th = row_thresholds(noisy + o, N, k, lane);
    for (int i = lane; i < N; i += 32) {
      const T thr = th.selected(noisy[o + i], i) ? th.iv : th.ov;
      prob[o + i] = normal_cdf((clean[o + i] - thr) / sd[o + i]);
    }
  }
}

// partial[chunk, c] = sum of x[r, c] over the chunk's rows, in increasing r. Grid: x over
// columns (blockDim.x each), y over chunks of chunk_rows rows.
template <typename T>
__global__ void column_partial_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t chunk_rows,
                                      T* __restrict__ partial) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  T acc = T(0);
  for (int64_t r = r0; r < r1; ++r) acc += x[r * cols + c];
  partial[int64_t(blockIdx.y) * cols + c] = acc;
}

// out[c] = sum of partial[chunk, c] over the chunks, in order. One thread per column.
template <typename T>
__global__ void column_total_kernel(const T* __restrict__ partial, int64_t chunks, int64_t cols, T* __restrict__ out) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += step) {
    T acc = T(0);
    for (int64_t q = 0; q < chunks; ++q) acc += partial[q * cols + c];
    out[c] = acc;
  }
}

// Gradients of the smooth load (k < N): per element u = (clean - thr) / std and
// gp = dload[i] pdf(u) / std; dclean = gp, dstd = -gp u, and dnoisy gathers -gp at the
// threshold each element used: the best unselected (for the selected) or the worst
// selected (for the others), zero elsewhere. One warp per row, grid-stride.
template <typename T>
__global__ void smooth_load_backward_kernel(const T* __restrict__ clean, const T* __restrict__ noisy,
                                            const T* __restrict__ sd, const T* __restrict__ dload, int64_t rows, int N,
                                            int k, T* __restrict__ dclean, T* __restrict__ dnoisy,
                                            T* __restrict__ dstd) {
  const WarpGrid wg = warp_grid();
  const int lane = wg.lane;
  for (int64_t row = wg.first; row < rows; row += wg.step) {
    const int64_t o = row * N;
    const Thresholds<T> th = row_thresholds(noisy + o, N, k, lane);
    T to_in = T(0), to_out = T(0);  // sums of gp landing on ii and on oi
    for (int i = lane; i < N; i += 32) {
      const bool sel = th.selected(noisy[o + i], i);
      const T si = sd[o + i], u = (clean[o + i] - (sel ? th.iv : th.ov)) / si;
      const T gp = dload[i] * normal_pdf(u) / si;
      dclean[o + i] = T(0) + gp;
      dstd[o + i] = T(0) - gp * u;
      if (sel)
        to_in += gp;
      else
        to_out += gp;
    }
    to_in = warp_sum(to_in);
    to_out = warp_sum(to_out);
    for (int i = lane; i < N; i += 32) dnoisy[o + i] = i == th.ii ? T(0) - to_in : i == th.oi ? T(0) - to_out : T(0);
  }
}

}  // namespace hmoe::ops::cuda::moe_router
