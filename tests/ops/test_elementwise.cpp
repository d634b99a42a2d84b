// Elementwise ops: values against plain formulas, broadcasting, non-contiguous
// inputs, every dtype path, gradcheck, and errors.
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {
using UFn = Tensor (*)(const Tensor&);
double ref_gelu(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double ref_gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
}  // namespace

TEST(Elementwise, UnaryValuesAndGradients) {
  struct Case {
    const char* name;
    std::function<Tensor(const Tensor&)> op;
    std::function<double(double)> ref;
    double lo, hi;
  };
  std::vector<Case> cases = {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, -2, 2},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.5, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0.5, 3},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 0.5, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::abs(x); }, -2, 2},
      {"square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; }, -2, 2},
      {"pow", [](const Tensor& x) { return pow(x, 2.5); }, [](double x) { return std::pow(x, 2.5); }, 0.5, 2},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); },
       [](double x) { return std::min(0.7, std::max(-0.5, x)); }, -2, 2},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0; }, -2, 2},
      {"gelu", [](const Tensor& x) { return gelu(x); }, ref_gelu, -3, 3},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, ref_gelu_tanh, -3, 3},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x / (1 + std::exp(-x)); }, -3, 3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }, -3, 3},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, -3, 3},
      {"softplus", [](const Tensor& x) { return softplus(x, 2.0, 5.0); },
       [](double x) { return 2 * x > 5 ? x : std::log1p(std::exp(2 * x)) / 2; }, -3, 4},
  };
  uint64_t seed = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor x = rand_t({4, 5}, seed++, c.lo, c.hi);
    Tensor y = c.op(x);
    auto xv = x.to_vector(), yv = y.to_vector();
    for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(yv[i], c.ref(xv[i]), 1e-12);
    // Non-contiguous input.
    Tensor yt = c.op(x.t());
    expect_close(yt, y.t(), 1e-12);
    // f32 and bf16 paths agree with f64 within their precision.
    expect_close(c.op(x.to(DType::f32)), y, 1e-5);
    expect_close(c.op(x.to(DType::bf16)).to(DType::f64), y, 0.05 * (1 + std::abs(c.hi)));
    // Gradient (kinks of relu/abs/clamp are avoided by the random draw).
    Tensor xg = rand_t({3, 4}, seed++, c.lo, c.hi, DType::f64, true);
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return c.op(in[0]); }, std::vector<Tensor>{xg});
  }
}

TEST(Elementwise, BinaryBroadcastValuesAndGradients) {
  Tensor a = rand_t({2, 1, 4}, 1, 0.5, 2, DType::f64, true);
  Tensor b = rand_t({3, 1}, 2, 0.5, 2, DType::f64, true);
  auto av = a.to_vector(), bv = b.to_vector();
  Tensor y = a * b;
  EXPECT_EQ(y.shape(), (Shape{2, 3, 4}));
  auto yv = y.to_vector();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_NEAR(yv[size_t((i * 3 + j) * 4 + k)], av[size_t(i * 4 + k)] * bv[size_t(j)], 1e-15);
  const std::vector<std::function<Tensor(const Tensor&, const Tensor&)>> ops = {
      [](const Tensor& x, const Tensor& z) { return x + z; }, [](const Tensor& x, const Tensor& z) { return x - z; },
      [](const Tensor& x, const Tensor& z) { return x * z; }, [](const Tensor& x, const Tensor& z) { return x / z; },
      [](const Tensor& x, const Tensor& z) { return maximum(x, z); },
      [](const Tensor& x, const Tensor& z) { return minimum(x, z); }};
  for (size_t i = 0; i < ops.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return ops[i](in[0], in[1]); }, (std::vector<Tensor>{a, b}));
  }
  // Scalars on either side.
  expect_close(2.0 - a, neg(a) + 2.0, 1e-15);
  expect_close(1.0 / a, pow(a, -1.0), 1e-15);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return (in[0] * 3.0 + 1.0) / 2.0; }, std::vector<Tensor>{a});
}

TEST(Elementwise, IntegerAndBoolAndComparisons) {
  Tensor i = from_vector(std::vector<int64_t>{1, -2, 3}, {3});
  expect_close(i * i, {1, 4, 9});
  EXPECT_EQ((i * i).dtype(), DType::i64);
  expect_close(i / from_vector(std::vector<int64_t>{1, 2, 2}, {3}), {1, -1, 1});
  EXPECT_HMOE_ERROR(i / zeros({3}, {DType::i64}), "division by zero");
  Tensor f = from_vector(std::vector<double>{1, 2, 3}, {3}, {DType::f32});
  EXPECT_EQ((i + f).dtype(), DType::f32);
  Tensor c = gt(f, full({}, 1.5));
  EXPECT_EQ(c.dtype(), DType::b8);
  expect_close(c, {0, 1, 1});
  expect_close(logical_not(c), {1, 0, 0});
  expect_close(eq(f, f), {1, 1, 1});
  expect_close(where(c, f, neg(f)), {-1, 2, 3});
  EXPECT_HMOE_ERROR(c + c, "bool");
  EXPECT_HMOE_ERROR(where(f, f, f), "bool");
  EXPECT_HMOE_ERROR(zeros({2, 3}) + zeros({4}), "cannot be broadcast");
  EXPECT_HMOE_ERROR(exp(i), "floating");
}

TEST(Elementwise, WhereAndMaxTieGradients) {
  Tensor a = from_vector(std::vector<double>{1, 2, 3}, {3}, {DType::f64, Device::cpu(), true});
  Tensor b = from_vector(std::vector<double>{1, 0, 5}, {3}, {DType::f64, Device::cpu(), true});
  sum(maximum(a, b)).backward();
  expect_close(a.grad(), {0.5, 1, 0});
  expect_close(b.grad(), {0.5, 0, 1});
  Tensor c = from_vector(std::vector<double>{1, 0, 1}, {3}).to(DType::b8);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return where(c, in[0] * in[0], in[1]); },
                   (std::vector<Tensor>{rand_t({3}, 5, -1, 1, DType::f64, true), rand_t({1}, 6, -1, 1, DType::f64, true)}));
}

TEST(Elementwise, EmptyAndLargeParallel) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ((e + 1.0).shape(), (Shape{0, 3}));
  Tensor big = rand_t({300, 1000}, 3, -1, 1, DType::f32);
  set_num_threads(1);
  Tensor r1 = gelu(big) * big + exp(big.t()).t();
  set_num_threads(2);
  Tensor r2 = gelu(big) * big + exp(big.t()).t();
  expect_close(r1, r2, 0);
}

// add_ updates in place: broadcast and dtype conversion of src, a non-contiguous
// destination (the copy path), the version bump autograd relies on, and bad input.
TEST(Elementwise, AddInPlace) {
  Tensor d = rand_t({5, 7}, 1, -1, 1, DType::f32);
  const Tensor before = d.clone(), row = rand_t({7}, 2, -1, 1, DType::f64);
  const void* p = d.data_ptr<void>();
  const uint64_t v = d.storage()->version();
  add_(d, row);
  EXPECT_EQ(d.data_ptr<void>(), p);
  EXPECT_GT(d.storage()->version(), v);
  expect_close(d, (before + row.to(DType::f32)), 0);
  Tensor t = zeros({4, 3}, {DType::f64});
  Tensor tt = t.t();  // [3, 4], non-contiguous
  add_(tt, full({3, 4}, 2.0, {DType::f64}));
  expect_close(t, full({4, 3}, 2.0, {DType::f64}), 0);
  EXPECT_HMOE_ERROR(add_(d, zeros({5, 1, 7})), "does not broadcast");
  EXPECT_HMOE_ERROR(add_(zeros({2}, {DType::b8}), zeros({2}, {DType::b8})), "bool");
}
