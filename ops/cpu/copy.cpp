// CPU copy kernel: strided source to strided destination with dtype conversion.
#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/view.h"
#include "ops/view_kernels.h"

namespace hmoe::ops::cpu {
namespace {

void copy_cpu(const Tensor& src, const Tensor& dst) {
  detail::dispatch_all(src.dtype(), "copy", [&]<typename S>() {
    detail::dispatch_all(dst.dtype(), "copy", [&]<typename D>() {
      make_loop(dst.shape(), src, dst).run([&](auto p, auto s, int64_t n) {
        if (s[0] == sizeof(S) && s[1] == sizeof(D)) {
          const S* x = reinterpret_cast<const S*>(p[0]);
          D* y = reinterpret_cast<D*>(p[1]);
          if constexpr (std::is_same_v<S, D>) {
            std::memcpy(y, x, size_t(n) * sizeof(S));
          } else {
            for (int64_t i = 0; i < n; ++i) y[i] = D(compute_t<D>(compute_t<S>(x[i])));
          }
        } else {
          for (int64_t i = 0; i < n; ++i)
            *reinterpret_cast<D*>(p[1] + i * s[1]) =
                D(compute_t<D>(compute_t<S>(*reinterpret_cast<const S*>(p[0] + i * s[0]))));
        }
      });
    });
  });
}

}  // namespace

void register_copy_cpu() { copy_stub.set(DeviceType::cpu, &copy_cpu); }

}  // namespace hmoe::ops::cpu
