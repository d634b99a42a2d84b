// Elementwise kernels on the cuda device against the CPU backend: every unary op and
// its gradient, binary ops with broadcasting and non-contiguous operands, comparisons
// (exact), where, integer division by zero, odd sizes for the vector path's tail.
#include "tests/cuda/cuda_test_util.h"

namespace hmoe::testing::cuda {
namespace {

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> f;
  double lo, hi;
  bool grad;
};

std::vector<UnaryCase> unary_cases() {
  return {{"neg", [](const Tensor& x) { return neg(x); }, -2, 2, true},
          {"exp", [](const Tensor& x) { return exp(x); }, -3, 3, true},
          {"log", [](const Tensor& x) { return log(x); }, 0.1, 3, true},
          {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.1, 3, true},
          {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.1, 3, true},
          {"abs", [](const Tensor& x) { return abs(x); }, -2, 2, true},
          {"relu", [](const Tensor& x) { return relu(x); }, -2, 2, true},
          {"gelu", [](const Tensor& x) { return gelu(x); }, -4, 4, true},
          {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, -4, 4, true},
          {"silu", [](const Tensor& x) { return silu(x); }, -4, 4, true},
          {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -4, 4, true},
          {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3, true},
          {"softplus", [](const Tensor& x) { return softplus(x); }, -30, 30, true},
          {"pow3", [](const Tensor& x) { return pow(x, 3.0); }, -2, 2, true},
          {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, -2, 2, true},
          {"mul_scalar", [](const Tensor& x) { return mul(x, 1.5); }, -2, 2, true},
          {"add_scalar", [](const Tensor& x) { return add(x, -0.25); }, -2, 2, true}};
}

TEST(CudaElementwise, UnaryForwardAndGradient) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([] {
    uint64_t seed = 100;
    for (const auto& c : unary_cases())
      for (DType dt : {DType::f32, DType::bf16, DType::f64})
        for (const Shape& sh : {Shape{1}, Shape{7}, Shape{33, 5}, Shape{3, 0, 2}, Shape{4, 129}}) {
          SCOPED_TRACE(std::string(c.name) + " " + std::string(dtype_name(dt)) + " " + shape_str(sh));
          Tensor x = rand_cpu(sh, ++seed, dt, c.lo, c.hi);
          Tensor xc = x.to(DType::f64).detach().set_requires_grad(true);  // the f64 reference
          Tensor xd = x.to(kDev).detach().set_requires_grad(true);
          Tensor yc = c.f(xc), yd = c.f(xd);
          expect_matches(yd, yc, -1, "forward");
          if (!c.grad || x.numel() == 0) continue;
          Tensor g = rand_cpu(sh, ++seed, dt);
          yc.backward(g.to(DType::f64));
          yd.backward(g.to(kDev));
          expect_matches(xd.grad(), xc.grad(), -1, "gradient");
        }
  });
}

TEST(CudaElementwise, NonContiguousAndLargeDense) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([] {
    Tensor x = rand_cpu({9, 14}, 1, DType::f32);
    Tensor t = x.transpose(0, 1);  // strided input
    expect_matches(gelu(t.to(kDev)), gelu(t));
    Tensor xs = x.to(kDev).transpose(0, 1);  // strided on the device itself
    expect_matches(exp(xs), exp(t));
    // Odd length past several vectors, and an offset (misaligned) view.
    Tensor big = rand_cpu({1001}, 2, DType::bf16);
    expect_matches(silu(big.to(kDev)), silu(big));
    expect_matches(silu(big.to(kDev).narrow(0, 1, 999)), silu(big.narrow(0, 1, 999)));
  });
}

TEST(CudaElementwise, BinaryBroadcastingAndGradients) {
  HMOE_REQUIRE_CUDA();
  using F = std::function<Tensor(const Tensor&, const Tensor&)>;
  const std::vector<std::pair<const char*, F>> ops{
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }}};
  const std::vector<std::pair<Shape, Shape>> shapes{
      {{5, 7}, {5, 7}}, {{5, 7}, {7}}, {{5, 1}, {1, 7}}, {{1}, {3, 4, 5}}, {{2, 1, 33}, {4, 1}}, {{1}, {1}}};
  for_each_schedule([&] {
    uint64_t seed = 7;
    for (const auto& [name, f] : ops)
      for (DType dt : {DType::f32, DType::bf16})
        for (const auto& [sa, sb] : shapes) {
          SCOPED_TRACE(std::string(name) + " " + std::string(dtype_name(dt)) + " " + shape_str(sa) + " x " + shape_str(sb));
          Tensor a = rand_cpu(sa, ++seed, dt), b = rand_cpu(sb, ++seed, dt, 0.5, 2);
          // f64 reference, except bf16 gradients: their composite backward rounds to bf16
          // between ops, so they are checked against the CPU doing the same in bf16.
          const DType rt = dt == DType::bf16 ? DType::bf16 : DType::f64;
          Tensor ac = a.to(rt).detach().set_requires_grad(true), bc = b.to(rt).detach().set_requires_grad(true);
          Tensor ad = a.to(kDev).detach().set_requires_grad(true), bd = b.to(kDev).detach().set_requires_grad(true);
          Tensor yc = f(ac, bc), yd = f(ad, bd);
          expect_matches(yd, yc, -1, "forward");
          Tensor g = rand_cpu(yc.shape(), ++seed, dt);
          yc.backward(g.to(rt));
          yd.backward(g.to(kDev));
          expect_matches(ad.grad(), ac.grad(), -1, "grad a");
          expect_matches(bd.grad(), bc.grad(), -1, "grad b");
        }
  });
}

TEST(CudaElementwise, ComparisonsWhereAndIntegers) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([] {
    Tensor a = rand_cpu({6, 11}, 3, DType::f32), b = rand_cpu({11}, 4, DType::f32);
    for (auto f : {&lt, &le, &gt, &ge, &eq, &ne}) {
      Tensor yc = f(a, b), yd = f(a.to(kDev), b.to(kDev));
      ASSERT_EQ(yd.dtype(), DType::b8);
      EXPECT_EQ(yd.to(Device::cpu()).to_vector(), yc.to_vector());
    }
    Tensor cond = gt(a, b);
    Tensor w = where(cond.to(kDev), a.to(kDev), b.to(kDev).expand({6, 11}));
    EXPECT_EQ(w.to(Device::cpu()).to_vector(), where(cond, a, b.expand({6, 11})).to_vector());
    EXPECT_EQ(logical_not(cond.to(kDev)).to(Device::cpu()).to_vector(), logical_not(cond).to_vector());
    // Integers: exact arithmetic, and division by zero is an error.
    Tensor i = arange(-20, 13, 1, {DType::i64}), j = arange(1, 34, 1, {DType::i64});
    EXPECT_EQ(div(i.to(kDev), j.to(kDev)).to(Device::cpu()).to_vector(), div(i, j).to_vector());
    EXPECT_EQ(mul(i.to(kDev), j.to(kDev)).to(Device::cpu()).to_vector(), mul(i, j).to_vector());
    EXPECT_EQ(abs(i.to(kDev)).to(Device::cpu()).to_vector(), abs(i).to_vector());
    EXPECT_HMOE_ERROR(div(j.to(kDev), zeros({33}, {DType::i64, kDev})), "division by zero");
  });
}

TEST(CudaElementwise, NaNPropagatesThroughMaximum) {
  HMOE_REQUIRE_CUDA();
  Tensor a = from_vector(std::vector<float>{NAN, 1.f, 2.f, NAN}, {4});
  Tensor b = from_vector(std::vector<float>{0.f, NAN, 3.f, NAN}, {4});
  const auto want = maximum(a, b).to_vector(), got = maximum(a.to(kDev), b.to(kDev)).to(Device::cpu()).to_vector();
  ASSERT_EQ(want.size(), got.size());
  for (size_t k = 0; k < want.size(); ++k) {
    EXPECT_EQ(std::isnan(want[k]), std::isnan(got[k])) << k;
    if (!std::isnan(want[k])) {
      EXPECT_EQ(want[k], got[k]) << k;
    }
  }
}

}  // namespace
}  // namespace hmoe::testing::cuda
