// Strided N-operand element indexing for CUDA kernels (copy, fill): the host coalesces
// a shape and its operands' strides (drops size-1 dims, merges dims contiguous for all
// operands) into a StridedLayout passed by value; a kernel maps a linear element index
// to per-operand element offsets. Also the exact dtype conversions the copy kernel
// shares with the CPU backend (ops/cpu/copy.cpp), and grid sizing for flat loops.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/device_code.h"
#include "engine/cuda/runtime.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace hmoe::ops::cuda {

inline constexpr int kMaxDims = 8;  // engine/shape.h kMaxRank

template <int N>
struct StridedLayout {
  int rank = 0;  // after coalescing; 0 = a single element
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};  // in elements

  // Element offsets of linear index i (row-major over sizes) for each operand. The
  // loop is unrolled over kMaxDims with static indices, so nothing goes to local
  // memory; dims beyond rank are skipped. 32-bit division when both fit.
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = kMaxDims - 1; d >= 0; --d) {
      if (d < rank) {
        const int64_t s = sizes[d];
        int64_t q, r;
        if (((uint64_t(i) | uint64_t(s)) >> 32) == 0) {
          const uint32_t q32 = uint32_t(i) / uint32_t(s);
          q = q32;
          r = int64_t(uint32_t(i) - q32 * uint32_t(s));
        } else {
          q = i / s;
          r = i - q * s;
        }
#pragma unroll
        for (int k = 0; k < N; ++k) off[k] += r * strides[k][d];
        i = q;
      }
    }
  }
};

// Coalesces `shape` with each operand's strides (in elements), like the CPU's StridedLoop.
template <int N>
StridedLayout<N> make_layout(const Shape& shape, const std::array<const Shape*, N>& strides) {
  StridedLayout<N> L;
  int r = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = r > 0;
    for (int k = 0; k < N && merge; ++k)
      merge = L.strides[k][r - 1] == (*strides[size_t(k)])[d] * shape[d];
    if (merge) {
      L.sizes[r - 1] *= shape[d];
      for (int k = 0; k < N; ++k) L.strides[k][r - 1] = (*strides[size_t(k)])[d];
    } else {
      L.sizes[r] = shape[d];
      for (int k = 0; k < N; ++k) L.strides[k][r] = (*strides[size_t(k)])[d];
      ++r;
    }
  }
  L.rank = r;
  return L;
}

// True when the coalesced layout is one dense run for every operand.
template <int N>
bool is_dense(const StridedLayout<N>& L) {
  if (L.rank == 0) return true;
  if (L.rank > 1) return false;
  for (int k = 0; k < N; ++k)
    if (L.strides[k][0] != 1) return false;
  return true;
}

// Blocks for a grid-stride loop over n elements with `threads` per block: enough to
// fill the device a few times over, no more (each thread then loops).
inline unsigned flat_blocks(int64_t n, int device, int threads = 256) {
  const int64_t want = (n + threads - 1) / threads;
  const int64_t cap = int64_t(hmoe::cuda::properties(device).multiprocessors) * 16;
  return unsigned(std::max<int64_t>(1, std::min(want, cap)));
}

// --- exact conversions, as the CPU does them: D(compute_t<D>(compute_t<S>(x))) ----------
// Half types compute in float; the roundings to bf16/f16 are round-to-nearest-even and
// NaN keeps its sign with the quiet bit set, bit for bit like engine/half_bits.h.
template <typename T>
struct DeviceCompute {
  using type = T;
};
template <>
struct DeviceCompute<__nv_bfloat16> {
  using type = float;
};
template <>
struct DeviceCompute<__half> {
  using type = float;
};
template <typename T>
using device_compute_t = typename DeviceCompute<T>::type;

template <typename T>
__device__ __forceinline__ device_compute_t<T> to_compute(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __uint_as_float(uint32_t(__bfloat16_as_ushort(x)) << 16);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else
    return x;
}

template <typename T>
__device__ __forceinline__ T from_compute(device_compute_t<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (v != v) return __ushort_as_bfloat16((unsigned short)((__float_as_uint(v) >> 16) | 0x40u));
    return __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    if (v != v) return __ushort_as_half((unsigned short)(((__float_as_uint(v) >> 16) & 0x8000u) | 0x7e00u));
    return __float2half_rn(v);
  } else {
    return v;
  }
}

template <typename S, typename D>
__device__ __forceinline__ D convert(S x) {
  return from_compute<D>(static_cast<device_compute_t<D>>(to_compute<S>(x)));
}

// fn.template operator()<T>() with T the kernel-side storage type of dt (float, double,
// __nv_bfloat16, __half, int32_t, int64_t, bool).
template <typename Fn>
decltype(auto) dispatch_device_all(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::bf16: return fn.template operator()<__nv_bfloat16>();
    case DType::f16: return fn.template operator()<__half>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::b8: return fn.template operator()<bool>();
  }
  return fn.template operator()<float>();  // not reached: every dtype is listed
}

}  // namespace hmoe::ops::cuda
