// The elementwise kernel family on the cuda device against the CPU backend, through the
// public ops: every UnaryOp (forward and, where differentiable, the gradient), every
// BinaryOp with broadcasting and non-contiguous, unaligned and scalar operands
// (arithmetic within tolerance, comparisons and integer ops exactly, NaN propagation of
// maximum/minimum), where, gradients through add/sub/mul/div/maximum/minimum/where, odd
// sizes (1, 7, 33, 1000003) for the vectorised dense path, f32/bf16/f64 (and f16, i32,
// i64, bool where the CPU has them), integer division by zero. Every check runs under
// each emulator schedule.
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
#include "ops/elementwise_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

using View = std::function<Tensor(const Tensor&)>;
Tensor apply(const View& v, const Tensor& t) { return v ? v(t) : t; }

// Same values, exactly, with NaN where the reference has NaN (rel_error skips NaN
// references and cannot subtract infinities).
void expect_same_values(const Tensor& out, const Tensor& ref, const std::string& what) {
  const auto o = host(out).to_vector(), r = ref.to_vector();
  ASSERT_EQ(o.size(), r.size()) << what;
  for (size_t i = 0; i < o.size(); ++i) {
    ASSERT_EQ(std::isnan(o[i]), std::isnan(r[i])) << what << ": NaN mismatch at " << i;
    if (!std::isnan(r[i])) {
      EXPECT_EQ(o[i], r[i]) << what << " at " << i;
    }
  }
}

// ---- unary ops ---------------------------------------------------------------------------------

struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> f;
  double lo, hi;  // input range
  bool grad;      // differentiable
  bool integer;   // defined for integer tensors
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, -2, 2, true, true},
      {"exp", [](const Tensor& x) { return exp(x); }, -3, 3, true, false},
      {"log", [](const Tensor& x) { return log(x); }, 0.05, 3, true, false},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.05, 3, true, false},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.05, 3, true, false},
      {"abs", [](const Tensor& x) { return abs(x); }, -2, 2, true, true},
      {"relu", [](const Tensor& x) { return relu(x); }, -2, 2, true, false},  // public op: floats only
      {"gelu_erf", [](const Tensor& x) { return gelu(x); }, -3.5, 3.5, true, false},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, -3.5, 3.5, true, false},
      {"silu", [](const Tensor& x) { return silu(x); }, -6, 6, true, false},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -6, 6, true, false},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -3, 3, true, false},
      {"softplus", [](const Tensor& x) { return softplus(x); }, -30, 30, true, false},
      {"softplus_beta2_thr3", [](const Tensor& x) { return softplus(x, 2.0, 3.0); }, -4, 4, true, false},
      {"pow3", [](const Tensor& x) { return pow(x, 3.0); }, -2, 2, true, false},
      {"pow2", [](const Tensor& x) { return pow(x, 2.0); }, -2, 2, true, false},
      {"pow_half", [](const Tensor& x) { return pow(x, 0.5); }, 0.05, 3, true, false},
      {"pow_m1", [](const Tensor& x) { return pow(x, -1.0); }, 0.2, 3, true, false},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, -2, 2, true, false},
      {"mul_scalar", [](const Tensor& x) { return mul(x, 3.0); }, -2, 2, true, true},
      {"add_scalar", [](const Tensor& x) { return add(x, 2.0); }, -2, 2, true, true},
      {"sign", [](const Tensor& x) { return sign(x); }, -2, 2, false, true},
      {"square", [](const Tensor& x) { return square(x); }, -2, 2, true, true},
  };
}

// Forward (and gradient) of c.f on x (CPU values; `view` makes the op's input from the
// leaf), device in x's dtype against the CPU within x's dtype's tolerance. The CPU
// reference runs in f64 for f32 and f64 inputs (the spec's reference); for bf16 / f16 in
// their own dtype, since a composite backward rounds after every op (the device must
// follow the same roundings, not beat them).
void check_unary(const UnaryCase& c, const Tensor& x, uint64_t seed, const View& view = nullptr) {
  SCOPED_TRACE(c.name + " of " + x.meta_str());
  const bool grad = c.grad && is_floating(x.dtype());
  const double tol = testing::tolerance(x.dtype());
  const bool half = x.dtype() == DType::bf16 || x.dtype() == DType::f16;
  const DType ref_dt = half || !is_floating(x.dtype()) ? x.dtype() : DType::f64;
  const Tensor xr = x.to(ref_dt);
  const Tensor xd = grad ? leaf(x, kDev) : dev(x), xc = grad ? leaf(xr, Device::cpu()) : xr;
  const Tensor yd = c.f(apply(view, xd)), yc = c.f(apply(view, xc));
  ASSERT_EQ(yd.dtype(), x.dtype());
  expect_matches(yd.to(ref_dt), yc, tol, "forward");
  if (!grad || yc.numel() == 0) return;
  const Tensor g = rand_cpu(yc.shape(), seed, x.dtype());
  yd.backward(dev(g));
  yc.backward(g.to(ref_dt));
  expect_matches(xd.grad().to(ref_dt), xc.grad(), tol, "gradient");
}

void unary_all_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 100;
    for (const auto& c : unary_cases())
      for (const Shape& s : {Shape{}, Shape{1}, Shape{7}, Shape{33}, Shape{4, 5, 6}, Shape{0, 3}}) {
        seed += 2;
        check_unary(c, rand_cpu(s, seed, dt, c.lo, c.hi), seed + 1);
      }
  });
}

TEST(CudaElementwise, UnaryF32) {
  HMOE_REQUIRE_CUDA();
  unary_all_for(DType::f32);
}
TEST(CudaElementwise, UnaryBf16) {
  HMOE_REQUIRE_CUDA();
  unary_all_for(DType::bf16);
}
TEST(CudaElementwise, UnaryF64) {
  HMOE_REQUIRE_CUDA();
  unary_all_for(DType::f64);
}
TEST(CudaElementwise, UnaryF16) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 150;
    for (const auto& c : unary_cases()) {
      seed += 2;
      check_unary(c, rand_cpu({3, 37}, seed, DType::f16, c.lo, c.hi), seed + 1);
    }
  });
}

// The GELUs' negative tail, where 1 + erf and 1 + tanh cancel in f32: the device keeps
// f32 accuracy there (against f64), values and gradients.
TEST(CudaElementwise, GeluTailAccuracy) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (bool approx : {false, true}) {
      const Tensor x = rand_cpu({257}, 170, DType::f32, -9, -3);
      const Tensor xd = leaf(x, kDev), xc = leaf(x.to(DType::f64), Device::cpu());
      const Tensor yd = gelu(xd, approx), yc = gelu(xc, approx);
      expect_matches(yd.to(DType::f64), yc, 1e-5, approx ? "gelu_tanh" : "gelu_erf");
      const Tensor g = rand_cpu({257}, 171, DType::f32);
      yd.backward(dev(g));
      yc.backward(g.to(DType::f64));
      expect_matches(xd.grad().to(DType::f64), xc.grad(), 1e-5, "gradient");
    }
  });
}

// Non-contiguous inputs (the strided kernel) and unaligned contiguous ones (the dense
// kernel's element-by-element path).
TEST(CudaElementwise, UnaryStridedAndUnaligned) {
  HMOE_REQUIRE_CUDA();
  const std::vector<std::pair<std::string, View>> views = {
      {"transpose", [](const Tensor& t) { return t.t(); }},
      {"step slice", [](const Tensor& t) { return t.slice(1, 1, 13, 3); }},
      {"unaligned", [](const Tensor& t) { return t.reshape({-1}).narrow(0, 1, 40); }},
      {"expanded",
       [](const Tensor& t) {
         return t.narrow(0, 0, 1).expand({5, 13});
       }},
  };
  for_each_schedule([&] {
    uint64_t seed = 200;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (const auto& c : unary_cases())
        for (const auto& [vname, v] : views) {
          SCOPED_TRACE(vname);
          seed += 2;
          check_unary(c, rand_cpu({5, 13}, seed, dt, c.lo, c.hi), seed + 1, v);
        }
  });
}

// The integer ops on i32 / i64 match exactly; the float-only ones are refused.
TEST(CudaElementwise, UnaryIntegers) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 300;
    for (DType dt : {DType::i32, DType::i64})
      for (const auto& c : unary_cases()) {
        if (!c.integer) continue;
        for (const Shape& s : {Shape{1}, Shape{33}, Shape{6, 7}}) {
          const Tensor x = testing::rand_ids(s, -50, 50, seed += 2, dt);
          SCOPED_TRACE(c.name + " of " + x.meta_str());
          expect_matches(c.f(dev(x)), c.f(x), 0, "forward");
          if (x.dim() == 2) expect_matches(c.f(dev(x).t()), c.f(x.t()), 0, "transposed");
        }
      }
  });
  // The kernel refuses float-only ops on integers, and non-bool logical_not input paths
  // are stopped by the public op, with the CPU's messages.
  const Tensor xi = dev(testing::rand_ids({4}, 1, 9, 7, DType::i32));
  Tensor out = Tensor::empty({4}, {DType::i32, kDev});
  EXPECT_HMOE_ERROR(unary_stub.get(kDev)(UnaryOp::exp, xi, out, 0, 0), "unary op");
  EXPECT_HMOE_ERROR(exp(xi), "floating");
  EXPECT_HMOE_ERROR(logical_not(xi), "bool");
  EXPECT_HMOE_ERROR(neg(dev(lt(rand_cpu({3}, 1, DType::f32), zeros({}, {DType::f32})))), "bool");
}

TEST(CudaElementwise, LogicalNotAndSignEdges) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (int64_t n : {1, 7, 33, 100, 1000003}) {
      const Tensor b = lt(rand_cpu({n}, uint64_t(n), DType::f32), zeros({}, {DType::f32}));
      EXPECT_TRUE(bit_equal(host(logical_not(dev(b))), logical_not(b))) << n;
    }
    const Tensor b2 = lt(rand_cpu({6, 9}, 3, DType::f32), zeros({}, {DType::f32}));
    EXPECT_TRUE(bit_equal(host(logical_not(dev(b2).t())), logical_not(b2.t())));
    // sign / relu / abs at 0, -0, inf and NaN as the CPU defines them.
    const Tensor e = from_vector(std::vector<double>{0.0, -0.0, INFINITY, -INFINITY, NAN, -3.5, 2.0}, {7});
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      const Tensor x = e.to(dt);
      for (const auto& f : std::vector<std::function<Tensor(const Tensor&)>>{
               [](const Tensor& t) { return sign(t); }, [](const Tensor& t) { return relu(t); },
               [](const Tensor& t) { return abs(t); }, [](const Tensor& t) { return clamp(t, -1, 1); }}) {
        const Tensor yd = f(dev(x)), yc = f(x);
        EXPECT_TRUE(bit_equal(host(yd), yc)) << host(yd).str() << " vs " << yc.str();
      }
    }
  });
}

// Large contiguous tensors: the vector path with a tail of n % V elements.
TEST(CudaElementwise, LargeOddSize) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 400;
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor a = rand_cpu({1000003}, seed += 2, dt), b = rand_cpu({1000003}, seed += 2, dt, 0.5, 2);
      expect_matches(add(dev(a), dev(b)), add(a, b), -1, "add");
      expect_matches(div(dev(a), dev(b)), div(a, b), -1, "div");
      expect_matches(gelu(dev(a)), gelu(a), -1, "gelu");
      expect_matches(mul(dev(a), 0.5), mul(a, 0.5), -1, "mul scalar");
      EXPECT_TRUE(bit_equal(host(lt(dev(a), dev(b))), lt(a, b))) << "lt";
      const Tensor c = gt(a, zeros({}, {dt}));
      expect_matches(where(dev(c), dev(a), dev(b)), where(c, a, b), -1, "where");
      const Tensor m = a.narrow(0, 0, 999 * 1000).reshape({999, 1000}), r = b.narrow(0, 0, 1000);
      expect_matches(add(dev(m), dev(r)), add(m, r), -1, "rows + row");
      expect_matches(mul(dev(m), dev(r).reshape({1000, 1}).narrow(0, 1, 999)),
                     mul(m, r.reshape({1000, 1}).narrow(0, 1, 999)), -1, "rows * column");
    }
  });
}

// ---- binary ops --------------------------------------------------------------------------------

struct BinaryCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> f;
};
std::vector<BinaryCase> arithmetic_cases() {
  return {{"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
          {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
          {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
          {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }},
          {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
          {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }}};
}
std::vector<BinaryCase> comparison_cases() {
  return {{"eq", [](const Tensor& a, const Tensor& b) { return eq(a, b); }},
          {"ne", [](const Tensor& a, const Tensor& b) { return ne(a, b); }},
          {"lt", [](const Tensor& a, const Tensor& b) { return lt(a, b); }},
          {"le", [](const Tensor& a, const Tensor& b) { return le(a, b); }},
          {"gt", [](const Tensor& a, const Tensor& b) { return gt(a, b); }},
          {"ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }}};
}

struct ShapePair {
  Shape a, b;
  View va, vb;  // views applied to the leaves (non-contiguous operands)
};
std::vector<ShapePair> shape_pairs() {
  const View t = [](const Tensor& x) { return x.t(); };
  const View unaligned = [](const Tensor& x) { return x.narrow(0, 1, x.size(0) - 1); };
  return {
      {{}, {}, nullptr, nullptr},
      {{1}, {1}, nullptr, nullptr},
      {{7}, {7}, nullptr, nullptr},
      {{33}, {33}, nullptr, nullptr},
      {{4, 5}, {5}, nullptr, nullptr},
      {{4, 1}, {1, 5}, nullptr, nullptr},
      {{3, 1, 7}, {5, 1}, nullptr, nullptr},
      {{6}, {}, nullptr, nullptr},
      {{}, {9}, nullptr, nullptr},
      {{37}, {1}, nullptr, nullptr},
      {{5, 4}, {4, 5}, t, nullptr},
      {{5, 4}, {5, 4}, t, t},
      {{34}, {33}, unaligned, nullptr},
      {{34}, {34}, unaligned, unaligned},
      {{0, 3}, {3}, nullptr, nullptr},
      {{2, 3, 4},
       {3, 2},
       [](const Tensor& x) {
         return x.permute({2, 0, 1});
       },
       t},
      // Two dims with row broadcasts (the rows kernel): vectorised rows, per-row scalars,
      // column slices with a row stride, unaligned rows.
      {{6, 16}, {16}, nullptr, nullptr},
      {{6, 1}, {6, 16}, nullptr, nullptr},
      {{6, 32}, {16}, [](const Tensor& x) { return x.narrow(1, 0, 16); }, nullptr},
      {{6, 17}, {6, 16}, [](const Tensor& x) { return x.narrow(1, 1, 16); }, nullptr},
      {{5, 16}, {1, 16}, [](const Tensor& x) { return x.t(); }, [](const Tensor& x) { return x.t(); }},
  };
}

// Forward and both gradients of f(a, b), device against CPU.
void check_binary(const BinaryCase& c, const Tensor& a, const Tensor& b, const View& va, const View& vb, uint64_t seed,
                  bool grad) {
  SCOPED_TRACE(c.name + " of " + a.meta_str() + ", " + b.meta_str());
  grad = grad && is_floating(a.dtype());
  const Tensor ad = grad ? leaf(a, kDev) : dev(a), ac = grad ? leaf(a, Device::cpu()) : a;
  const Tensor bd = grad ? leaf(b, kDev) : dev(b), bc = grad ? leaf(b, Device::cpu()) : b;
  const Tensor yd = c.f(apply(va, ad), apply(vb, bd)), yc = c.f(apply(va, ac), apply(vb, bc));
  const bool exact = !is_floating(yc.dtype());
  expect_matches(yd, yc, exact ? 0 : -1, "forward");
  if (!grad || yc.numel() == 0) return;
  const Tensor g = rand_cpu(yc.shape(), seed, a.dtype());
  yd.backward(dev(g));
  yc.backward(g);
  expect_matches(ad.grad(), ac.grad(), -1, "gradient of a");
  expect_matches(bd.grad(), bc.grad(), -1, "gradient of b");
}

// Random values in [lo, hi): uniform for floats, integers in [25 lo, 25 hi) excluding 0
// when lo > 0 (divisors).
Tensor values(const Shape& s, uint64_t seed, DType dt, double lo, double hi) {
  if (is_floating(dt)) return rand_cpu(s, seed, dt, lo, hi);
  return testing::rand_ids(s, lo > 0 ? 1 : int64_t(25 * lo), int64_t(25 * hi), seed, dt);
}

void binary_all_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (const auto& sp : shape_pairs()) {
      for (const auto& c : arithmetic_cases()) {
        seed += 3;
        // Divisors away from 0.
        const bool div = c.name == "div";
        const Tensor a = values(sp.a, seed, dt, -2, 2), b = values(sp.b, seed + 1, dt, div ? 0.25 : -2, 2);
        check_binary(c, a, b, sp.va, sp.vb, seed + 2, true);
      }
      for (const auto& c : comparison_cases()) {
        seed += 3;
        // Few distinct values, so equality is common.
        check_binary(c, rand_ties(sp.a, 3, seed, dt), rand_ties(sp.b, 3, seed + 1, dt), sp.va, sp.vb, 0, false);
      }
    }
  });
}

TEST(CudaElementwise, BinaryF32) {
  HMOE_REQUIRE_CUDA();
  binary_all_for(DType::f32);
}
TEST(CudaElementwise, BinaryBf16) {
  HMOE_REQUIRE_CUDA();
  binary_all_for(DType::bf16);
}
TEST(CudaElementwise, BinaryF64) {
  HMOE_REQUIRE_CUDA();
  binary_all_for(DType::f64);
}
TEST(CudaElementwise, BinaryF16AndIntegers) {
  HMOE_REQUIRE_CUDA();
  binary_all_for(DType::f16);
  binary_all_for(DType::i32);
  binary_all_for(DType::i64);
}

// Mixed dtypes promote before the kernel; bool tensors compare (eq, ne) but refuse arithmetic.
TEST(CudaElementwise, MixedAndBool) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor a = rand_cpu({4, 6}, 601, DType::f32), b = rand_cpu({6}, 602, DType::bf16);
    expect_matches(add(dev(a), dev(b)), add(a, b), -1, "f32 + bf16");
    const Tensor i = testing::rand_ids({6}, -3, 3, 603, DType::i32);
    expect_matches(mul(dev(a), dev(i)), mul(a, i), -1, "f32 * i32");
    const Tensor p = lt(rand_cpu({5, 7}, 604, DType::f32), zeros({}, {DType::f32}));
    const Tensor q = lt(rand_cpu({7}, 605, DType::f32), zeros({}, {DType::f32}));
    EXPECT_TRUE(bit_equal(host(eq(dev(p), dev(q))), eq(p, q)));
    EXPECT_TRUE(bit_equal(host(ne(dev(p.t().contiguous()).t(), dev(q))), ne(p, q)));
    EXPECT_HMOE_ERROR(add(dev(p), dev(p)), "bool");
    Tensor out = Tensor::empty({5, 7}, {DType::b8, kDev});
    EXPECT_HMOE_ERROR(binary_stub.get(kDev)(BinaryOp::lt, dev(p), dev(p), out), "binary op");
  });
}

// maximum / minimum propagate NaN from either side; comparisons with NaN are false (ne true).
TEST(CudaElementwise, NaNPropagation) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      const Tensor a = from_vector(std::vector<double>{NAN, 1, NAN, -2, INFINITY, 0.0, 3}, {7}).to(dt);
      const Tensor b = from_vector(std::vector<double>{1, NAN, NAN, -INFINITY, 2, -0.0, 3}, {7}).to(dt);
      for (const auto& c : arithmetic_cases()) {
        const Tensor yd = c.f(dev(a), dev(b)), yc = c.f(a, b);
        expect_same_values(yd, yc, c.name);  // every result here is exact
      }
      for (const auto& c : comparison_cases()) EXPECT_TRUE(bit_equal(host(c.f(dev(a), dev(b))), c.f(a, b))) << c.name;
    }
  });
}

TEST(CudaElementwise, IntegerDivisionByZero) {
  HMOE_REQUIRE_CUDA();
  for (DType dt : {DType::i32, DType::i64}) {
    const Tensor a = dev(testing::rand_ids({40}, -9, 9, 700, dt));
    Tensor b = testing::rand_ids({40}, 1, 9, 701, dt);
    expect_matches(div(a, dev(b)), div(host(a), b), 0, "nonzero divisors");
    b = b.clone();
    b.narrow(0, 17, 1).fill_(0);
    EXPECT_HMOE_ERROR(div(a, dev(b)), "integer division by zero");
    EXPECT_HMOE_ERROR(div(host(a), b), "integer division by zero");  // the CPU says the same
  }
}

// ---- where --------------------------------------------------------------------------------------

// add_ on the device: the binary kernel writing into its own first input (dense and
// unaligned, with a broadcast row and a dtype conversion) matches the CPU.
TEST(CudaElementwise, AddInPlace) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (int64_t n : {int64_t(1), int64_t(37), int64_t(1031)}) {
      const Tensor a = rand_cpu({3, n + 1}, 60 + uint64_t(n), DType::f32), row = rand_cpu({n}, 61, DType::bf16);
      Tensor hc = a.clone().narrow(1, 1, n).contiguous(), dc = dev(hc);
      Tensor hu = a.clone().reshape({-1}).narrow(0, 1, 3 * n).reshape({3, n});  // contiguous, off 16 bytes
      Tensor du = dev(a).reshape({-1}).narrow(0, 1, 3 * n).reshape({3, n});
      add_(hc, row);
      add_(dc, dev(row));
      add_(hu, row);
      add_(du, dev(row));
      expect_matches(dc, hc, -1, "add_ dense");
      expect_matches(du, hu, -1, "add_ unaligned");
    }
  });
}

TEST(CudaElementwise, Where) {
  HMOE_REQUIRE_CUDA();
  struct Case {
    Shape c, a, b;
  };
  const std::vector<Case> cases = {{{}, {}, {}},      {{1}, {1}, {1}},       {{7}, {7}, {7}},
                                   {{33}, {33}, {}},  {{4, 5}, {5}, {4, 1}}, {{3, 1, 6}, {1, 4, 6}, {6}},
                                   {{0, 2}, {2}, {1}}};
  for_each_schedule([&] {
    uint64_t seed = 800;
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::f16})
      for (const auto& k : cases) {
        seed += 4;
        const Tensor cond = gt(rand_cpu(k.c, seed, DType::f32), zeros({}, {DType::f32}));
        const Tensor a = rand_cpu(k.a, seed + 1, dt), b = rand_cpu(k.b, seed + 2, dt);
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(k.c));
        const Tensor ad = leaf(a, kDev), bd = leaf(b, kDev), ac = leaf(a, Device::cpu()), bc = leaf(b, Device::cpu());
        const Tensor yd = where(dev(cond), ad, bd), yc = where(cond, ac, bc);
        EXPECT_TRUE(bit_equal(host(yd), yc)) << "forward";
        if (yc.numel() == 0) continue;
        const Tensor g = rand_cpu(yc.shape(), seed + 3, dt);
        yd.backward(dev(g));
        yc.backward(g);
        expect_matches(ad.grad(), ac.grad(), -1, "gradient of a");
        expect_matches(bd.grad(), bc.grad(), -1, "gradient of b");
      }
    // Non-contiguous condition and operands; integer and bool values (moved as bits).
    const Tensor cond = gt(rand_cpu({6, 5}, 901, DType::f32), zeros({}, {DType::f32}));
    for (DType dt : {DType::f32, DType::i64, DType::i32, DType::b8}) {
      const Tensor a = dt == DType::b8 ? lt(rand_cpu({5, 6}, 902, DType::f32), zeros({}, {DType::f32}))
                                       : testing::rand_ids({5, 6}, -9, 9, 902, dt);
      const Tensor b = dt == DType::b8 ? lt(rand_cpu({5}, 903, DType::f32), zeros({}, {DType::f32}))
                                       : testing::rand_ids({5}, -9, 9, 903, dt);
      EXPECT_TRUE(
          bit_equal(host(where(dev(cond).t(), dev(a), dev(b).reshape({5, 1}))), where(cond.t(), a, b.reshape({5, 1}))))
          << dtype_name(dt);
    }
  });
}

}  // namespace
}  // namespace hmoe

namespace hmoe {
namespace {

// Bandwidth of the elementwise kernels on a real GPU (minimum bytes moved).
TEST(CudaElementwiseBench, Bandwidth) {
  HMOE_REQUIRE_KERNEL_BENCH();
  auto report = [](const char* what, double bytes, const std::function<void()>& fn) {
    const double ms = device_median_ms(fn);
    std::printf("%-44s %9.4f ms %8.1f GB/s\n", what, ms, bytes / ms / 1e6);
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    const double e = double(dtype_size(dt));
    const int64_t n = int64_t(1) << 26;  // 64 Mi elements: past the L2 cache
    Generator g(1);
    const Tensor a = uniform({n}, g, -1, 1, {dt, kDev}), b = uniform({n}, g, -1, 1, {dt, kDev});
    const std::string d(dtype_name(dt));
    report((d + " gelu 64M").c_str(), 2 * e * double(n), [&] { gelu(a); });
    report((d + " silu 64M").c_str(), 2 * e * double(n), [&] { silu(a); });
    report((d + " add 64M").c_str(), 3 * e * double(n), [&] { add(a, b); });
    report((d + " mul scalar 64M").c_str(), 2 * e * double(n), [&] { mul(a, 0.5); });
    report((d + " lt 64M (bool out)").c_str(), (2 * e + 1) * double(n), [&] { lt(a, b); });
    const Tensor m = a.reshape({8192, 8192}), row = b.narrow(0, 0, 8192);
    report((d + " add [8192,8192] + [8192]").c_str(), 2 * e * double(n), [&] { add(m, row); });
    report((d + " add [8192,8192]^T + [8192,8192]").c_str(), 3 * e * double(n), [&] { add(m.t(), m); });
    const Tensor c = gt(a, b);
    report((d + " where 64M").c_str(), (3 * e + 1) * double(n), [&] { where(c, a, b); });
    const Tensor x = a.detach(), gy = b.detach();
    report((d + " gelu forward+backward 64M").c_str(), 5 * e * double(n), [&] {
      Tensor l = x.detach();
      l.set_requires_grad(true);
      gelu(l).backward(gy);
    });
  }
}

}  // namespace
}  // namespace hmoe
