// Shared device helpers for CUDA kernel sources: V-wide vector packs (16-byte loads and
// stores), alignment tests, NaN tests that also compile for integer types, and
// fixed-order warp / block reductions of any trivially copyable value. Dtype
// conversions (to_compute / from_compute) live in ops/cuda/strided.cuh.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/cuda/device_code.h"

namespace hmoe::ops::cuda {

// V consecutive elements moved as one access (16 bytes when V * sizeof(T) == 16).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// Elements of T in one 16-byte access.
template <typename T>
inline constexpr int kVec16 = int(16 / sizeof(T));

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& v) {
  *reinterpret_cast<Pack<T, V>*>(p) = v;
}

// Host and device: p is a multiple of `bytes` (a power of two).
__host__ __device__ __forceinline__ bool aligned_to(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// x != x for floating types, false for integers (no -Wfloat-equal style surprises).
template <typename C>
__device__ __forceinline__ bool is_nan(C x) {
  if constexpr (std::is_floating_point_v<C>)
    return x != x;
  else
    return false;
}

// __shfl_down_sync for any trivially copyable value: arithmetic types directly, small
// structs as 8-byte words (4-byte words when their size is not a multiple of 8).
template <typename T>
__device__ __forceinline__ T shfl_down_any(unsigned mask, T v, unsigned delta, int width = 32) {
  if constexpr (std::is_arithmetic_v<T>) {
    return __shfl_down_sync(mask, v, delta, width);
  } else {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) % 4 == 0, "shfl_down_any: needs 4-byte words");
    using W = std::conditional_t<sizeof(T) % 8 == 0, unsigned long long, unsigned>;
    constexpr int kWords = int(sizeof(T) / sizeof(W));
    W w[kWords];
    memcpy(w, &v, sizeof(T));
#pragma unroll
    for (int k = 0; k < kWords; ++k) w[k] = __shfl_down_sync(mask, w[k], delta, width);
    memcpy(&v, w, sizeof(T));
    return v;
  }
}

// Reduces v over each aligned segment of `width` lanes (a power of two, 1..32) of a warp
// as a fixed tree (lane l combines with lane l + width/2, then + width/4, ...);
// combine(a, b) always gets the lower lanes' value first. The result is valid in the
// segment's first lane only. Every lane of the warp must call it with the same width.
template <typename T, typename Combine>
__device__ __forceinline__ T warp_reduce_down(T v, Combine combine, int width = 32) {
  for (int o = width >> 1; o >= 1; o >>= 1) v = combine(v, shfl_down_any(0xffffffffu, v, unsigned(o), width));
  return v;
}

// Reduces v over a 1-d block (blockDim.x a multiple of 32, at most 1024) in a fixed
// order: each warp's tree, then warp 0 combines the warps' results in warp order
// (`identity` pads lanes past the last warp). The result is valid in thread 0 only.
// Every thread of the block must call it; it may be called repeatedly (it begins with
// a barrier, so an earlier call's readers are done with the staging array).
template <typename T, typename Combine>
__device__ T block_reduce_to_first(T v, Combine combine, T identity) {
  HMOE_SHARED(T, staged, [32]);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
  const int warps = int(blockDim.x) >> 5;
  v = warp_reduce_down(v, combine);
  __syncthreads();
  if (lane == 0) staged[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? staged[lane] : identity;
    v = warp_reduce_down(v, combine);
  }
  return v;
}

}  // namespace hmoe::ops::cuda
