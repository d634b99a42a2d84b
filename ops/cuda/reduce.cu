// The reduce kernel family on the cuda device (contract: ops/reduce.h; reference:
// ops/cpu/reduce.cpp): sum, max, min, argmax, argmin (i64, first index of ties; NaN
// wins) and logsumexp of a contiguous [outer, red, inner] input into [outer, inner].
// Kernel shape by layout: inner == 1 reduces contiguous rows (a warp per short row, a
// block per long row, 16-byte vector loads); inner > 1 puts threads over the inner
// columns (coalesced) and splits the reduced dim over a block's thread rows. A few long
// reductions are also split over blocks (partials, then a second kernel). Every split
// depends on the shape only, and every combination runs in a fixed tree, so a result is
// the same bits on every run. Accumulation: f32 for f32 and the half types, f64 for f64,
// i64 for integers.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/cuda/unary_fn.cuh"
#include "ops/dispatch.h"
#include "ops/reduce.h"
#include "ops/reduce_kernels.h"

namespace hmoe::ops::cuda {
namespace {

// ---- reducers: an accumulator, how an element enters it, how two combine ------------------
// combine(a, b) is associative; it is always applied in a fixed tree (see kernel_utils.cuh),
// so results do not depend on scheduling. Accumulators are trivial (shared memory, shuffles).

template <typename T>
using sum_acc_t = std::conditional_t<std::is_integral_v<device_compute_t<T>>, int64_t,
                                     std::conditional_t<std::is_same_v<T, double>, double, float>>;

template <typename T>
struct SumReducer {
  using In = T;
  using Out = T;
  using Acc = sum_acc_t<T>;
  __device__ __forceinline__ static Acc identity() { return Acc(0); }
  __device__ __forceinline__ static void add(Acc& a, T x, int64_t) { a += Acc(to_compute<T>(x)); }
  __device__ __forceinline__ static Acc combine(Acc a, Acc b) { return a + b; }
  __device__ __forceinline__ static Out finish(Acc a) { return from_compute<T>(device_compute_t<T>(a)); }
};

// max / min (IsMax), writing the value or (Index) its position along the reduced dim.
template <typename C>
struct ValueIndex {
  C v;
  int64_t i;  // -1: empty
};

template <typename T, bool IsMax, bool Index>
struct ExtremeReducer {
  using C = device_compute_t<T>;
  using In = T;
  using Out = std::conditional_t<Index, int64_t, T>;
  using Acc = ValueIndex<C>;
  __device__ __forceinline__ static Acc identity() { return {C(0), -1}; }
  // b replaces a when a is empty, b is a NaN and a is not, b is strictly better, or they
  // are equal (or both NaN) and b comes first: the CPU's answer whatever the order.
  __device__ __forceinline__ static bool wins(const Acc& b, const Acc& a) {
    if (b.i < 0) return false;
    if (a.i < 0) return true;
    const bool an = is_nan(a.v), bn = is_nan(b.v);
    if (an || bn) return bn && (!an || b.i < a.i);
    if (IsMax ? b.v > a.v : b.v < a.v) return true;
    return b.v == a.v && b.i < a.i;
  }
  __device__ __forceinline__ static void add(Acc& a, T x, int64_t i) {
    const Acc b{to_compute<T>(x), i};
    if (wins(b, a)) a = b;
  }
  __device__ __forceinline__ static Acc combine(Acc a, Acc b) { return wins(b, a) ? b : a; }
  __device__ __forceinline__ static Out finish(Acc a) {
    if constexpr (Index)
      return a.i;
    else
      return from_compute<T>(a.v);
  }
};

// logsumexp as a running (max m, sum s of exp(x - m)); NaN propagates, -inf adds nothing,
// and a non-finite maximum is the answer itself, as on the CPU.
template <typename C>
struct MaxSum {
  C m, s;
};

template <typename T>
struct LseReducer {
  using C = device_compute_t<T>;
  using In = T;
  using Out = T;
  using Acc = MaxSum<C>;
  __device__ __forceinline__ static Acc identity() { return {-C(INFINITY), C(0)}; }
  __device__ __forceinline__ static void add(Acc& a, T xs, int64_t) {
    const C x = to_compute<T>(xs);
    if (x > a.m || x != x) {
      a.s = a.s * d_exp(a.m - x) + C(1);  // exp(-inf) = 0 for the first element
      a.m = x;
    } else if (a.m != -C(INFINITY)) {
      a.s += d_exp(x - a.m);
    }
  }
  __device__ __forceinline__ static Acc combine(Acc a, Acc b) {
    const C m = a.m != a.m ? a.m : (b.m != b.m ? b.m : (a.m > b.m ? a.m : b.m));
    const C ta = a.s == C(0) ? C(0) : a.s * d_exp(a.m - m);
    const C tb = b.s == C(0) ? C(0) : b.s * d_exp(b.m - m);
    return {m, ta + tb};
  }
  __device__ __forceinline__ static Out finish(Acc a) {
    const bool finite = a.m - a.m == C(0);
    return from_compute<T>(finite ? a.m + d_log(a.s) : a.m);
  }
};

// ---- kernels ----------------------------------------------------------------------------------

constexpr int kThreads = 256;    // every reduce kernel's block size
constexpr int kColSlices = 8;    // inner > 1, long reductions: thread rows splitting the reduced dim
constexpr int kMaxSplit = 1024;  // most blocks one reduction is split over

// Adds this thread's share of row[0, red): the V-packs v0 + t, v0 + t + nt, ... below v1
// (loaded as one access when the row is aligned, element by element otherwise; which
// thread adds which element is the same either way, so the result does not depend on
// alignment), and with `tail` the last red % V elements, round-robin.
template <typename R, int V>
__device__ __forceinline__ Pack<typename R::In, V> row_pack(const typename R::In* row, int64_t e, bool vec) {
  if (vec) return load_pack<typename R::In, V>(row + e);
  Pack<typename R::In, V> p;
#pragma unroll
  for (int j = 0; j < V; ++j) p.v[j] = row[e + j];
  return p;
}

template <typename R, int V>
__device__ __forceinline__ void add_pack(typename R::Acc& acc, const Pack<typename R::In, V>& p, int64_t e) {
#pragma unroll
  for (int j = 0; j < V; ++j) R::add(acc, p.v[j], e + j);
}

template <typename R, int V>
__device__ __forceinline__ void accumulate_row(typename R::Acc& acc, const typename R::In* row, int64_t red, int64_t v0,
                                               int64_t v1, bool tail, int t, int nt) {
  const bool vec = aligned_to(row, V * sizeof(typename R::In));
  int64_t v = v0 + t;
  for (; v + nt < v1; v += 2 * nt) {  // two packs in flight, added in the same order
    const auto p0 = row_pack<R, V>(row, v * V, vec), p1 = row_pack<R, V>(row, (v + nt) * V, vec);
    add_pack<R, V>(acc, p0, v * V);
    add_pack<R, V>(acc, p1, (v + nt) * V);
  }
  if (v < v1) add_pack<R, V>(acc, row_pack<R, V>(row, v * V, vec), v * V);
  if (tail)
    for (int64_t e = red / V * V + t; e < red; e += nt) R::add(acc, row[e], e);
}

// (hmoe::min, the reduction op, hides CUDA's global min overloads here.)
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename R>
struct CombineOp {
  __device__ __forceinline__ typename R::Acc operator()(const typename R::Acc& a, const typename R::Acc& b) const {
    return R::combine(a, b);
  }
};

// inner == 1, short rows (red <= 1024): `group` lanes per row (a power of two <= 32,
// up to about four V-packs per lane; 1 = a thread per row), 256 / group rows per block, rows
// grid-stride in warp-uniform steps so every lane reaches the shuffles. Lanes take
// V-packs round-robin, then a tree over the group.
template <typename R, int V>
__global__ void reduce_rows_group_kernel(const typename R::In* __restrict__ x, typename R::Out* __restrict__ out,
                                         int64_t outer, int64_t red, int group) {
  const int lane = int(threadIdx.x) & (group - 1);
  const int64_t per_block = int64_t(blockDim.x) / group;
  const int64_t nv = red / V;
  for (int64_t o0 = int64_t(blockIdx.x) * per_block; o0 < outer; o0 += int64_t(gridDim.x) * per_block) {
    const int64_t o = o0 + int64_t(threadIdx.x) / group;  // lanes past the last row still shuffle
    typename R::Acc acc = R::identity();
    if (o < outer) accumulate_row<R, V>(acc, x + o * red, red, 0, nv, true, lane, group);
    if (group > 1) acc = warp_reduce_down(acc, CombineOp<R>{}, group);
    if (lane == 0 && o < outer) out[o] = R::finish(acc);
  }
}

// inner == 1, long rows: block (blockIdx.x, grid-stride) reduces chunk blockIdx.y of
// row o (packs [y * chunk, (y + 1) * chunk); the last chunk also takes the tail), then a
// block tree. One chunk: the result goes to out[o]; several: the chunk's accumulator to
// partial[y * outer + o] for reduce_partials_kernel.
template <typename R, int V>
__global__ void reduce_rows_block_kernel(const typename R::In* __restrict__ x, typename R::Out* __restrict__ out,
                                         typename R::Acc* __restrict__ partial, int64_t outer, int64_t red,
                                         int64_t chunk) {
  const int64_t nv = red / V;
  const int64_t v0 = int64_t(blockIdx.y) * chunk, v1 = min64(nv, v0 + chunk);
  const bool last = blockIdx.y + 1 == gridDim.y;
  for (int64_t o = blockIdx.x; o < outer; o += gridDim.x) {
    typename R::Acc acc = R::identity();
    accumulate_row<R, V>(acc, x + o * red, red, v0, v1, last, int(threadIdx.x), int(blockDim.x));
    acc = block_reduce_to_first(acc, CombineOp<R>{}, R::identity());
    if (threadIdx.x == 0) {
      if (gridDim.y == 1)
        out[o] = R::finish(acc);
      else
        partial[int64_t(blockIdx.y) * outer + o] = acc;
    }
  }
}

// inner > 1: block (W, S) with W * S = 256; column q = (o, i) of the flattened
// [outer, inner] output is thread x of tile blockIdx.x (W columns; tiles grid-stride):
// a warp reads adjacent columns of one row, coalesced. Thread row s adds rows r0 + s,
// r0 + s + S, ... of chunk blockIdx.y (rows [r0, r1)) in order; with S > 1 the slices are
// then combined in order 0..S-1 through shared memory. The result goes to out[q] (one
// chunk) or partial[y * cols + q].
template <typename R>
__global__ void reduce_cols_kernel(const typename R::In* __restrict__ x, typename R::Out* __restrict__ out,
                                   typename R::Acc* __restrict__ partial, int64_t outer, int64_t red, int64_t inner,
                                   int64_t chunk) {
  using Acc = typename R::Acc;
  HMOE_SHARED(Acc, staged, [kThreads]);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y), w = int(blockDim.x), slices = int(blockDim.y);
  const int64_t cols = outer * inner;
  const int64_t r0 = int64_t(blockIdx.y) * chunk, r1 = min64(red, r0 + chunk);
  for (int64_t q0 = int64_t(blockIdx.x) * w; q0 < cols; q0 += int64_t(gridDim.x) * w) {
    const int64_t q = q0 + tx;
    Acc acc = R::identity();
    if (q < cols) {
      const int64_t o = q / inner, i = q - o * inner;
      const typename R::In* p = x + o * red * inner + i;
      int64_t r = r0 + ty;
      for (; r + 3 * slices < r1; r += 4 * slices) {  // four loads in flight, added in order
        const typename R::In a0 = p[r * inner], a1 = p[(r + slices) * inner], a2 = p[(r + 2 * slices) * inner],
                             a3 = p[(r + 3 * slices) * inner];
        R::add(acc, a0, r);
        R::add(acc, a1, r + slices);
        R::add(acc, a2, r + 2 * slices);
        R::add(acc, a3, r + 3 * slices);
      }
      for (; r < r1; r += slices) R::add(acc, p[r * inner], r);
    }
    if (slices > 1) {
      staged[ty * w + tx] = acc;
      __syncthreads();
      if (ty == 0)
        for (int s = 1; s < slices; ++s) acc = R::combine(acc, staged[s * w + tx]);
      __syncthreads();  // staged is reused by the next tile
    }
    if (ty == 0 && q < cols) {
      if (gridDim.y == 1)
        out[q] = R::finish(acc);
      else
        partial[int64_t(blockIdx.y) * cols + q] = acc;
    }
  }
}

// out[q] = finish of the `splits` chunk accumulators partial[s][q]: a warp per output
// (8 per block, grid-stride); lane l combines chunks l, l + 32, ... in order, then a
// warp tree: a fixed order.
template <typename R>
__global__ void reduce_partials_kernel(const typename R::Acc* __restrict__ partial, typename R::Out* __restrict__ out,
                                       int64_t cols, int splits) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t warps = int64_t(blockDim.x) >> 5;
  for (int64_t q = int64_t(blockIdx.x) * warps + (threadIdx.x >> 5); q < cols; q += int64_t(gridDim.x) * warps) {
    typename R::Acc acc = R::identity();
    for (int s = lane; s < splits; s += 32) acc = R::combine(acc, partial[int64_t(s) * cols + q]);
    acc = warp_reduce_down(acc, CombineOp<R>{});
    if (lane == 0) out[q] = R::finish(acc);
  }
}

// ---- host side --------------------------------------------------------------------------------

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid x for `items` work items of `per_block` each: a few waves, at most 65535.
unsigned grid_blocks(int64_t items, int64_t per_block, int device) {
  const int64_t cap = std::min<int64_t>(int64_t(hmoe::cuda::properties(device).multiprocessors) * 8, 65535);
  return unsigned(std::clamp<int64_t>(ceil_div(items, per_block), 1, cap));
}

// How many blocks to split each of `items` reductions of length `len` over: enough to
// give the device about kTargetBlocks blocks, with at least `min_len` elements per
// chunk. A function of the shape only (never of the device), so results are the same on
// every GPU.
int split_count(int64_t items, int64_t len, int64_t min_len) {
  constexpr int64_t kTargetBlocks = 1024;  // about 8 resident 256-thread blocks on each of 132 SMs
  if (items >= kTargetBlocks || len < 2 * min_len) return 1;
  const int64_t by_len = len / min_len;
  const int64_t by_items = ceil_div(kTargetBlocks, items);
  return int(std::clamp<int64_t>(std::min(by_len, by_items), 1, kMaxSplit));
}

// Scratch for split accumulators (RAII through a tensor; 8-byte aligned words).
template <typename Acc>
Tensor partials_buffer(int64_t count, Device d) {
  const int64_t words = ceil_div(std::max<int64_t>(count, 1) * int64_t(sizeof(Acc)), 8);
  return Tensor::empty({words}, {DType::i64, d});
}

template <typename R>
void launch_partials(const Tensor& buf, typename R::Out* out, int64_t cols, int splits, int device) {
  auto k = &reduce_partials_kernel<R>;
  HMOE_LAUNCH_CHECKED(k, grid_blocks(cols, kThreads / 32, device), kThreads, 0,
                      hmoe::cuda::current_stream(device).native(),
                      static_cast<const typename R::Acc*>(buf.data_ptr<void>()), out, cols, splits);
}

template <typename R>
void run_reduce(const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  using T = typename R::In;
  using Acc = typename R::Acc;
  constexpr int V = kVec16<T>;
  const int device = out.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const T* x = static_cast<const T*>(in.data_ptr<void>());
  auto* y = static_cast<typename R::Out*>(out.data_ptr<void>());
  if (inner == 1) {
    if (red <= 1024) {
      int group = 1;  // a few packs per lane (fewer shuffles per row), at most a warp
      while (group < 32 && int64_t(group) * V * 4 < red) group *= 2;
      auto k = &reduce_rows_group_kernel<R, V>;
      HMOE_LAUNCH_CHECKED(k, grid_blocks(outer, kThreads / group, device), kThreads, 0, stream.native(), x, y, outer,
                          red, group);
      return;
    }
    const int64_t nv = red / V;
    const int splits = split_count(outer, red, 16384);
    const int64_t chunk = ceil_div(nv, splits);
    const Tensor buf = splits > 1 ? partials_buffer<Acc>(int64_t(splits) * outer, out.device()) : Tensor();
    Acc* part = splits > 1 ? static_cast<Acc*>(buf.data_ptr<void>()) : nullptr;
    auto k = &reduce_rows_block_kernel<R, V>;
    HMOE_LAUNCH_CHECKED(k, dim3(grid_blocks(outer, 1, device), unsigned(splits)), kThreads, 0, stream.native(), x, y,
                        part, outer, red, chunk);
    if (splits > 1) launch_partials<R>(buf, y, outer, splits, device);
    return;
  }
  // Short reductions, or enough columns to fill the device: a thread per column.
  // Otherwise kColSlices thread rows per column, and maybe chunks over blocks.
  const int64_t cols = outer * inner;
  const int slices = red >= 64 && cols < 32768 ? kColSlices : 1;
  const int w = kThreads / slices;
  const int splits = slices > 1 ? split_count(ceil_div(cols, w), red, 128) : 1;
  const int64_t chunk = ceil_div(red, splits);
  const Tensor buf = splits > 1 ? partials_buffer<Acc>(int64_t(splits) * cols, out.device()) : Tensor();
  Acc* part = splits > 1 ? static_cast<Acc*>(buf.data_ptr<void>()) : nullptr;
  auto k = &reduce_cols_kernel<R>;
  HMOE_LAUNCH_CHECKED(k, dim3(grid_blocks(cols, w, device), unsigned(splits)), dim3(unsigned(w), unsigned(slices)), 0,
                      stream.native(), x, y, part, outer, red, inner, chunk);
  if (splits > 1) launch_partials<R>(buf, y, cols, splits, device);
}

void reduce_cuda(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  HMOE_CHECK(in.is_contiguous() && out.is_contiguous(), "reduce: input and output must be contiguous, got ",
             in.meta_str(), " and ", out.meta_str());
  dispatch_device_numeric(in.dtype(), "reduce", [&]<typename T>() {
    const bool index_out = op == ReduceOp::argmax || op == ReduceOp::argmin;
    HMOE_CHECK(out.dtype() == (index_out ? DType::i64 : in.dtype()), "reduce: output dtype ", dtype_name(out.dtype()),
               " does not fit the op on ", in.meta_str());
    // The CPU's checks, in its order.
    if (outer * inner == 0) return;
    if (op != ReduceOp::sum && op != ReduceOp::logsumexp)
      HMOE_CHECK(red > 0, "max/min: cannot reduce over an empty dimension");
    switch (op) {
      case ReduceOp::sum:
        return run_reduce<SumReducer<T>>(in, out, outer, red, inner);
      case ReduceOp::max:
        return run_reduce<ExtremeReducer<T, true, false>>(in, out, outer, red, inner);
      case ReduceOp::min:
        return run_reduce<ExtremeReducer<T, false, false>>(in, out, outer, red, inner);
      case ReduceOp::argmax:
        return run_reduce<ExtremeReducer<T, true, true>>(in, out, outer, red, inner);
      case ReduceOp::argmin:
        return run_reduce<ExtremeReducer<T, false, true>>(in, out, outer, red, inner);
      case ReduceOp::logsumexp:
        if constexpr (std::is_floating_point_v<device_compute_t<T>>)
          return run_reduce<LseReducer<T>>(in, out, outer, red, inner);
        else
          hmoe::detail::unsupported_dtype("logsumexp", in.dtype());
    }
  });
}

}  // namespace

void register_reduce_cuda() { reduce_stub.set(DeviceType::cuda, &reduce_cuda); }

}  // namespace hmoe::ops::cuda
