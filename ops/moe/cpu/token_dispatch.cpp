// CPU kernels of token dispatch: the plan (validated counting sort: histogram, padded
// exclusive scan, stable placement), permute / combine / gate gradient as row gathers
// in a fixed order, and the selection-pattern bitmasks and their distinct values.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/factory.h"
#include "ops/moe/cpu/moe_cpu.h"
#include "ops/moe/moe_kernels.h"

namespace hmoe::ops::cpu {
namespace {

using namespace moe_detail;

void plan_cpu(const Tensor& ids, int64_t G, int64_t pad, const Tensor& counts, const Tensor& offsets,
              const Tensor& perm, const Tensor& inverse) {
  const int64_t n = ids.numel();
  int64_t* cnt = counts.data_ptr<int64_t>();
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t* pm = perm.data_ptr<int64_t>();
  int64_t* inv = inverse.data_ptr<int64_t>();
  hmoe::detail::dispatch_index(ids.dtype(), "make_plan", [&]<typename I>() {
    const I* id = ids.data_ptr<I>();
    std::fill(cnt, cnt + G, int64_t(0));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(id[i]);
      HMOE_CHECK(v >= 0 && v < G, "make_plan: id ", v, " at position ", i, " is out of range [0, ", G, ")");
      ++cnt[v];
    }
    off[0] = 0;
    for (int64_t g = 0; g < G; ++g) off[g + 1] = off[g] + (cnt[g] + pad - 1) / pad * pad;
    std::fill(pm, pm + perm.numel(), int64_t(-1));
    std::vector<int64_t> next(off, off + G);
    for (int64_t i = 0; i < n; ++i) {  // increasing i: token order kept inside each group
      const int64_t slot = next[size_t(id[i])]++;
      pm[slot] = i;
      inv[i] = slot;
    }
  });
}

void permute_rows_cpu(const Tensor& x, const Tensor& perm, int64_t k, const Tensor& slot_scale, const Tensor& out) {
  const int64_t R = out.size(0), d = out.size(1);
  hmoe::detail::dispatch_real(x.dtype(), "permute_rows", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    const T* sc = opt_ptr<T>(slot_scale);
    const int64_t* pm = perm.data_ptr<int64_t>();
    T* o = out.data_ptr<T>();
    parallel_for(R, row_grain(d), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        T* dst = o + r * d;
        const int64_t src = pm[r];
        if (src < 0) {
          std::fill(dst, dst + d, T(0));
        } else if (sc) {
          const T s = sc[src];
          const T* row = xp + (src / k) * d;
          for (int64_t c = 0; c < d; ++c) dst[c] = s * row[c];
        } else {
          std::memcpy(dst, xp + (src / k) * d, size_t(d) * sizeof(T));
        }
      }
    });
  });
}

void combine_cpu(const Tensor& ys, const Tensor& inverse, int64_t k, const Tensor& gates, const Tensor& out) {
  const int64_t T_ = out.size(0), d = out.size(1);
  hmoe::detail::dispatch_real(ys.dtype(), "combine", [&]<typename T>() {
    const T* y = ys.data_ptr<T>();
    const T* g = opt_ptr<T>(gates);
    const int64_t* inv = inverse.data_ptr<int64_t>();
    T* o = out.data_ptr<T>();
    parallel_for(T_, row_grain(d * k), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        T* dst = o + t * d;
        std::fill(dst, dst + d, T(0));
        for (int64_t j = 0; j < k; ++j) {  // fixed j order: no atomics, same sum every run
          const T* row = y + inv[t * k + j] * d;
          const T gate = g ? g[t * k + j] : T(1);
          for (int64_t c = 0; c < d; ++c) dst[c] += gate * row[c];
        }
      }
    });
  });
}

void combine_gate_grad_cpu(const Tensor& dy, const Tensor& ys, const Tensor& inverse, int64_t k, const Tensor& dg) {
  const int64_t T_ = dy.size(0), d = dy.size(1);
  hmoe::detail::dispatch_real(dy.dtype(), "combine backward", [&]<typename T>() {
    const T* gy = dy.data_ptr<T>();
    const T* y = ys.data_ptr<T>();
    const int64_t* inv = inverse.data_ptr<int64_t>();
    T* o = dg.data_ptr<T>();
    parallel_for(T_, row_grain(d * k), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t)
        for (int64_t j = 0; j < k; ++j) {
          const T* row = y + inv[t * k + j] * d;
          T acc = 0;
          for (int64_t c = 0; c < d; ++c) acc += gy[t * d + c] * row[c];
          o[t * k + j] = acc;
        }
    });
  });
}

void pattern_ids_cpu(const Tensor& ids, int64_t N, const Tensor& bits) {
  const int64_t T = ids.size(0), k = ids.size(1);
  int64_t* out = bits.data_ptr<int64_t>();
  hmoe::detail::dispatch_index(ids.dtype(), "pattern_ids", [&]<typename I>() {
    const I* id = ids.data_ptr<I>();
    for (int64_t t = 0; t < T; ++t) {
      uint64_t m = 0;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = int64_t(id[t * k + j]);
        HMOE_CHECK(e >= 0 && e < N, "pattern_ids: expert id ", e, " of token ", t, " is out of range [0, ", N, ")");
        HMOE_CHECK(!((m >> e) & 1u), "pattern_ids: token ", t, " selects expert ", e, " twice");
        m |= uint64_t(1) << e;
      }
      out[t] = int64_t(m);
    }
  });
}

void unique_patterns_cpu(const Tensor& bits, Tensor& patterns, Tensor& index) {
  const int64_t T = bits.numel();
  const int64_t* b = bits.data_ptr<int64_t>();
  std::vector<uint64_t> u(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) u[size_t(t)] = uint64_t(b[t]);
  std::sort(u.begin(), u.end());
  u.erase(std::unique(u.begin(), u.end()), u.end());
  std::vector<int64_t> pats(u.size());
  for (size_t i = 0; i < u.size(); ++i) pats[i] = int64_t(u[i]);
  std::vector<int32_t> ix(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    ix[size_t(t)] = int32_t(std::lower_bound(u.begin(), u.end(), uint64_t(b[t])) - u.begin());
  patterns = from_vector(pats, {int64_t(pats.size())});
  index = from_vector(ix, {T});
}

}  // namespace

void register_moe_dispatch_cpu() {
  using namespace hmoe::moe;
  plan_stub.set(DeviceType::cpu, &plan_cpu);
  permute_rows_stub.set(DeviceType::cpu, &permute_rows_cpu);
  combine_stub.set(DeviceType::cpu, &combine_cpu);
  combine_gate_grad_stub.set(DeviceType::cpu, &combine_gate_grad_cpu);
  pattern_ids_stub.set(DeviceType::cpu, &pattern_ids_cpu);
  unique_patterns_stub.set(DeviceType::cpu, &unique_patterns_cpu);
}

}  // namespace hmoe::ops::cpu
