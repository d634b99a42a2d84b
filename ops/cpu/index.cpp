// CPU kernels for index_select / index_add (row copies; the add runs in index order,
// so repeated indices sum deterministically) and gather / scatter_add.
#include <cstring>

#include "ops/cpu/loops.h"
#include "ops/dispatch.h"

namespace hmoe {
using IndexSelectKernel = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t);
using IndexAddKernel = void (*)(const Tensor&, const Tensor&, const Tensor&, int64_t, int64_t, int64_t);
using GatherKernel = void (*)(const Tensor&, int64_t, const Tensor&, const Tensor&);
using ScatterAddKernel = void (*)(const Tensor&, int64_t, const Tensor&, const Tensor&);
HMOE_DECLARE_STUB(IndexSelectKernel, index_select_stub);
HMOE_DECLARE_STUB(IndexAddKernel, index_add_stub);
HMOE_DECLARE_STUB(GatherKernel, gather_stub);
HMOE_DECLARE_STUB(ScatterAddKernel, scatter_add_stub);
}  // namespace hmoe

namespace hmoe::ops::cpu {
namespace {

// Reads index i as i64, checking it against the bound.
template <typename I>
int64_t checked(const I* idx, int64_t i, int64_t bound, const char* op) {
  const int64_t v = int64_t(idx[i]);
  HMOE_CHECK(v >= 0 && v < bound, op, ": index ", v, " is out of range [0, ", bound, ")");
  return v;
}

void index_select_cpu(const Tensor& t, const Tensor& idx, const Tensor& out, int64_t outer, int64_t n, int64_t inner) {
  const int64_t src_n = t.numel() / std::max<int64_t>(outer * inner, 1);
  const size_t row = size_t(inner) * t.element_size();
  const char* src = static_cast<const char*>(t.data_ptr<void>());
  char* dst = static_cast<char*>(out.data_ptr<void>());
  detail::dispatch_index(idx.dtype(), "index_select", [&]<typename I>() {
    const I* ix = idx.data_ptr<I>();
    for (int64_t i = 0; i < n; ++i) checked(ix, i, src_n, "index_select");
    parallel_for(outer * n, std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const int64_t o = r / n, i = r % n;
        std::memcpy(dst + size_t(r) * row, src + size_t(o * src_n + int64_t(ix[i])) * row, row);
      }
    });
  });
}

void index_add_cpu(const Tensor& dst, const Tensor& idx, const Tensor& src, int64_t outer, int64_t n, int64_t inner) {
  const int64_t dst_n = dst.numel() / std::max<int64_t>(outer * inner, 1);
  detail::dispatch_index(idx.dtype(), "index_add", [&]<typename I>() {
    const I* ix = idx.data_ptr<I>();
    for (int64_t i = 0; i < n; ++i) checked(ix, i, dst_n, "index_add");
    detail::dispatch_float(dst.dtype(), "index_add", [&]<typename T>() {
      T* d = dst.data_ptr<T>();
      const T* s = src.data_ptr<T>();
      // Parallel over columns: each column accumulates its rows in index order.
      parallel_for(outer * inner, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)), [&](int64_t b, int64_t e) {
        for (int64_t oi = b; oi < e; ++oi) {
          const int64_t o = oi / inner, c = oi % inner;
          for (int64_t i = 0; i < n; ++i) {
            T& acc = d[(o * dst_n + int64_t(ix[i])) * inner + c];
            acc = T(compute_t<T>(acc) + compute_t<T>(s[(o * n + i) * inner + c]));
          }
        }
      });
    });
  });
}

// Offsets of every element of `shape` in a contiguous tensor of `full`, in row-major order.
template <typename Fn>
void for_each_element(const Shape& shape, Fn&& fn) {
  const int64_t n = shape_numel(shape);
  std::vector<int64_t> idx(shape.size(), 0);
  for (int64_t e = 0; e < n; ++e) {
    fn(idx);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

template <bool Scatter>
void gather_scatter(const Tensor& big, int64_t dim, const Tensor& index, const Tensor& small) {
  const Shape bs = contiguous_strides(big.shape()), ss = contiguous_strides(small.shape());
  const Shape is = contiguous_strides(index.shape());
  detail::dispatch_index(index.dtype(), Scatter ? "scatter_add" : "gather", [&]<typename I>() {
    const I* ix = index.data_ptr<I>();
    detail::dispatch_numeric(big.dtype(), Scatter ? "scatter_add" : "gather", [&]<typename T>() {
      T* b = big.data_ptr<T>();
      T* s = small.data_ptr<T>();
      for_each_element(index.shape(), [&](const std::vector<int64_t>& at) {
        int64_t io = 0, bo = 0, so = 0;
        for (size_t d = 0; d < at.size(); ++d) {
          io += at[d] * is[d];
          so += at[d] * ss[d];
          if (int64_t(d) != dim) bo += at[d] * bs[d];
        }
        bo += checked(ix, io, big.size(dim), Scatter ? "scatter_add" : "gather") * bs[size_t(dim)];
        if constexpr (Scatter) b[bo] = T(compute_t<T>(b[bo]) + compute_t<T>(s[so]));
        else s[so] = b[bo];
      });
    });
  });
}

void gather_cpu(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& out) {
  gather_scatter<false>(t, dim, index, out);
}
void scatter_add_cpu(const Tensor& dst, int64_t dim, const Tensor& index, const Tensor& src) {
  gather_scatter<true>(dst, dim, index, src);
}

}  // namespace

void register_index_cpu() {
  index_select_stub.set(DeviceType::cpu, &index_select_cpu);
  index_add_stub.set(DeviceType::cpu, &index_add_cpu);
  gather_stub.set(DeviceType::cpu, &gather_cpu);
  scatter_add_stub.set(DeviceType::cpu, &scatter_add_cpu);
}

}  // namespace hmoe::ops::cpu
