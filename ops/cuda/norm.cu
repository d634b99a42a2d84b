// CUDA kernels of the norm family: layer_norm and rms_norm forward (row statistics in
// f32, f64 for f64) and backward (ops/nn_kernels.h). dweight / dbias are reduced over
// rows deterministically: per-chunk partial sums over fixed row chunks, then a second
// kernel adding the chunks in order. No float atomics.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/dispatch.h"
#include "ops/nn_kernels.h"

namespace hmoe::ops::cuda {
namespace {

// ---- device helpers ---------------------------------------------------------------------

// A pack of acc values (weights, biases), 0 where the tensor is absent.
template <typename T, int V>
__device__ __forceinline__ void load_acc(const T* p, int64_t e, device_compute_t<T> (&out)[V]) {
  if (p == nullptr) {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = device_compute_t<T>(0);
    return;
  }
  const Pack<T, V> q = load_pack<T, V>(p + e);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = to_compute_hw(q.v[k]);
}

// Two sums reduced together (one shuffle tree).
template <typename C>
struct Sum2 {
  C a, b;
};
template <typename C>
__device__ __forceinline__ Sum2<C> operator+(const Sum2<C>& x, const Sum2<C>& y) {
  return {x.a + y.a, x.b + y.b};
}

// ---- forward -------------------------------------------------------------------------

// y = (x - mean) * rstd * w + b (layer) or x * rstd * w (rms) for each row of x [rows, D];
// writes mean (layer only) and rstd. Launch: RowPlan. kIters > 0: the row slice stays in
// registers (one read of x); kIters == 0: it is re-read for each pass.
template <typename T, int V, int kIters>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    norm_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                     device_compute_t<T>* __restrict__ mean, device_compute_t<T>* __restrict__ rstd, int64_t rows,
                     int64_t D, int group, device_compute_t<T> eps, bool rms) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);
  const bool live = rl.row < rows;
  const T* xr = x + (live ? rl.row : 0) * D;
  T* yr = y + (live ? rl.row : 0) * D;
  const C inv_d = C(1) / C(D);
  const T* bias = rms ? nullptr : b;
  C mu = C(0), rs;
  if constexpr (kIters > 0) {
    C v[kIters][V];
    C s = C(0);
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < D) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          v[it][k] = to_compute_hw(p.v[k]);
          s += rms ? v[it][k] * v[it][k] : v[it][k];
        }
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) v[it][k] = C(0);
      }
    }
    s = group_reduce(s, group, Plus{}, C(0)) * inv_d;
    if (!rms) {
      // Two passes over registers: stable where E[x^2] - E[x]^2 is not.
      mu = s;
      C q = C(0);
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t e = (int64_t(it) * group + rl.lane) * V;
        if (live && e < D)
#pragma unroll
          for (int k = 0; k < V; ++k) q += (v[it][k] - mu) * (v[it][k] - mu);
      }
      s = group_reduce(q, group, Plus{}, C(0)) * inv_d;
    }
    rs = C(1) / d_sqrt(s + eps);
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < D) {
        C wv[V], bv[V];
        load_acc<T, V>(w, e, wv);
        load_acc<T, V>(bias, e, bv);
        Pack<T, V> p;
#pragma unroll
        for (int k = 0; k < V; ++k)
          p.v[k] = from_compute_hw<T>(rms ? v[it][k] * rs * wv[k] : (v[it][k] - mu) * rs * wv[k] + bv[k]);
        store_pack<T, V>(yr + e, p);
      }
    }
  } else {
    const int64_t step = int64_t(group) * V;
    C s = C(0);
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
        for (int k = 0; k < V; ++k) s += rms ? to_compute_hw(p.v[k]) * to_compute_hw(p.v[k]) : to_compute_hw(p.v[k]);
      }
    s = group_reduce(s, group, Plus{}, C(0)) * inv_d;
    if (!rms) {
      mu = s;
      C q = C(0);
      if (live)
        for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
          const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
          for (int k = 0; k < V; ++k) q += (to_compute_hw(p.v[k]) - mu) * (to_compute_hw(p.v[k]) - mu);
        }
      s = group_reduce(q, group, Plus{}, C(0)) * inv_d;
    }
    rs = C(1) / d_sqrt(s + eps);
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
        C wv[V], bv[V];
        load_acc<T, V>(w, e, wv);
        load_acc<T, V>(bias, e, bv);
        Pack<T, V> q;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const C xv = to_compute_hw(p.v[k]);
          q.v[k] = from_compute_hw<T>(rms ? xv * rs * wv[k] : (xv - mu) * rs * wv[k] + bv[k]);
        }
        store_pack<T, V>(yr + e, q);
      }
  }
  if (live && rl.lane == 0) {
    if (!rms) mean[rl.row] = mu;
    rstd[rl.row] = rs;
  }
}

// ---- backward: dx (and, fused, the dweight / dbias partial sums) -----------------------

// dx = rstd * (g w - mean(g w) - xhat * mean(g w xhat)), xhat = (x - mean) * rstd; RMS
// drops the mean(g w) term (and mean is 0). dx null: not wanted.
// kIters > 0: each group (launch as norm_rows_kernel, one group per chunk) takes the
// rows_per_chunk rows of its chunk q in order, holding xhat and g in registers, and
// adds g * xhat and g into per-lane column accumulators (a lane owns the same columns
// in every row), written as pw[q, :] / pb[q, :] (null: not wanted). Every group runs
// the same trip count (rows past the end count as dead), so shuffles stay converged.
// kIters == 0: one row per group (rows_per_chunk must be 1), streamed twice; the
// partial sums then come from norm_partials_kernel.
template <typename T, int V, int kIters>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    norm_backward_rows_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                              const device_compute_t<T>* __restrict__ mean,
                              const device_compute_t<T>* __restrict__ rstd, T* __restrict__ dx, int64_t rows, int64_t D,
                              int group, bool rms, int64_t rows_per_chunk, device_compute_t<T>* __restrict__ pw,
                              device_compute_t<T>* __restrict__ pb) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);  // rl.row: this group's chunk
  const C inv_d = C(1) / C(D);
  if constexpr (kIters > 0) {
    C aw[kIters][V], ab[kIters][V];
#pragma unroll
    for (int it = 0; it < kIters; ++it)
#pragma unroll
      for (int k = 0; k < V; ++k) aw[it][k] = ab[it][k] = C(0);
    for (int64_t r = 0; r < rows_per_chunk; ++r) {
      const int64_t row = rl.row * rows_per_chunk + r;
      const bool live = row < rows;
      const int64_t off = (live ? row : 0) * D;
      const C rs = live ? rstd[row] : C(0);
      const C mu = live && !rms ? mean[row] : C(0);
      Sum2<C> s{C(0), C(0)};  // sum(g w), sum(g w xhat)
      C xh[kIters][V], gv[kIters][V];
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t e = (int64_t(it) * group + rl.lane) * V;
        if (live && e < D) {
          const Pack<T, V> px = load_pack<T, V>(x + off + e), pg = load_pack<T, V>(g + off + e);
          C wv[V];
          load_acc<T, V>(w, e, wv);
#pragma unroll
          for (int k = 0; k < V; ++k) {
            xh[it][k] = (to_compute_hw(px.v[k]) - mu) * rs;
            gv[it][k] = to_compute_hw(pg.v[k]);
            aw[it][k] += gv[it][k] * xh[it][k];
            ab[it][k] += gv[it][k];
            const C gw = gv[it][k] * wv[k];
            s.a += gw;
            s.b += gw * xh[it][k];
          }
        }
      }
      if (dx == nullptr) continue;
      s = group_reduce(s, group, Plus{}, Sum2<C>{C(0), C(0)});
      const C a = rms ? C(0) : s.a * inv_d, bq = s.b * inv_d;
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t e = (int64_t(it) * group + rl.lane) * V;
        if (live && e < D) {
          C wv[V];
          load_acc<T, V>(w, e, wv);
          Pack<T, V> p;
#pragma unroll
          for (int k = 0; k < V; ++k) p.v[k] = from_compute_hw<T>(rs * (gv[it][k] * wv[k] - a - xh[it][k] * bq));
          store_pack<T, V>(dx + off + e, p);
        }
      }
    }
    if (rl.row * rows_per_chunk >= rows) return;  // no chunk (no collectives below)
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (e < D)
#pragma unroll
        for (int k = 0; k < V; ++k) {
          if (pw != nullptr) pw[rl.row * D + e + k] = aw[it][k];
          if (pb != nullptr) pb[rl.row * D + e + k] = ab[it][k];
        }
    }
  } else {
    const bool live = rl.row < rows;
    const int64_t off = (live ? rl.row : 0) * D;
    const C rs = live ? rstd[rl.row] : C(0);
    const C mu = live && !rms ? mean[rl.row] : C(0);
    Sum2<C> s{C(0), C(0)};
    const int64_t step = int64_t(group) * V;
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> px = load_pack<T, V>(x + off + e), pg = load_pack<T, V>(g + off + e);
        C wv[V];
        load_acc<T, V>(w, e, wv);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const C gw = to_compute_hw(pg.v[k]) * wv[k];
          s.a += gw;
          s.b += gw * ((to_compute_hw(px.v[k]) - mu) * rs);
        }
      }
    s = group_reduce(s, group, Plus{}, Sum2<C>{C(0), C(0)});
    const C a = rms ? C(0) : s.a * inv_d, bq = s.b * inv_d;
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> px = load_pack<T, V>(x + off + e), pg = load_pack<T, V>(g + off + e);
        C wv[V];
        load_acc<T, V>(w, e, wv);
        Pack<T, V> p;
#pragma unroll
        for (int k = 0; k < V; ++k)
          p.v[k] = from_compute_hw<T>(rs * (to_compute_hw(pg.v[k]) * wv[k] - a - (to_compute_hw(px.v[k]) - mu) * rs * bq));
        store_pack<T, V>(dx + off + e, p);
      }
  }
}

// ---- backward: dweight, dbias ------------------------------------------------------------

// Block shape of the partial-sum kernel: kColX threads across columns (V adjacent
// columns each, coalesced) times kRowY threads splitting a chunk's rows.
constexpr int kColX = 32, kRowY = 8;

// Partial sums over one chunk of rows: pw[c, j] = sum_i g[i, j] * xhat[i, j] and
// pb[c, j] = sum_i g[i, j] over the rows i of chunk c = blockIdx.y. Thread (x, y) adds
// rows y, y + kRowY, ... of the chunk for its V columns; the kRowY sums are then added
// in y order through shared memory. pw / pb null: not wanted.
template <typename T, int V>
__global__ void __launch_bounds__(kColX* kRowY, 1)
    norm_partials_kernel(const T* __restrict__ g, const T* __restrict__ x, const device_compute_t<T>* __restrict__ mean,
                         const device_compute_t<T>* __restrict__ rstd, int64_t rows, int64_t D, int64_t rows_per_chunk,
                         bool rms, device_compute_t<T>* __restrict__ pw, device_compute_t<T>* __restrict__ pb) {
  using C = device_compute_t<T>;
  HMOE_SHARED(C, sw, [kRowY][kColX * V]);
  HMOE_SHARED(C, sb, [kRowY][kColX * V]);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const int64_t j = (int64_t(blockIdx.x) * kColX + tx) * V;
  const bool live = j < D;
  const int64_t c = blockIdx.y;
  const int64_t i1 = (c + 1) * rows_per_chunk < rows ? (c + 1) * rows_per_chunk : rows;
  C aw[V], ab[V];
#pragma unroll
  for (int k = 0; k < V; ++k) aw[k] = ab[k] = C(0);
  if (live)
    for (int64_t i = c * rows_per_chunk + ty; i < i1; i += kRowY) {
      const Pack<T, V> pg = load_pack<T, V>(g + i * D + j);
      if (pw != nullptr) {
        const C rs = rstd[i];
        const C mu = rms ? C(0) : mean[i];
        const Pack<T, V> px = load_pack<T, V>(x + i * D + j);
#pragma unroll
        for (int k = 0; k < V; ++k) aw[k] += to_compute_hw(pg.v[k]) * ((to_compute_hw(px.v[k]) - mu) * rs);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) ab[k] += to_compute_hw(pg.v[k]);
    }
#pragma unroll
  for (int k = 0; k < V; ++k) {
    sw[ty][tx * V + k] = aw[k];
    sb[ty][tx * V + k] = ab[k];
  }
  __syncthreads();
  if (ty != 0 || !live) return;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    C w = sw[0][tx * V + k], b = sb[0][tx * V + k];
    for (int y = 1; y < kRowY; ++y) {
      w += sw[y][tx * V + k];
      b += sb[y][tx * V + k];
    }
    if (pw != nullptr) pw[c * D + j + k] = w;
    if (pb != nullptr) pb[c * D + j + k] = b;
  }
}

// out[j] = sum over chunks c of part[c, j] in f64, for dweight and dbias (either may be
// null). Block (kColX, kRowY): thread (x, y) adds chunks y, y + kRowY, ... in order,
// then the kRowY sums are added in y order. Grid-stride over column tiles.
template <typename T>
__global__ void __launch_bounds__(kColX* kRowY)
    norm_finish_kernel(const device_compute_t<T>* __restrict__ pw, const device_compute_t<T>* __restrict__ pb,
                       int64_t chunks, int64_t D, T* __restrict__ dw, T* __restrict__ db) {
  using C = device_compute_t<T>;
  HMOE_SHARED(double, sw, [kRowY][kColX]);
  HMOE_SHARED(double, sb, [kRowY][kColX]);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  for (int64_t j0 = int64_t(blockIdx.x) * kColX; j0 < D; j0 += int64_t(gridDim.x) * kColX) {
    const int64_t j = j0 + tx;
    double aw = 0, ab = 0;
    if (j < D)
      for (int64_t c = ty; c < chunks; c += kRowY) {
        if (dw != nullptr) aw += double(pw[c * D + j]);
        if (db != nullptr) ab += double(pb[c * D + j]);
      }
    __syncthreads();  // the previous tile's readers are done
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty != 0 || j >= D) continue;
    for (int y = 1; y < kRowY; ++y) {
      aw += sw[y][tx];
      ab += sb[y][tx];
    }
    if (dw != nullptr) dw[j] = from_compute_hw<T>(C(aw));
    if (db != nullptr) db[j] = from_compute_hw<T>(C(ab));
  }
}

// ---- host side -----------------------------------------------------------------------

void norm_forward_cuda(const Tensor& xt, const Tensor& wt, const Tensor& bt, double eps, bool rms, const Tensor& yt,
                       const Tensor& mean_t, const Tensor& rstd_t) {
  const int64_t M = xt.size(0), D = xt.size(1);
  if (M == 0 || D == 0) return;
  const auto stream = hmoe::cuda::current_stream(xt.device().index).native();
  dispatch_device_float(xt.dtype(), rms ? "rms_norm" : "layer_norm", [&]<typename T>() {
    using C = device_compute_t<T>;
    const T* x = data_or_null<const T>(xt);
    const T* w = data_or_null<const T>(wt);
    const T* b = rms ? nullptr : data_or_null<const T>(bt);
    T* y = data_or_null<T>(yt);
    C* mean = rms ? nullptr : data_or_null<C>(mean_t);
    C* rstd = data_or_null<C>(rstd_t);
    constexpr int VW = kVec16<T>;
    auto go = [&]<int V>() {
      const RowPlan p = plan_rows("norm", M, D, V, max_iters<T, V, 1>());
      with_iters<max_iters<T, V, 1>()>("norm", p.iters, [&](auto ic) {
        hmoe::cuda::launch_checked("norm_rows_kernel", &norm_rows_kernel<T, V, decltype(ic)::value>, dim3(p.grid),
                                   dim3(p.block), 0, stream, x, w, b, y, mean, rstd, M, D, p.group, C(eps), rms);
      });
    };
    if (D % VW == 0 && aligned_to(x, 16) && aligned_to(w, 16) && (b == nullptr || aligned_to(b, 16)) &&
        aligned_to(y, 16))
      go.template operator()<VW>();
    else
      go.template operator()<1>();
  });
}

// Rows per chunk of the dweight/dbias reduction: a function of the shape only (so the
// result is the same on every device), at most 256 chunks.
int64_t rows_per_chunk(int64_t M) { return std::max<int64_t>(16, (M + 255) / 256); }
// The same for the fused backward kernel, whose chunks are also its unit of parallelism:
// more of them (up to 512), so a GPU has several per multiprocessor.
int64_t fused_rows_per_chunk(int64_t M) { return std::max<int64_t>(8, (M + 511) / 512); }

void norm_backward_cuda(const Tensor& gt, const Tensor& xt, const Tensor& wt, const Tensor& mean_t,
                        const Tensor& rstd_t, bool rms, const Tensor& dxt, const Tensor& dwt, const Tensor& dbt) {
  const int64_t M = xt.size(0), D = xt.size(1);
  if (D == 0) return;
  const auto stream = hmoe::cuda::current_stream(xt.device().index).native();
  dispatch_device_float(xt.dtype(), rms ? "rms_norm_backward" : "layer_norm_backward", [&]<typename T>() {
    using C = device_compute_t<T>;
    const T* g = data_or_null<const T>(gt);
    const T* x = data_or_null<const T>(xt);
    const T* w = data_or_null<const T>(wt);
    const C* mean = rms ? nullptr : data_or_null<const C>(mean_t);
    const C* rstd = data_or_null<const C>(rstd_t);
    T* dx = data_or_null<T>(dxt);
    T* dw = data_or_null<T>(dwt);
    T* db = data_or_null<T>(dbt);
    const bool want_wb = dw != nullptr || db != nullptr;
    const TensorOptions po{std::is_same_v<C, double> ? DType::f64 : DType::f32, xt.device()};
    constexpr int VW = kVec16<T>;
    const bool vec = D % VW == 0 && aligned_to(g, 16) && aligned_to(x, 16) && aligned_to(w, 16) &&
                     (dx == nullptr || aligned_to(dx, 16));
    Tensor pw_t, pb_t;  // per-chunk partial sums [chunks, D], alive until the finish kernel ran
    int64_t chunks = 0;
    auto go = [&]<int V>() {
      constexpr int kMax = max_iters<T, V, 2>();
      const int iters = plan_rows("norm", M, D, V, kMax).iters;
      // Row slices in registers: one kernel for dx and the partial sums (x and g read
      // once). Otherwise dx streamed, then the partials kernel re-reads x and g.
      const int64_t rpc = iters > 0 && want_wb ? fused_rows_per_chunk(M) : 1;
      const int64_t groups = (M + rpc - 1) / rpc;
      C* pw = nullptr;
      C* pb = nullptr;
      if (iters > 0 && want_wb) {
        chunks = groups;
        if (dw != nullptr) pw_t = Tensor::empty({chunks, D}, po);
        if (db != nullptr) pb_t = Tensor::empty({chunks, D}, po);
        pw = data_or_null<C>(pw_t);
        pb = data_or_null<C>(pb_t);
      }
      if (iters > 0 || dx != nullptr) {
        const RowPlan p = plan_rows("norm", groups, D, V, kMax);
        with_iters<kMax>("norm", p.iters, [&](auto ic) {
          hmoe::cuda::launch_checked("norm_backward_rows_kernel", &norm_backward_rows_kernel<T, V, decltype(ic)::value>,
                                     dim3(p.grid), dim3(p.block), 0, stream, g, x, w, mean, rstd, dx, M, D, p.group,
                                     rms, rpc, pw, pb);
        });
      }
      if (iters == 0 && want_wb) {
        const int64_t prpc = rows_per_chunk(M);
        chunks = (M + prpc - 1) / prpc;
        if (dw != nullptr) pw_t = Tensor::empty({chunks, D}, po);
        if (db != nullptr) pb_t = Tensor::empty({chunks, D}, po);
        const int64_t col_blocks = (D / V + kColX - 1) / kColX;
        HMOE_CHECK(col_blocks <= 0x7fffffff && chunks <= 65535, "layer_norm_backward: shape [", M, ", ", D,
                   "] too large");
        hmoe::cuda::launch_checked("norm_partials_kernel", &norm_partials_kernel<T, V>,
                                   dim3(unsigned(col_blocks), unsigned(chunks)), dim3(kColX, kRowY), 0, stream, g, x,
                                   mean, rstd, M, D, prpc, rms, data_or_null<C>(pw_t), data_or_null<C>(pb_t));
      }
    };
    if (M > 0) {
      if (vec)
        go.template operator()<VW>();
      else
        go.template operator()<1>();
    }
    if (!want_wb) return;
    const unsigned grid = unsigned(std::min<int64_t>((D + kColX - 1) / kColX, 8192));
    hmoe::cuda::launch_checked("norm_finish_kernel", &norm_finish_kernel<T>, dim3(grid), dim3(kColX, kRowY), 0, stream,
                               data_or_null<const C>(pw_t), data_or_null<const C>(pb_t), chunks, D, dw, db);
  });
}

}  // namespace

void register_norm_cuda() {
  norm_stub.set(DeviceType::cuda, &norm_forward_cuda);
  norm_backward_stub.set(DeviceType::cuda, &norm_backward_cuda);
}

}  // namespace hmoe::ops::cuda
