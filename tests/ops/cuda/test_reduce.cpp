// The reduce kernel family on the cuda device against the CPU backend, through the
// public ops: sum, mean, var, max/min with indices, argmax/argmin (first index of ties,
// NaN wins), logsumexp and norm over leading, middle, last, several and all dims, with
// and without keepdim, on shapes that reach every kernel (a warp per row, a block per
// row, rows split over blocks, columns, columns split over blocks), odd sizes, empty
// dims, f32/bf16/f64 (f16, i32, i64 samples); gradients; bad input; and results that are
// bit-identical under every emulator schedule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/dispatch.h"
#include "ops/reduce_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "{";
  for (int64_t d : dims) s += std::to_string(d) + ",";
  return s + "}";
}

struct Case {
  Shape shape;
  std::vector<int64_t> dims;
};

// Shapes and dims over every kernel path ([outer, red, inner] in the comments).
std::vector<Case> cases() {
  return {
      {{1}, {0}},               // [1, 1, 1]: warp per row
      {{7}, {0}},               // [1, 7, 1]
      {{33}, {-1}},             // [1, 33, 1]
      {{5, 300}, {1}},          // warp per row, vectors + tail
      {{33, 1000}, {1}},        // warp per row
      {{4, 2000}, {1}},         // block per row
      {{3, 70001}, {1}},        // block per row, split over blocks
      {{300, 5}, {0}},          // columns [1, 300, 5], split
      {{4, 37, 9}, {1}},        // columns [4, 37, 9]
      {{2, 1000, 40}, {1}},     // columns, split
      {{3, 4, 5}, {0, 2}},      // permuted: [4, 15, 1]
      {{2, 3, 70}, {0, 1, 2}},  // all dims
      {{3, 1}, {1}},            // red = 1
      {{6, 7}, {}},             // nothing reduced
      {{}, {}},                 // 0-d
  };
}

// op(x, dims, keepdim) on both devices (forward and gradient, if floating).
using ReduceFn = std::function<Tensor(const Tensor&, const std::vector<int64_t>&, bool)>;
void check_reduce(const std::string& name, const ReduceFn& f, const Tensor& x, const Case& k, bool keep, uint64_t seed,
                  double tol = -1, bool grad = true) {
  SCOPED_TRACE(name + " of " + x.meta_str() + " dims " + dims_str(k.dims) + (keep ? " keepdim" : ""));
  grad = grad && is_floating(x.dtype());
  const Tensor xd = grad ? leaf(x, kDev) : dev(x), xc = grad ? leaf(x, Device::cpu()) : x;
  const Tensor yd = f(xd, k.dims, keep), yc = f(xc, k.dims, keep);
  expect_matches(yd, yc, is_floating(yc.dtype()) ? tol : 0, "forward");
  if (!grad || yc.numel() == 0 || x.numel() == 0) return;
  const Tensor g = rand_cpu(yc.shape(), seed, yc.dtype());
  yd.backward(dev(g));
  yc.backward(g);
  expect_matches(xd.grad(), xc.grad(), -1, "gradient");
}

const ReduceFn kSum = [](const Tensor& x, const std::vector<int64_t>& d, bool k) { return sum(x, d, k); };
const ReduceFn kMean = [](const Tensor& x, const std::vector<int64_t>& d, bool k) { return mean(x, d, k); };
const ReduceFn kLse = [](const Tensor& x, const std::vector<int64_t>& d, bool k) { return logsumexp(x, d, k); };
const ReduceFn kVar = [](const Tensor& x, const std::vector<int64_t>& d, bool k) { return var(x, d, k); };

void multi_dim_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 10;
    for (const auto& k : cases())
      for (bool keep : {false, true}) {
        const Tensor x = rand_cpu(k.shape, seed += 5, dt);
        check_reduce("sum", kSum, x, k, keep, seed + 1);
        check_reduce("mean", kMean, x, k, keep, seed + 2);
        check_reduce("logsumexp", kLse, x, k, keep, seed + 3);
        if (x.numel() > 1 && !k.dims.empty()) check_reduce("var", kVar, x, k, keep, seed + 4);
      }
  });
}

TEST(CudaReduce, SumMeanLseVarF32) {
  HMOE_REQUIRE_CUDA();
  multi_dim_for(DType::f32);
}
TEST(CudaReduce, SumMeanLseVarBf16) {
  HMOE_REQUIRE_CUDA();
  multi_dim_for(DType::bf16);
}
TEST(CudaReduce, SumMeanLseVarF64) {
  HMOE_REQUIRE_CUDA();
  multi_dim_for(DType::f64);
}

// max / min (values and indices) and argmax / argmin along each single dim; values come
// from a few levels so ties are everywhere (the first index must win, exactly).
void extremes_for(DType dt, int levels) {
  for_each_schedule([&] {
    uint64_t seed = 1000;
    for (const auto& k : cases()) {
      const Tensor base = levels > 0 ? rand_ties(k.shape, levels, seed += 3, dt) : rand_cpu(k.shape, seed += 3, dt);
      for (int64_t d = -1; d < int64_t(k.shape.size()); ++d) {
        if (k.shape.empty() && d >= 0) continue;
        const int64_t dim = k.shape.empty() ? 0 : (d < 0 ? int64_t(k.shape.size()) - 1 : d);
        {
          const bool keep = (d + int64_t(seed)) % 2 == 0;  // alternates, to keep the test short
          SCOPED_TRACE(base.meta_str() + " dim " + std::to_string(dim) + (keep ? " keepdim" : ""));
          for (bool is_max : {true, false}) {
            const Tensor xd = leaf(base, kDev), xc = leaf(base, Device::cpu());
            const auto [vd, id] = is_max ? max(xd, dim, keep) : min(xd, dim, keep);
            const auto [vc, ic] = is_max ? max(xc, dim, keep) : min(xc, dim, keep);
            EXPECT_TRUE(bit_equal(host(vd), vc)) << (is_max ? "max" : "min") << " values";
            EXPECT_TRUE(bit_equal(host(id), ic)) << (is_max ? "max" : "min") << " indices";
            const Tensor g = rand_cpu(vc.shape(), seed + 1, dt);
            vd.backward(dev(g));
            vc.backward(g);
            EXPECT_TRUE(bit_equal(host(xd.grad()), xc.grad())) << "gradient";
            const Tensor ad = is_max ? argmax(dev(base), dim, keep) : argmin(dev(base), dim, keep);
            const Tensor ac = is_max ? argmax(base, dim, keep) : argmin(base, dim, keep);
            EXPECT_TRUE(bit_equal(host(ad), ac)) << (is_max ? "argmax" : "argmin");
          }
        }
      }
    }
  });
}

TEST(CudaReduce, ExtremesF32Ties) {
  HMOE_REQUIRE_CUDA();
  extremes_for(DType::f32, 3);
}
TEST(CudaReduce, ExtremesBf16) {
  HMOE_REQUIRE_CUDA();
  extremes_for(DType::bf16, 0);  // bf16 rounding makes ties of its own
}
TEST(CudaReduce, ExtremesF64Ties) {
  HMOE_REQUIRE_CUDA();
  extremes_for(DType::f64, 2);
}

// Integer tensors: sums (i64 accumulation, bool and i32 promoted by the op), extremes.
TEST(CudaReduce, Integers) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 2000;
    for (DType dt : {DType::i32, DType::i64})
      for (const auto& k : cases()) {
        const Tensor x = testing::rand_ids(k.shape, -1000, 1000, seed += 2, dt);
        {
          const bool keep = seed % 4 == 0;
          SCOPED_TRACE(x.meta_str() + " dims " + dims_str(k.dims));
          EXPECT_TRUE(bit_equal(host(sum(dev(x), k.dims, keep)), sum(x, k.dims, keep)));
          if (k.shape.empty()) continue;
          const auto [vd, id] = max(dev(x), -1, keep);
          const auto [vc, ic] = max(x, -1, keep);
          EXPECT_TRUE(bit_equal(host(vd), vc));
          EXPECT_TRUE(bit_equal(host(id), ic));
          EXPECT_TRUE(bit_equal(host(argmin(dev(x), 0, keep)), argmin(x, 0, keep)));
        }
      }
    const Tensor b = gt(rand_cpu({37, 11}, 2100, DType::f32), zeros({}, {DType::f32}));
    EXPECT_TRUE(bit_equal(host(sum(dev(b), {0})), sum(b, {0})));
    EXPECT_TRUE(bit_equal(host(sum(dev(b))), sum(b)));
  });
}

TEST(CudaReduce, F16Sample) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor x = rand_cpu({9, 130, 3}, 2200, DType::f16);
    for (const Case& k : {Case{{9, 130, 3}, {1}}, Case{{9, 130, 3}, {2}}, Case{{9, 130, 3}, {0, 1, 2}}}) {
      check_reduce("sum", kSum, x, k, false, 2201);
      check_reduce("logsumexp", kLse, x, k, true, 2202);
    }
    EXPECT_TRUE(bit_equal(host(argmax(dev(x), 1)), argmax(x, 1)));
  });
}

// Long reductions (split over blocks, then combined): one row of 1000003, a column sum
// over many rows, norms; and the same bits under every schedule.
TEST(CudaReduce, LongAndDeterministic) {
  HMOE_REQUIRE_CUDA();
  const Tensor row = rand_cpu({1000003}, 3000, DType::f32);
  const Tensor tall = rand_cpu({20000, 24}, 3001, DType::f32);
  const Tensor rowb = rand_cpu({1000003}, 3002, DType::bf16);
  std::vector<Tensor> first;
  for_each_schedule([&] {
    std::vector<Tensor> got = {
        host(sum(dev(row))),        host(logsumexp(dev(row), {0})), host(argmax(dev(row), 0)),
        host(max(dev(row))),        host(sum(dev(tall), {0})),      host(logsumexp(dev(tall), {0})),
        host(argmin(dev(tall), 0)), host(sum(dev(rowb))),           host(norm(dev(tall))),
    };
    expect_matches(dev(got[0]), sum(row), -1, "sum of a long row");
    expect_matches(dev(got[1]), logsumexp(row, {0}), -1, "logsumexp of a long row");
    EXPECT_TRUE(bit_equal(got[2], argmax(row, 0)));
    EXPECT_TRUE(bit_equal(got[3], max(row)));
    expect_matches(dev(got[4]), sum(tall, {0}), -1, "column sums");
    expect_matches(dev(got[5]), logsumexp(tall, {0}), -1, "column logsumexp");
    EXPECT_TRUE(bit_equal(got[6], argmin(tall, 0)));
    expect_matches(dev(got[7]), sum(rowb), -1, "bf16 sum of a long row");
    expect_matches(dev(got[8]), norm(tall), -1, "norm");
    if (first.empty()) {
      first = got;
    } else {
      for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_equal(got[i], first[i])) << "result " << i;
    }
  });
  // Alignment does not change the bits: the same values at an odd offset.
  const Tensor padded = dev(rand_cpu({1000004}, 3003, DType::f32));
  padded.narrow(0, 1, 1000003).copy_(dev(row));
  const Tensor aligned = dev(row);
  EXPECT_TRUE(bit_equal(host(sum(padded.narrow(0, 1, 1000003))), host(sum(aligned))));
  EXPECT_TRUE(bit_equal(host(logsumexp(padded.narrow(0, 1, 1000003), {0})), host(logsumexp(aligned, {0}))));
}

// NaN wins max/min (first NaN's index), +-inf in logsumexp, empty reductions.
TEST(CudaReduce, SpecialValuesAndEmpty) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      for (int64_t n : {5, 40, 3000, 70001}) {
        std::vector<double> v(static_cast<size_t>(2 * n));
        for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(double(i));
        v[size_t(n / 2)] = NAN;
        v[size_t(n - 1)] = NAN;
        v[size_t(n + 1)] = INFINITY;
        const Tensor x = from_vector(v, {2, n}).to(dt);
        SCOPED_TRACE(x.meta_str());
        for (int64_t dim : {0, 1}) {
          EXPECT_TRUE(bit_equal(host(argmax(dev(x), dim)), argmax(x, dim))) << "argmax dim " << dim;
          EXPECT_TRUE(bit_equal(host(argmin(dev(x), dim)), argmin(x, dim))) << "argmin dim " << dim;
          const auto md = host(max(dev(x), dim).first).to_vector(), mc = max(x, dim).first.to_vector();
          ASSERT_EQ(md.size(), mc.size());
          for (size_t i = 0; i < mc.size(); ++i)
            EXPECT_TRUE((std::isnan(md[i]) && std::isnan(mc[i])) || md[i] == mc[i]) << "max at " << i;
        }
        const Tensor ld = host(logsumexp(dev(x), {1})), lc = logsumexp(x, {1});
        EXPECT_TRUE(std::isnan(ld.to_vector()[0]) && std::isnan(lc.to_vector()[0]));
        EXPECT_EQ(ld.to_vector()[1], INFINITY);
        EXPECT_EQ(lc.to_vector()[1], INFINITY);
      }
      const Tensor ninf = full({3, 50}, -INFINITY, {dt});
      EXPECT_TRUE(bit_equal(host(logsumexp(dev(ninf), {1})), logsumexp(ninf, {1}))) << "all -inf";
      // Empty: sums are 0, logsumexp -inf, outputs with no elements launch nothing.
      const Tensor e = Tensor::empty({4, 0, 3}, {dt});
      for (const std::vector<int64_t>& d : {std::vector<int64_t>{1}, {0, 1}, {2}, {0}}) {
        EXPECT_TRUE(bit_equal(host(sum(dev(e), d)), sum(e, d))) << dims_str(d);
        EXPECT_TRUE(bit_equal(host(logsumexp(dev(e), d)), logsumexp(e, d))) << dims_str(d);
      }
      EXPECT_TRUE(bit_equal(host(max(dev(e), 2).first), max(e, 2).first));
    }
  });
}

TEST(CudaReduce, Errors) {
  HMOE_REQUIRE_CUDA();
  const Tensor e = dev(Tensor::empty({4, 0}, {DType::f32}));
  EXPECT_HMOE_ERROR(max(e, 1), "empty dim");
  EXPECT_HMOE_ERROR(argmax(e, 1), "empty dim");
  EXPECT_HMOE_ERROR(sum(dev(rand_cpu({3}, 1, DType::f32)), {1}), "sum");
  EXPECT_HMOE_ERROR(logsumexp(dev(testing::rand_ids({3}, 0, 4, 2)), {0}), "floating");
  const Tensor b = dev(gt(rand_cpu({3}, 3, DType::f32), zeros({}, {DType::f32})));
  EXPECT_HMOE_ERROR(argmax(b, 0), "bool");
  // The kernel's own checks, with the CPU's messages.
  Tensor out = Tensor::empty({4}, {DType::f32, kDev});
  EXPECT_HMOE_ERROR(reduce_stub.get(kDev)(ReduceOp::max, e, out, 4, 0, 1), "cannot reduce over an empty dimension");
  Tensor outb = Tensor::empty({1}, {DType::b8, kDev});
  EXPECT_HMOE_ERROR(reduce_stub.get(kDev)(ReduceOp::sum, b, outb, 1, 3, 1), "reduce");
}

}  // namespace
}  // namespace hmoe

namespace hmoe {
namespace {

// Bandwidth of the reduce kernels on a real GPU (bytes read).
TEST(CudaReduceBench, Bandwidth) {
  HMOE_REQUIRE_KERNEL_BENCH();
  for (DType dt : {DType::f32, DType::bf16}) {
    const std::string d(dtype_name(dt));
    const double e = double(dtype_size(dt));
    Generator g(1);
    const Tensor a = uniform({int64_t(1) << 26}, g, -1, 1, {dt, kDev});
    auto report = [&](const std::string& what, const Tensor& x, const std::function<void()>& fn) {
      const double ms = device_median_ms(fn);
      std::printf("%-44s %9.4f ms %8.1f GB/s\n", (d + " " + what).c_str(), ms, e * double(x.numel()) / ms / 1e6);
    };
    const Tensor rows = a.reshape({16384, 4096}), wide = a.reshape({4096, 16384}), tall = a.reshape({1 << 20, 64});
    const Tensor vocab = a.narrow(0, 0, 2048 * 32000).reshape({2048, 32000}), flat = a;
    report("sum [16384,4096] dim 1", rows, [&] { sum(rows, {1}); });
    report("sum [4096,16384] dim 0", wide, [&] { sum(wide, {0}); });
    report("sum [1M,64] dim 1 (short rows)", tall, [&] { sum(tall, {1}); });
    report("sum [1M,64] dim 0 (tall columns)", tall, [&] { sum(tall, {0}); });
    report("sum all 64M", flat, [&] { sum(flat); });
    report("max+argmax [2048,32000] dim 1", vocab, [&] { max(vocab, 1); });
    report("argmax [2048,32000] dim 1", vocab, [&] { argmax(vocab, 1); });
    report("logsumexp [2048,32000] dim 1", vocab, [&] { logsumexp(vocab, {1}); });
    report("logsumexp [16384,4096] dim 0", rows, [&] { logsumexp(rows, {0}); });
  }
}

}  // namespace
}  // namespace hmoe
