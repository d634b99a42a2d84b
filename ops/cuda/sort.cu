// The sort kernel family on the cuda device (contract: ops/index_kernels.h, reference:
// ops/cpu/sort.cpp): topk/sort on packed (order key, index) integers, so ties go to the
// lower index and NaN sorts as the largest value; cumsum (a fixed-order block scan per
// row, or one thread per column running sequentially); bincount (integer atomics for
// counts, which are exact; weighted sums by a device sort of (bin, position) then one
// thread per bin summing in increasing position in f64, as the CPU).
//
// Sort paths: a line of up to kMaxTile packs (4096 for 32-bit keys, 2048 for f64/i64)
// is sorted by one block (or a slice of one, several lines a block) with a bitonic
// network in shared memory, and its first k written out directly. Longer lines take
// the slower general path: packs written to global memory, sorted by
// ixs::sort_segments (tile bitonic sorts, then log2(n / tile) merge passes), then the
// first k of each line extracted. Both give the same, unique order.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "ops/cuda/index_sort.cuh"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/dispatch.h"
#include "ops/index_kernels.h"

namespace hmoe::ops::cuda {
namespace {

using ixs::grid_for;

// The pack of an element type's order key: 32-bit keys with 32-bit indices fit a u64.
template <typename T>
using pack_t = std::conditional_t<sizeof(decltype(ixs::order_key(T()))) == 4, uint64_t, ixs::Pack128>;

template <typename T, typename P>
__device__ __forceinline__ P element_pack(T v, uint32_t i, bool descending) {
  auto key = ixs::order_key(v);
  if (descending) key = ~key;
  return ixs::make_pack(key, i);
}

// ---- sort / topk -------------------------------------------------------------------------

// Sorts whole lines in shared memory: block (tx, ty) handles ty lines at a time, tx
// threads per line, each line a tile of `tile` packs (a power of two >= n, padded with
// pack_max) in dynamic shared memory (ty * tile packs). L gives each line's start in t
// (lines row-major over the dims other than dim: line l = (o, ii), o < outer,
// ii < inner). Writes the first k values (the original elements) and indices at
// (o, j, ii) of the contiguous outputs. Lines grid-stride, uniformly over the block.
template <typename T, typename P>
__global__ void sort_rows_kernel(const T* __restrict__ t, StridedLayout<1> L, int64_t ts, int64_t n, int64_t lines,
                                 int64_t inner, int tile, int64_t k, bool descending, T* __restrict__ values,
                                 int64_t* __restrict__ indices) {
  HMOE_DYNAMIC_SHARED(P, smem);
  P* s = smem + threadIdx.y * tile;
  for (int64_t l0 = int64_t(blockIdx.x) * blockDim.y; l0 < lines; l0 += int64_t(gridDim.x) * blockDim.y) {
    const int64_t l = l0 + threadIdx.y;
    const bool live = l < lines;
    int64_t off[1] = {0};
    if (live) L.offsets(l, off);
    for (int i = threadIdx.x; i < tile; i += blockDim.x)
      s[i] = live && i < n ? element_pack<T, P>(t[off[0] + i * ts], uint32_t(i), descending) : ixs::pack_max<P>();
    __syncthreads();
    ixs::bitonic_sort(s, tile, int(threadIdx.x), int(blockDim.x));
    if (live) {
      const int64_t o = l / inner, ii = l - o * inner, base = o * k * inner + ii;
      for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
        const int64_t i = ixs::pack_index(s[j]);
        values[base + j * inner] = t[off[0] + i * ts];
        indices[base + j * inner] = i;
      }
    }
    __syncthreads();  // s is refilled next round
  }
}

// General path, step 1: packs[l * n + i] = (key of line l's element i, i). 1-d grid.
template <typename T, typename P>
__global__ void line_packs_kernel(const T* __restrict__ t, StridedLayout<1> L, int64_t ts, int64_t n, int64_t total,
                                  bool descending, P* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t l = e / n, i = e - l * n;
    int64_t off[1];
    L.offsets(l, off);
    packs[e] = element_pack<T, P>(t[off[0] + i * ts], uint32_t(i), descending);
  }
}

// General path, step 3: the first k sorted packs of each line become values and
// indices at (o, j, ii). 1-d grid over lines * k, grid-stride.
template <typename T, typename P>
__global__ void extract_topk_kernel(const T* __restrict__ t, StridedLayout<1> L, int64_t ts, int64_t n,
                                    int64_t inner, int64_t k, int64_t total, const P* __restrict__ sorted,
                                    T* __restrict__ values, int64_t* __restrict__ indices) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t l = e / k, j = e - l * k;
    int64_t off[1];
    L.offsets(l, off);
    const int64_t i = ixs::pack_index(sorted[l * n + j]);
    const int64_t o = l / inner, ii = l - o * inner, at = (o * k + j) * inner + ii;
    values[at] = t[off[0] + i * ts];
    indices[at] = i;
  }
}

template <typename T, typename P>
void sort_lines(const Tensor& t, int64_t dim, int64_t k, bool descending, const Tensor& values,
                const Tensor& indices) {
  const int64_t n = t.size(dim), lines = t.numel() / n;
  int64_t inner = 1;
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  Shape lshape = t.shape(), lstrides = t.strides();
  lshape.erase(lshape.begin() + dim);
  lstrides.erase(lstrides.begin() + dim);
  const StridedLayout<1> L = make_layout<1>(lshape, {&lstrides});
  const int64_t ts = t.stride(dim);
  const int device = t.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const T* src = static_cast<const T*>(t.data_ptr<void>());
  T* val = static_cast<T*>(values.data_ptr<void>());
  int64_t* ind = static_cast<int64_t*>(indices.data_ptr<void>());
  if (n <= ixs::kMaxTile<P>) {
    const int tile = int(pow2_ceil(n));
    const int tx = std::clamp(tile / 2, 1, 256);
    const int ty = std::max(1, 128 / tx);
    const int64_t want = (lines + ty - 1) / ty;
    const unsigned blocks =
        unsigned(std::min<int64_t>(want, int64_t(hmoe::cuda::properties(device).multiprocessors) * 32));
    auto kr = &sort_rows_kernel<T, P>;
    HMOE_LAUNCH_CHECKED(kr, blocks, dim3(unsigned(tx), unsigned(ty)), size_t(ty) * size_t(tile) * sizeof(P),
                        stream.native(), src, L, ts, n, lines, inner, tile, k, descending, val, ind);
    return;
  }
  // Long lines: the general (slower) path through global memory.
  const int64_t total = lines * n;
  const Tensor bufa = ixs::pack_buffer<P>(total, t.device()), bufb = ixs::pack_buffer<P>(total, t.device());
  P* a = ixs::pack_ptr<P>(bufa);
  auto kp = &line_packs_kernel<T, P>;
  HMOE_LAUNCH_CHECKED(kp, grid_for(total, device), 256, 0, stream.native(), src, L, ts, n, total, descending, a);
  const P* sorted = ixs::sort_segments<P>(a, ixs::pack_ptr<P>(bufb), lines, n, device);
  auto ke = &extract_topk_kernel<T, P>;
  HMOE_LAUNCH_CHECKED(ke, grid_for(lines * k, device), 256, 0, stream.native(), src, L, ts, n, inner, k, lines * k,
                      sorted, val, ind);
}

void sort_cuda(const Tensor& t, int64_t dim, int64_t k, bool descending, const Tensor& values, const Tensor& indices) {
  if (k == 0 || t.numel() == 0) return;
  HMOE_CHECK(values.is_contiguous() && indices.is_contiguous(), "sort: outputs must be contiguous, got ",
             values.meta_str(), " and ", indices.meta_str());
  HMOE_CHECK(t.size(dim) < (int64_t(1) << 32) - 1, "sort: the cuda sort packs indices in 32 bits; a line of ",
             t.size(dim), " elements is too long");
  dispatch_device_all(t.dtype(), "sort", [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>)
      HMOE_FAIL("sort: not defined for bool tensors, got ", t.meta_str());
    else
      sort_lines<T, pack_t<T>>(t, dim, k, descending, values, indices);
  });
}

// ---- cumsum ------------------------------------------------------------------------------

// Running sums: f64 for floating types (as the CPU), i64 for integers.
template <typename T>
using scan_acc_t = std::conditional_t<std::is_integral_v<T>, int64_t, double>;

// One thread per column (o, c): the CPU's sequential sum along dim, exactly. Used when
// the scanned dim is not innermost (threads then read adjacent columns: coalesced) and
// for short rows. 1-d grid over outer * inner, grid-stride.
template <typename T>
__global__ void cumsum_columns_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t outer, int64_t n,
                                      int64_t inner, bool reverse) {
  using A = scan_acc_t<T>;
  const int64_t cols = outer * inner, step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; col < cols; col += step) {
    const int64_t o = col / inner, c = col - o * inner;
    A a = 0;
    for (int64_t s = 0; s < n; ++s) {
      const int64_t at = (o * n + (reverse ? n - 1 - s : s)) * inner + c;
      a += A(to_compute(x[at]));
      y[at] = from_compute<T>(static_cast<device_compute_t<T>>(a));
    }
  }
}

// One block per row of n contiguous elements (inner == 1), rows grid-stride. The row
// goes in chunks of blockDim.x * kItems: each thread sums its kItems consecutive
// elements sequentially, a two-level shuffle scan of the thread totals gives each
// thread its prefix, and a carry moves from chunk to chunk. A fixed tree for a given
// n: deterministic. blockDim.x is a multiple of 32, at most 1024.
constexpr int kScanItems = 4;
template <typename T>
__global__ void cumsum_rows_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n,
                                   bool reverse) {
  using A = scan_acc_t<T>;
  HMOE_SHARED(A, warp_sums, [32]);
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5, nwarps = int(blockDim.x) >> 5;
  const int64_t chunk = int64_t(blockDim.x) * kScanItems;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * n;
    T* yr = y + row * n;
    A carry = 0;
    for (int64_t base = 0; base < n; base += chunk) {
      A v[kScanItems];
      A run = 0;
#pragma unroll
      for (int i = 0; i < kScanItems; ++i) {
        const int64_t s = base + int64_t(tid) * kScanItems + i;
        if (s < n) run += A(to_compute(xr[reverse ? n - 1 - s : s]));
        v[i] = run;
      }
      const A incl = warp_inclusive_scan(run, lane);
      A excl = __shfl_up_sync(0xffffffffu, incl, 1);
      if (lane == 0) excl = 0;
      if (lane == 31) warp_sums[warp] = incl;
      __syncthreads();
      if (warp == 0) {
        const A w = warp_inclusive_scan(lane < nwarps ? warp_sums[lane] : A(0), lane);
        warp_sums[lane] = w;
      }
      __syncthreads();
      const A prefix = (carry + (warp == 0 ? A(0) : warp_sums[warp - 1])) + excl;
#pragma unroll
      for (int i = 0; i < kScanItems; ++i) {
        const int64_t s = base + int64_t(tid) * kScanItems + i;
        if (s < n) yr[reverse ? n - 1 - s : s] = from_compute<T>(static_cast<device_compute_t<T>>(prefix + v[i]));
      }
      carry = carry + warp_sums[nwarps - 1];
      __syncthreads();  // warp_sums is rewritten next chunk
    }
  }
}

// Rows at least this long take the block scan; shorter ones a thread each.
constexpr int64_t kBlockScanMin = 64;

void cumsum_cuda(const Tensor& t, int64_t dim, bool reverse, const Tensor& out) {
  if (t.numel() == 0) return;
  HMOE_CHECK(t.is_contiguous() && out.is_contiguous(), "cumsum: operands must be contiguous, got ", t.meta_str(),
             " and ", out.meta_str());
  const int64_t n = t.size(dim);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  const int device = t.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  dispatch_device_all(t.dtype(), "cumsum", [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>) {
      HMOE_FAIL("cumsum: bool tensors are summed as i64 by the op, got ", t.meta_str());
    } else {
      const T* x = static_cast<const T*>(t.data_ptr<void>());
      T* y = static_cast<T*>(out.data_ptr<void>());
      if (inner == 1 && n >= kBlockScanMin) {
        const int threads = int(std::clamp<int64_t>((n / kScanItems + 31) / 32 * 32, 32, 256));
        const unsigned blocks =
            unsigned(std::min<int64_t>(outer, int64_t(hmoe::cuda::properties(device).multiprocessors) * 32));
        auto k = &cumsum_rows_kernel<T>;
        HMOE_LAUNCH_CHECKED(k, blocks, threads, 0, stream.native(), x, y, outer, n, reverse);
      } else {
        auto k = &cumsum_columns_kernel<T>;
        HMOE_LAUNCH_CHECKED(k, grid_for(outer * inner, device), 256, 0, stream.native(), x, y, outer, n, inner,
                            reverse);
      }
    }
  });
}

// ---- bincount ----------------------------------------------------------------------------

// Unweighted: out[ids[i]] += 1 with 64-bit integer atomics (exact, so order-free).
// 1-d grid, grid-stride. Ids are valid; out is zeroed first.
template <typename I>
__global__ void bincount_kernel(const I* __restrict__ ids, int64_t n, int64_t is, unsigned long long* out) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    atomicAdd(out + int64_t(ids[i * is]), 1ull);
}

// packs[i] = (ids[i], i). 1-d grid, grid-stride. Ids are valid.
template <typename I>
__global__ void bin_packs_kernel(const I* __restrict__ ids, int64_t n, int64_t is, uint64_t* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    packs[i] = ixs::make_pack(uint32_t(ids[i * is]), uint32_t(i));
}

// One thread per bin b: the weights of its run of sorted packs summed in f64 in
// increasing position, rounded once to T (zero for an empty bin: every bin written).
// 1-d grid over bins, grid-stride.
template <typename W, typename T>
__global__ void weighted_bins_kernel(const W* __restrict__ w, int64_t ws, const uint64_t* __restrict__ sorted,
                                     int64_t n, T* __restrict__ out, int64_t len) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < len; b += step) {
    const int64_t lo = ixs::count_below(sorted, n, uint64_t(b) << 32);
    double acc = 0;
    for (int64_t q = lo; q < n && ixs::pack_key(sorted[q]) == uint32_t(b); ++q)
      acc += double(to_compute(w[int64_t(ixs::pack_index(sorted[q])) * ws]));
    out[b] = from_compute<T>(static_cast<device_compute_t<T>>(acc));
  }
}

void bincount_cuda(const Tensor& ids, const Tensor& weights, const Tensor& out) {
  const int64_t n = ids.numel(), len = out.numel();
  if (auto bad = ixs::first_bad_index(ids, len))
    HMOE_FAIL("bincount: id ", bad->second, " at position ", bad->first, " is out of range [0, ", len, ")");
  if (len == 0) return;
  const int device = out.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const int64_t is = n > 0 ? ids.stride(0) : 0;
  if (!weights.defined()) {
    HMOE_CHECK(out.dtype() == DType::i64, "bincount: counts are i64, got ", out.meta_str());
    auto* o = static_cast<unsigned long long*>(out.data_ptr<void>());
    hmoe::cuda::memset_async(o, 0, size_t(len) * sizeof(int64_t), stream);
    if (n == 0) return;
    hmoe::detail::dispatch_index(ids.dtype(), "bincount", [&]<typename I>() {
      auto k = &bincount_kernel<I>;
      HMOE_LAUNCH_CHECKED(k, grid_for(n, device), 256, 0, stream.native(), static_cast<const I*>(ids.data_ptr<void>()),
                          n, is, o);
    });
    return;
  }
  HMOE_CHECK(n < (int64_t(1) << 32) - 1 && len < (int64_t(1) << 32) - 1,
             "bincount: the cuda weighted bincount packs bins and positions in 32 bits each; got ", n, " ids and ",
             len, " bins");
  const Tensor bufa = ixs::pack_buffer<uint64_t>(n, ids.device()), bufb = ixs::pack_buffer<uint64_t>(n, ids.device());
  uint64_t* a = ixs::pack_ptr<uint64_t>(bufa);
  if (n > 0) {
    hmoe::detail::dispatch_index(ids.dtype(), "bincount", [&]<typename I>() {
      auto k = &bin_packs_kernel<I>;
      HMOE_LAUNCH_CHECKED(k, grid_for(n, device), 256, 0, stream.native(), static_cast<const I*>(ids.data_ptr<void>()),
                          n, is, a);
    });
  }
  const uint64_t* sorted = ixs::sort_segments<uint64_t>(a, ixs::pack_ptr<uint64_t>(bufb), 1, n, device);
  const int64_t ws = n > 0 ? weights.stride(0) : 0;
  dispatch_device_all(weights.dtype(), "bincount", [&]<typename W>() {
    if constexpr (std::is_same_v<W, bool>) {
      HMOE_FAIL("bincount: weights must be numeric, got ", weights.meta_str());
    } else {
      hmoe::detail::dispatch_float(out.dtype(), "bincount", [&]<typename H>() {
        using T = std::conditional_t<std::is_same_v<H, ::hmoe::bf16>, __nv_bfloat16,
                                     std::conditional_t<std::is_same_v<H, ::hmoe::f16>, __half, H>>;
        auto k = &weighted_bins_kernel<W, T>;
        HMOE_LAUNCH_CHECKED(k, grid_for(len, device), 256, 0, stream.native(),
                            static_cast<const W*>(weights.data_ptr<void>()), ws, sorted, n,
                            static_cast<T*>(out.data_ptr<void>()), len);
      });
    }
  });
}

}  // namespace

void register_sort_cuda() {
  sort_stub.set(DeviceType::cuda, &sort_cuda);
  cumsum_stub.set(DeviceType::cuda, &cumsum_cuda);
  bincount_stub.set(DeviceType::cuda, &bincount_cuda);
}

}  // namespace hmoe::ops::cuda
