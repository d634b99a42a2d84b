// Optimisers against hand-computed updates, the LR schedule, and clipping.
#include "engine/thread_pool.h"
#include "models/optim/optimizer.h"
#include "ops/optim.h"
#include "ops/optim_kernels.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

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

// bf16 parameters keep f32 master weights: the update is the f32 update, the parameter
// its rounding, and a save / load of the state (master included) resumes exactly.
TEST(Optim, AdamWMasterWeightsForBf16) {
  const Tensor init = rand_t({37}, 11, -1, 1, DType::f32);
  Tensor p16 = init.to(DType::bf16).set_requires_grad(true);
  Tensor p32 = init.to(DType::bf16).to(DType::f32).set_requires_grad(true);  // same start as the master
  optim::AdamWOptions o;
  o.lr = 0.05;
  o.weight_decay = 0.1;
  optim::AdamW a16({p16}, o), a32({p32}, o);
  const Tensor g = rand_t({37}, 12, -1, 1, DType::f32);
  for (int t = 0; t < 3; ++t) {
    p16.set_grad(g.to(DType::bf16));
    p32.set_grad(g.to(DType::bf16).to(DType::f32));
    a16.step();
    a32.step();
    EXPECT_EQ(p16.dtype(), DType::bf16);
    EXPECT_TRUE(bit_equal(p16, p32.to(DType::bf16))) << "step " << t;
  }
  const auto state = a16.state_tensors();
  ASSERT_EQ(state.size(), 3u);  // exp_avg, exp_avg_sq, master
  EXPECT_EQ(state[2].first, "0.master");
  expect_close(state[2].second, p32, 0);
  Tensor q16 = zeros({37}, {DType::bf16}).set_requires_grad(true);
  optim::AdamW b16({q16}, o);
  b16.load_state(state, a16.step_count());
  EXPECT_TRUE(bit_equal(q16, p16));  // the copy follows the loaded master
  EXPECT_HMOE_ERROR(b16.load_state({state[0], state[1]}, 3), "tensors for");
}

TEST(Optim, SgdMasterWeightsForF16) {
  Tensor p = full({5}, 1.0, {DType::f16}).set_requires_grad(true);
  optim::SGDOptions o;
  o.lr = 1e-4;  // below f16's resolution at 1: only a master weight accumulates it
  optim::SGD opt({p}, o);
  for (int t = 0; t < 10; ++t) {
    p.set_grad(full({5}, 1.0, {DType::f16}));
    opt.step();
  }
  expect_close(opt.state_tensors().back().second, std::vector<double>(5, 1.0 - 1e-3), 1e-6);
  expect_close(p, std::vector<double>(5, double(float(f16(0.999f)))), 0);
}

// The sum of squares behind clipping: exact on small integers, independent of the
// thread count on a size of many chunks, f64 accumulation for f32 input.
TEST(Optim, SumSquaresIsDeterministic) {
  EXPECT_EQ(sum_squares(from_vector(std::vector<double>{1, -2, 3}, {3}, {DType::f32})).item(), 14.0);
  EXPECT_EQ(sum_squares(zeros({0})).item(), 0.0);
  EXPECT_EQ(sum_squares(full({3, 4}, 2.0, {DType::bf16}).t()).item(), 48.0);  // non-contiguous
  const Tensor x = rand_t({5 * kSumSquaresChunk + 123}, 5, -1, 1, DType::f32);
  const int before = num_threads();
  set_num_threads(1);
  const double one = sum_squares(x).item();
  set_num_threads(2);
  const double two = sum_squares(x).item();
  set_num_threads(before);
  EXPECT_EQ(one, two);
  double ref = 0;
  for (double v : x.to_vector()) ref += v * v;
  EXPECT_NEAR(one, ref, 1e-9 * ref);
  EXPECT_HMOE_ERROR(sum_squares(zeros({2}, {DType::i64})), "float tensor");
}

TEST(Optim, UpdateOpsRejectBadInput) {
  const Tensor m = zeros({4}), g = zeros({4});
  EXPECT_HMOE_ERROR(adamw_update_(m, m, m, zeros({3}), Tensor(), {}), "gradient");
  EXPECT_HMOE_ERROR(adamw_update_(m, zeros({4}, {DType::f64}), m, g, Tensor(), {}), "optimizer state");
  EXPECT_HMOE_ERROR(adamw_update_(zeros({4}, {DType::bf16}), m, m, g, Tensor(), {}), "master weights");
  EXPECT_HMOE_ERROR(adamw_update_(m, zeros({4}), zeros({4}), g, m, {}), "parameter copy");
  AdamWStep bad;
  bad.step = 0;
  EXPECT_HMOE_ERROR(adamw_update_(m, zeros({4}), zeros({4}), g, Tensor(), bad), "bad step");
  SGDStep s;
  s.momentum = 0.9;
  EXPECT_HMOE_ERROR(sgd_update_(m, zeros({2}), g, Tensor(), s), "optimizer state");
}
