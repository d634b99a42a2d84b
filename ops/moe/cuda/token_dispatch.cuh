// Kernel bodies of token dispatch on the cuda device (launched by token_dispatch.cu): the
// plan's counting sort (shared-memory histograms, a padded exclusive scan over groups,
// stable placement by per-warp prefix sums, perm staged in slot order), its sort path, row
// permute / combine / gate gradient, and the selection-pattern bitmasks and their ranks.
// Nothing here claims slots with atomics: every output is one answer whatever the schedule.
#pragma once

#include <cstdint>

#include "engine/cuda/device_code.h"
#include "ops/cuda/index_sort.cuh"
#include "ops/cuda/kernel_utils.cuh"

namespace hmoe::ops::cuda::moe_dispatch {

inline constexpr unsigned long long kNoError = ixs::kNoError;
inline constexpr unsigned kFull = 0xffffffffu;

// ---- block helpers ---------------------------------------------------------------------

// Inclusive scan of v over a 1-d block (blockDim.x a multiple of 32), in a fixed order
// (warp shuffles, then the warps' totals); *total gets the block's sum. Every thread
// calls it; it ends with a barrier, so it may be called again at once.
__device__ __forceinline__ int64_t block_inclusive_scan(int64_t v, int64_t* total) {
  HMOE_SHARED(int64_t, warp_sums, [32]);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5, nwarps = int(blockDim.x) >> 5;
  v = warp_inclusive_scan(v, lane);
  if (lane == 31) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    warp_sums[lane] = warp_inclusive_scan(lane < nwarps ? warp_sums[lane] : int64_t(0), lane);
  }
  __syncthreads();
  const int64_t prefix = warp == 0 ? 0 : warp_sums[warp - 1];
  *total = warp_sums[nwarps - 1];
  __syncthreads();  // warp_sums is rewritten by the next call
  return v + prefix;
}

// ---- plan: the counting-sort pieces --------------------------------------------------------

// counts[g] = count(g); offsets = exclusive scan of the counts each rounded up to pad,
// offsets[G] the total; perm = -1 on every padding slot and past offsets[G]. base
// (optional, shared) gets offsets[0, G) too. The groups go in chunks of blockDim.x with a
// carry, in order. Every thread of the block calls it.
template <typename Count>
__device__ void scan_groups(int G, int64_t pad, Count count, int64_t* __restrict__ counts,
                            int64_t* __restrict__ offsets, int64_t* base, int64_t* __restrict__ perm,
                            int64_t perm_len) {
  int64_t carry = 0;
  for (int g0 = 0; g0 < G; g0 += int(blockDim.x)) {
    const int g = g0 + int(threadIdx.x);
    const int64_t c = g < G ? count(g) : 0;
    const int64_t padded = (c + pad - 1) / pad * pad;
    int64_t chunk_total = 0;
    const int64_t start = carry + block_inclusive_scan(padded, &chunk_total) - padded;
    if (g < G) {
      counts[g] = c;
      offsets[g] = start;
      if (base) base[g] = start;
      for (int64_t s = start + c; s < start + padded; ++s) perm[s] = -1;
    }
    carry += chunk_total;
  }
  if (threadIdx.x == 0) offsets[G] = carry;
  for (int64_t s = carry + threadIdx.x; s < perm_len; s += blockDim.x) perm[s] = -1;
}

// Rows a warp places per sub-tile (4 steps of 32); a sub-tile has warps * this many.
inline constexpr int kPlaceRowsPerWarp = 128;

// Routed positions [begin, end) (ids valid, in [0, G); at most warps * kPlaceRowsPerWarp)
// placed stably: position i of group g goes to slot base[g] + (earlier positions of g in
// this tile). The tile is split into one contiguous segment per warp; cur (shared int
// [warps][G]) first counts each warp's segment, then holds each warp's exclusive prefix
// over the warps before it, then serves as the warp's running cursor while it walks its
// segment 32 positions at a time (ranks inside a step from __match_any_sync: lower lanes
// first). inverse[i] is written at once (coalesced, i consecutive); perm[slot] is not:
// a warp's 32 slots fall in as many runs as it has groups. The rows go to stage (shared
// int [tile]) in slot order instead, group g's run from starts[g] (shared int [G], the
// scan of the tile's counts), and consecutive threads then write consecutive slots.
// After the call (and a barrier) cur[(warps - 1) * G + g] is the tile's count of g.
// Every thread of the block calls it.
template <typename I>
__device__ void place_tile(const I* __restrict__ ids, int64_t begin, int64_t end, int G, int* cur, int* starts,
                           int* stage, const int64_t* base, int64_t* __restrict__ perm, int64_t* __restrict__ inverse) {
  const int nwarps = int(blockDim.x) >> 5, warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
  const int len = int(end - begin);
  const int seg = ((len + nwarps - 1) / nwarps + 31) / 32 * 32;
  const int64_t s0 = begin + ixs::imin(len, warp * seg), s1 = begin + ixs::imin(len, (warp + 1) * seg);
  int* row = cur + int64_t(warp) * G;
  const unsigned below = (1u << lane) - 1u;
  for (int g = lane; g < G; g += 32) row[g] = 0;
  __syncwarp();
  for (int64_t b = s0; b < s1; b += 32) {  // uniform over the warp
    const int64_t i = b + lane;
    const int g = i < s1 ? int(ids[i]) : -1;
    const unsigned peers = __match_any_sync(kFull, g);
    if (g >= 0 && (peers & below) == 0) row[g] += __popc(peers);
    __syncwarp();  // the next step's leader of g may be another lane
  }
  __syncthreads();
  int carry = 0;
  for (int g0 = 0; g0 < G; g0 += int(blockDim.x)) {  // uniform over the block
    const int g = g0 + int(threadIdx.x);
    int run = 0;
    for (int w = 0; g < G && w < nwarps; ++w) {
      const int c = cur[int64_t(w) * G + g];
      cur[int64_t(w) * G + g] = run;
      run += c;
    }
    int64_t chunk_total = 0;
    const int64_t upto = block_inclusive_scan(run, &chunk_total);  // ends with a barrier
    if (g < G) starts[g] = carry + int(upto) - run;
    carry += int(chunk_total);
  }
  __syncthreads();  // starts complete (the last scan's barrier came before its write)
  for (int64_t b = s0; b < s1; b += 32) {
    const int64_t i = b + lane;
    const int g = i < s1 ? int(ids[i]) : -1;
    const unsigned peers = __match_any_sync(kFull, g);
    const int c = g >= 0 ? row[g] : 0;
    if (g >= 0) {
      const int r = c + __popc(peers & below);
      stage[starts[g] + r] = int(i - begin);
      inverse[i] = base[g] + r;
    }
    __syncwarp();  // every peer has read the cursor before its leader moves it
    if (g >= 0 && (peers & below) == 0) row[g] = c + __popc(peers);
    __syncwarp();
  }
  __syncthreads();
  for (int j = int(threadIdx.x); j < len; j += int(blockDim.x)) {
    int lo = 0, hi = G;  // the first group starting past j; j is in the one before it
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (starts[mid] <= j)
        lo = mid + 1;
      else
        hi = mid;
    }
    perm[base[lo - 1] + (j - starts[lo - 1])] = begin + stage[j];
  }
}

// Positions [begin, end) placed in tiles of `tile` (warps * kPlaceRowsPerWarp), in
// order; base[g] (shared) holds group g's next slot and advances by each tile's count.
// Shared memory after base[G]: int cur[warps][G], int starts[G], int stage[tile] (the
// layout place_smem_bytes sizes). Every thread of the block calls it.
template <typename I>
__device__ void place_range(const I* __restrict__ ids, int64_t begin, int64_t end, int64_t tile, int G, int64_t* base,
                            int64_t* __restrict__ perm, int64_t* __restrict__ inverse) {
  const int nwarps = int(blockDim.x) >> 5;
  int* cur = reinterpret_cast<int*>(base + G);
  int* starts = cur + int64_t(nwarps) * G;
  int* stage = starts + G;
  for (int64_t t0 = begin; t0 < end; t0 += tile) {
    place_tile(ids, t0, ixs::imin(end, t0 + tile), G, cur, starts, stage, base, perm, inverse);
    __syncthreads();
    for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) base[g] += cur[int64_t(nwarps - 1) * G + g];
    __syncthreads();
  }
}

// Dynamic shared memory of place_range with `warps` warps over G groups: base, cur,
// starts and stage.
__host__ __device__ inline size_t place_smem_bytes(int64_t G, int warps) {
  return size_t(G) * (sizeof(int64_t) + sizeof(int)) + size_t(warps) * size_t(G + kPlaceRowsPerWarp) * sizeof(int);
}

// Histogram of ids[begin, end) into hist (shared int [G], zeroed by the caller) with
// shared integer atomics (exact, so order-free); out-of-range ids are skipped and the
// smallest offending position goes to *flag. Returns whether this thread saw one.
template <typename I>
__device__ bool tile_histogram(const I* __restrict__ ids, int64_t begin, int64_t end, int64_t G, int* hist,
                               unsigned long long* flag) {
  bool bad = false;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t v = int64_t(ids[i]);
    if (v < 0 || v >= G) {
      atomicMin(flag, (unsigned long long)i);
      bad = true;
    } else {
      atomicAdd(hist + v, 1);
    }
  }
  return bad;
}

// The whole plan in one block (few routed rows): histogram, padded scan, then the tiles
// of `tile` positions placed in order with a running base per group. Dynamic shared
// memory: place_smem_bytes (int64 base[G], then int cur[warps][G], whose first row is the
// histogram, starts and stage).
template <typename I>
__global__ void plan_fused_kernel(const I* __restrict__ ids, int64_t n, int G, int64_t pad, int64_t tile,
                                  int64_t* __restrict__ counts, int64_t* __restrict__ offsets,
                                  int64_t* __restrict__ perm, int64_t perm_len, int64_t* __restrict__ inverse,
                                  unsigned long long* flag) {
  HMOE_DYNAMIC_SHARED(int64_t, base);
  int* cur = reinterpret_cast<int*>(base + G);
  for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) cur[g] = 0;
  __syncthreads();
  const bool bad = tile_histogram(ids, 0, n, G, cur, flag);
  if (__syncthreads_or(bad)) return;  // uniform: the host raises the error
  scan_groups(
      G, pad, [cur](int g) { return int64_t(cur[g]); }, counts, offsets, base, perm, perm_len);
  __syncthreads();
  place_range(ids, 0, n, tile, G, base, perm, inverse);
}

// Many routed rows, step 1: block b counts tile b into tile_counts[b][G] (dynamic shared
// int hist[G]); out-of-range ids are flagged and skipped.
template <typename I>
__global__ void plan_tile_counts_kernel(const I* __restrict__ ids, int64_t n, int G, int64_t tile,
                                        int* __restrict__ tile_counts, unsigned long long* flag) {
  HMOE_DYNAMIC_SHARED(int, hist);
  const int64_t b = blockIdx.x, begin = b * tile, end = ixs::imin(n, begin + tile);
  for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) hist[g] = 0;
  __syncthreads();
  tile_histogram(ids, begin, end, G, hist, flag);
  __syncthreads();
  for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) tile_counts[b * G + g] = hist[g];
}

// Many routed rows, step 2 (one block): per group, the tiles' exclusive prefixes in tile
// order and the total (dynamic shared int total[G]), then the padded scan over groups.
// A launch of its own: inter-block hand-offs inside one kernel would need fences that
// the emulator's race checker cannot follow, and a grid-wide wait is not safe.
__global__ void plan_tile_scan_kernel(const int* __restrict__ tile_counts, int ntiles, int G, int64_t pad,
                                      int* __restrict__ tile_prefix, int64_t* __restrict__ counts,
                                      int64_t* __restrict__ offsets, int64_t* __restrict__ perm, int64_t perm_len) {
  HMOE_DYNAMIC_SHARED(int, total);
  for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) {
    int run = 0;
#pragma unroll 8
    for (int t = 0; t < ntiles; ++t) {
      tile_prefix[int64_t(t) * G + g] = run;
      run += tile_counts[int64_t(t) * G + g];
    }
    total[g] = run;
  }
  __syncthreads();
  scan_groups(
      G, pad, [total](int g) { return int64_t(total[g]); }, counts, offsets, nullptr, perm, perm_len);
}

// Many routed rows, step 3: block b places tile b from offsets[g] + tile_prefix[b][g],
// in sub-tiles of `sub` positions (warps * kPlaceRowsPerWarp). Dynamic shared memory:
// place_smem_bytes. Does nothing after a bad id (step 1 flagged it).
// At most kPlaceThreads threads and 32 registers a thread (8 blocks an SM): nvcc gave it
// 40 for sm_80, which capped this latency-bound scatter at 75% occupancy there.
inline constexpr int kPlaceThreads = 256;
template <typename I>
__global__ void __launch_bounds__(kPlaceThreads, 8)
    plan_place_kernel(const I* __restrict__ ids, int64_t n, int G, int64_t tile, int64_t sub,
                      const int* __restrict__ tile_prefix, const int64_t* __restrict__ offsets,
                      int64_t* __restrict__ perm, int64_t* __restrict__ inverse, const unsigned long long* flag) {
  if (*flag != kNoError) return;
  HMOE_DYNAMIC_SHARED(int64_t, base);
  const int64_t b = blockIdx.x, begin = b * tile, end = ixs::imin(n, begin + tile);
  for (int g = int(threadIdx.x); g < G; g += int(blockDim.x)) base[g] = offsets[g] + tile_prefix[b * G + g];
  __syncthreads();
  place_range(ids, begin, end, sub, G, base, perm, inverse);
}

// ---- plan: the sort path (more groups than shared memory holds) ----------------------------

// packs[i] = (ids[i], i); out-of-range ids flag their smallest position. 1-d grid-stride.
template <typename I>
__global__ void plan_packs_kernel(const I* __restrict__ ids, int64_t n, int64_t G, uint64_t* __restrict__ packs,
                                  unsigned long long* flag) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const int64_t v = int64_t(ids[i]);
    if (v < 0 || v >= G) atomicMin(flag, (unsigned long long)i);
    packs[i] = ixs::make_pack(uint32_t(v), uint32_t(i));
  }
}

// counts[g] = the length of group g's run in the sorted packs (two binary searches).
__global__ void plan_sorted_counts_kernel(const uint64_t* __restrict__ sorted, int64_t n, int64_t G,
                                          int64_t* __restrict__ counts) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < G; g += step)
    counts[g] = ixs::count_below(sorted, n, uint64_t(g + 1) << 32) - ixs::count_below(sorted, n, uint64_t(g) << 32);
}

// One block: the padded scan of counts already in global memory.
__global__ void plan_scan_kernel(int G, int64_t pad, int64_t* __restrict__ counts, int64_t* __restrict__ offsets,
                                 int64_t* __restrict__ perm, int64_t perm_len) {
  scan_groups(
      G, pad, [counts](int g) { return counts[g]; }, counts, offsets, nullptr, perm, perm_len);
}

// Sorted position q (group g, routed index i) goes to slot offsets[g] + q - (start of g's
// run). 1-d grid-stride.
__global__ void plan_sorted_place_kernel(const uint64_t* __restrict__ sorted, int64_t n,
                                         const int64_t* __restrict__ offsets, int64_t* __restrict__ perm,
                                         int64_t* __restrict__ inverse) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; q < n; q += step) {
    const uint64_t p = sorted[q];
    const uint32_t g = ixs::pack_key(p);
    const int64_t slot = offsets[g] + q - ixs::count_below(sorted, n, uint64_t(g) << 32);
    const int64_t i = ixs::pack_index(p);
    perm[slot] = i;
    inverse[i] = slot;
  }
}

// ---- permute, combine, gate gradient ---------------------------------------------------------

// Threads of every row kernel's block.
inline constexpr int kRowBlock = 256;

// Block (tx, ty): ty rows at a time (rows grid-stride), tx threads along a row, V
// elements (one access) per thread. out row r = scale[perm[r]] * x[perm[r] / k] (a plain
// copy without scale), zero where perm[r] < 0.
template <typename T, int V>
__global__ void permute_rows_kernel(const T* __restrict__ x, const int64_t* __restrict__ perm, int64_t k,
                                    const T* __restrict__ scale, T* __restrict__ out, int64_t rows, int64_t d) {
  for (int64_t r = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; r < rows; r += int64_t(gridDim.x) * blockDim.y) {
    const int64_t src = perm[r];
    T* dst = out + r * d;
    const T* xr = x + (src < 0 ? 0 : src / k) * d;
    const T s = scale && src >= 0 ? scale[src] : T(1);
    for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
      Pack<T, V> p;
      if (src < 0) {
#pragma unroll
        for (int v = 0; v < V; ++v) p.v[v] = T(0);
      } else {
        p = load_pack<T, V>(xr + c);
        if (scale) {
#pragma unroll
          for (int v = 0; v < V; ++v) p.v[v] = s * p.v[v];
        }
      }
      store_pack<T, V>(dst + c, p);
    }
  }
}

// Same block shape over tokens: out row t = sum over j = 0..k-1, in order, of
// gates[t*k + j] * ys[inverse[t*k + j]] (weight 1 without gates), from zero.
// f32: at most 32 registers a thread (8 blocks an SM); without the bound nvcc gives it 40
// for sm_80 (32 for sm_90), which capped this streaming kernel at 75% occupancy there. f64:
// 6 blocks (40 registers, what it used unbounded; 32 spill on sm_90).
template <typename T, int V>
__global__ void __launch_bounds__(kRowBlock, sizeof(T) == 4 ? 8 : 6)
    combine_kernel(const T* __restrict__ ys, const int64_t* __restrict__ inverse, int64_t k,
                   const T* __restrict__ gates, T* __restrict__ out, int64_t tokens, int64_t d) {
  for (int64_t t = int64_t(blockIdx.x) * blockDim.y + threadIdx.y; t < tokens; t += int64_t(gridDim.x) * blockDim.y) {
    for (int64_t c = int64_t(threadIdx.x) * V; c < d; c += int64_t(blockDim.x) * V) {
      T acc[V];
#pragma unroll
      for (int v = 0; v < V; ++v) acc[v] = T(0);
      for (int64_t j = 0; j < k; ++j) {
        const T g = gates ? gates[t * k + j] : T(1);
        const Pack<T, V> y = load_pack<T, V>(ys + inverse[t * k + j] * d + c);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] += g * y.v[v];
      }
      Pack<T, V> o;
#pragma unroll
      for (int v = 0; v < V; ++v) o.v[v] = acc[v];
      store_pack<T, V>(out + t * d + c, o);
    }
  }
}

// One warp per routed pair p = t*k + j, a block's warps on consecutive pairs (grid-stride
// over blocks): dgates[p] = dot(dy[t], ys[inverse[p]]), lane-strided partial sums then a
// fixed tree; the block's dots go out as one store of consecutive pairs, not one
// single-lane store per warp. 6 blocks an SM (40 registers; unbounded nvcc takes 49 for
// sm_80, 50% occupancy; 32 spill).
template <typename T, int V>
__global__ void __launch_bounds__(kRowBlock, 6)
    combine_gate_grad_kernel(const T* __restrict__ dy, const T* __restrict__ ys, const int64_t* __restrict__ inverse,
                             int64_t k, T* __restrict__ dgates, int64_t pairs, int64_t d) {
  HMOE_SHARED(T, dots, [kRowBlock / 32]);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int64_t warps_per_block = blockDim.x >> 5;
  for (int64_t p0 = int64_t(blockIdx.x) * warps_per_block; p0 < pairs; p0 += int64_t(gridDim.x) * warps_per_block) {
    const int64_t p = p0 + warp;
    if (p < pairs) {  // uniform over the warp
      const T* a = dy + (p / k) * d;
      const T* b = ys + inverse[p] * d;
      T acc = T(0);
      for (int64_t c = int64_t(lane) * V; c < d; c += 32 * V) {
        const Pack<T, V> x = load_pack<T, V>(a + c), y = load_pack<T, V>(b + c);
#pragma unroll
        for (int v = 0; v < V; ++v) acc += x.v[v] * y.v[v];
      }
      acc = warp_reduce_down(acc, Plus{});
      if (lane == 0) dots[warp] = acc;
    }
    __syncthreads();
    if (int64_t(threadIdx.x) < warps_per_block && p0 + threadIdx.x < pairs)
      dgates[p0 + threadIdx.x] = dots[threadIdx.x];
    __syncthreads();  // dots is rewritten by the next pass
  }
}

// ---- selection patterns ------------------------------------------------------------------

// bits[t] = OR of 1 << ids[t, j]; the first bad (t, j) in row-major order (out of range
// or an expert already in the row) goes to *flag. One thread per token, grid-stride; the
// row's ids are read V at a time (V divides k; V ids of one access: with k = 2 the warp's
// loads cover its 32 rows' ids contiguously instead of every other id).
template <typename I, int V>
__global__ void pattern_ids_kernel(const I* __restrict__ ids, int64_t tokens, int64_t k, int64_t N,
                                   int64_t* __restrict__ bits, unsigned long long* flag) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < tokens; t += step) {
    uint64_t m = 0;
    bool bad = false;
    for (int64_t j0 = 0; j0 < k && !bad; j0 += V) {
      const Pack<I, V> row = load_pack<I, V>(ids + t * k + j0);
#pragma unroll
      for (int u = 0; u < V; ++u) {
        const int64_t e = int64_t(row.v[u]);
        if (e < 0 || e >= N || ((m >> e) & 1u)) {
          atomicMin(flag, (unsigned long long)(t * k + j0 + u));
          bad = true;
          break;
        }
        m |= uint64_t(1) << e;
      }
    }
    bits[t] = int64_t(m);
  }
}

// packs[t] = (bits[t] as unsigned, t), one 16-byte store each (the pack buffers are fresh
// device allocations, so every Pack128 is 16-byte aligned). 1-d grid-stride.
__global__ void pattern_packs_kernel(const int64_t* __restrict__ bits, int64_t tokens,
                                     ixs::Pack128* __restrict__ packs) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < tokens; t += step)
    store_pack<uint64_t, 2>(&packs[t].hi, Pack<uint64_t, 2>{{uint64_t(bits[t]), uint64_t(uint32_t(t))}});
}

// One block over the sorted packs in chunks, in order: a run's first pack starts a new
// pattern; its rank is the scan of the run heads. index[t] = rank of t's pattern,
// patterns[rank] = the pattern, *count = the number of patterns.
// Each pack is one 16-byte load; the previous pack's pattern comes from the lane below
// (lane 0 reads it).
__global__ void pattern_ranks_kernel(const ixs::Pack128* __restrict__ sorted, int64_t tokens,
                                     int64_t* __restrict__ patterns, int32_t* __restrict__ index,
                                     int64_t* __restrict__ count) {
  int64_t carry = 0;
  for (int64_t q0 = 0; q0 < tokens; q0 += blockDim.x) {
    const int64_t q = q0 + threadIdx.x;
    const bool live = q < tokens;
    const Pack<uint64_t, 2> cur = live ? load_pack<uint64_t, 2>(&sorted[q].hi) : Pack<uint64_t, 2>{};
    uint64_t prev = __shfl_up_sync(kFull, cur.v[0], 1);
    if ((threadIdx.x & 31) == 0 && live && q > 0) prev = sorted[q - 1].hi;
    const bool head = live && (q == 0 || cur.v[0] != prev);
    int64_t total = 0;
    const int64_t rank = carry + block_inclusive_scan(head ? 1 : 0, &total) - 1;
    if (live) {
      index[cur.v[1]] = int32_t(rank);
      if (head) patterns[rank] = int64_t(cur.v[0]);
    }
    carry += total;
  }
  if (threadIdx.x == 0) *count = carry;
}

}  // namespace hmoe::ops::cuda::moe_dispatch
