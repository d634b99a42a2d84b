// Strided N-operand element indexing for CUDA kernels (copy, fill): the host coalesces
// a shape and its operands' strides (drops size-1 dims, merges dims contiguous for all
// operands) into a StridedLayout passed by value; a kernel maps a linear element index
// to per-operand element offsets. Also grid sizing for flat loops. (Element types and
// their conversions: ops/cuda/kernel_utils.cuh.)
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "engine/cuda/device_code.h"
#include "engine/cuda/runtime.h"
#include "engine/shape.h"
#include "ops/cuda/kernel_utils.cuh"

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

}  // namespace hmoe::ops::cuda
