// CPU kernels of the sort family: per-line topk/sort on packed (order key, index)
// integers (NaN largest, ties to the lower index), sequential cumsum, and bincount.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/cpu/loops.h"
#include "ops/index_kernels.h"

namespace hmoe::ops::cpu {
namespace {

// Order keys: an unsigned integer per value whose unsigned order is the value order,
// with -0.0 == 0.0 and every NaN above +inf (all NaNs equal).
template <typename T>
auto order_key(T v) {
  if constexpr (std::is_same_v<T, int32_t>) {
    return uint32_t(v) ^ 0x80000000u;
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return uint64_t(v) ^ (uint64_t(1) << 63);
  } else if constexpr (std::is_same_v<T, double>) {
    if (std::isnan(v)) return ~uint64_t(0);
    const uint64_t b = v == 0 ? 0 : std::bit_cast<uint64_t>(v);
    return (b >> 63) ? ~b : b | (uint64_t(1) << 63);
  } else {  // f32, and bf16/f16 through their exact f32 value
    const float f = float(v);
    if (std::isnan(f)) return ~uint32_t(0);
    const uint32_t b = f == 0 ? 0 : std::bit_cast<uint32_t>(f);
    return (b >> 31) ? ~b : b | 0x80000000u;
  }
}

// (key, index) packed in one unsigned integer: ordering the packs orders by key
// (flipped for descending) and then by the lower index, a strict total order, so every
// selection algorithm below yields the one same, stable answer.
__extension__ using u128 = unsigned __int128;

// The k smallest packs of buf[0, n) in ascending order, left in buf[0, k).
template <typename P>
void select_smallest(P* buf, int64_t n, int64_t k) {
  if (k >= n) {
    std::sort(buf, buf + n);
  } else if (k <= 16) {  // small k (MoE routing): one pass keeping a sorted top list
    std::sort(buf, buf + k);
    for (int64_t i = k; i < n; ++i) {
      const P c = buf[i];
      if (!(c < buf[k - 1])) continue;
      int64_t j = k - 1;
      for (; j > 0 && c < buf[j - 1]; --j) buf[j] = buf[j - 1];
      buf[j] = c;
    }
  } else {
    std::nth_element(buf, buf + (k - 1), buf + n);
    std::sort(buf, buf + k);
  }
}

template <typename T, typename P>
void sort_lines(const Tensor& t, int64_t dim, int64_t k, bool descending, const Tensor& values,
                const Tensor& indices) {
  const int64_t n = t.size(dim), lines = t.numel() / n;
  constexpr int kIdxBits = sizeof(P) * 8 / 2;  // low half: the index
  const P idx_mask = (P(1) << kIdxBits) - 1;
  const int64_t cost = n * std::max<int64_t>(1, int64_t(std::log2(double(n)) + 1));  // ~n log n per line
  const std::array<Shape, 2> st{t.strides(), values.strides()};
  const int64_t ts = t.stride(dim), vs = values.stride(dim);
  const T* src = t.data_ptr<T>();
  T* val = values.data_ptr<T>();
  int64_t* ind = indices.data_ptr<int64_t>();
  parallel_for(lines, std::max<int64_t>(1, kGrain / cost), [&](int64_t b, int64_t e) {
    std::vector<P> buf(static_cast<size_t>(n));
    walk_lines<2>(t.shape(), dim, st, b, e, [&](const std::array<int64_t, 2>& off) {
      for (int64_t j = 0; j < n; ++j) {
        const auto key = order_key(src[off[0] + j * ts]);
        buf[size_t(j)] = (P(descending ? decltype(key)(~key) : key) << kIdxBits) | P(j);
      }
      select_smallest(buf.data(), n, k);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = int64_t(buf[size_t(j)] & idx_mask);
        val[off[1] + j * vs] = src[off[0] + i * ts];  // the original element, bit for bit
        ind[off[1] + j * vs] = i;
      }
    });
  });
}

void sort_cpu(const Tensor& t, int64_t dim, int64_t k, bool descending, const Tensor& values, const Tensor& indices) {
  if (k == 0 || t.numel() == 0) return;
  const bool long_lines = t.size(dim) > int64_t(UINT32_MAX);
  detail::dispatch_numeric(t.dtype(), "sort", [&]<typename T>() {
    // 32-bit keys with 32-bit indices pack into 64 bits; otherwise 128.
    if constexpr (sizeof(decltype(order_key(T()))) == 4) {
      if (!long_lines) return sort_lines<T, uint64_t>(t, dim, k, descending, values, indices);
    }
    sort_lines<T, u128>(t, dim, k, descending, values, indices);
  });
}

// Columns per cumsum task when the scanned dim is not the innermost: the scan then
// streams whole rows, each column keeping its own running sum.
constexpr int64_t kScanBlock = 256;

void cumsum_cpu(const Tensor& t, int64_t dim, bool reverse, const Tensor& out) {
  const int64_t n = t.size(dim);
  if (t.numel() == 0) return;
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= t.size(d);
  for (int64_t d = dim + 1; d < t.dim(); ++d) inner *= t.size(d);
  const int64_t nblk = (inner + kScanBlock - 1) / kScanBlock;
  detail::dispatch_numeric(t.dtype(), "cumsum", [&]<typename T>() {
    // Floats accumulate in f64 (as PyTorch's CPU cumsum), integers in i64.
    using Acc = std::conditional_t<std::is_integral_v<T>, int64_t, double>;
    const T* x = t.data_ptr<T>();
    T* y = out.data_ptr<T>();
    if (inner == 1) {  // scanning the innermost dim: one running sum per line
      parallel_for(outer, std::max<int64_t>(1, kGrain / n), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          Acc a = 0;
          for (int64_t s = 0; s < n; ++s) {
            const int64_t j = o * n + (reverse ? n - 1 - s : s);
            a += Acc(compute_t<T>(x[j]));
            y[j] = T(compute_t<T>(a));
          }
        }
      });
      return;
    }
    const int64_t work = n * std::min(inner, kScanBlock);
    parallel_for(outer * nblk, std::max<int64_t>(1, kGrain / work), [&](int64_t b, int64_t e) {
      std::vector<Acc> acc(static_cast<size_t>(std::min(inner, kScanBlock)));
      for (int64_t task = b; task < e; ++task) {
        const int64_t o = task / nblk, c0 = (task % nblk) * kScanBlock, c1 = std::min(inner, c0 + kScanBlock);
        std::fill(acc.begin(), acc.end(), Acc(0));
        for (int64_t s = 0; s < n; ++s) {
          const int64_t j = reverse ? n - 1 - s : s;
          const T* xr = x + (o * n + j) * inner;
          T* yr = y + (o * n + j) * inner;
          for (int64_t c = c0; c < c1; ++c) {
            Acc& a = acc[size_t(c - c0)];
            a += Acc(compute_t<T>(xr[c]));
            yr[c] = T(compute_t<T>(a));
          }
        }
      }
    });
  });
}

// Sequential: the bins are data-dependent and the pass is cheap next to its users.
void bincount_cpu(const Tensor& ids, const Tensor& weights, const Tensor& out) {
  const int64_t n = ids.numel(), len = out.numel();
  detail::dispatch_index(ids.dtype(), "bincount", [&]<typename I>() {
    const I* ix = ids.data_ptr<I>();
    const int64_t is = n > 0 ? ids.stride(0) : 0;
    auto bin = [&](int64_t i) {
      const int64_t v = int64_t(ix[i * is]);
      HMOE_CHECK(v >= 0 && v < len, "bincount: id ", v, " at position ", i, " is out of range [0, ", len, ")");
      return v;
    };
    if (!weights.defined()) {
      int64_t* o = out.data_ptr<int64_t>();
      std::fill(o, o + len, int64_t(0));
      for (int64_t i = 0; i < n; ++i) ++o[bin(i)];
      return;
    }
    std::vector<double> acc(static_cast<size_t>(len), 0.0);  // sum in f64, round once
    detail::dispatch_numeric(weights.dtype(), "bincount", [&]<typename W>() {
      const W* w = weights.data_ptr<W>();
      const int64_t ws = n > 0 ? weights.stride(0) : 0;
      for (int64_t i = 0; i < n; ++i) acc[size_t(bin(i))] += double(compute_t<W>(w[i * ws]));
    });
    detail::dispatch_float(out.dtype(), "bincount", [&]<typename T>() {
      T* o = out.data_ptr<T>();
      for (int64_t b = 0; b < len; ++b) o[b] = T(compute_t<T>(acc[size_t(b)]));
    });
  });
}

}  // namespace

void register_sort_cpu() {
  sort_stub.set(DeviceType::cpu, &sort_cpu);
  cumsum_stub.set(DeviceType::cpu, &cumsum_cpu);
  bincount_stub.set(DeviceType::cpu, &bincount_cpu);
}

}  // namespace hmoe::ops::cpu
