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
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/dispatch.h"
#include "ops/nn_kernels.h"

namespace hmoe {
HMOE_DECLARE_STUB(NormKernel, norm_stub);
HMOE_DECLARE_STUB(NormBackwardKernel, norm_backward_stub);
}  // namespace hmoe

namespace hmoe::ops::cuda {
namespace {

// ---- device helpers (the same small set as ops/cuda/softmax.cu) ------------------------

// Arithmetic (and statistics) type of an element type: f32 for 16-bit floats, f64 for f64.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else
    return v;
}
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(v);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return v;
}
__device__ __forceinline__ float dsqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dsqrt(double x) { return sqrt(x); }

// V consecutive elements moved as one 16-byte (or narrower) access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};
template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}
// A pack of acc values (weights, biases), 0 where the tensor is absent.
template <typename T, int V>
__device__ __forceinline__ void load_acc(const T* p, int64_t e, acc_t<T> (&out)[V]) {
  if (p == nullptr) {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = acc_t<T>(0);
    return;
  }
  const Pack<T, V> q = load_pack<T, V>(p + e);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = to_acc(q.v[k]);
}

// Two sums reduced together (one shuffle tree).
template <typename C>
struct Sum2 {
  C a, b;
};
template <typename C>
__device__ __forceinline__ C shfl_xor(C v, int o, int width) {
  return __shfl_xor_sync(0xffffffffu, v, o, width);
}
template <typename C>
__device__ __forceinline__ Sum2<C> shfl_xor(const Sum2<C>& v, int o, int width) {
  return {__shfl_xor_sync(0xffffffffu, v.a, o, width), __shfl_xor_sync(0xffffffffu, v.b, o, width)};
}
struct SumOp {
  template <typename C>
  __device__ __forceinline__ C operator()(C a, C b) const {
    return a + b;
  }
  template <typename C>
  __device__ __forceinline__ Sum2<C> operator()(const Sum2<C>& a, const Sum2<C>& b) const {
    return {a.a + b.a, a.b + b.b};
  }
};

// Reduces v over a row's group of `group` lanes (a power of two: up to 32 lanes of one
// warp, or the whole block when group == blockDim.x). Every thread must call it; every
// lane gets the same bits (the butterfly's adds are commutative, the warps' partials
// are added in a fixed order).
template <typename R, typename Op>
__device__ R group_reduce(R v, int group, Op op, R identity) {
  const int width = group < 32 ? group : 32;
  for (int o = 1; o < width; o <<= 1) v = op(v, shfl_xor(v, o, width));
  if (group <= 32) return v;
  HMOE_SHARED(R, partial, [32]);
  const int lane = int(threadIdx.x) & 31, nwarps = int(blockDim.x) >> 5;
  __syncthreads();  // an earlier call's readers are done with `partial`
  if (lane == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  // Every warp combines the warps' partials with the same butterfly (short dependency
  // chain, no extra barrier); the identity pads lanes past the last warp.
  v = lane < nwarps ? partial[lane] : identity;
  for (int o = 1; o < 32; o <<= 1) v = op(v, shfl_xor(v, o, 32));
  return v;
}

struct RowLane {
  int64_t row;
  int lane;
};
__device__ __forceinline__ RowLane row_lane(int group) {
  return {int64_t(blockIdx.x) * (int64_t(blockDim.x) / group) + int64_t(threadIdx.x) / group,
          int(threadIdx.x) & (group - 1)};
}

// Largest block of the row kernels (up to 128 registers per thread, no spills).
constexpr int kMaxBlock = 512;

// ---- forward -------------------------------------------------------------------------

// y = (x - mean) * rstd * w + b (layer) or x * rstd * w (rms) for each row of x [rows, D];
// writes mean (layer only) and rstd. Launch: RowPlan. kIters > 0: the row slice stays in
// registers (one read of x); kIters == 0: it is re-read for each pass.
template <typename T, int V, int kIters>
__global__ void __launch_bounds__(kMaxBlock, 1)
    norm_rows_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                     acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ rstd, int64_t rows, int64_t D, int group,
                     acc_t<T> eps, bool rms) {
  using C = acc_t<T>;
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
          v[it][k] = to_acc(p.v[k]);
          s += rms ? v[it][k] * v[it][k] : v[it][k];
        }
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) v[it][k] = C(0);
      }
    }
    s = group_reduce(s, group, SumOp{}, C(0)) * inv_d;
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
      s = group_reduce(q, group, SumOp{}, C(0)) * inv_d;
    }
    rs = C(1) / dsqrt(s + eps);
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
          p.v[k] = from_acc<T>(rms ? v[it][k] * rs * wv[k] : (v[it][k] - mu) * rs * wv[k] + bv[k]);
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
        for (int k = 0; k < V; ++k) s += rms ? to_acc(p.v[k]) * to_acc(p.v[k]) : to_acc(p.v[k]);
      }
    s = group_reduce(s, group, SumOp{}, C(0)) * inv_d;
    if (!rms) {
      mu = s;
      C q = C(0);
      if (live)
        for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
          const Pack<T, V> p = load_pack<T, V>(xr + e);
#pragma unroll
          for (int k = 0; k < V; ++k) q += (to_acc(p.v[k]) - mu) * (to_acc(p.v[k]) - mu);
        }
      s = group_reduce(q, group, SumOp{}, C(0)) * inv_d;
    }
    rs = C(1) / dsqrt(s + eps);
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> p = load_pack<T, V>(xr + e);
        C wv[V], bv[V];
        load_acc<T, V>(w, e, wv);
        load_acc<T, V>(bias, e, bv);
        Pack<T, V> q;
#pragma unroll
        for (int k = 0; k < V; ++k) {
          const C xv = to_acc(p.v[k]);
          q.v[k] = from_acc<T>(rms ? xv * rs * wv[k] : (xv - mu) * rs * wv[k] + bv[k]);
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
__global__ void __launch_bounds__(kMaxBlock, 1)
    norm_backward_rows_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                              const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd, T* __restrict__ dx,
                              int64_t rows, int64_t D, int group, bool rms, int64_t rows_per_chunk,
                              acc_t<T>* __restrict__ pw, acc_t<T>* __restrict__ pb) {
  using C = acc_t<T>;
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
            xh[it][k] = (to_acc(px.v[k]) - mu) * rs;
            gv[it][k] = to_acc(pg.v[k]);
            aw[it][k] += gv[it][k] * xh[it][k];
            ab[it][k] += gv[it][k];
            const C gw = gv[it][k] * wv[k];
            s.a += gw;
            s.b += gw * xh[it][k];
          }
        }
      }
      if (dx == nullptr) continue;
      s = group_reduce(s, group, SumOp{}, Sum2<C>{C(0), C(0)});
      const C a = rms ? C(0) : s.a * inv_d, bq = s.b * inv_d;
#pragma unroll
      for (int it = 0; it < kIters; ++it) {
        const int64_t e = (int64_t(it) * group + rl.lane) * V;
        if (live && e < D) {
          C wv[V];
          load_acc<T, V>(w, e, wv);
          Pack<T, V> p;
#pragma unroll
          for (int k = 0; k < V; ++k) p.v[k] = from_acc<T>(rs * (gv[it][k] * wv[k] - a - xh[it][k] * bq));
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
          const C gw = to_acc(pg.v[k]) * wv[k];
          s.a += gw;
          s.b += gw * ((to_acc(px.v[k]) - mu) * rs);
        }
      }
    s = group_reduce(s, group, SumOp{}, Sum2<C>{C(0), C(0)});
    const C a = rms ? C(0) : s.a * inv_d, bq = s.b * inv_d;
    if (live)
      for (int64_t e = int64_t(rl.lane) * V; e < D; e += step) {
        const Pack<T, V> px = load_pack<T, V>(x + off + e), pg = load_pack<T, V>(g + off + e);
        C wv[V];
        load_acc<T, V>(w, e, wv);
        Pack<T, V> p;
#pragma unroll
        for (int k = 0; k < V; ++k)
          p.v[k] = from_acc<T>(rs * (to_acc(pg.v[k]) * wv[k] - a - (to_acc(px.v[k]) - mu) * rs * bq));
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
    norm_partials_kernel(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ mean,
                         const acc_t<T>* __restrict__ rstd, int64_t rows, int64_t D, int64_t rows_per_chunk, bool rms,
                         acc_t<T>* __restrict__ pw, acc_t<T>* __restrict__ pb) {
  using C = acc_t<T>;
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
        for (int k = 0; k < V; ++k) aw[k] += to_acc(pg.v[k]) * ((to_acc(px.v[k]) - mu) * rs);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) ab[k] += to_acc(pg.v[k]);
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
    norm_finish_kernel(const acc_t<T>* __restrict__ pw, const acc_t<T>* __restrict__ pb, int64_t chunks, int64_t D,
                       T* __restrict__ dw, T* __restrict__ db) {
  using C = acc_t<T>;
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
    if (dw != nullptr) dw[j] = from_acc<T>(C(aw));
    if (db != nullptr) db[j] = from_acc<T>(C(ab));
  }
}

// ---- host side -----------------------------------------------------------------------

template <typename... P, typename... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, int device, A&&... args) {
  auto stream = static_cast<::hmoe::device::Stream>(::hmoe::cuda::current_stream(device).native());
  ::hmoe::device::launch_kernel(name, kernel, grid, block, 0, stream, std::forward<A>(args)...);
  ::hmoe::cuda::check_launch(name, grid.x, grid.y, grid.z, block.x, block.y, block.z, 0);
}

template <typename Fn>
void dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::f32:
      fn.template operator()<float>();
      return;
    case DType::f64:
      fn.template operator()<double>();
      return;
    case DType::bf16:
      fn.template operator()<__nv_bfloat16>();
      return;
    case DType::f16:
      fn.template operator()<__half>();
      return;
    default:
      detail::unsupported_dtype(op, t);
  }
}

int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// Rows of D elements (packs of V) to threads, as in ops/cuda/softmax.cu: short rows to
// groups of up to 32 lanes (128-thread blocks), long rows to one block of 64..kMaxBlock
// threads; iters = packs per lane in registers (<= max_iters), 0 = stream the row.
struct RowPlan {
  int group = 1, block = 128, iters = 0;
  unsigned grid = 1;
};
RowPlan plan_rows(int64_t rows, int64_t n, int V, int max_iters) {
  RowPlan p;
  const int64_t units = (n + V - 1) / V;
  if (units <= 32 || (n <= 1024 && units <= 32 * int64_t(max_iters))) {
    p.group = int(units <= 32 ? pow2_ceil(units) : 32);
    p.iters = int(pow2_ceil((units + p.group - 1) / p.group));
    const int64_t per_block = p.block / p.group;
    const int64_t grid = (rows + per_block - 1) / per_block;
    HMOE_CHECK(grid <= 0x7fffffff, "norm: too many rows (", rows, ")");
    p.grid = unsigned(grid);
    return p;
  }
  // About four packs per lane (several loads in flight each, few warps to combine).
  const int64_t per_lane = std::min<int64_t>(4, std::max(1, max_iters));
  p.group = p.block =
      int(std::min<int64_t>(kMaxBlock, std::max<int64_t>(64, pow2_ceil((units + per_lane - 1) / per_lane))));
  const int64_t iters = pow2_ceil((units + p.block - 1) / p.block);
  p.iters = iters > max_iters ? 0 : int(iters);
  HMOE_CHECK(rows <= 0x7fffffff, "norm: too many rows (", rows, ")");
  p.grid = unsigned(rows);
  return p;
}

template <int Max, int I = 1, typename F>
void with_iters(int iters, F&& f) {
  if (iters == 0) {
    f(std::integral_constant<int, 0>{});
  } else if constexpr (I <= Max) {
    if (iters == I)
      f(std::integral_constant<int, I>{});
    else
      with_iters<Max, I * 2>(iters, std::forward<F>(f));
  } else {
    HMOE_FAIL("norm: no kernel for ", iters, " packs per lane");
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T, int V, int Arrays>
constexpr int max_iters() {
  return int(128 / Arrays / sizeof(acc_t<T>)) / V;
}

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr<void>()) : nullptr;
}
template <typename T>
T* mut_ptr_or_null(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr<void>()) : nullptr;
}

void norm_forward_cuda(const Tensor& xt, const Tensor& wt, const Tensor& bt, double eps, bool rms, const Tensor& yt,
                       const Tensor& mean_t, const Tensor& rstd_t) {
  const int64_t M = xt.size(0), D = xt.size(1);
  if (M == 0 || D == 0) return;
  const int dev = xt.device().index;
  dispatch_float(xt.dtype(), rms ? "rms_norm" : "layer_norm", [&]<typename T>() {
    using C = acc_t<T>;
    const T* x = ptr_or_null<T>(xt);
    const T* w = ptr_or_null<T>(wt);
    const T* b = rms ? nullptr : ptr_or_null<T>(bt);
    T* y = mut_ptr_or_null<T>(yt);
    C* mean = rms ? nullptr : mut_ptr_or_null<C>(mean_t);
    C* rstd = mut_ptr_or_null<C>(rstd_t);
    constexpr int VW = int(16 / sizeof(T));
    auto go = [&]<int V>() {
      const RowPlan p = plan_rows(M, D, V, max_iters<T, V, 1>());
      with_iters<max_iters<T, V, 1>()>(p.iters, [&](auto ic) {
        launch("norm_rows_kernel", &norm_rows_kernel<T, V, decltype(ic)::value>, dim3(p.grid), dim3(p.block), dev, x, w,
               b, y, mean, rstd, M, D, p.group, C(eps), rms);
      });
    };
    if (D % VW == 0 && aligned16(x) && aligned16(w) && (b == nullptr || aligned16(b)) && aligned16(y))
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
  const int dev = xt.device().index;
  dispatch_float(xt.dtype(), rms ? "rms_norm_backward" : "layer_norm_backward", [&]<typename T>() {
    using C = acc_t<T>;
    const T* g = ptr_or_null<T>(gt);
    const T* x = ptr_or_null<T>(xt);
    const T* w = ptr_or_null<T>(wt);
    const C* mean = rms ? nullptr : ptr_or_null<C>(mean_t);
    const C* rstd = ptr_or_null<C>(rstd_t);
    T* dx = mut_ptr_or_null<T>(dxt);
    T* dw = mut_ptr_or_null<T>(dwt);
    T* db = mut_ptr_or_null<T>(dbt);
    const bool want_wb = dw != nullptr || db != nullptr;
    const TensorOptions po{std::is_same_v<C, double> ? DType::f64 : DType::f32, xt.device()};
    constexpr int VW = int(16 / sizeof(T));
    const bool vec = D % VW == 0 && aligned16(g) && aligned16(x) && aligned16(w) && (dx == nullptr || aligned16(dx));
    Tensor pw_t, pb_t;  // per-chunk partial sums [chunks, D], alive until the finish kernel ran
    int64_t chunks = 0;
    auto go = [&]<int V>() {
      constexpr int kMax = max_iters<T, V, 2>();
      const int iters = plan_rows(M, D, V, kMax).iters;
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
        pw = mut_ptr_or_null<C>(pw_t);
        pb = mut_ptr_or_null<C>(pb_t);
      }
      if (iters > 0 || dx != nullptr) {
        const RowPlan p = plan_rows(groups, D, V, kMax);
        with_iters<kMax>(p.iters, [&](auto ic) {
          launch("norm_backward_rows_kernel", &norm_backward_rows_kernel<T, V, decltype(ic)::value>, dim3(p.grid),
                 dim3(p.block), dev, g, x, w, mean, rstd, dx, M, D, p.group, rms, rpc, pw, pb);
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
        launch("norm_partials_kernel", &norm_partials_kernel<T, V>, dim3(unsigned(col_blocks), unsigned(chunks)),
               dim3(kColX, kRowY), dev, g, x, mean, rstd, M, D, prpc, rms, mut_ptr_or_null<C>(pw_t),
               mut_ptr_or_null<C>(pb_t));
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
    launch("norm_finish_kernel", &norm_finish_kernel<T>, dim3(grid), dim3(kColX, kRowY), dev,
           static_cast<const C*>(mut_ptr_or_null<C>(pw_t)), static_cast<const C*>(mut_ptr_or_null<C>(pb_t)), chunks, D,
           dw, db);
  });
}

}  // namespace

void register_norm_cuda() {
  norm_stub.set(DeviceType::cuda, &norm_forward_cuda);
  norm_backward_stub.set(DeviceType::cuda, &norm_backward_cuda);
}

}  // namespace hmoe::ops::cuda
