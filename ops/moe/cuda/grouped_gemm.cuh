// Kernel bodies of the grouped GEMM family on the cuda device. The GEMMs themselves are
// in grouped_gemm_mma_sync.cuh and grouped_gemm_mma.cuh (tensor cores, bf16/f16) and
// grouped_gemm_simt.cuh (CUDA cores, f32/f64), over the scheduler and panel loader of grouped_gemm_tiles.cuh; here
// are the small backward kernels: the per-group bias gradient, the scale gradient (a
// row dot product) and the deterministic scatter of dX rows through the gather index.
// None uses float atomics: every sum has one fixed order.
#pragma once

#include <cstdint>

#include "ops/cuda/index_sort.cuh"
#include "ops/moe/cuda/grouped_gemm_mma.cuh"
#include "ops/moe/cuda/grouped_gemm_mma_sync.cuh"
#include "ops/moe/cuda/grouped_gemm_simt.cuh"

namespace hmoe::ops::cuda::moe_gemm {

// The last g in [0, groups) with offsets[g] <= r: the group holding row r (never an
// empty one, since a later group with the same offset would be picked).
__device__ __forceinline__ int64_t group_of(const int64_t* offsets, int64_t groups, int64_t r) {
  int64_t lo = 0, hi = groups;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (offsets[mid] <= r)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

constexpr int kDbRows = 8;  // row lanes of the bias-gradient kernel

// db[g, c] = sum over the rows of group g of dy[r, c] in C (f32 for bf16/f16): row lane
// y of the block sums rows y, y + 8, ... of its column, then lane 0 adds the 8 partials
// in order (zero for an empty group). Launch: grid (ceil(n / 32), min(G, 65535)) (groups
// grid-stride), block (32, 8).
template <typename T, typename C>
__global__ void __launch_bounds__(256) grouped_db_kernel(const int64_t* __restrict__ offsets, int64_t groups,
                                                         const T* __restrict__ dy, C* __restrict__ db, int64_t n) {
  HMOE_SHARED(C, part, [kDbRows][33]);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const int64_t c = int64_t(blockIdx.x) * 32 + tx;
  for (int64_t g = blockIdx.y; g < groups; g += gridDim.y) {
    const int64_t r1 = offsets[g + 1];
    C acc = C(0);
    if (c < n)
      for (int64_t r = offsets[g] + ty; r < r1; r += kDbRows) acc += C(to_compute(dy[r * n + c]));
    part[ty][tx] = acc;
    __syncthreads();
    if (ty == 0 && c < n) {
      C s = part[0][tx];
#pragma unroll
      for (int q = 1; q < kDbRows; ++q) s += part[q][tx];
      db[g * n + c] = s;
    }
    __syncthreads();  // part is rewritten for the next group
  }
}

// out[r] = dot(xrow(r), gx[r]) + dot(dy[r], bias[g]) in C (the scale gradient): one warp
// a row, lanes over the columns, then the fixed-order warp tree. Launch: grid-stride over
// rows, block 256 (8 rows at a time).
template <typename T, typename C>
__global__ void __launch_bounds__(256)
    grouped_row_dot_kernel(const int64_t* __restrict__ offsets, int64_t groups, const T* __restrict__ x,
                           const int64_t* __restrict__ index, const T* __restrict__ gx, const T* __restrict__ dy,
                           const C* __restrict__ bias, C* __restrict__ out, int64_t rows, int64_t k, int64_t n) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32; r < rows; r += warps) {
    const int64_t src = index != nullptr ? index[r] : r;
    C acc = C(0);
    if (src >= 0)
      for (int64_t c = lane; c < k; c += 32)
        acc = d_fma(C(to_compute(x[src * k + c])), C(to_compute(gx[r * k + c])), acc);
    if (bias != nullptr) {
      const C* b = bias + group_of(offsets, groups, r) * n;
      for (int64_t c = lane; c < n; c += 32) acc = d_fma(C(to_compute(dy[r * n + c])), b[c], acc);
    }
    acc = warp_reduce_down(acc, Plus{});
    if (lane == 0) out[r] = acc;
  }
}

// packs[r] = (index[r], r), index -1 as the largest key: sorted, they list each
// destination row's sources in increasing r, the -1 rows last. 1-d grid-stride.
__global__ void __launch_bounds__(256)
    scatter_packs_kernel(const int64_t* __restrict__ index, int64_t rows, uint64_t* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; r < rows; r += step) {
    const int64_t d = index[r];
    packs[r] = ixs::make_pack(d < 0 ? 0xffffffffu : uint32_t(d), uint32_t(r));
  }
}

// out[t] = sum over the sorted sources r of t, in increasing r, of scale[r] * src[r]
// (scale optional, in C), accumulated in C and rounded once; rows with no source are
// zero. Launch: grid (destination rows, grid-stride; column chunks of blockDim.x * V,
// grid-stride), each thread V adjacent columns (one 16-byte access when V > 1).
template <typename T, typename C, int V>
__global__ void __launch_bounds__(256)
    scatter_rows_kernel(const T* __restrict__ src, const C* __restrict__ scale, const uint64_t* __restrict__ sorted,
                        int64_t rows, int64_t dests, int64_t k, T* __restrict__ out) {
  for (int64_t t = blockIdx.x; t < dests; t += gridDim.x) {
    const int64_t lo = ixs::count_below(sorted, rows, uint64_t(t) << 32);
    const int64_t hi = ixs::count_below(sorted, rows, uint64_t(t + 1) << 32);
    for (int64_t col = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * V; col < k;
         col += int64_t(gridDim.y) * blockDim.x * V) {
      C acc[V];
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] = C(0);
      for (int64_t q = lo; q < hi; ++q) {
        const int64_t r = ixs::pack_index(sorted[q]);
        const C f = scale != nullptr ? scale[r] : C(1);
        const Pack<T, V> s = load_pack<T, V>(src + r * k + col);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = d_fma(f, C(to_compute(s.v[e])), acc[e]);
      }
      Pack<T, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e) o.v[e] = from_compute<T>(acc[e]);
      store_pack<T, V>(out + t * k + col, o);
    }
  }
}

}  // namespace hmoe::ops::cuda::moe_gemm
