// CPU kernels for fills, ranges and Philox random tensors.
#include <cmath>

#include "engine/rng.h"
#include "ops/cpu/loops.h"
#include "ops/dispatch.h"
#include "ops/factory.h"
#include "ops/factory_kernels.h"

namespace hmoe::ops::cpu {
namespace {

void fill_cpu(const Tensor& out, double value) {
  detail::dispatch_all(out.dtype(), "fill", [&]<typename T>() {
    const T v = T(compute_t<T>(value));
    make_loop(out.shape(), out).run([&](auto p, auto s, int64_t n) {
      for (int64_t i = 0; i < n; ++i) *reinterpret_cast<T*>(p[0] + i * s[0]) = v;
    });
  });
}

void arange_cpu(const Tensor& out, double start, double step) {
  detail::dispatch_numeric(out.dtype(), "arange", [&]<typename T>() {
    T* y = out.data_ptr<T>();
    for (int64_t i = 0; i < out.numel(); ++i) y[i] = T(compute_t<T>(std::fma(double(i), step, start)));  // one rounding, as on the device
  });
}

void random_cpu(const Tensor& out, RandomKind kind, uint64_t seed, uint64_t offset, double a, double b) {
  detail::dispatch_float(out.dtype(), "random", [&]<typename T>() {
    T* y = out.data_ptr<T>();
    parallel_for(out.numel(), 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        // Explicit fma: the same single rounding with or without -march=native, and on the device.
        const double v = kind == RandomKind::uniform ? std::fma(b - a, 1.0 - philox_uniform_f64(seed, offset, uint64_t(i)), a)
                                                     : std::fma(b, philox_normal(seed, offset, uint64_t(i)), a);
        y[i] = T(compute_t<T>(v));
      }
    });
  });
}

}  // namespace

void register_factory_cpu() {
  fill_stub.set(DeviceType::cpu, &fill_cpu);
  arange_stub.set(DeviceType::cpu, &arange_cpu);
  random_stub.set(DeviceType::cpu, &random_cpu);
}

}  // namespace hmoe::ops::cpu
