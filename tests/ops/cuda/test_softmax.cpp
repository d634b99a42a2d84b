// The softmax kernel family on the cuda device against the CPU backend: softmax and
// log_softmax (forward and gradient through the public ops) over row lengths that hit
// every kernel path (sub-warp, warp, block in registers, streamed; vector and scalar
// loads), non-last dims, unaligned and non-contiguous inputs, -inf and large values,
// f32/bf16/f16/f64; cross_entropy with i32/i64 targets, ignore_index (some rows, every
// row), the three reductions, gradients, 1-d logits and the out-of-range target error.
// Every check runs under each emulator schedule; results are bit-identical across them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/dispatch.h"
#include "ops/nn_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

std::string shape_of(const Tensor& t) { return t.meta_str(); }

// Forward and input gradient of softmax / log_softmax along dim, device against CPU.
// `view` turns the leaf into the op's input (a permute, an unaligned reshape, ...).
void check_softmax(const Tensor& x, int64_t dim, bool log, uint64_t seed,
                   const std::function<Tensor(const Tensor&)>& view = nullptr) {
  SCOPED_TRACE(std::string(log ? "log_softmax" : "softmax") + " of " + shape_of(x) + " dim " + std::to_string(dim));
  const auto op = [&](const Tensor& leaf_t) {
    const Tensor in = view ? view(leaf_t) : leaf_t;
    return log ? log_softmax(in, dim) : softmax(in, dim);
  };
  const Tensor xd = leaf(x, kDev), xc = leaf(x, Device::cpu());
  const Tensor yd = op(xd), yc = op(xc);
  expect_matches(yd, yc, -1, "forward");
  const Tensor g = rand_cpu(yc.shape(), seed, x.dtype());
  yd.backward(dev(g));
  yc.backward(g);
  expect_matches(xd.grad(), xc.grad(), -1, "gradient");
}

const std::vector<int64_t> kRowLengths = {1, 3, 31, 32, 33, 1000, 5000};

void softmax_rows_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 10;
    for (int64_t n : kRowLengths)
      for (int64_t outer : {1, 5})
        for (bool log : {false, true}) {
          const uint64_t s0 = seed += 2;
          check_softmax(rand_cpu({outer, n}, s0, dt, -4, 4), -1, log, s0 + 1);
        }
  });
}

TEST(CudaSoftmax, RowsF32) {
  HMOE_REQUIRE_CUDA();
  softmax_rows_for(DType::f32);
}
TEST(CudaSoftmax, RowsBf16) {
  HMOE_REQUIRE_CUDA();
  softmax_rows_for(DType::bf16);
}
TEST(CudaSoftmax, RowsF64) {
  HMOE_REQUIRE_CUDA();
  softmax_rows_for(DType::f64);
}

// Rows past what a block keeps in registers (streamed twice), odd lengths (scalar
// loads), many short rows per block, an f16 sample.
TEST(CudaSoftmax, LongOddAndManyRows) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 200;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (const Shape& s : {Shape{2, 20000}, Shape{2, 20001}, Shape{3, 1001}, Shape{3, 4097}, Shape{300, 3},
                             Shape{130, 1}, Shape{37, 64}})
        for (bool log : {false, true}) {
          const uint64_t s0 = seed += 2;
          check_softmax(rand_cpu(s, s0, dt, -4, 4), -1, log, s0 + 1);
        }
    for (bool log : {false, true}) {
      const uint64_t s0 = seed += 2;
      check_softmax(rand_cpu({4, 777}, s0, DType::f16, -4, 4), -1, log, s0 + 1);
    }
  });
}

// Dims other than the last (inner > 1: the strided kernels), outer == 1, 0-d and 1-d.
TEST(CudaSoftmax, NonLastDims) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 300;
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      for (int64_t d : {0, 1, 2, -1}) {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({4, 7, 9}, s0, dt, -4, 4), d, d == 1, s0 + 1);
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({2, 40, 33}, s0, dt), 1, false, s0 + 1);
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({50, 3}, s0, dt), 0, true, s0 + 1);
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({3, 300, 5}, s0, dt), 1, false, s0 + 1);
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({1, 9, 70}, s0, dt), 1, true, s0 + 1);
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({6}, s0, dt), 0, false, s0 + 1);
      }
    }
  });
}

// Non-contiguous inputs and a contiguous input at an offset that breaks 16-byte alignment.
TEST(CudaSoftmax, LayoutsAndAlignment) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 400;
    for (DType dt : {DType::f32, DType::bf16}) {
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({33, 6}, s0, dt), -1, false, s0 + 1, [](const Tensor& t) { return t.transpose(0, 1); });
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({1 + 2 * 128}, s0, dt), -1, true, s0 + 1, [](const Tensor& t) {
          return t.narrow(0, 1, 256).reshape({2, 128});
        });
      }
      {
        const uint64_t s0 = seed += 2;
        check_softmax(rand_cpu({1 + 3 * 2048}, s0, dt), -1, false, s0 + 1, [](const Tensor& t) {
          return t.narrow(0, 1, 3 * 2048).reshape({3, 2048});
        });
      }
    }
  });
}

// Large magnitudes and -inf entries (probability 0) stay exact; a NaN row stays NaN.
TEST(CudaSoftmax, StabilityAndSpecialValues) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const float inf = INFINITY;
    const Tensor a = from_vector(std::vector<float>{1000, 1000, -inf, 3e4f, -3e4f, 0, -inf, 5}, {2, 4});
    for (bool log : {false, true}) {
      const Tensor yd = log ? log_softmax(dev(a)) : softmax(dev(a));
      const Tensor yc = log ? log_softmax(a) : softmax(a);
      const auto vd = host(yd).to_vector(), vc = yc.to_vector();
      for (size_t i = 0; i < vc.size(); ++i) {
        if (std::isinf(vc[i]))
          EXPECT_EQ(vd[i], vc[i]) << i;
        else
          EXPECT_NEAR(vd[i], vc[i], 1e-5 * (1 + std::abs(vc[i]))) << i;
      }
    }
    // Long rows (block and streamed kernels) with -inf entries and one huge value.
    std::vector<float> v(2 * 20000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = i % 7 == 0 ? -inf : float(i % 13) - 6;
    v[12345] = 1e5f;
    const Tensor b = from_vector(v, {2, 20000});
    for (bool log : {false, true}) {
      const Tensor yd = log ? log_softmax(dev(b)) : softmax(dev(b));
      const Tensor yc = log ? log_softmax(b) : softmax(b);
      const auto vd = host(yd).to_vector(), vc = yc.to_vector();
      size_t bad = 0;
      for (size_t i = 0; i < vc.size(); ++i)
        if (std::isinf(vc[i]) ? vd[i] != vc[i] : !(std::abs(vd[i] - vc[i]) <= 1e-5 * (1 + std::abs(vc[i])))) ++bad;
      EXPECT_EQ(bad, 0u) << (log ? "log_softmax" : "softmax");
    }
    const Tensor n = from_vector(std::vector<float>{1, NAN, 2, 0.5f, 1, 2}, {2, 3});
    const auto vn = host(softmax(dev(n))).to_vector();
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(std::isnan(vn[size_t(i)])) << i;
    EXPECT_NEAR(vn[4], softmax(n).to_vector()[4], 1e-6);
  });
}

// The same input gives the same bits under every schedule (fixed reduction trees).
TEST(CudaSoftmax, DeterministicAcrossSchedules) {
  HMOE_REQUIRE_CUDA();
  for (const Shape& s : {Shape{3, 1000}, Shape{2, 5000}, Shape{2, 20000}, Shape{4, 50, 6}}) {
    const Tensor x = dev(rand_cpu(s, 77, DType::f32, -5, 5));
    const int64_t dim = s.size() == 3 ? 1 : -1;
    Tensor first;
    for_each_schedule([&] {
      const Tensor y = host(log_softmax(x, dim));
      if (!first.defined())
        first = y;
      else
        EXPECT_TRUE(bit_equal(y, first)) << shape_str(s);
    });
  }
}

// ---- cross-entropy -------------------------------------------------------------------

struct CeShape {
  int64_t N, C;
};
const std::vector<CeShape> kCeShapes = {{1, 1},    {1, 3},    {7, 31},    {5, 32}, {6, 33},
                                        {4, 1000}, {3, 5000}, {2, 20001}, {70, 10}};

// Random targets in [0, C) with every third row (from row 1) set to `ignore`.
Tensor ce_targets(int64_t N, int64_t C, uint64_t seed, DType dt, int64_t ignore) {
  std::vector<int64_t> t;
  for (double v : rand_ids({N}, 0, C, seed).to_vector()) t.push_back(int64_t(v));
  for (int64_t i = 1; i < N; i += 3) t[size_t(i)] = ignore;
  return from_vector(t, {N}).to(dt);
}

// cross_entropy forward and logits gradient, device against CPU.
void check_ce(const Tensor& logits, const Tensor& targets, int64_t ignore, Reduction red, uint64_t seed) {
  SCOPED_TRACE("cross_entropy of " + shape_of(logits) + " targets " + shape_of(targets) + " reduction " +
               std::to_string(int(red)) + " ignore " + std::to_string(ignore));
  const Tensor ld = leaf(logits, kDev), lc = leaf(logits, Device::cpu());
  const Tensor od = cross_entropy(ld, dev(targets), ignore, red), oc = cross_entropy(lc, targets, ignore, red);
  expect_matches(od, oc, -1, "loss");
  const Tensor g = rand_cpu(oc.shape(), seed, oc.dtype(), 0.5, 1.5);
  od.backward(dev(g));
  oc.backward(g);
  expect_matches(ld.grad(), lc.grad(), -1, "gradient");
}

TEST(CudaCrossEntropy, PerRowLossAndGradient) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (DType tdt : {DType::i64, DType::i32})
        for (const CeShape& s : kCeShapes) {
          const Tensor logits = rand_cpu({s.N, s.C}, ++seed, dt, -4, 4);
          {
            const uint64_t s0 = seed += 2;
            check_ce(logits, ce_targets(s.N, s.C, s0, tdt, -100), -100, Reduction::none, s0 + 1);
          }
        }
    // An ignore_index inside [0, C): those rows are ignored, not scored.
    const Tensor logits = rand_cpu({9, 5}, ++seed, DType::f32);
    {
      const uint64_t s0 = seed += 2;
      check_ce(logits, ce_targets(9, 5, s0, DType::i64, 2), 2, Reduction::none, s0 + 1);
    }
    // f16 sample; 1-d logits with a 0-d target.
    {
      const uint64_t s0 = seed += 3;
      check_ce(rand_cpu({5, 40}, s0, DType::f16), ce_targets(5, 40, s0 + 1, DType::i64, -100), -100, Reduction::none,
               s0 + 2);
    }
    {
      const uint64_t s0 = seed += 2;
      check_ce(rand_cpu({7}, s0, DType::f32), full({}, 3, {DType::i64}), -100, Reduction::none, s0 + 1);
    }
  });
}

// Mean over the counted rows and sum (these also use the cuda reduce and elementwise
// kernels): values and gradients; all rows ignored gives NaN (mean) with zero gradient.
TEST(CudaCrossEntropy, MeanAndSumReductions) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 600;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (const CeShape& s : {CeShape{1, 3}, CeShape{7, 33}, CeShape{4, 1000}, CeShape{2, 20001}})
        for (Reduction red : {Reduction::mean, Reduction::sum}) {
          const Tensor logits = rand_cpu({s.N, s.C}, ++seed, dt, -4, 4);
          {
            const uint64_t s0 = seed += 2;
            check_ce(logits, ce_targets(s.N, s.C, s0, DType::i64, -100), -100, red, s0 + 1);
          }
        }
    const Tensor logits = rand_cpu({4, 6}, ++seed, DType::f32);
    const Tensor none = from_vector(std::vector<int64_t>{-100, -100, -100, -100}, {4});
    const Tensor ld = leaf(logits, kDev);
    const Tensor m = cross_entropy(ld, dev(none));
    EXPECT_TRUE(std::isnan(host(m).item()));
    m.backward();
    const auto gv = host(ld.grad()).to_vector();
    for (double v : gv) EXPECT_EQ(v, 0.0);
    EXPECT_EQ(host(cross_entropy(dev(logits), dev(none), -100, Reduction::sum)).item(), 0.0);
    EXPECT_TRUE(std::isnan(host(cross_entropy(dev(zeros({0, 5})), dev(zeros({0}, {DType::i64})))).item()));
  });
}

TEST(CudaCrossEntropy, AllIgnoredAndEmptyPerRow) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor logits = rand_cpu({5, 300}, 700, DType::bf16);
    const Tensor none = full({5}, -100, {DType::i32});
    check_ce(logits, none, -100, Reduction::none, 701);
    const Tensor e = cross_entropy(dev(zeros({0, 5})), dev(zeros({0}, {DType::i64})), -100, Reduction::none);
    EXPECT_EQ(e.shape(), (Shape{0}));
  });
}

// A target outside [0, C) that is not ignore_index: an hmoe::Error naming the first
// such target and its row (found by the kernel, read back by the host); the device
// stays usable afterwards.
TEST(CudaCrossEntropy, OutOfRangeTargetIsAnError) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor logits = dev(rand_cpu({6, 5}, 800, DType::f32));
    EXPECT_HMOE_ERROR(cross_entropy(logits, dev(from_vector(std::vector<int64_t>{0, 1, 4, 7, 9, 2}, {6}))),
                      "target 7 at row 3");
    EXPECT_HMOE_ERROR(cross_entropy(logits, dev(from_vector(std::vector<int32_t>{0, -100, -1, 2, 2, 2}, {6}))),
                      "target -1 at row 2");
    EXPECT_HMOE_ERROR(
        cross_entropy(logits, dev(from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5}, {6})), -100, Reduction::none),
        "out of range [0, 5)");
    const Tensor big = dev(rand_cpu({3, 3000}, 801, DType::bf16));
    EXPECT_HMOE_ERROR(cross_entropy(big, dev(from_vector(std::vector<int64_t>{3000, 0, 1}, {3}))),
                      "target 3000 at row 0");
    // Still fine afterwards.
    const Tensor ok = from_vector(std::vector<int64_t>{0, 1, 4, 3, -100, 2}, {6});
    expect_matches(cross_entropy(logits, dev(ok), -100, Reduction::none),
                   cross_entropy(host(logits), ok, -100, Reduction::none));
  });
}

// Bandwidth of the softmax kernels on a real GPU (minimal traffic per kernel).
TEST(CudaSoftmaxBench, Bandwidth) {
  HMOE_REQUIRE_KERNEL_BENCH();
  NoGradGuard ng;
  for (DType dt : {DType::bf16, DType::f32})
    for (const Shape& s :
         {Shape{16384, 128}, Shape{8192, 1024}, Shape{4096, 4096}, Shape{1024, 32768}, Shape{256, 131072}}) {
      // Kernels alone (preallocated outputs); cross_entropy through the op, which also
      // reads the row count back to the host (a synchronisation).
      const Tensor x = dev(rand_cpu(s, 1, dt, -4, 4)), g = dev(rand_cpu(s, 2, dt));
      const Tensor y = Tensor::empty(s, {dt, kDev}), gx = Tensor::empty(s, {dt, kDev});
      const double bytes = double(x.nbytes());
      const double f = device_median_ms([&] { softmax_stub.get(kDev)(x, y, s[0], s[1], 1, false); });
      const double b = device_median_ms([&] { softmax_backward_stub.get(kDev)(y, g, gx, s[0], s[1], 1, false); });
      const Tensor t = dev(rand_ids({s[0]}, 0, s[1], 3));
      const double c = device_median_ms([&] { (void)cross_entropy(x, t, -100, Reduction::none); });
      std::printf("%-5s %-14s softmax fwd %7.1f us %6.0f GB/s | bwd %7.1f us %6.0f GB/s | ce fwd %7.1f us %6.0f GB/s\n",
                  std::string(dtype_name(dt)).c_str(), shape_str(s).c_str(), f * 1e3, 2 * bytes / f / 1e6, b * 1e3,
                  3 * bytes / b / 1e6, c * 1e3, bytes / c / 1e6);
    }
}

}  // namespace
}  // namespace hmoe
