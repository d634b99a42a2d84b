// Optimisers against hand-computed updates, the LR schedule, and clipping.
#include "models/optim/optimizer.h"
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(Optim, AdamWMatchesTheFormula) {
  Tensor p = from_vector(std::vector<double>{1.0, -2.0}, {2}, {DType::f64, Device::cpu(), true});
  optim::AdamWOptions o;
  o.lr = 0.1;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.5;
  optim::AdamW opt({p}, o);
  std::vector<double> x = {1.0, -2.0}, m = {0, 0}, v = {0, 0};
  for (int t = 1; t <= 3; ++t) {
    opt.zero_grad();
    sum(p * p * p).backward();  // g = 3 p^2
    opt.step();
    for (int i = 0; i < 2; ++i) {
      const double g = 3 * x[size_t(i)] * x[size_t(i)];
      m[size_t(i)] = 0.9 * m[size_t(i)] + 0.1 * g;
      v[size_t(i)] = 0.99 * v[size_t(i)] + 0.01 * g * g;
      const double mh = m[size_t(i)] / (1 - std::pow(0.9, t)), vh = v[size_t(i)] / (1 - std::pow(0.99, t));
      x[size_t(i)] = x[size_t(i)] * (1 - 0.1 * 0.5) - 0.1 * mh / (std::sqrt(vh) + 1e-8);
    }
    expect_close(p, x, 1e-12);
  }
  EXPECT_EQ(opt.step_count(), 3);
  // State round trip.
  optim::AdamW other({p}, o);
  other.load_state(opt.state_tensors(), opt.step_count());
  EXPECT_EQ(other.step_count(), 3);
  EXPECT_HMOE_ERROR(other.load_state({}, 1), "tensors for");
}

TEST(Optim, SgdMomentumAndNesterov) {
  Tensor p = full({1}, 1.0, {DType::f64, Device::cpu(), true});
  optim::SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  optim::SGD opt({p}, o);
  double x = 1, b = 0;
  for (int t = 0; t < 3; ++t) {
    opt.zero_grad();
    sum(p * p).backward();
    opt.step();
    const double g = 2 * x;
    b = t == 0 ? g : 0.9 * b + g;
    x -= 0.1 * b;
    EXPECT_NEAR(p.item(), x, 1e-12);
  }
  o.nesterov = true;
  o.dampening = 0.5;
  EXPECT_HMOE_ERROR(optim::SGD({p}, o), "nesterov");
}

TEST(Optim, ScheduleAndClipping) {
  EXPECT_NEAR(optim::warmup_cosine_lr(0, 10, 100, 1.0, 0.1), 0.1, 1e-12);
  EXPECT_NEAR(optim::warmup_cosine_lr(9, 10, 100, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(optim::warmup_cosine_lr(10, 10, 100, 1.0, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(optim::warmup_cosine_lr(55, 10, 100, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_NEAR(optim::warmup_cosine_lr(100, 10, 100, 1.0, 0.1), 0.1, 1e-12);
  Tensor a = full({2}, 1.0, {DType::f64, Device::cpu(), true}), b = full({1}, 1.0, {DType::f64, Device::cpu(), true});
  sum(a * 3.0).backward();
  sum(b * 4.0).backward();  // |g| = sqrt(9 + 9 + 16) = sqrt(34)
  const double n = optim::clip_grad_norm_({a, b}, 1.0);
  EXPECT_NEAR(n, std::sqrt(34.0), 1e-12);
  EXPECT_NEAR(std::sqrt(sum(square(a.grad())).item() + sum(square(b.grad())).item()), 1.0, 1e-5);
  EXPECT_HMOE_ERROR(optim::clip_grad_norm_({a}, 0.0), "positive");
}
