// CPU reduction kernel over a contiguous [outer, red, inner] view. Sums accumulate
// in double (i64 for integers) in a fixed order, so results never depend on threads.
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/fast_math.h"
#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"

namespace hmoe {
HMOE_DECLARE_STUB(ReduceKernel, reduce_stub);
}

namespace hmoe::ops::cpu {
namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_integral_v<compute_t<T>>, int64_t, double>;

template <typename T>
void reduce_typed(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  using A = acc_t<T>;
  const T* x = in.data_ptr<T>();
  const bool index_out = op == ReduceOp::argmax || op == ReduceOp::argmin;
  T* y = index_out ? nullptr : out.data_ptr<T>();
  int64_t* yi = index_out ? out.data_ptr<int64_t>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(red * inner, 1));
  parallel_for(outer, grain, [&](int64_t ob, int64_t oe) {
    std::vector<A> acc(static_cast<size_t>(inner));
    std::vector<int64_t> arg(static_cast<size_t>(inner));
    for (int64_t o = ob; o < oe; ++o) {
      const T* base = x + o * red * inner;
      switch (op) {
        case ReduceOp::sum: {
          if (inner == 1) {
            // A row: eight independent partial sums (vectorisable), combined in a fixed order.
            A part[8] = {};
            int64_t r = 0;
            for (; r + 8 <= red; r += 8)
              for (int j = 0; j < 8; ++j) part[j] += A(compute_t<T>(base[r + j]));
            for (; r < red; ++r) part[0] += A(compute_t<T>(base[r]));
            y[o] = T(compute_t<T>(((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))));
            break;
          }
          std::fill(acc.begin(), acc.end(), A(0));
          for (int64_t r = 0; r < red; ++r) {
            const T* row = base + r * inner;
            for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] += A(compute_t<T>(row[i]));
          }
          for (int64_t i = 0; i < inner; ++i) y[o * inner + i] = T(compute_t<T>(acc[size_t(i)]));
          break;
        }
        case ReduceOp::max:
        case ReduceOp::min:
        case ReduceOp::argmax:
        case ReduceOp::argmin: {
          HMOE_CHECK(red > 0, "max/min: cannot reduce over an empty dimension");
          const bool is_max = op == ReduceOp::max || op == ReduceOp::argmax;
          for (int64_t i = 0; i < inner; ++i) {
            acc[size_t(i)] = A(compute_t<T>(base[i]));
            arg[size_t(i)] = 0;
          }
          for (int64_t r = 1; r < red; ++r) {
            const T* row = base + r * inner;
            for (int64_t i = 0; i < inner; ++i) {
              const A v = A(compute_t<T>(row[i]));
              const A cur = acc[size_t(i)];
              // NaN wins (and stays); otherwise strictly better, so ties keep the first index.
              const bool take = cur == cur && (v != v || (is_max ? v > cur : v < cur));
              if (take) {
                acc[size_t(i)] = v;
                arg[size_t(i)] = r;
              }
            }
          }
          for (int64_t i = 0; i < inner; ++i) {
            if (index_out) yi[o * inner + i] = arg[size_t(i)];
            else y[o * inner + i] = T(compute_t<T>(acc[size_t(i)]));
          }
          break;
        }
        case ReduceOp::logsumexp: {
          if constexpr (std::is_same_v<compute_t<T>, float>) {
            if (inner == 1) {
              // A row in float: max, then eight partial sums of the vectorised exp.
              float m = -std::numeric_limits<float>::infinity();
              for (int64_t r = 0; r < red; ++r) m = std::max(m, float(base[r]));
              if (!std::isfinite(m)) {
                y[o] = T(m);
                break;
              }
              float part[8] = {};
              int64_t r = 0;
              for (; r + 8 <= red; r += 8)
                for (int j = 0; j < 8; ++j) part[j] += fast_expf(float(base[r + j]) - m);
              for (; r < red; ++r) part[0] += fast_expf(float(base[r]) - m);
              const float tot = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
              y[o] = T(m + std::log(tot));
              break;
            }
          }
          if constexpr (std::is_floating_point_v<A>) {
            for (int64_t i = 0; i < inner; ++i) acc[size_t(i)] = -std::numeric_limits<A>::infinity();
            for (int64_t r = 0; r < red; ++r)
              for (int64_t i = 0; i < inner; ++i)
                acc[size_t(i)] = std::max<A>(acc[size_t(i)], A(compute_t<T>(base[r * inner + i])));
            std::vector<A> s(static_cast<size_t>(inner), A(0));
            for (int64_t r = 0; r < red; ++r)
              for (int64_t i = 0; i < inner; ++i) {
                const A m = acc[size_t(i)];
                if (std::isfinite(m)) s[size_t(i)] += std::exp(A(compute_t<T>(base[r * inner + i])) - m);  // f64 accumulation
              }
            for (int64_t i = 0; i < inner; ++i) {
              const A m = acc[size_t(i)];
              y[o * inner + i] = T(compute_t<T>(std::isfinite(m) ? m + std::log(s[size_t(i)]) : m));
            }
          } else {
            detail::unsupported_dtype("logsumexp", in.dtype());
          }
          break;
        }
      }
    }
  });
}

void reduce_cpu(ReduceOp op, const Tensor& in, const Tensor& out, int64_t outer, int64_t red, int64_t inner) {
  detail::dispatch_numeric(in.dtype(), "reduce",
                           [&]<typename T>() { reduce_typed<T>(op, in, out, outer, red, inner); });
}

}  // namespace

void register_reduce_cpu() { reduce_stub.set(DeviceType::cpu, &reduce_cpu); }

}  // namespace hmoe::ops::cpu
