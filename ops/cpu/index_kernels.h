// CPU-only helpers shared by the CPU kernels of the index and sort families
// (ops/cpu/index.cpp, ops/cpu/sort.cpp); the kernel interfaces themselves are in
// ops/index_kernels.h.
#pragma once

#include <array>
#include <cstdint>

#include "engine/tensor.h"
#include "ops/index_kernels.h"

namespace hmoe {
namespace ops::cpu {

// Calls fn(off) for the lines [b, e) of `shape` along dim (row-major over the other
// dims); off[k] is operand k's element offset at the start of the line, from
// strides[k]. The CPU kernels of both families walk their operands this way.
template <size_t N, typename Fn>
void walk_lines(const Shape& shape, int64_t dim, const std::array<Shape, N>& strides, int64_t b, int64_t e, Fn&& fn) {
  const int64_t rank = int64_t(shape.size());
  std::array<int64_t, kMaxRank> at{};
  int64_t rem = b;
  for (int64_t d = rank - 1; d >= 0; --d) {
    if (d == dim) continue;
    at[size_t(d)] = rem % shape[size_t(d)];
    rem /= shape[size_t(d)];
  }
  for (int64_t l = b; l < e; ++l) {
    std::array<int64_t, N> off{};
    for (int64_t d = 0; d < rank; ++d)
      for (size_t k = 0; k < N; ++k) off[k] += at[size_t(d)] * strides[k][size_t(d)];
    fn(off);
    for (int64_t d = rank - 1; d >= 0; --d) {
      if (d == dim) continue;
      if (++at[size_t(d)] < shape[size_t(d)]) break;
      at[size_t(d)] = 0;
    }
  }
}
}  // namespace ops::cpu

}  // namespace hmoe
