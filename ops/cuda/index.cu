// The index kernel family on the cuda device (contract: ops/index_kernels.h, reference:
// ops/cpu/index.cpp): index_select (row copies in 16-byte words where alignment allows),
// index_add (embedding's backward: a device sort of (row, position) packs, then each
// destination row summed by one block in increasing position: the CPU's order, so f32
// results equal the CPU's bit for bit), gather, scatter_add (one thread per index line
// in position order, or for few long lines a sort by destination then one thread per
// destination run) and one_hot. No float atomics anywhere: results are deterministic.
// Indices are validated on the device before anything is written; the first offender
// (by position) is read back and raised as hmoe::Error, worded as the CPU words it.
#include <algorithm>
#include <array>
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

using ixs::first_bad_index;
using ixs::grid_for;

// Blocks for `items` work items at `per_block` items a block, capped to a few waves.
inline unsigned capped_blocks(int64_t items, int64_t per_block, int device) {
  const int64_t want = (items + per_block - 1) / per_block;
  const int64_t cap = int64_t(hmoe::cuda::properties(device).multiprocessors) * 32;
  return unsigned(std::max<int64_t>(1, std::min(want, cap)));
}

inline unsigned round_up32(int64_t n) { return unsigned(std::clamp<int64_t>((n + 31) / 32 * 32, 32, 256)); }

// ---- index_select ------------------------------------------------------------------------

// out row r = (o, j) is src row (o, idx[j]), each row `words` words of W. Block (tx,
// ty): ty rows at a time, tx threads along a row; rows grid-stride. Indices are valid.
template <typename W, typename I>
__global__ void index_select_kernel(const W* __restrict__ src, W* __restrict__ dst, const I* __restrict__ ix,
                                    int64_t n, int64_t src_n, int64_t rows, int64_t words) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; r < rows; r += int64_t(gridDim.x) * blockDim.y) {
    const int64_t o = r / n, j = r - o * n;
    const W* s = src + (o * src_n + int64_t(ix[j])) * words;
    W* d = dst + r * words;
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) d[w] = s[w];
  }
}

template <typename W, typename I>
void launch_index_select(const void* src, void* dst, const I* ix, int64_t n, int64_t src_n, int64_t rows,
                         int64_t words, int device) {
  const unsigned tx = unsigned(std::min<int64_t>(256, pow2_ceil(words)));
  const unsigned ty = 256 / tx;
  auto k = &index_select_kernel<W, I>;
  HMOE_LAUNCH_CHECKED(k, capped_blocks(rows, ty, device), dim3(tx, ty), 0,
                      hmoe::cuda::current_stream(device).native(), static_cast<const W*>(src), static_cast<W*>(dst),
                      ix, n, src_n, rows, words);
}

void index_select_cuda(const Tensor& t, const Tensor& idx, const Tensor& out, int64_t outer, int64_t src_n,
                       int64_t inner, const char* op) {
  const int64_t n = idx.numel();
  if (auto bad = first_bad_index(idx, src_n))
    HMOE_FAIL(op, ": index ", bad->second, " at position ", bad->first, " is out of range [0, ", src_n, ")");
  const int64_t row = inner * int64_t(t.element_size());
  if (row == 0 || outer == 0 || n == 0) return;
  const int device = out.device().index;
  const void* s = t.data_ptr<void>();
  void* d = out.data_ptr<void>();
  hmoe::detail::dispatch_index(idx.dtype(), op, [&]<typename I>() {
    const I* ix = static_cast<const I*>(idx.data_ptr<void>());
    const int64_t rows = outer * n;
    // The widest word that divides the row and both base addresses.
    for (int64_t w : {16, 8, 4, 2, 1}) {
      if (row % w != 0 || !aligned_to(s, size_t(w)) || !aligned_to(d, size_t(w))) continue;
      switch (w) {
        case 16: return launch_index_select<uint4, I>(s, d, ix, n, src_n, rows, row / 16, device);
        case 8: return launch_index_select<uint2, I>(s, d, ix, n, src_n, rows, row / 8, device);
        case 4: return launch_index_select<uint32_t, I>(s, d, ix, n, src_n, rows, row / 4, device);
        case 2: return launch_index_select<uint16_t, I>(s, d, ix, n, src_n, rows, row / 2, device);
        default: return launch_index_select<uint8_t, I>(s, d, ix, n, src_n, rows, row, device);
      }
    }
  });
}

// ---- index_add ---------------------------------------------------------------------------

// packs[j] = (idx[j], j): sorted, they list the positions of each destination row in
// increasing order. 1-d grid, grid-stride. Indices are valid.
template <typename I>
__global__ void row_packs_kernel(const I* __restrict__ ix, int64_t n, uint64_t* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += step)
    packs[j] = ixs::make_pack(uint32_t(ix[j]), uint32_t(j));
}

// dst[o, r, :] += src[o, j, :] for the run of sorted packs of row r, in increasing j,
// accumulating in compute precision from the current dst value and rounding once (as
// the CPU). Grid: x over candidate runs (by_rows: destination rows, found by binary
// search; else sorted positions, of which only a run's first does work), y over column
// chunks of blockDim.x * V, z over outer; all grid-stride. Each thread owns V adjacent
// columns, moved as one access.
template <typename T, int V>
__global__ void index_add_rows_kernel(T* __restrict__ dst, const T* __restrict__ src, const uint64_t* __restrict__ sorted,
                                      int64_t n, int64_t outer, int64_t dst_n, int64_t inner, bool by_rows,
                                      int64_t candidates) {
  using C = device_compute_t<T>;
  using VT = Pack<T, V>;
  for (int64_t c = blockIdx.x; c < candidates; c += gridDim.x) {
    int64_t r, lo, hi;
    if (by_rows) {
      r = c;
      lo = ixs::count_below(sorted, n, uint64_t(r) << 32);
      hi = ixs::count_below(sorted, n, uint64_t(r + 1) << 32);
      if (lo == hi) continue;
    } else {
      r = ixs::pack_key(sorted[c]);
      if (c > 0 && ixs::pack_key(sorted[c - 1]) == uint32_t(r)) continue;
      lo = c;
      hi = c + ixs::count_below(sorted + c, n - c, uint64_t(r + 1) << 32);
    }
    for (int64_t o = blockIdx.z; o < outer; o += gridDim.z) {
      for (int64_t col = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * V; col < inner;
           col += int64_t(gridDim.y) * blockDim.x * V) {
        VT* drow = reinterpret_cast<VT*>(dst + (o * dst_n + r) * inner + col);
        const VT d0 = *drow;
        C acc[V];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = to_compute(d0.v[v]);
#pragma unroll 4  // several rows' loads in flight; each column still adds in q order
        for (int64_t q = lo; q < hi; ++q) {
          const int64_t j = ixs::pack_index(sorted[q]);
          const VT sv = *reinterpret_cast<const VT*>(src + (o * n + j) * inner + col);
#pragma unroll
          for (int v = 0; v < V; ++v) acc[v] += to_compute(sv.v[v]);
        }
        VT out;
#pragma unroll
        for (int v = 0; v < V; ++v) out.v[v] = from_compute<T>(acc[v]);
        *drow = out;
      }
    }
  }
}

template <typename T, int V>
void launch_index_add_rows(T* d, const T* s, const uint64_t* sorted, int64_t n, int64_t outer, int64_t dst_n,
                           int64_t inner, int device) {
  const bool by_rows = dst_n <= n;  // fewer destination rows than positions: search per row
  const int64_t candidates = by_rows ? dst_n : n;
  const unsigned threads = round_up32((inner + V - 1) / V);
  const int64_t chunks = (inner + int64_t(threads) * V - 1) / (int64_t(threads) * V);
  const dim3 grid(unsigned(std::min<int64_t>(candidates, 0x7fffffff)), unsigned(std::min<int64_t>(chunks, 65535)),
                  unsigned(std::min<int64_t>(outer, 65535)));
  auto k = &index_add_rows_kernel<T, V>;
  HMOE_LAUNCH_CHECKED(k, grid, threads, 0, hmoe::cuda::current_stream(device).native(), d, s, sorted, n, outer,
                      dst_n, inner, by_rows, candidates);
}

void index_add_cuda(const Tensor& dst, const Tensor& idx, const Tensor& src, int64_t outer, int64_t dst_n,
                    int64_t inner, const char* op) {
  const int64_t n = idx.numel();
  if (auto bad = first_bad_index(idx, dst_n))
    HMOE_FAIL(op, ": index ", bad->second, " at position ", bad->first, " is out of range [0, ", dst_n, ")");
  if (n == 0 || outer == 0 || inner == 0) return;
  HMOE_CHECK(n < (int64_t(1) << 32) - 1 && dst_n < (int64_t(1) << 32) - 1, op,
             ": the cuda index_add packs rows and positions in 32 bits each; got ", n, " positions and ", dst_n,
             " rows");
  const int device = dst.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const Tensor bufa = ixs::pack_buffer<uint64_t>(n, dst.device()), bufb = ixs::pack_buffer<uint64_t>(n, dst.device());
  uint64_t* a = ixs::pack_ptr<uint64_t>(bufa);
  hmoe::detail::dispatch_index(idx.dtype(), op, [&]<typename I>() {
    auto k = &row_packs_kernel<I>;
    HMOE_LAUNCH_CHECKED(k, grid_for(n, device), 256, 0, stream.native(), static_cast<const I*>(idx.data_ptr<void>()),
                        n, a);
  });
  const uint64_t* sorted = ixs::sort_segments<uint64_t>(a, ixs::pack_ptr<uint64_t>(bufb), 1, n, device);
  void* dv = dst.data_ptr<void>();
  const void* sv = src.data_ptr<void>();
  dispatch_device_all(dst.dtype(), op, [&]<typename T>() {
    if constexpr (std::is_same_v<T, bool>) {
      HMOE_FAIL(op, ": not defined for bool tensors, got ", dst.meta_str());
    } else {
      T* d = static_cast<T*>(dv);
      const T* s = static_cast<const T*>(sv);
      constexpr int kV = 16 / int(sizeof(T));
      if (inner % kV == 0 && aligned_to(d, 16) && aligned_to(s, 16))
        launch_index_add_rows<T, kV>(d, s, sorted, n, outer, dst_n, inner, device);
      else
        launch_index_add_rows<T, 1>(d, s, sorted, n, outer, dst_n, inner, device);
    }
  });
}

// ---- gather ------------------------------------------------------------------------------

// out[i] = t[toff(i) + index[i] * tsd] for each flat position i of index (row-major);
// L gives operand 0 = t's offset without dim, 1 = index's offset. Elements move as
// bits W. 1-d grid, grid-stride. Indices are valid.
template <typename W, typename I>
__global__ void gather_kernel(const W* __restrict__ t, const I* __restrict__ ix, W* __restrict__ out,
                              StridedLayout<2> L, int64_t n, int64_t tsd) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[2];
    L.offsets(i, off);
    out[i] = t[off[0] + int64_t(ix[off[1]]) * tsd];
  }
}

void gather_cuda(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& out) {
  if (auto bad = first_bad_index(index, t.size(dim)))
    HMOE_FAIL("gather: index ", bad->second, " is out of range [0, ", t.size(dim), ") for dim ", dim, " of ",
               t.meta_str());
  const int64_t n = index.numel();
  if (n == 0) return;
  HMOE_CHECK(out.is_contiguous(), "gather: output must be contiguous, got ", out.meta_str());
  const int device = out.device().index;
  Shape tst = t.strides();
  tst.resize(index.shape().size());
  tst[size_t(dim)] = 0;  // the coordinate along dim comes from the index
  const StridedLayout<2> L = make_layout<2>(index.shape(), {&tst, &index.strides()});
  const int64_t tsd = t.stride(dim);
  const auto& stream = hmoe::cuda::current_stream(device);
  hmoe::detail::dispatch_index(index.dtype(), "gather", [&]<typename I>() {
    const I* ix = static_cast<const I*>(index.data_ptr<void>());
    auto run = [&]<typename W>() {
      auto k = &gather_kernel<W, I>;
      HMOE_LAUNCH_CHECKED(k, grid_for(n, device), 256, 0, stream.native(), static_cast<const W*>(t.data_ptr<void>()),
                          ix, static_cast<W*>(out.data_ptr<void>()), L, n, tsd);
    };
    switch (t.element_size()) {
      case 1: return run.template operator()<uint8_t>();
      case 2: return run.template operator()<uint16_t>();
      case 4: return run.template operator()<uint32_t>();
      default: return run.template operator()<uint64_t>();
    }
  });
}

// ---- scatter_add -------------------------------------------------------------------------

// One thread per index line (the lines along dim, row-major over the other dims; L
// gives each line's start in dst, index and src): dst[.. index[j] ..] += src[.. j ..] in
// increasing j, rounding to T after each add, exactly as the CPU. Lines of index map to
// distinct destination lines, so threads never share a destination. 1-d grid, grid-stride.
template <typename T, typename I>
__global__ void scatter_add_lines_kernel(T* __restrict__ d, const I* __restrict__ ix, const T* __restrict__ s,
                                         StridedLayout<3> L, int64_t lines, int64_t len, int64_t ds, int64_t is,
                                         int64_t ss) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t l = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; l < lines; l += step) {
    int64_t off[3];
    L.offsets(l, off);
    for (int64_t j = 0; j < len; ++j) {
      T& acc = d[off[0] + int64_t(ix[off[1] + j * is]) * ds];
      acc = from_compute<T>(to_compute(acc) + to_compute(s[off[2] + j * ss]));
    }
  }
}

// packs[l * len + j] = (index of line l at j, j). 1-d grid, grid-stride. Indices are valid.
template <typename I>
__global__ void scatter_packs_kernel(const I* __restrict__ ix, StridedLayout<1> L, int64_t len, int64_t is,
                                     int64_t total, uint64_t* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t l = i / len, j = i - l * len;
    int64_t off[1];
    L.offsets(l, off);
    packs[i] = ixs::make_pack(uint32_t(ix[off[0] + j * is]), uint32_t(j));
  }
}

// After the per-line sort of the packs: the first thread of each run of one destination
// sums the run's sources into it in increasing j, rounding to T after each add (the
// CPU's order and rounding). L gives line starts in dst (operand 0) and src (1). 1-d
// grid over sorted positions, grid-stride.
template <typename T>
__global__ void scatter_add_runs_kernel(T* __restrict__ d, const T* __restrict__ s, const uint64_t* __restrict__ sorted,
                                        StridedLayout<2> L, int64_t len, int64_t total, int64_t ds, int64_t ss) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < total; p += step) {
    const int64_t l = p / len, q = p - l * len;
    const uint32_t key = ixs::pack_key(sorted[p]);
    if (q > 0 && ixs::pack_key(sorted[p - 1]) == key) continue;
    int64_t off[2];
    L.offsets(l, off);
    T* dp = d + off[0] + int64_t(key) * ds;
    T acc = *dp;
    const int64_t end = (l + 1) * len;
    for (int64_t r = p; r < end && ixs::pack_key(sorted[r]) == key; ++r)
      acc = from_compute<T>(to_compute(acc) + to_compute(s[off[1] + int64_t(ixs::pack_index(sorted[r])) * ss]));
    *dp = acc;
  }
}

// Few long lines leave one thread per line with too little parallelism: sort instead.
inline bool scatter_by_sort(int64_t lines, int64_t len) { return lines < 1024 && len > 128; }

void scatter_add_cuda(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  if (auto bad = first_bad_index(index, dst.size(dim)))
    HMOE_FAIL("scatter_add: index ", bad->second, " is out of range [0, ", dst.size(dim), ") for dim ", dim,
               " of ", dst.meta_str());
  if (index.numel() == 0) return;
  const int device = dst.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  const int64_t len = index.size(dim), lines = index.numel() / len;
  // The line space: index's shape and every operand's strides without dim.
  auto drop = [dim](Shape s) {
    s.erase(s.begin() + dim);
    return s;
  };
  const Shape lshape = drop(index.shape());
  const Shape dst_st = drop(dst.strides()), ix_st = drop(index.strides()), src_st = drop(src.strides());
  const int64_t ds = dst.stride(dim), is = index.stride(dim), ss = src.stride(dim);
  void* dv = dst.data_ptr<void>();
  const void* sv = src.data_ptr<void>();
  hmoe::detail::dispatch_index(index.dtype(), "scatter_add", [&]<typename I>() {
    const I* ix = static_cast<const I*>(index.data_ptr<void>());
    dispatch_device_all(dst.dtype(), "scatter_add", [&]<typename T>() {
      if constexpr (std::is_same_v<T, bool>) {
        HMOE_FAIL("scatter_add: not defined for bool tensors, got ", dst.meta_str());
      } else {
        T* d = static_cast<T*>(dv);
        const T* s = static_cast<const T*>(sv);
        if (!scatter_by_sort(lines, len) || dst.size(dim) >= (int64_t(1) << 32) - 1) {
          const StridedLayout<3> L = make_layout<3>(lshape, {&dst_st, &ix_st, &src_st});
          auto k = &scatter_add_lines_kernel<T, I>;
          HMOE_LAUNCH_CHECKED(k, grid_for(lines, device, 128), 128, 0, stream.native(), d, ix, s, L, lines, len, ds,
                              is, ss);
          return;
        }
        const int64_t total = lines * len;
        const Tensor bufa = ixs::pack_buffer<uint64_t>(total, dst.device());
        const Tensor bufb = ixs::pack_buffer<uint64_t>(total, dst.device());
        uint64_t* a = ixs::pack_ptr<uint64_t>(bufa);
        const StridedLayout<1> Li = make_layout<1>(lshape, {&ix_st});
        auto kp = &scatter_packs_kernel<I>;
        HMOE_LAUNCH_CHECKED(kp, grid_for(total, device), 256, 0, stream.native(), ix, Li, len, is, total, a);
        const uint64_t* sorted = ixs::sort_segments<uint64_t>(a, ixs::pack_ptr<uint64_t>(bufb), lines, len, device);
        const StridedLayout<2> Lds = make_layout<2>(lshape, {&dst_st, &src_st});
        auto kr = &scatter_add_runs_kernel<T>;
        HMOE_LAUNCH_CHECKED(kr, grid_for(total, device), 256, 0, stream.native(), d, s, sorted, Lds, len, total, ds,
                            ss);
      }
    });
  });
}

// ---- one_hot -----------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T one_or_zero(bool one) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>)
    return from_compute<T>(one ? 1.0f : 0.0f);
  else
    return T(one ? 1 : 0);
}

// out[i, c] = (c == ids[i]) over contiguous out [n, num_classes]: every element written.
// 1-d grid, grid-stride. Ids are valid.
template <typename T, typename I>
__global__ void one_hot_kernel(const I* __restrict__ ids, T* __restrict__ out, int64_t total, int64_t num_classes) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t i = e / num_classes, c = e - i * num_classes;
    out[e] = one_or_zero<T>(int64_t(ids[i]) == c);
  }
}

void one_hot_cuda(const Tensor& ids, const Tensor& out, int64_t num_classes) {
  if (auto bad = first_bad_index(ids, num_classes))
    HMOE_FAIL("one_hot: id ", bad->second, " at position ", bad->first, " is out of range [0, ", num_classes,
               ")");
  const int64_t total = out.numel();
  if (total == 0) return;
  const int device = out.device().index;
  const auto& stream = hmoe::cuda::current_stream(device);
  hmoe::detail::dispatch_index(ids.dtype(), "one_hot", [&]<typename I>() {
    dispatch_device_all(out.dtype(), "one_hot", [&]<typename T>() {
      auto k = &one_hot_kernel<T, I>;
      HMOE_LAUNCH_CHECKED(k, grid_for(total, device), 256, 0, stream.native(),
                          static_cast<const I*>(ids.data_ptr<void>()), static_cast<T*>(out.data_ptr<void>()), total,
                          num_classes);
    });
  });
}

}  // namespace

void register_index_cuda() {
  index_select_stub.set(DeviceType::cuda, &index_select_cuda);
  index_add_stub.set(DeviceType::cuda, &index_add_cuda);
  gather_stub.set(DeviceType::cuda, &gather_cuda);
  scatter_add_stub.set(DeviceType::cuda, &scatter_add_cuda);
  one_hot_stub.set(DeviceType::cuda, &one_hot_cuda);
}

}  // namespace hmoe::ops::cuda
