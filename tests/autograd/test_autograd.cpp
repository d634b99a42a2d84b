// Autograd mechanics: diamonds, reuse, accumulation, no_grad, retain_graph,
// detach, views, freeing, and the errors of misuse.
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(Autograd, DiamondAndReuse) {
  Tensor x = from_vector(std::vector<double>{1, 2, 3}, {3}, {DType::f64, Device::cpu(), true});
  Tensor a = x * 2.0;
  Tensor b = x * x;               // x used twice
  Tensor y = sum(a * b + a);      // a used twice: 2x^3 + 2x -> 6x^2 + 2
  y.backward();
  expect_close(x.grad(), {8, 26, 56});
}

TEST(Autograd, AccumulatesAcrossCallsAndZeroGrad) {
  Tensor x = full({2}, 3.0, {DType::f64, Device::cpu(), true});
  sum(x * x).backward();
  sum(x * x).backward();
  expect_close(x.grad(), {12, 12});
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  sum(x).backward();
  expect_close(x.grad(), {1, 1});
}

TEST(Autograd, GradientsAreAdoptedOnlyWhenNothingElseHoldsThem) {
  Tensor t = zeros({4});
  EXPECT_TRUE(t.is_sole_owner());
  Tensor handle = t;
  EXPECT_FALSE(t.is_sole_owner());  // two handles
  handle = Tensor();
  Tensor view = t.narrow(0, 0, 2);
  EXPECT_FALSE(t.is_sole_owner());  // a view shares the storage
  EXPECT_FALSE(view.is_sole_owner());

  // add's backward hands one gradient tensor to both inputs: at most one may adopt it,
  // and neither .grad may alias the caller's gradient.
  Tensor x = zeros({3}, {DType::f64, Device::cpu(), true}), z = zeros({3}, {DType::f64, Device::cpu(), true});
  Tensor g = full({3}, 2.0, {DType::f64});
  (x + z).backward(g);
  add_(x.mutable_grad(), full({3}, 1.0, {DType::f64}));
  expect_close(x.grad(), {3, 3, 3});
  expect_close(z.grad(), {2, 2, 2});
  expect_close(g, {2, 2, 2});
  // Accumulation into an adopted gradient stays correct.
  x.zero_grad();
  sum(x * 3.0).backward();
  sum(x * 3.0).backward();
  expect_close(x.grad(), {6, 6, 6});
}

// The engine hands each backward its gradients: one that takes them by value holds the
// only handle, so dropping a gradient after its last use frees the buffer there and then
// (the grouped FFN's backward drops dy before it gathers dX).
TEST(Autograd, ABackwardOwnsTheGradientsItIsGiven) {
  Tensor x = rand_t({64, 64}, 1, -1, 1, DType::f64, true);
  Tensor y;
  {
    NoGradGuard no_grad;
    y = x * 2.0;
  }
  bool sole = false;
  autograd::record("twice", {x}, {y}, [&sole](std::vector<Tensor> g) {
    sole = g[0].is_sole_owner();
    Tensor gx = g[0] * 2.0;
    g.clear();
    return std::vector<Tensor>{gx};
  });
  sum(y * y).backward();  // y's gradient 2y, made by mul's backward, reaches only "twice"
  EXPECT_TRUE(sole);
  expect_close(x.grad(), x.detach() * 8.0);
}

// Gradients reaching one tensor from several uses are summed into a buffer nothing else
// can see (in place once the first sum exists), never into one the caller still holds.
TEST(Autograd, GradientSumsNeverWriteIntoSharedTensors) {
  Tensor x = full({3}, 1.0, {DType::f64, Device::cpu(), true});
  Tensor y = x * 3.0;
  Tensor g = full({3}, 2.0, {DType::f64});
  (y + y + y).backward(g);  // y's node gets the caller's g three times
  expect_close(x.grad(), {18, 18, 18});
  expect_close(g, {2, 2, 2});
}

TEST(Autograd, NoGradAndDetach) {
  Tensor x = ones({2}, {DType::f64, Device::cpu(), true});
  {
    NoGradGuard g;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
  }
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_EQ(d.storage(), x.storage());
  Tensor y = x * d;  // d is a constant
  sum(y).backward();
  expect_close(x.grad(), {1, 1});
}

TEST(Autograd, RetainGraphAndFreeing) {
  Tensor x = full({1}, 2.0, {DType::f64, Device::cpu(), true});
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  EXPECT_NEAR(x.grad().item(), 2 * std::exp(2.0), 1e-12);
  EXPECT_HMOE_ERROR(y.backward(), "second time");
  // Once the graph is gone, its saved tensors are released.
  std::weak_ptr<Storage> saved;
  {
    Tensor z = x * 3.0;
    Tensor w = sum(exp(z));
    saved = z.storage();  // exp saves its output, not z; z itself is saved by nothing
    w.backward();
  }
  EXPECT_TRUE(saved.expired());
}

TEST(Autograd, GradientsThroughViews) {
  Tensor x = rand_t({3, 4}, 1, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) {
    const Tensor& a = in[0];
    return a.t().slice(0, 1, 4, 2).reshape({-1}) * a.select(1, 0).unsqueeze(0).expand({2, 3}).flatten();
  }, std::vector<Tensor>{x});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return in[0].permute({1, 0}).contiguous().narrow(0, 1, 2); },
                   std::vector<Tensor>{x});
}

TEST(Autograd, Errors) {
  Tensor x = ones({2}, {DType::f64, Device::cpu(), true});
  EXPECT_HMOE_ERROR((x * 2.0).backward(), "implicitly");
  EXPECT_HMOE_ERROR(ones({2}).backward(), "does not require grad");
  EXPECT_HMOE_ERROR(x.fill_(1.0), "in-place");
  EXPECT_HMOE_ERROR(ones({2}, {DType::i64}).set_requires_grad(true), "floating");
  EXPECT_HMOE_ERROR((x * 2.0).set_requires_grad(false), "leaf");
  EXPECT_HMOE_ERROR((x * 2.0).backward(ones({3}, {DType::f64})), "does not match");
}

TEST(Autograd, DtypeConversionIsDifferentiable) {
  Tensor x = full({2}, 1.5, {DType::f32, Device::cpu(), true});
  sum(x.to(DType::f64) * 2.0).backward();
  EXPECT_EQ(x.grad().dtype(), DType::f32);
  expect_close(x.grad(), {2, 2});
}

// An op that promotes its inputs (f32 * f64) hands the f32 side an f64 gradient; every
// node must still get its outputs' gradients in their own dtypes (sigmoid's f32 backward
// kernel read an f64 gradient as f32: garbage, 1e37, seen in the MoE router's noise).
TEST(Autograd, EachNodeGetsGradientsInItsOutputsDtype) {
  const Tensor x = rand_t({5, 7}, 1, -2, 2, DType::f32, true);
  const Tensor w = rand_t({5, 7}, 2, -1, 1, DType::f64);
  const Tensor s = sigmoid(x);
  (sum(s * w) + sum(square(s)) * 0.5).backward();
  ASSERT_EQ(x.grad().dtype(), DType::f32);
  const Tensor sd = sigmoid(x.detach().to(DType::f64));
  expect_close(x.grad(), (w + sd) * sd * (1.0 - sd), 1e-6);
}

TEST(Autograd, CustomFunctionAndGradcheckCatchesWrongBackward) {
  // A differentiable function defined in one place: forward, then record() its backward.
  auto cube = [](const Tensor& x, double wrong) {
    Tensor y;
    {
      NoGradGuard g;
      y = x * x * x;
    }
    autograd::record("cube", {x}, {y}, [xs = x.detach(), wrong](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0] * xs * xs * (3.0 + wrong)};
    });
    return y;
  };
  Tensor x = rand_t({5}, 3, 0.5, 1.5, DType::f64, true);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return cube(in[0], 0.0); }, std::vector<Tensor>{x});
  auto bad = autograd::gradcheck([&](const std::vector<Tensor>& in) { return cube(in[0], 1e-3); },
                                 std::vector<Tensor>{x});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("analytic"), std::string::npos);
}
