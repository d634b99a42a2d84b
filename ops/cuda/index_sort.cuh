// Device machinery shared by the index and sort kernel families on the cuda device
// (ops/cuda/index.cu, ops/cuda/sort.cu): index validation through a device error flag
// (first offender by position, read back before anything is written), order keys
// (NaN largest, -0 == 0) packed with the element's index into one strictly ordered
// integer, a block-wide bitonic sort in shared memory, and a segmented sort of packs in
// global memory (bitonic tiles, then merge passes that place each element by a binary
// search in the partner run). Packs are distinct, so every sort here is one answer:
// stable, deterministic, independent of the schedule.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

#include "engine/cuda/device_code.h"
#include "engine/cuda/launch.h"
#include "engine/cuda/runtime.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"

namespace hmoe::ops::cuda::ixs {

inline constexpr unsigned long long kNoError = ~0ull;  // the flag's value while no index failed

// ---- packs ------------------------------------------------------------------------------

// (64-bit key, index): the pack of f64 and i64 sort keys. Ordered by key, then index.
// 16-byte aligned, so a pack moves in one 16-byte access (two 8-byte ones each used half
// of every sector and split a shared-memory phase's banks).
struct alignas(16) Pack128 {
  uint64_t hi, lo;
};
__host__ __device__ __forceinline__ bool operator<(const Pack128& a, const Pack128& b) {
  return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

// Packs of a 32-bit key and a 32-bit index are one u64: key in the high half.
__device__ __forceinline__ uint64_t make_pack(uint32_t key, uint32_t idx) { return (uint64_t(key) << 32) | idx; }
__device__ __forceinline__ Pack128 make_pack(uint64_t key, uint32_t idx) { return Pack128{key, idx}; }
__device__ __forceinline__ uint32_t pack_index(uint64_t p) { return uint32_t(p); }
__device__ __forceinline__ uint32_t pack_index(const Pack128& p) { return uint32_t(p.lo); }
__device__ __forceinline__ uint32_t pack_key(uint64_t p) { return uint32_t(p >> 32); }

// Above every real pack (real indices stay below 2^32 - 1): pads partial tiles.
template <typename P>
__device__ __forceinline__ P pack_max() {
  if constexpr (std::is_same_v<P, Pack128>)
    return Pack128{~uint64_t(0), ~uint64_t(0)};
  else
    return ~uint64_t(0);
}

// One pack, loaded / stored in one access as nvcc makes it; the counters build sees it
// whole too (a struct copy there may be split into its fields).
template <typename P>
__device__ __forceinline__ P pack_load(const P* p) {
#if defined(HMOE_EMU_COUNTERS)
  return ::hmoe::emu::whole_load<P>(p);
#else
  return *p;
#endif
}
template <typename P>
__device__ __forceinline__ void pack_store(P* p, const P& v) {
#if defined(HMOE_EMU_COUNTERS)
  ::hmoe::emu::whole_store(p, v);
#else
  *p = v;
#endif
}

// ---- order keys (as ops/cpu/sort.cpp): unsigned order == value order ---------------------
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return ~0u;  // every NaN above +inf, all NaNs equal
  const uint32_t b = f == 0.0f ? 0u : __float_as_uint(f);  // -0 == +0
  return (b >> 31) ? ~b : b | 0x80000000u;
}
__device__ __forceinline__ uint64_t order_key(double d) {
  if (d != d) return ~uint64_t(0);
  const uint64_t b = d == 0.0 ? 0 : uint64_t(__double_as_longlong(d));
  return (b >> 63) ? ~b : b | (uint64_t(1) << 63);
}
__device__ __forceinline__ uint32_t order_key(int32_t v) { return uint32_t(v) ^ 0x80000000u; }
__device__ __forceinline__ uint64_t order_key(int64_t v) { return uint64_t(v) ^ (uint64_t(1) << 63); }
__device__ __forceinline__ uint32_t order_key(__nv_bfloat16 v) { return order_key(to_compute(v)); }
__device__ __forceinline__ uint32_t order_key(__half v) { return order_key(to_compute(v)); }

// ---- small device helpers ---------------------------------------------------------------
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- searches ---------------------------------------------------------------------------

// Number of elements of the sorted a[0, n) below x.
template <typename P>
__device__ __forceinline__ int64_t count_below(const P* a, int64_t n, const P& x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (a[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// ---- block bitonic sort -----------------------------------------------------------------

// Lanes of one shared-memory phase for packs of P: a phase reads 128 bytes (32 banks of
// 4), so 8 lanes for 16-byte packs, 16 for 8-byte ones.
template <typename P>
inline constexpr int kPhaseLanes = int(128 / sizeof(P));

// Sorts s[0, n) ascending (n a power of two) with the `count` threads numbered `tid`;
// every thread of the block calls it (its barriers are block-wide), and s must be
// complete (a barrier) before the call. Ends with a barrier.
// Pair i compares s[a] and s[a + j]. For j >= kPhaseLanes the a of a phase's lanes
// (consecutive i) are consecutive: no bank conflict. Below it, a has a zero bit at
// log2(j) and the phase's top lane bit moved above the phase's packs: the lanes hit every
// other bank group twice (2-way). Lanes with that bit set access their pair in the other
// order (s[a + j] first), which fills the zero bit: both accesses conflict-free. The
// values compared and stored are the same; only the order of the two accesses differs.
template <typename P>
__device__ void bitonic_sort(P* s, int n, int tid, int count) {
  for (int k = 2; k <= n; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < (n >> 1); i += count) {
        const int a = 2 * i - (i & (j - 1)), b = a + j;  // the i-th pair at distance j
        const bool up = (a & k) == 0;
        const bool flip = j < kPhaseLanes<P> && (i & (kPhaseLanes<P> / 2)) != 0;
        const int first = flip ? b : a, second = flip ? a : b;
        const P f = pack_load(s + first), g = pack_load(s + second);
        const P x = flip ? g : f, y = flip ? f : g;
        // Every lane stores its pair, swapped or not: the same wavefronts as the swapping
        // lanes alone (a phase with one of them costs the full pass), and no divergence.
        const bool swap = (y < x) == up;
        const P lo = swap ? y : x, hi = swap ? x : y;  // the new s[a], s[b]
        pack_store(s + first, flip ? hi : lo);
        pack_store(s + second, flip ? lo : hi);
      }
      __syncthreads();
    }
  }
}

// ---- validation ---------------------------------------------------------------------------

// flag = the smallest flat (row-major) position i of the index tensor whose value is
// outside [0, bound). Index elements at offsets from L; 1-d grid, grid-stride.
template <typename I>
__global__ void validate_index_kernel(const I* __restrict__ ix, StridedLayout<1> L, int64_t n, int64_t bound,
                                      unsigned long long* flag) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    int64_t off[1];
    L.offsets(i, off);
    const int64_t v = int64_t(ix[off[0]]);
    if (v < 0 || v >= bound) atomicMin(flag, (unsigned long long)i);
  }
}

// A one-word device flag (RAII through a tensor), set to kNoError on creation.
class DeviceFlag {
 public:
  explicit DeviceFlag(Device d)
      : buf_(Tensor::empty({1}, {DType::i64, d})), device_(d.index) {
    hmoe::cuda::memset_async(ptr(), 0xFF, sizeof(unsigned long long), hmoe::cuda::current_stream(device_));
  }
  unsigned long long* ptr() const { return static_cast<unsigned long long*>(buf_.data_ptr<void>()); }
  // Waits for the stream and returns the flag's value.
  unsigned long long read() const {
    unsigned long long h = 0;
    const auto& s = hmoe::cuda::current_stream(device_);
    hmoe::cuda::memcpy_async(&h, ptr(), sizeof h, hmoe::cuda::CopyKind::device_to_host, s);
    s.synchronize();
    return h;
  }

 private:
  Tensor buf_;
  int device_;
};

// The value of index element at flat (row-major) position pos, copied from the device.
inline int64_t read_index_at(const Tensor& index, int64_t pos) {
  int64_t off = 0;
  for (int64_t d = index.dim() - 1; d >= 0; --d) {
    off += (pos % index.size(d)) * index.stride(d);
    pos /= index.size(d);
  }
  const int device = index.device().index;
  const auto& s = hmoe::cuda::current_stream(device);
  const char* p = static_cast<const char*>(index.data_ptr<void>()) + off * int64_t(index.element_size());
  int64_t v = 0;
  if (index.dtype() == DType::i32) {
    int32_t w = 0;
    hmoe::cuda::memcpy_async(&w, p, sizeof w, hmoe::cuda::CopyKind::device_to_host, s);
    s.synchronize();
    v = w;
  } else {
    hmoe::cuda::memcpy_async(&v, p, sizeof v, hmoe::cuda::CopyKind::device_to_host, s);
    s.synchronize();
  }
  return v;
}

// Grid for a flat loop of n items with `threads` per block: enough blocks to fill the
// device several times over, no more (threads loop).
inline unsigned grid_for(int64_t n, int device, int threads = 256) { return flat_blocks(n, device, threads); }

// The first element of the i32/i64 index tensor (any strides, any rank) outside [0,
// bound), as (flat row-major position, value); nothing when all are in range. Waits for
// the stream (one small read-back); runs before anything is written, as on the CPU.
inline std::optional<std::pair<int64_t, int64_t>> first_bad_index(const Tensor& index, int64_t bound) {
  const int64_t n = index.numel();
  if (n == 0) return std::nullopt;
  const int device = index.device().index;
  DeviceFlag flag(index.device());
  const StridedLayout<1> L = make_layout<1>(index.shape(), {&index.strides()});
  const auto& stream = hmoe::cuda::current_stream(device);
  hmoe::detail::dispatch_index(index.dtype(), "index", [&]<typename I>() {
    auto k = &validate_index_kernel<I>;
    HMOE_LAUNCH_CHECKED(k, grid_for(n, device), 256, 0, stream.native(),
                        static_cast<const I*>(index.data_ptr<void>()), L, n, bound, flag.ptr());
  });
  const unsigned long long f = flag.read();
  if (f == kNoError) return std::nullopt;
  return std::make_pair(int64_t(f), read_index_at(index, int64_t(f)));
}

// ---- segmented sort of packs in global memory ---------------------------------------------

// Largest shared-memory tile of packs one block sorts: 32 KiB.
template <typename P>
inline constexpr int kMaxTile = int(32768 / sizeof(P));

// Sorts each tile (tile packs, a power of two; the last of a segment may be partial)
// of every segment of seg_len packs: in -> out. One block per tile (grid-stride),
// blockDim.x <= kTileSortThreads threads, tile * sizeof(P) bytes of dynamic shared memory.
// At most 32 registers a thread (4 blocks of 512 an SM, what 32 KiB tiles allow on sm_80):
// unbounded, nvcc gave the 16-byte packs' sort 38 on sm_90, 75% occupancy there.
inline constexpr int kTileSortThreads = 512;
template <typename P>
__global__ void __launch_bounds__(kTileSortThreads, 4)
    tile_sort_kernel(const P* __restrict__ in, P* __restrict__ out, int64_t seg_len, int64_t tiles_per_seg,
                     int64_t ntiles, int tile) {
  HMOE_DYNAMIC_SHARED(P, s);
  for (int64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {  // uniform over the block
    const int64_t seg = t / tiles_per_seg, first = (t - seg * tiles_per_seg) * tile;
    const int64_t base = seg * seg_len + first, cnt = imin(tile, seg_len - first);
    for (int i = threadIdx.x; i < tile; i += blockDim.x)
      pack_store(s + i, i < cnt ? pack_load(in + base + i) : pack_max<P>());
    __syncthreads();
    bitonic_sort(s, tile, int(threadIdx.x), int(blockDim.x));
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) pack_store(out + base + i, pack_load(s + i));
    __syncthreads();  // s is refilled next round
  }
}

// One merge pass: within each segment, sorted runs [a, a + w) and [a + w, a + 2w)
// become one sorted run. An element's place is its place in its own run plus the
// number of partner-run elements below it (packs are distinct). 1-d grid, grid-stride.
template <typename P>
__global__ void merge_pass_kernel(const P* __restrict__ in, P* __restrict__ out, int64_t seg_len, int64_t total,
                                  int64_t w) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t seg = i / seg_len, off = i - seg * seg_len, base = seg * seg_len;
    const int64_t a0 = off / (2 * w) * (2 * w);
    const int64_t b0 = imin(a0 + w, seg_len), b1 = imin(a0 + 2 * w, seg_len);
    const P x = in[i];
    int64_t pos;
    if (off < b0)
      pos = (off - a0) + count_below(in + base + b0, b1 - b0, x);
    else
      pos = (off - b0) + count_below(in + base + a0, b0 - a0, x);
    out[base + a0 + pos] = x;
  }
}

// Sorts nseg segments of seg_len packs each, ascending, between the two buffers a
// (holding the input) and b (scratch) of nseg * seg_len packs; returns the buffer with
// the result. Launches only: the caller's stream orders the work.
template <typename P>
P* sort_segments(P* a, P* b, int64_t nseg, int64_t seg_len, int device) {
  const int64_t total = nseg * seg_len;
  if (total == 0) return a;
  const auto& stream = hmoe::cuda::current_stream(device);
  const int tile = int(pow2_ceil(std::min<int64_t>(seg_len, kMaxTile<P>)));
  const int64_t tiles_per_seg = (seg_len + tile - 1) / tile, ntiles = nseg * tiles_per_seg;
  const int threads = std::clamp(tile / 2, 32, kTileSortThreads);
  const unsigned blocks = unsigned(std::min<int64_t>(ntiles, int64_t(hmoe::cuda::properties(device).multiprocessors) * 32));
  auto ks = &tile_sort_kernel<P>;
  HMOE_LAUNCH_CHECKED(ks, blocks, threads, size_t(tile) * sizeof(P), stream.native(), a, b, seg_len, tiles_per_seg,
                      ntiles, tile);
  P* src = b;
  P* dst = a;
  for (int64_t w = tile; w < seg_len; w *= 2) {
    auto km = &merge_pass_kernel<P>;
    HMOE_LAUNCH_CHECKED(km, grid_for(total, device), 256, 0, stream.native(), src, dst, seg_len, total, w);
    std::swap(src, dst);
  }
  return src;
}

// Scratch device memory for n packs of type P, owned by a tensor.
template <typename P>
Tensor pack_buffer(int64_t n, Device d) {
  return Tensor::empty({std::max<int64_t>(1, n * int64_t(sizeof(P) / sizeof(int64_t)))}, {DType::i64, d});
}
template <typename P>
P* pack_ptr(const Tensor& buf) {
  return static_cast<P*>(buf.data_ptr<void>());
}

}  // namespace hmoe::ops::cuda::ixs
