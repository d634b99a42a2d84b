// CPU loop machinery shared by the kernels: a strided N-operand iterator that
// coalesces dims and runs contiguous inner loops in parallel, the fixed-chunk scheme
// for deterministic reductions, and a walk over the lines of a shape along one dim.
#pragma once

#include <array>
#include <cstdint>

#include "engine/tensor.h"
#include "engine/thread_pool.h"

namespace hmoe::ops::cpu {

// Work per parallel task, in elements: below this a loop runs on one thread.
inline constexpr int64_t kGrain = 32768;

// Iterates N operands of the same (broadcast) shape. strides[k] are in elements;
// fn(ptrs, inner_strides, n) is called for runs of the innermost (coalesced) dim,
// with ptrs[k] pointing at each operand's first element of the run.
template <size_t N>
class StridedLoop {
 public:
  StridedLoop(const Shape& shape, const std::array<Shape, N>& strides, const std::array<char*, N>& base,
              const std::array<int64_t, N>& elem_size)
      : base_(base) {
    // Drop size-1 dims, then merge dims that are contiguous for every operand.
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] == 1) continue;
      const bool merge = !shape_.empty() && [&] {
        for (size_t k = 0; k < N; ++k)
          if (strides_[k].back() != strides[k][d] * shape[d]) return false;
        return true;
      }();
      if (merge) {
        shape_.back() *= shape[d];
        for (size_t k = 0; k < N; ++k) strides_[k].back() = strides[k][d];
      } else {
        shape_.push_back(shape[d]);
        for (size_t k = 0; k < N; ++k) strides_[k].push_back(strides[k][d]);
      }
    }
    for (size_t k = 0; k < N; ++k)
      for (auto& s : strides_[k]) s *= elem_size[k];  // to bytes
    numel_ = shape_numel(shape);
  }

  template <typename Fn>
  void run(Fn&& fn, int64_t grain = kGrain) const {
    if (numel_ == 0) return;
    if (shape_.empty()) {  // a single element
      std::array<int64_t, N> is{};
      fn(base_, is, int64_t(1));
      return;
    }
    const int64_t inner = shape_.back();
    const int64_t outer = numel_ / inner;
    std::array<int64_t, N> inner_stride;
    for (size_t k = 0; k < N; ++k) inner_stride[k] = strides_[k].back();
    // Long runs (a contiguous tensor is one run) are cut into pieces of about `grain`
    // elements, so that the pool has work even when there are few runs.
    const int64_t want = std::max<int64_t>(1, inner / std::max<int64_t>(grain, 1));
    const int64_t piece_len = (inner + want - 1) / want;
    const int64_t pieces = (inner + piece_len - 1) / piece_len;  // every piece non-empty
    const int64_t rank = int64_t(shape_.size());
    const int64_t tasks = outer * pieces;
    const int64_t task_grain = pieces > 1 ? 1 : std::max<int64_t>(1, grain / std::max<int64_t>(inner, 1));
    parallel_for(tasks, task_grain, [&](int64_t b, int64_t e) {
      // Unravel the first run's index over the outer dims, then count up.
      std::array<int64_t, kMaxRank> idx{};
      int64_t rem = b / pieces;
      for (int64_t d = rank - 2; d >= 0; --d) {
        idx[size_t(d)] = rem % shape_[size_t(d)];
        rem /= shape_[size_t(d)];
      }
      for (int64_t t = b; t < e; ++t) {
        const int64_t piece = t % pieces;
        std::array<char*, N> p = base_;
        for (int64_t d = 0; d < rank - 1; ++d)
          for (size_t k = 0; k < N; ++k) p[k] += idx[size_t(d)] * strides_[k][size_t(d)];
        const int64_t start = piece * piece_len;
        for (size_t k = 0; k < N; ++k) p[k] += start * inner_stride[k];
        fn(p, inner_stride, std::min(piece_len, inner - start));
        if (piece + 1 < pieces) continue;
        for (int64_t d = rank - 2; d >= 0; --d) {
          if (++idx[size_t(d)] < shape_[size_t(d)]) break;
          idx[size_t(d)] = 0;
        }
      }
    });
  }

 private:
  Shape shape_;
  std::array<Shape, N> strides_;
  std::array<char*, N> base_;
  int64_t numel_ = 0;
};

// Builds a StridedLoop over tensors that all have `shape` (already expanded).
template <typename... Ts>
StridedLoop<sizeof...(Ts)> make_loop(const Shape& shape, const Ts&... ts) {
  return StridedLoop<sizeof...(Ts)>(shape, {ts.strides()...}, {static_cast<char*>(ts.template data_ptr<void>())...},
                                    {int64_t(ts.element_size())...});
}

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

}  // namespace hmoe::ops::cpu
