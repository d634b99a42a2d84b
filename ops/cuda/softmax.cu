// CUDA kernels of the softmax family: softmax / log_softmax forward and backward, and
// the fused cross-entropy loss and its gradient (ops/nn_kernels.h). Rows (inner == 1)
// go to a group of lanes (a sub-warp, a warp or a whole block) that keeps the row in
// registers when it fits; reductions are fixed shuffle trees: deterministic.
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

// ---- device helpers ------------------------------------------------------------------

template <typename C>
__device__ __forceinline__ bool finite(C x) {
  return x - x == C(0);
}  // false for inf and NaN

// Running (max, sum of exp(x - max)) of a row; NaN propagates, -inf adds nothing.
template <typename C>
struct Stats {
  C m, s;
};
template <typename C>
__device__ __forceinline__ void online_add(Stats<C>& st, C x) {
  if (x > st.m || x != x) {
    st.s = st.s * d_exp(st.m - x) + C(1);
    st.m = x;
  } else if (st.m != neg_inf<C>()) {
    st.s += d_exp(x - st.m);
  }
}
// Exactly commutative (merge(a, b) == merge(b, a) bit for bit), so both partners of a
// butterfly shuffle agree and every lane ends with the same value.
template <typename C>
__device__ __forceinline__ Stats<C> merge(const Stats<C>& a, const Stats<C>& b) {
  const C m = a.m != a.m ? a.m : b.m != b.m ? b.m : (a.m > b.m ? a.m : b.m);
  const C ta = a.s == C(0) ? C(0) : a.s * d_exp(a.m - m);
  const C tb = b.s == C(0) ? C(0) : b.s * d_exp(b.m - m);
  return {m, ta + tb};
}
// Max that propagates NaN whichever side it is on.
struct MaxOp {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return a != a ? a : b != b ? b : (a > b ? a : b);
  }
};
struct MergeOp {
  template <typename C>
  __device__ __forceinline__ Stats<C> operator()(const Stats<C>& a, const Stats<C>& b) const {
    return merge(a, b);
  }
};

__device__ __forceinline__ int64_t read_target(const void* tg, bool tg64, int64_t i) {
  return tg64 ? static_cast<const int64_t*>(tg)[i] : int64_t(static_cast<const int32_t*>(tg)[i]);
}

// ---- softmax over rows (inner == 1) --------------------------------------------------

// softmax / log_softmax of each row of x [rows, n]. Launch: RowPlan (groups of `group`
// lanes per row, blocks of 128 threads or one block per row). kIters > 0: each lane
// holds kIters packs of V elements in registers (one read of x); kIters == 0: the row
// is streamed twice (one pass of online max/sum statistics, then the output).
template <typename T, int V, int kIters>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n, int group, bool log) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);
  const bool live = rl.row < rows;
  const T* xr = x + (live ? rl.row : 0) * n;
  T* yr = y + (live ? rl.row : 0) * n;
  if constexpr (kIters > 0) {
    C v[kIters][V];
    C m = neg_inf<C>();
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < n) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
        for (int k = 0; k < V; ++k) v[it][k] = to_compute_hw(p.v[k]);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) v[it][k] = neg_inf<C>();
      }
#pragma unroll
      for (int k = 0; k < V; ++k) m = (v[it][k] > m || v[it][k] != v[it][k]) && m == m ? v[it][k] : m;
    }
    // The row is in registers, so two cheap tree reductions (max, then sum) beat the
    // online merge, which costs two exponentials per combining step. A row of -inf
    // only (or with +inf or NaN) gives NaN, as on the CPU.
    const C mx = group_reduce(m, group, MaxOp{}, neg_inf<C>());
    C s = C(0);
#pragma unroll
    for (int it = 0; it < kIters; ++it)
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const C ex = d_exp(v[it][k] - mx);
        s += ex;
        if (!log) v[it][k] = ex;
      }
    s = group_reduce(s, group, Plus{}, C(0));
    const C shift = mx + d_log(s);
    const C inv = C(1) / s;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < n) {
        Pack<T, V> p;
#pragma unroll
        for (int k = 0; k < V; ++k) p.v[k] = from_compute_hw<T>(log ? v[it][k] - shift : v[it][k] * inv);
        store_pack<T, V>(yr + e, p);
      }
    }
  } else {
    Stats<C> st{neg_inf<C>(), C(0)};
    if (live) {
#pragma unroll 4
      for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
        for (int k = 0; k < V; ++k) online_add(st, to_compute_hw(p.v[k]));
      }
    }
    st = group_reduce(st, group, MergeOp{}, Stats<C>{neg_inf<C>(), C(0)});
    if (!live) return;
    const C shift = st.m + d_log(st.s);
    const C inv = C(1) / st.s;
#pragma unroll 4
    for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
      const Pack<T, V> p = load_pack<T, V>(xr + e);
      Pack<T, V> q;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const C xv = to_compute_hw(p.v[k]);
        q.v[k] = from_compute_hw<T>(log ? xv - shift : d_exp(xv - st.m) * inv);
      }
      store_pack<T, V>(yr + e, q);
    }
  }
}

// Backward of each row: gx = y * (g - sum(g * y)), or g - exp(y) * sum(g) for log.
// Launch and kIters as softmax_rows_kernel (y and g held in registers).
template <typename T, int V, int kIters>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    softmax_backward_rows_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gx, int64_t rows,
                                 int64_t n, int group, bool log) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);
  const bool live = rl.row < rows;
  const int64_t off = (live ? rl.row : 0) * n;
  C s = C(0);
  if constexpr (kIters > 0) {
    C yv[kIters][V], gv[kIters][V];
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < n) {
        const Pack<T, V> py = load_pack<T, V>(y + off + e), pg = load_pack<T, V>(g + off + e);
#pragma unroll
        for (int k = 0; k < V; ++k) {
          yv[it][k] = to_compute_hw(py.v[k]);
          gv[it][k] = to_compute_hw(pg.v[k]);
          s += log ? gv[it][k] : gv[it][k] * yv[it][k];
        }
      }
    }
    s = group_reduce(s, group, Plus{}, C(0));
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int64_t e = (int64_t(it) * group + rl.lane) * V;
      if (live && e < n) {
        Pack<T, V> p;
#pragma unroll
        for (int k = 0; k < V; ++k)
          p.v[k] = from_compute_hw<T>(log ? gv[it][k] - d_exp(yv[it][k]) * s : yv[it][k] * (gv[it][k] - s));
        store_pack<T, V>(gx + off + e, p);
      }
    }
  } else {
    if (live) {
#pragma unroll 4
      for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
        const Pack<T, V> py = load_pack<T, V>(y + off + e), pg = load_pack<T, V>(g + off + e);
#pragma unroll
        for (int k = 0; k < V; ++k) s += log ? to_compute_hw(pg.v[k]) : to_compute_hw(pg.v[k]) * to_compute_hw(py.v[k]);
      }
    }
    s = group_reduce(s, group, Plus{}, C(0));
    if (!live) return;
#pragma unroll 4
    for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
      const Pack<T, V> py = load_pack<T, V>(y + off + e), pg = load_pack<T, V>(g + off + e);
      Pack<T, V> p;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const C yk = to_compute_hw(py.v[k]), gk = to_compute_hw(pg.v[k]);
        p.v[k] = from_compute_hw<T>(log ? gk - d_exp(yk) * s : yk * (gk - s));
      }
      store_pack<T, V>(gx + off + e, p);
    }
  }
}

// ---- softmax along a non-last dim (inner > 1) ----------------------------------------

// x viewed as [outer, n, inner]. Block (32, kSplit): threadIdx.x picks one of 32 adjacent
// inner columns (coalesced), threadIdx.y one of kSplit interleaved slices of n; the
// slices' statistics are merged in shared memory in a fixed order. Grid-stride over
// (outer, column tile).
constexpr int kSplit = 8;

template <typename T>
__global__ void softmax_cols_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n, int64_t inner,
                                    bool log) {
  using C = device_compute_t<T>;
  HMOE_SHARED(C, sm, [kSplit][32]);
  HMOE_SHARED(C, ss, [kSplit][32]);
  const int64_t tiles = (inner + 31) / 32;
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  for (int64_t t = blockIdx.x; t < outer * tiles; t += gridDim.x) {
    const int64_t o = t / tiles, i = (t - o * tiles) * 32 + tx;
    const bool live = i < inner;
    const T* xc = x + o * n * inner + (live ? i : 0);
    T* yc = y + o * n * inner + (live ? i : 0);
    Stats<C> st{neg_inf<C>(), C(0)};
    if (live)
      for (int64_t r = ty; r < n; r += kSplit) online_add(st, to_compute_hw(xc[r * inner]));
    __syncthreads();  // the previous tile is done with sm/ss
    sm[ty][tx] = st.m;
    ss[ty][tx] = st.s;
    __syncthreads();
    st = Stats<C>{sm[0][tx], ss[0][tx]};
    for (int k = 1; k < kSplit; ++k) st = merge(st, Stats<C>{sm[k][tx], ss[k][tx]});
    if (!live) continue;
    const C shift = st.m + d_log(st.s);
    const C inv = C(1) / st.s;
    for (int64_t r = ty; r < n; r += kSplit) {
      const C xv = to_compute_hw(xc[r * inner]);
      yc[r * inner] = from_compute_hw<T>(log ? xv - shift : d_exp(xv - st.m) * inv);
    }
  }
}

// Backward of softmax_cols_kernel; same launch.
template <typename T>
__global__ void softmax_backward_cols_kernel(const T* __restrict__ y, const T* __restrict__ g, T* __restrict__ gx,
                                             int64_t outer, int64_t n, int64_t inner, bool log) {
  using C = device_compute_t<T>;
  HMOE_SHARED(C, ps, [kSplit][32]);
  const int64_t tiles = (inner + 31) / 32;
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  for (int64_t t = blockIdx.x; t < outer * tiles; t += gridDim.x) {
    const int64_t o = t / tiles, i = (t - o * tiles) * 32 + tx;
    const bool live = i < inner;
    const int64_t base = o * n * inner + (live ? i : 0);
    C s = C(0);
    if (live)
      for (int64_t r = ty; r < n; r += kSplit)
        s += log ? to_compute_hw(g[base + r * inner]) : to_compute_hw(g[base + r * inner]) * to_compute_hw(y[base + r * inner]);
    __syncthreads();
    ps[ty][tx] = s;
    __syncthreads();
    s = ps[0][tx];
    for (int k = 1; k < kSplit; ++k) s += ps[k][tx];
    if (!live) continue;
    for (int64_t r = ty; r < n; r += kSplit) {
      const int64_t q = base + r * inner;
      const C yk = to_compute_hw(y[q]), gk = to_compute_hw(g[q]);
      gx[q] = from_compute_hw<T>(log ? gk - d_exp(yk) * s : yk * (gk - s));
    }
  }
}

// ---- cross-entropy ------------------------------------------------------------------

// Per row of logits [rows, n]: lse = logsumexp (one streaming pass, online max/sum) and
// loss = lse - x[t]; ignored rows get 0 for both. flags[0] receives the smallest row
// whose target is outside [0, n) (atomicMin; rows are never read past n), flags[1]
// the number of counted rows (one atomicAdd per block). Launch: RowPlan, streaming.
template <typename T, int V>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    cross_entropy_kernel(const T* __restrict__ x, const void* __restrict__ tg, bool tg64, int64_t ignore,
                         device_compute_t<T>* __restrict__ loss, device_compute_t<T>* __restrict__ lse, int64_t rows,
                         int64_t n, int group, unsigned long long* __restrict__ flags) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);
  const bool live = rl.row < rows;
  const int64_t t = live ? read_target(tg, tg64, rl.row) : ignore;
  const bool ignored = t == ignore;
  const bool bad = !ignored && (t < 0 || t >= n);
  const bool work = !ignored && !bad;
  const T* xr = x + (live ? rl.row : 0) * n;
  Stats<C> st{neg_inf<C>(), C(0)};
  if (work) {
#pragma unroll 4
    for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
      const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
      for (int k = 0; k < V; ++k) online_add(st, to_compute_hw(p.v[k]));
    }
  }
  st = group_reduce(st, group, MergeOp{}, Stats<C>{neg_inf<C>(), C(0)});
  const bool leader = live && rl.lane == 0;
  if (leader) {
    if (work) {
      const C l = finite(st.m) ? st.m + d_log(st.s) : st.m;
      lse[rl.row] = l;
      loss[rl.row] = l - to_compute_hw(xr[t]);
    } else {
      lse[rl.row] = C(0);
      loss[rl.row] = C(0);
      if (bad) atomicMin(&flags[0], static_cast<unsigned long long>(rl.row));
    }
  }
  const int counted = __syncthreads_count(leader && work);
  if (threadIdx.x == 0 && counted > 0) atomicAdd(&flags[1], static_cast<unsigned long long>(counted));
}

// gx[i, c] = (exp(x[i, c] - lse[i]) - [c == t_i]) * g * scale; ignored rows get 0.
// g has one value per row (per_row) or one for all. Launch: RowPlan, streaming.
template <typename T, int V>
__global__ void __launch_bounds__(kRowMaxBlock, 1)
    cross_entropy_backward_kernel(const T* __restrict__ x, const void* __restrict__ tg, bool tg64, int64_t ignore,
                                  const device_compute_t<T>* __restrict__ lse,
                                  const device_compute_t<T>* __restrict__ g, bool per_row, double scale,
                                  T* __restrict__ gx, int64_t rows, int64_t n, int group) {
  using C = device_compute_t<T>;
  const RowLane rl = row_lane(group);
  if (rl.row >= rows) return;  // no collectives below
  const int64_t t = read_target(tg, tg64, rl.row);
  const bool ignored = t == ignore;
  const C w = ignored ? C(0) : C(double(g[per_row ? rl.row : 0]) * scale);
  const C l = ignored ? C(0) : lse[rl.row];
  const T* xr = x + rl.row * n;
  T* gr = gx + rl.row * n;
#pragma unroll 4
  for (int64_t e = int64_t(rl.lane) * V; e < n; e += int64_t(group) * V) {
    Pack<T, V> q;
    if (ignored) {
#pragma unroll
      for (int k = 0; k < V; ++k) q.v[k] = from_compute_hw<T>(C(0));
    } else {
      const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
      for (int k = 0; k < V; ++k)
        q.v[k] = from_compute_hw<T>((d_exp(to_compute_hw(p.v[k]) - l) - (e + k == t ? C(1) : C(0))) * w);
    }
    store_pack<T, V>(gr + e, q);
  }
}

// ---- host side -----------------------------------------------------------------------

template <typename T>
void softmax_typed(const Tensor& xt, const Tensor& yt, int64_t outer, int64_t n, int64_t inner, bool log) {
  const T* x = static_cast<const T*>(xt.data_ptr<void>());
  T* y = static_cast<T*>(yt.data_ptr<void>());
  const auto stream = hmoe::cuda::current_stream(xt.device().index).native();
  if (inner > 1) {
    const int64_t work = outer * ((inner + 31) / 32);
    const unsigned grid = unsigned(std::min<int64_t>(work, 65535 * 16));
    hmoe::cuda::launch_checked("softmax_cols_kernel", &softmax_cols_kernel<T>, dim3(grid), dim3(32, kSplit), 0, stream,
                               x, y, outer, n, inner, log);
    return;
  }
  constexpr int VW = kVec16<T>;
  auto go = [&]<int V>() {
    const RowPlan p = plan_rows("softmax", outer, n, V, max_iters<T, V, 1>());
    with_iters<max_iters<T, V, 1>()>("softmax", p.iters, [&](auto ic) {
      hmoe::cuda::launch_checked("softmax_rows_kernel", &softmax_rows_kernel<T, V, decltype(ic)::value>, dim3(p.grid),
                                 dim3(p.block), 0, stream, x, y, outer, n, p.group, log);
    });
  };
  if (n % VW == 0 && aligned_to(x, 16) && aligned_to(y, 16))
    go.template operator()<VW>();
  else
    go.template operator()<1>();
}

void softmax_cuda(const Tensor& x, const Tensor& y, int64_t outer, int64_t n, int64_t inner, bool log) {
  dispatch_device_float(x.dtype(), log ? "log_softmax" : "softmax",
                        [&]<typename T>() { softmax_typed<T>(x, y, outer, n, inner, log); });
}

template <typename T>
void softmax_backward_typed(const Tensor& yt, const Tensor& gt, const Tensor& gxt, int64_t outer, int64_t n,
                            int64_t inner, bool log) {
  const T* y = static_cast<const T*>(yt.data_ptr<void>());
  const T* g = static_cast<const T*>(gt.data_ptr<void>());
  T* gx = static_cast<T*>(gxt.data_ptr<void>());
  const auto stream = hmoe::cuda::current_stream(yt.device().index).native();
  if (inner > 1) {
    const int64_t work = outer * ((inner + 31) / 32);
    const unsigned grid = unsigned(std::min<int64_t>(work, 65535 * 16));
    hmoe::cuda::launch_checked("softmax_backward_cols_kernel", &softmax_backward_cols_kernel<T>, dim3(grid),
                               dim3(32, kSplit), 0, stream, y, g, gx, outer, n, inner, log);
    return;
  }
  constexpr int VW = kVec16<T>;
  auto go = [&]<int V>() {
    const RowPlan p = plan_rows("softmax", outer, n, V, max_iters<T, V, 2>());
    with_iters<max_iters<T, V, 2>()>("softmax", p.iters, [&](auto ic) {
      hmoe::cuda::launch_checked("softmax_backward_rows_kernel",
                                 &softmax_backward_rows_kernel<T, V, decltype(ic)::value>, dim3(p.grid), dim3(p.block),
                                 0, stream, y, g, gx, outer, n, p.group, log);
    });
  };
  if (n % VW == 0 && aligned_to(y, 16) && aligned_to(g, 16) && aligned_to(gx, 16))
    go.template operator()<VW>();
  else
    go.template operator()<1>();
}

void softmax_backward_cuda(const Tensor& y, const Tensor& g, const Tensor& gx, int64_t outer, int64_t n, int64_t inner,
                           bool log) {
  dispatch_device_float(y.dtype(), log ? "log_softmax_backward" : "softmax_backward",
                        [&]<typename T>() { softmax_backward_typed<T>(y, g, gx, outer, n, inner, log); });
}

int64_t cross_entropy_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& loss,
                           const Tensor& lse) {
  const int64_t N = logits.size(0), Cn = logits.size(1);
  if (N == 0) return 0;
  HMOE_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64,
             "cross_entropy: targets must be i32 or i64, got ", targets.meta_str());
  const int dev = logits.device().index;
  const ::hmoe::cuda::Stream& stream = ::hmoe::cuda::current_stream(dev);
  // [first bad row (all ones: none), counted rows], written by the kernel.
  Tensor flags = Tensor::empty({2}, {DType::i64, logits.device()});
  auto* fl = static_cast<unsigned long long*>(flags.data_ptr<void>());
  ::hmoe::cuda::memset_async(fl, 0xFF, sizeof(unsigned long long), stream);
  ::hmoe::cuda::memset_async(fl + 1, 0, sizeof(unsigned long long), stream);
  const void* tg = targets.data_ptr<void>();
  const bool tg64 = targets.dtype() == DType::i64;
  dispatch_device_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    using C = device_compute_t<T>;
    const T* x = static_cast<const T*>(logits.data_ptr<void>());
    C* lo = static_cast<C*>(loss.data_ptr<void>());
    C* ls = static_cast<C*>(lse.data_ptr<void>());
    constexpr int VW = kVec16<T>;
    auto go = [&]<int V>() {
      const RowPlan p = plan_rows("softmax", N, Cn, V, 32, true);
      hmoe::cuda::launch_checked("cross_entropy_kernel", &cross_entropy_kernel<T, V>, dim3(p.grid), dim3(p.block), 0,
                                 stream.native(), x, tg, tg64, ignore_index, lo, ls, N, Cn, p.group, fl);
    };
    if (Cn % VW == 0 && aligned_to(x, 16))
      go.template operator()<VW>();
    else
      go.template operator()<1>();
  });
  unsigned long long host[2] = {0, 0};
  ::hmoe::cuda::memcpy_async(host, fl, sizeof host, ::hmoe::cuda::CopyKind::device_to_host, stream);
  stream.synchronize();
  if (host[0] != ~0ull) {
    const int64_t row = int64_t(host[0]);
    int64_t t64 = 0;
    int32_t t32 = 0;
    if (tg64)
      ::hmoe::cuda::memcpy_async(&t64, static_cast<const int64_t*>(tg) + row, sizeof t64,
                                 ::hmoe::cuda::CopyKind::device_to_host, stream);
    else
      ::hmoe::cuda::memcpy_async(&t32, static_cast<const int32_t*>(tg) + row, sizeof t32,
                                 ::hmoe::cuda::CopyKind::device_to_host, stream);
    stream.synchronize();
    HMOE_FAIL("cross_entropy: target ", tg64 ? t64 : int64_t(t32), " at row ", row, " is out of range [0, ", Cn,
              ") for logits ", logits.meta_str(), " (ignore_index is ", ignore_index, ")");
  }
  return int64_t(host[1]);
}

void cross_entropy_backward_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& lse,
                                 const Tensor& g, double scale, const Tensor& gx) {
  const int64_t N = logits.size(0), Cn = logits.size(1);
  if (N == 0 || Cn == 0) return;
  const auto stream = hmoe::cuda::current_stream(logits.device().index).native();
  const void* tg = targets.data_ptr<void>();
  const bool tg64 = targets.dtype() == DType::i64;
  const bool per_row = g.numel() == N && N != 1;
  dispatch_device_float(logits.dtype(), "cross_entropy_backward", [&]<typename T>() {
    using C = device_compute_t<T>;
    const T* x = static_cast<const T*>(logits.data_ptr<void>());
    const C* l = static_cast<const C*>(lse.data_ptr<void>());
    const C* gg = static_cast<const C*>(g.data_ptr<void>());
    T* out = static_cast<T*>(gx.data_ptr<void>());
    constexpr int VW = kVec16<T>;
    auto go = [&]<int V>() {
      const RowPlan p = plan_rows("softmax", N, Cn, V, 32, true);
      hmoe::cuda::launch_checked("cross_entropy_backward_kernel", &cross_entropy_backward_kernel<T, V>, dim3(p.grid),
                                 dim3(p.block), 0, stream, x, tg, tg64, ignore_index, l, gg, per_row, scale, out, N, Cn,
                                 p.group);
    };
    if (Cn % VW == 0 && aligned_to(x, 16) && aligned_to(out, 16))
      go.template operator()<VW>();
    else
      go.template operator()<1>();
  });
}

}  // namespace

void register_softmax_cuda() {
  softmax_stub.set(DeviceType::cuda, &softmax_cuda);
  softmax_backward_stub.set(DeviceType::cuda, &softmax_backward_cuda);
  cross_entropy_stub.set(DeviceType::cuda, &cross_entropy_cuda);
  cross_entropy_backward_stub.set(DeviceType::cuda, &cross_entropy_backward_cuda);
}

}  // namespace hmoe::ops::cuda
