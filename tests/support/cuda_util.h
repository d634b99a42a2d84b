// The harness every CUDA-kernel test uses: the same op on the cuda device and on the
// CPU (reference in f64), fresh random inputs, poisoned outputs (the device allocator
// fills new blocks with NaN bytes in these tests), relative-error bounds from
// shared/spec/gpu-without-gpu.md, and every emulated check run under several schedules.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/cuda/allocator.h"
#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "tests/support/test_util.h"

#if defined(HMOE_EMU)
#include "engine/emu/launch.h"
#endif

namespace hmoe::testing {

inline const Device kDev = Device::cuda(0);

// Relative-error bounds (||out - ref|| / ||ref||) by compute dtype.
inline double tolerance(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-12;
    case DType::f32: return 1e-5;
    case DType::bf16: return 1e-2;
    case DType::f16: return 2e-3;
    default: return 0;  // integers and bools must match exactly
  }
}

// Skips the test (real build, no GPU present) and turns on output poisoning. The
// emulated build fails instead: its device is off only when the opt-in is missing.
#define HMOE_REQUIRE_CUDA()                                                                      \
  do {                                                                                           \
    if (!::hmoe::cuda::device_available()) {                                                     \
      if (::hmoe::cuda::is_emulated())                                                           \
        GTEST_FAIL() << "the emulated cuda device is off: set HMOE_EMULATE_CUDA=1 (ctest does)"; \
      GTEST_SKIP() << "no CUDA device present";                                                  \
    }                                                                                            \
    ::hmoe::cuda::set_poison_allocations(true);                                                  \
  } while (0)

// The schedules each emulated check runs under (in the real build: once).
struct ScheduleCase {
  std::string name;
#if defined(HMOE_EMU)
  emu::Schedule schedule;
#endif
};
// HMOE_TEST_SCHEDULES=random runs the random schedule alone: the TSan build does, since
// there a missing barrier is reported as a race whatever the schedule, and TSan makes
// every emulated kernel ~10x slower.
inline std::vector<ScheduleCase> schedules() {
#if defined(HMOE_EMU)
  const char* only = std::getenv("HMOE_TEST_SCHEDULES");
  if (only && std::string(only) == "random") return {{"random", {emu::ScheduleMode::random, 0x5eed ^ 1234}}};
  return {{"in_order", {emu::ScheduleMode::in_order, 0}},
          {"reverse", {emu::ScheduleMode::reverse, 0}},
          {"random", {emu::ScheduleMode::random, 0x5eed ^ 1234}}};
#else
  return {{"device"}};
#endif
}

// Runs fn once per schedule, tagging failures with the schedule's name.
inline void for_each_schedule(const std::function<void()>& fn) {
  for (const auto& s : schedules()) {
    SCOPED_TRACE("schedule " + s.name);
#if defined(HMOE_EMU)
    emu::ScopedSchedule scoped(s.schedule);
#endif
    fn();
  }
}

// The device copy and the CPU copy of a tensor.
inline Tensor dev(const Tensor& t) { return t.to(kDev); }
inline Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

// A fresh leaf on d with t's values, requiring grad (the same inputs for the device and
// the CPU side of a gradient check).
inline Tensor leaf(const Tensor& t, Device d) {
  Tensor l = d.is_cpu() ? t.detach().clone() : t.detach().to(d);
  l.set_requires_grad(true);
  return l;
}

// Random inputs: uniform in [lo, hi) (never all zeros), made on the CPU in f64, then
// converted to dtype and moved to the device. Also returns the CPU copy for the reference.
inline Tensor rand_cpu(const Shape& shape, uint64_t seed, DType dt, double lo = -2, double hi = 2) {
  return rand_t(shape, seed, lo, hi, DType::f64).to(dt);
}

// ||out - ref|| / ||ref|| in f64 over all elements (out moved to the CPU). NaN or Inf in
// out where ref is finite (an unwritten, poisoned element reads as NaN) gives +inf.
inline double rel_error(const Tensor& out, const Tensor& ref) {
  const auto o = out.to(Device::cpu()).to_vector();
  const auto r = ref.to(Device::cpu()).to_vector();
  if (o.size() != r.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    if (!std::isfinite(o[i]) && std::isfinite(r[i])) return INFINITY;
    if (std::isnan(r[i])) continue;
    num += (o[i] - r[i]) * (o[i] - r[i]);
    den += r[i] * r[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Checks device output against the CPU reference: same shape and dtype, within the
// output dtype's tolerance (or `tol` when given); exact for integer and bool outputs.
// `ref` has out's dtype, or is f64 (computed in double on the CPU, as the spec asks).
inline void expect_matches(const Tensor& out, const Tensor& ref, double tol = -1, const std::string& what = "") {
  ASSERT_TRUE(out.device().is_cuda()) << what << ": output is on " << out.device().str();
  ASSERT_EQ(shape_str(out.shape()), shape_str(ref.shape())) << what;
  // The reference may be the same dtype, or f64 (the spec's reference) for a float output.
  ASSERT_TRUE(out.dtype() == ref.dtype() || (ref.dtype() == DType::f64 && is_floating(out.dtype())))
      << what << ": output " << out.meta_str() << " vs reference " << ref.meta_str();
  const double bound = tol >= 0 ? tol : tolerance(out.dtype());
  const double err = rel_error(out, ref);
  EXPECT_LE(err, bound) << what << ": relative error " << err << " (bound " << bound << ") for " << out.meta_str();
}

// Opt-in bandwidth reports on a real GPU, inside the device tests: they run only when
// HMOE_KERNEL_BENCH is set and the device is not emulated, and assert nothing about speed
// (`HMOE_KERNEL_BENCH=1 build/tests/ops/cuda/test_cuda_softmax --gtest_filter=*Bench*`).
#define HMOE_REQUIRE_KERNEL_BENCH()                                                                 \
  do {                                                                                              \
    HMOE_REQUIRE_CUDA();                                                                            \
    if (::hmoe::cuda::is_emulated() || !std::getenv("HMOE_KERNEL_BENCH"))                           \
      GTEST_SKIP() << "set HMOE_KERNEL_BENCH=1 on a GPU";                                           \
    ::hmoe::cuda::set_poison_allocations(false);                                                    \
  } while (0)

// Median milliseconds of fn on the current stream over 20 timed runs (CUDA events around
// each), after 3 warm-up runs (allocator, first launch).
inline double device_median_ms(const std::function<void()>& fn) {
  ::hmoe::cuda::Stream& s = ::hmoe::cuda::current_stream(0);
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> ms;
  for (int i = 0; i < 20; ++i) {
    ::hmoe::cuda::Event a(0), b(0);
    a.record(s);
    fn();
    b.record(s);
    b.synchronize();
    ms.push_back(a.elapsed_ms(b));
  }
  std::sort(ms.begin(), ms.end());
  return double(ms[ms.size() / 2]);
}

// The first schedule's bits of each named output; later schedules must reproduce them.
class SameBits {
 public:
  void check(const std::string& key, const Tensor& t) {
    const Tensor h = host(t).contiguous().clone();
    const auto it = first_.find(key);
    if (it == first_.end())
      first_.emplace(key, h);
    else
      EXPECT_TRUE(bit_equal(h, it->second)) << key << ": differs between schedules";
  }

 private:
  std::map<std::string, Tensor> first_;
};

}  // namespace hmoe::testing
