// CPU kernels of the index family: index_select / index_add (row copies; the add groups
// rows by destination so repeated indices sum in a fixed order), gather / scatter_add
// over any strides, and one_hot. Indices are validated before anything is written.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/cpu/loops.h"
#include "ops/index_kernels.h"

namespace hmoe::ops::cpu {
namespace {

// Checks n contiguous indices against [0, bound); reports the first offender.
template <typename I>
void check_ids(const I* ix, int64_t n, int64_t bound, const char* op, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = int64_t(ix[i]);
    HMOE_CHECK(v >= 0 && v < bound, op, ": ", what, " ", v, " at position ", i, " is out of range [0, ", bound, ")");
  }
}

// Checks every element of an index tensor (any strides) against [0, bound), in
// row-major order so the reported offender does not depend on the thread count.
void check_index_tensor(const Tensor& index, int64_t bound, const char* op, const Tensor& like, int64_t dim) {
  detail::dispatch_index(index.dtype(), op, [&]<typename I>() {
    make_loop(index.shape(), index)
        .run(
            [&](const std::array<char*, 1>& p, const std::array<int64_t, 1>& s, int64_t n) {
              for (int64_t i = 0; i < n; ++i) {
                const int64_t v = int64_t(*reinterpret_cast<const I*>(p[0] + i * s[0]));
                HMOE_CHECK(v >= 0 && v < bound, op, ": index ", v, " is out of range [0, ", bound, ") for dim ", dim,
                           " of ", like.meta_str());
              }
            },
            std::numeric_limits<int64_t>::max());  // one chunk: sequential, in order
  });
}

void index_select_cpu(const Tensor& t, const Tensor& idx, const Tensor& out, int64_t outer, int64_t src_n,
                      int64_t inner, const char* op) {
  const int64_t n = idx.numel();
  const size_t row = size_t(inner) * t.element_size();
  const char* src = static_cast<const char*>(t.data_ptr<void>());
  char* dst = static_cast<char*>(out.data_ptr<void>());
  detail::dispatch_index(idx.dtype(), op, [&]<typename I>() {
    const I* ix = idx.data_ptr<I>();
    check_ids(ix, n, src_n, op, "index");
    if (row == 0 || outer == 0) return;
    parallel_for(outer * n, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t o = r / n, i = r % n;
        std::memcpy(dst + size_t(r) * row, src + size_t(o * src_n + int64_t(ix[i])) * row, row);
      }
    });
  });
}

// Columns per index_add task: long rows are split so that one heavily repeated index
// still spreads over threads; each column still sums its rows in one fixed order.
constexpr int64_t kAddBlock = 512;

void index_add_cpu(const Tensor& dst, const Tensor& idx, const Tensor& src, int64_t outer, int64_t dst_n,
                   int64_t inner, const char* op) {
  const int64_t n = idx.numel();
  detail::dispatch_index(idx.dtype(), op, [&]<typename I>() {
    const I* ix = idx.data_ptr<I>();
    check_ids(ix, n, dst_n, op, "index");
    if (n == 0 || outer == 0 || inner == 0) return;
    // Counting sort of the positions by destination row (stable: increasing j).
    std::vector<int64_t> start(static_cast<size_t>(dst_n) + 1, 0), order(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) ++start[size_t(ix[j]) + 1];
    for (int64_t r = 0; r < dst_n; ++r) start[size_t(r) + 1] += start[size_t(r)];
    {
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t j = 0; j < n; ++j) order[size_t(fill[size_t(ix[j])]++)] = j;
    }
    std::vector<int64_t> rows;  // destination rows that receive anything
    for (int64_t r = 0; r < dst_n; ++r)
      if (start[size_t(r) + 1] > start[size_t(r)]) rows.push_back(r);
    const int64_t R = int64_t(rows.size());
    const int64_t nblk = (inner + kAddBlock - 1) / kAddBlock;
    const int64_t work = std::max<int64_t>(1, (n / R) * std::min(inner, kAddBlock));
    detail::dispatch_numeric(dst.dtype(), op, [&]<typename T>() {
      using C = compute_t<T>;
      T* d = dst.data_ptr<T>();
      const T* s = src.data_ptr<T>();
      parallel_for(outer * R * nblk, std::max<int64_t>(1, kGrain / work), [&](int64_t b, int64_t e) {
        std::vector<C> acc;
        for (int64_t task = b; task < e; ++task) {
          const int64_t blk = task % nblk, r = (task / nblk) % R, o = task / (nblk * R);
          const int64_t c0 = blk * kAddBlock, c1 = std::min(inner, c0 + kAddBlock);
          T* drow = d + (o * dst_n + rows[size_t(r)]) * inner;
          const int64_t q0 = start[size_t(rows[size_t(r)])], q1 = start[size_t(rows[size_t(r)]) + 1];
          if constexpr (std::is_same_v<C, T>) {
            for (int64_t q = q0; q < q1; ++q) {
              const T* srow = s + (o * n + order[size_t(q)]) * inner;
              for (int64_t c = c0; c < c1; ++c) drow[c] += srow[c];
            }
          } else {  // half types: sum in float, round once
            acc.assign(drow + c0, drow + c1);
            for (int64_t q = q0; q < q1; ++q) {
              const T* srow = s + (o * n + order[size_t(q)]) * inner;
              for (int64_t c = c0; c < c1; ++c) acc[size_t(c - c0)] += C(srow[c]);
            }
            for (int64_t c = c0; c < c1; ++c) drow[c] = T(acc[size_t(c - c0)]);
          }
        }
      });
    });
  });
}

// Lines of index along dim, and the grain that gives each task about kGrain elements.
struct LinePlan {
  int64_t lines, grain;
};
LinePlan line_plan(const Tensor& index, int64_t dim) {
  const int64_t len = index.size(dim);
  const int64_t lines = len == 0 ? 0 : index.numel() / len;
  return {lines, std::max<int64_t>(1, kGrain / std::max<int64_t>(len, 1))};
}

void gather_cpu(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& out) {
  check_index_tensor(index, t.size(dim), "gather", t, dim);
  if (index.numel() == 0) return;
  const LinePlan plan = line_plan(index, dim);
  const int64_t len = index.size(dim);
  const std::array<Shape, 3> st{t.strides(), index.strides(), out.strides()};
  const int64_t ts = t.stride(dim), is = index.stride(dim), os = out.stride(dim);
  detail::dispatch_index(index.dtype(), "gather", [&]<typename I>() {
    const I* ix = index.data_ptr<I>();
    detail::dispatch_all(t.dtype(), "gather", [&]<typename T>() {
      const T* src = t.data_ptr<T>();
      T* dst = out.data_ptr<T>();
      parallel_for(plan.lines, plan.grain, [&](int64_t b, int64_t e) {
        walk_lines<3>(index.shape(), dim, st, b, e, [&](const std::array<int64_t, 3>& off) {
          for (int64_t j = 0; j < len; ++j)
            dst[off[2] + j * os] = src[off[0] + int64_t(ix[off[1] + j * is]) * ts];
        });
      });
    });
  });
}

// Lines of index map to distinct destination lines of dst, so tasks never share a
// destination and each destination sums in increasing position along dim.
void scatter_add_cpu(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  check_index_tensor(index, dst.size(dim), "scatter_add", dst, dim);
  if (index.numel() == 0) return;
  const LinePlan plan = line_plan(index, dim);
  const int64_t len = index.size(dim);
  const std::array<Shape, 3> st{dst.strides(), index.strides(), src.strides()};
  const int64_t ds = dst.stride(dim), is = index.stride(dim), ss = src.stride(dim);
  detail::dispatch_index(index.dtype(), "scatter_add", [&]<typename I>() {
    const I* ix = index.data_ptr<I>();
    detail::dispatch_numeric(dst.dtype(), "scatter_add", [&]<typename T>() {
      T* d = dst.data_ptr<T>();
      const T* s = src.data_ptr<T>();
      parallel_for(plan.lines, plan.grain, [&](int64_t b, int64_t e) {
        walk_lines<3>(index.shape(), dim, st, b, e, [&](const std::array<int64_t, 3>& off) {
          for (int64_t j = 0; j < len; ++j) {
            T& acc = d[off[0] + int64_t(ix[off[1] + j * is]) * ds];
            acc = T(compute_t<T>(acc) + compute_t<T>(s[off[2] + j * ss]));
          }
        });
      });
    });
  });
}

void one_hot_cpu(const Tensor& ids, const Tensor& out, int64_t num_classes) {
  const int64_t n = ids.numel();
  detail::dispatch_index(ids.dtype(), "one_hot", [&]<typename I>() {
    const I* ix = ids.data_ptr<I>();
    check_ids(ix, n, num_classes, "one_hot", "id");
    detail::dispatch_all(out.dtype(), "one_hot", [&]<typename T>() {
      T* o = out.data_ptr<T>();
      parallel_for(n, std::max<int64_t>(1, kGrain / num_classes), [&](int64_t b, int64_t e) {
        std::fill(o + b * num_classes, o + e * num_classes, T(0));
        for (int64_t i = b; i < e; ++i) o[i * num_classes + int64_t(ix[i])] = T(1);
      });
    });
  });
}

}  // namespace

void register_index_cpu() {
  index_select_stub.set(DeviceType::cpu, &index_select_cpu);
  index_add_stub.set(DeviceType::cpu, &index_add_cpu);
  gather_stub.set(DeviceType::cpu, &gather_cpu);
  scatter_add_stub.set(DeviceType::cpu, &scatter_add_cpu);
  one_hot_stub.set(DeviceType::cpu, &one_hot_cpu);
}

}  // namespace hmoe::ops::cpu
