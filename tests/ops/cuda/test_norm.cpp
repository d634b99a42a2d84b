// The norm kernel family on the cuda device against the CPU backend: layer_norm (with
// and without bias) and rms_norm, forward and the gradients of input, weight and bias
// through the public ops, over row lengths that hit every kernel path (sub-warp, warp,
// block in registers, streamed; vector and scalar loads), many rows (several chunks of
// the deterministic weight reduction), weights covering two dims, non-contiguous and
// unaligned inputs, f32/bf16/f16/f64, an empty batch, and bit-identical results across
// emulator schedules.
#include <gtest/gtest.h>

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

enum class Kind { layer_bias, layer, rms };
const char* name(Kind k) {
  return k == Kind::layer_bias ? "layer_norm+bias" : k == Kind::layer ? "layer_norm" : "rms_norm";
}

Tensor apply(Kind k, const Tensor& x, const Tensor& w, const Tensor& b) {
  switch (k) {
    case Kind::layer_bias:
      return layer_norm(x, w, b);
    case Kind::layer:
      return layer_norm(x, w);
    case Kind::rms:
      return rms_norm(x, w);
  }
  return Tensor();
}

// Forward and the gradients of x, weight (and bias) on the device against the CPU.
// weight shape = the trailing dims of x given by wdims; `view` maps the x leaf to the
// op's input (non-contiguous or unaligned layouts).
void check_norm(Kind k, const Shape& xs, int64_t wdims, DType dt, uint64_t seed,
                const std::function<Tensor(const Tensor&)>& view = nullptr, const Shape& leaf_shape = {}) {
  const Shape ws(xs.end() - wdims, xs.end());
  SCOPED_TRACE(std::string(name(k)) + " x " + shape_str(xs) + " weight " + shape_str(ws) + " " +
               std::string(dtype_name(dt)));
  const Tensor x = rand_cpu(leaf_shape.empty() ? xs : leaf_shape, seed, dt, -3, 3);
  const Tensor w = rand_cpu(ws, seed + 1, dt, 0.5, 1.5);
  const Tensor b = rand_cpu(ws, seed + 2, dt, -1, 1);
  const Tensor xd = leaf(x, kDev), wd = leaf(w, kDev), bd = leaf(b, kDev);
  const Tensor xc = leaf(x, Device::cpu()), wc = leaf(w, Device::cpu()), bc = leaf(b, Device::cpu());
  const Tensor yd = apply(k, view ? view(xd) : xd, wd, bd), yc = apply(k, view ? view(xc) : xc, wc, bc);
  expect_matches(yd, yc, -1, "forward");
  const Tensor g = rand_cpu(yc.shape(), seed + 3, dt);
  yd.backward(dev(g));
  yc.backward(g);
  if (k == Kind::rms && xs.back() == 1 && wdims == 1) {
    // Rows of one element: rms_norm's dx = g w rstd (1 - xhat^2) with xhat^2 = x^2 / (x^2 +
    // eps) within an ulp of 1, so dx is pure cancellation (its relative error is ~ulp / eps
    // on any backend). Measure the difference against the size of the cancelling terms.
    const Tensor scale = (g.to(DType::f64) * w.to(DType::f64) * rsqrt(square(x.to(DType::f64)) + 1e-6)).contiguous();
    const Tensor delta = xd.grad().to(Device::cpu()).to(DType::f64) - xc.grad().to(DType::f64);
    const double diff = std::sqrt(sum(square(delta)).item());  // NaN (an unwritten element) fails
    const double bound = testing::tolerance(dt) * std::sqrt(sum(square(scale)).item());
    EXPECT_LE(diff, bound) << "dx of one-element rows, against the size of its terms";
  } else {
    expect_matches(xd.grad(), xc.grad(), -1, "dx");
  }
  expect_matches(wd.grad(), wc.grad(), -1, "dweight");
  if (k == Kind::layer_bias)
    expect_matches(bd.grad(), bc.grad(), -1, "dbias");
  else
    EXPECT_FALSE(bd.grad().defined());
}

const std::vector<int64_t> kRowLengths = {1, 3, 31, 32, 33, 1000, 5000};

void rows_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 10;
    for (int64_t D : kRowLengths)
      for (int64_t M : {1, 6})
        for (Kind k : {Kind::layer_bias, Kind::layer, Kind::rms}) check_norm(k, {M, D}, 1, dt, seed += 4);
  });
}

TEST(CudaNorm, RowsF32) {
  HMOE_REQUIRE_CUDA();
  rows_for(DType::f32);
}
TEST(CudaNorm, RowsBf16) {
  HMOE_REQUIRE_CUDA();
  rows_for(DType::bf16);
}
TEST(CudaNorm, RowsF64) {
  HMOE_REQUIRE_CUDA();
  rows_for(DType::f64);
}

// Streamed rows (past the register capacity), odd lengths (scalar loads), many rows
// (several row chunks in the weight/bias reduction), 3-d inputs with 1- and 2-d
// weights, an f16 sample.
TEST(CudaNorm, LongOddManyRowsAndWeightDims) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 300;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (Kind k : {Kind::layer_bias, Kind::layer, Kind::rms}) {
        check_norm(k, {2, 20000}, 1, dt, seed += 4);
        check_norm(k, {3, 9001}, 1, dt, seed += 4);
        check_norm(k, {2, 1001}, 1, dt, seed += 4);
        check_norm(k, {300, 40}, 1, dt, seed += 4);
        check_norm(k, {1100, 3}, 1, dt, seed += 4);
        check_norm(k, {2, 3, 33}, 1, dt, seed += 4);
        check_norm(k, {2, 3, 33}, 2, dt, seed += 4);
      }
    for (Kind k : {Kind::layer_bias, Kind::rms}) check_norm(k, {5, 264}, 1, DType::f16, seed += 4);
  });
}

// Non-contiguous input (a transpose) and a contiguous input whose data starts off a
// 16-byte boundary (the vector path must fall back to scalar loads).
TEST(CudaNorm, LayoutsAndAlignment) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 400;
    for (DType dt : {DType::f32, DType::bf16})
      for (Kind k : {Kind::layer_bias, Kind::rms}) {
        check_norm(k, {6, 33}, 1, dt, seed += 4, [](const Tensor& t) { return t.transpose(0, 1); }, {33, 6});
        check_norm(k, {2, 128}, 1, dt, seed += 4,
                   [](const Tensor& t) {
                     return t.narrow(0, 1, 256).reshape({2, 128});
                   },
                   {1 + 256});
        check_norm(k, {3, 2048}, 1, dt, seed += 4,
                   [](const Tensor& t) {
                     return t.narrow(0, 1, 3 * 2048).reshape({3, 2048});
                   },
                   {1 + 3 * 2048});
      }
  });
}

// Only some gradients wanted: dx alone (weight and bias frozen), or dweight / dbias
// alone (input without grad: the backward kernels run without dx), in the register and
// the streamed paths.
TEST(CudaNorm, PartialGradients) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (DType dt : {DType::f32, DType::bf16})
      for (const Shape& s : {Shape{37, 40}, Shape{3, 20000}, Shape{200, 3}})
        for (bool want_x : {true, false}) {
          SCOPED_TRACE(shape_str(s) + (want_x ? " dx only" : " dweight/dbias only"));
          seed += 4;
          const Tensor x = rand_cpu(s, seed, dt, -3, 3), g = rand_cpu(s, seed + 1, dt);
          const Tensor w = rand_cpu({s[1]}, seed + 2, dt, 0.5, 1.5), b = rand_cpu({s[1]}, seed + 3, dt);
          std::vector<Tensor> grads[2];
          for (int side = 0; side < 2; ++side) {
            const Device d = side == 0 ? kDev : Device::cpu();
            const Tensor xs = want_x ? leaf(x, d) : x.to(d), ws = want_x ? w.to(d) : leaf(w, d),
                         bs = want_x ? b.to(d) : leaf(b, d);
            layer_norm(xs, ws, bs).backward(g.to(d));
            grads[side] = want_x ? std::vector<Tensor>{xs.grad()} : std::vector<Tensor>{ws.grad(), bs.grad()};
          }
          for (size_t i = 0; i < grads[1].size(); ++i) expect_matches(grads[0][i], grads[1][i], -1, "grad");
        }
  });
}

// An empty batch: empty output, zero weight and bias gradients.
TEST(CudaNorm, EmptyBatch) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor w = leaf(rand_cpu({8}, 1, DType::f32, 0.5, 1.5), kDev);
    const Tensor b = leaf(rand_cpu({8}, 2, DType::f32), kDev);
    const Tensor y = layer_norm(dev(zeros({0, 8})), w, b);
    EXPECT_EQ(y.shape(), (Shape{0, 8}));
    y.backward(dev(zeros({0, 8})));
    for (double v : host(w.grad()).to_vector()) EXPECT_EQ(v, 0.0);
    for (double v : host(b.grad()).to_vector()) EXPECT_EQ(v, 0.0);
  });
}

// Same inputs, same bits under every schedule, weight gradients included (fixed chunks).
TEST(CudaNorm, DeterministicAcrossSchedules) {
  HMOE_REQUIRE_CUDA();
  for (const Shape& s : {Shape{300, 40}, Shape{4, 5000}, Shape{2, 20000}}) {
    const Tensor x = rand_cpu(s, 5, DType::f32, -3, 3), g = rand_cpu(s, 6, DType::f32);
    const Tensor w = rand_cpu({s[1]}, 7, DType::f32, 0.5, 1.5), b = rand_cpu({s[1]}, 8, DType::f32);
    std::vector<Tensor> first;
    for_each_schedule([&] {
      const Tensor xd = leaf(x, kDev), wd = leaf(w, kDev), bd = leaf(b, kDev);
      const Tensor y = layer_norm(xd, wd, bd);
      y.backward(dev(g));
      const std::vector<Tensor> got = {host(y), host(xd.grad()), host(wd.grad()), host(bd.grad())};
      if (first.empty())
        first = got;
      else
        for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_equal(got[i], first[i])) << shape_str(s) << " " << i;
    });
  }
}

// Bandwidth of the norm kernels on a real GPU (bytes of x).
TEST(CudaNormBench, Bandwidth) {
  HMOE_REQUIRE_KERNEL_BENCH();
  for (DType dt : {DType::bf16, DType::f32})
    for (const Shape& s : {Shape{16384, 1024}, Shape{8192, 4096}, Shape{4096, 8192}, Shape{1024, 32768}}) {
      const Tensor x = dev(rand_cpu(s, 1, dt, -3, 3)), g = dev(rand_cpu(s, 2, dt));
      const Tensor w = dev(rand_cpu({s[1]}, 3, dt, 0.5, 1.5)), b = dev(rand_cpu({s[1]}, 4, dt));
      // Kernels alone, preallocated outputs; backward = dx + dweight + dbias.
      const Tensor y = Tensor::empty(s, {dt, kDev}), dx = Tensor::empty(s, {dt, kDev});
      const Tensor mean = Tensor::empty({s[0]}, {DType::f32, kDev}), rstd = Tensor::empty({s[0]}, {DType::f32, kDev});
      const Tensor dw = Tensor::empty({s[1]}, {dt, kDev}), db = Tensor::empty({s[1]}, {dt, kDev});
      const double bytes = double(x.nbytes());
      const double f = device_median_ms([&] { norm_stub.get(kDev)(x, w, b, 1e-5, false, y, mean, rstd); });
      const double r = device_median_ms([&] { norm_stub.get(kDev)(x, w, Tensor(), 1e-6, true, y, Tensor(), rstd); });
      const double fb = device_median_ms([&] { norm_backward_stub.get(kDev)(g, x, w, mean, rstd, false, dx, dw, db); });
      std::printf(
          "%-5s %-13s layer_norm fwd %7.1f us %6.0f GB/s | rms_norm fwd %7.1f us %6.0f GB/s | layer_norm "
          "bwd %7.1f us (%6.0f GB/s: x, g read, dx written)\n",
          std::string(dtype_name(dt)).c_str(), shape_str(s).c_str(), f * 1e3, 2 * bytes / f / 1e6, r * 1e3,
          2 * bytes / r / 1e6, fb * 1e3, 3 * bytes / fb / 1e6);
    }
}

}  // namespace
}  // namespace hmoe
