// Router tests: fused softmax / top-k / gates against a naive loop, ties, renorm
// defaults, capacity, gradients, the auxiliary losses (including the smooth load) and
// bad input.
#include "ops/moe/router.h"

#include "tests/support/moe_ref.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace ref = hmoe::testing::moe_ref;

TEST(MoeRouter, MatchesNaiveForEveryK) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    const int64_t T = 37, N = 6;
    Tensor logits = rand_t({T, N}, 11, -3, 3, dt);
    const auto l = logits.to_vector();
    for (int64_t k = 1; k <= N; ++k)
      for (bool renorm : {false, true}) {
        moe::RouterConfig rc;
        rc.renormalize = renorm;
        auto r = moe::route_topk(logits, k, rc);
        EXPECT_EQ(r.expert_ids.dtype(), DType::i32);
        EXPECT_EQ(r.gates.dtype(), dt == DType::f64 ? DType::f64 : DType::f32);  // router math in f32
        auto want = ref::route(l, T, N, k, renorm);
        const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
        expect_close(r.probs, want.probs, tol);
        expect_close(r.gates, want.gates, tol);
        EXPECT_EQ(ref::ints(r.expert_ids), want.ids) << "k = " << k;
      }
  }
}

TEST(MoeRouter, TiesGoToTheLowerIndexAndRenormDefaults) {
  auto r = moe::route_topk(zeros({3, 5}, {DType::f32}), 3);
  expect_close(r.expert_ids, {0, 1, 2, 0, 1, 2, 0, 1, 2});
  expect_close(r.gates, std::vector<double>(9, 1.0 / 3.0), 1e-6);  // k > 1: renormalised by default
  Tensor logits = rand_t({4, 3}, 2, -1, 1, DType::f64);
  auto r1 = moe::route_topk(logits, 1);  // k = 1: p_max, not p / p = 1
  auto want = ref::route(logits.to_vector(), 4, 3, 1, false);
  expect_close(r1.gates, want.gates, 1e-12);
  moe::RouterConfig rc;
  rc.k = 2;
  rc.renormalize = false;
  auto r2 = moe::route(logits, rc);
  expect_close(r2.gates, ref::route(logits.to_vector(), 4, 3, 2, false).gates, 1e-12);
}

TEST(MoeRouter, Gradients) {
  Tensor logits = rand_t({5, 4}, 3, -2, 2, DType::f64, true);
  Tensor wp = rand_t({5, 4}, 4, -1, 1, DType::f64);
  for (int64_t k : {1, 2, 4})
    for (bool renorm : {false, true}) {
      moe::RouterConfig rc;
      rc.renormalize = renorm;
      EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::route_topk(in[0], k, rc).gates; },
                       std::vector<Tensor>{logits});
      EXPECT_GRADCHECK(
          [&](const std::vector<Tensor>& in) {
            auto r = moe::route_topk(in[0], k, rc);
            return sum(r.gates) + sum(r.probs * wp);
          },
          std::vector<Tensor>{logits});
    }
}

TEST(MoeRouter, CapacityDropsByPositionPriority) {
  moe::RouterConfig rc;
  rc.capacity_factor = 1.0;  // C = ceil(8 / 4) = 2; zero logits send every token to expert 0
  auto capped = moe::route_topk(zeros({8, 4}, {DType::f64}), 1, rc);
  expect_close(capped.dropped, {0, 0, 1, 1, 1, 1, 1, 1});
  EXPECT_FALSE(moe::route_topk(zeros({8, 4}, {DType::f64}), 1).dropped.defined());  // dropless default
}

TEST(MoeRouter, AuxLossesMatchNaive) {
  const int64_t T = 9, N = 4, k = 2;
  Tensor logits = rand_t({T, N}, 5, -2, 2, DType::f64, true);
  auto r = moe::route_topk(logits, k);
  auto want = ref::route(logits.to_vector(), T, N, k, true);
  std::vector<double> f(N, 0), P(N, 0), imp(N, 0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      f[size_t(want.ids[size_t(t * k + j)])] += 1.0 / double(T * k);
      imp[size_t(want.ids[size_t(t * k + j)])] += want.gates[size_t(t * k + j)];
    }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < N; ++i) P[size_t(i)] += want.probs[size_t(t * N + i)] / double(T);
  double lb = 0;
  for (int64_t i = 0; i < N; ++i) lb += double(N) * f[size_t(i)] * P[size_t(i)];
  EXPECT_NEAR(moe::load_balancing_loss(r).item(), lb, 1e-12);
  auto cv2 = [](const std::vector<double>& v) {
    double m = 0, s = 0;
    for (double x : v) m += x / double(v.size());
    for (double x : v) s += (x - m) * (x - m) / double(v.size());
    return s / (m * m + 1e-10);
  };
  std::vector<double> load(N);
  for (int64_t i = 0; i < N; ++i) load[size_t(i)] = f[size_t(i)] * double(T * k);
  EXPECT_NEAR(moe::cv_squared_loss(r).item(), cv2(imp) + cv2(load), 1e-10);
  double z = 0;
  const auto l = logits.to_vector();
  for (int64_t t = 0; t < T; ++t) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < N; ++i) m = std::max(m, l[size_t(t * N + i)]);
    for (int64_t i = 0; i < N; ++i) s += std::exp(l[size_t(t * N + i)] - m);
    z += std::pow(m + std::log(s), 2) / double(T);
  }
  EXPECT_NEAR(moe::router_z_loss(logits).item(), z, 1e-12);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::load_balancing_loss(moe::route_topk(in[0], k)); },
                   std::vector<Tensor>{logits});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::cv_squared_loss(moe::route_topk(in[0], k)); },
                   std::vector<Tensor>{logits});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::router_z_loss(in[0]); }, std::vector<Tensor>{logits});
  // Uniform routing balances perfectly: LB loss = 1.
  EXPECT_NEAR(moe::load_balancing_loss(moe::route_topk(zeros({8, 4}, {DType::f64}), 1)).item(), 1.0, 1e-12);
}

TEST(MoeRouter, SmoothLoadMatchesShazeer) {
  const int64_t T = 7, N = 5;
  Tensor clean = rand_t({T, N}, 6, -1, 1, DType::f64, true);
  Tensor sd = rand_t({T, N}, 7, 0.3, 1.0, DType::f64, true);
  Tensor noisy = (clean.detach() + randn_t({T, N}, 8) * sd.detach()).set_requires_grad(true);
  for (int64_t k : {1, 2, 4}) {
    const auto c = clean.to_vector(), z = noisy.to_vector(), s = sd.to_vector();
    std::vector<double> want(N, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> row(z.begin() + t * N, z.begin() + (t + 1) * N);
      std::vector<double> sorted = row;
      std::sort(sorted.begin(), sorted.end(), std::greater<>());
      const double thr_in = sorted[size_t(k)], thr_out = sorted[size_t(k - 1)];  // Shazeer's eq. 9
      for (int64_t i = 0; i < N; ++i) {
        const bool in = row[size_t(i)] > thr_in;
        want[size_t(i)] += ref::normal_cdf((c[size_t(t * N + i)] - (in ? thr_in : thr_out)) / s[size_t(t * N + i)]);
      }
    }
    expect_close(moe::smooth_load(clean, noisy, sd, k), want, 1e-12);
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::smooth_load(in[0], in[1], in[2], k); },
                     (std::vector<Tensor>{clean, noisy, sd}));
  }
  expect_close(moe::smooth_load(clean, noisy, sd, N), std::vector<double>(N, double(T)));  // k = N: always in
  // cv^2 loss with the smooth load is differentiable w.r.t. the clean logits and the std.
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        auto r = moe::route_topk(in[1], 2);
        return moe::cv_squared_loss(r, in[2], in[0]);
      },
      (std::vector<Tensor>{clean, noisy, sd}));
}

TEST(MoeRouter, DenseGates) {
  Tensor g = rand_t({3, 2}, 9, 0, 1, DType::f64, true);
  Tensor ids = from_vector(std::vector<int32_t>{2, 0, 1, 3, 0, 1}, {3, 2});
  Tensor d = moe::dense_gates(g, ids, 4);
  const auto gv = g.to_vector();
  expect_close(d, {gv[1], 0, gv[0], 0, 0, gv[2], 0, gv[3], gv[4], gv[5], 0, 0});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::dense_gates(in[0], ids, 4); },
                   std::vector<Tensor>{g});
  EXPECT_HMOE_ERROR(moe::dense_gates(g, ids, 3), "out of range");
}

TEST(MoeRouter, EdgeCasesAndErrors) {
  auto one = moe::route_topk(rand_t({1, 1}, 1, -1, 1, DType::f32), 1);  // T = 1, N = 1
  expect_close(one.gates, {1.0});
  auto empty = moe::route_topk(zeros({0, 4}), 2);  // T = 0
  EXPECT_EQ(empty.gates.numel(), 0);
  Tensor logits = rand_t({4, 3}, 1, -1, 1, DType::f32);
  EXPECT_HMOE_ERROR(moe::route_topk(logits, 4), "k = 4");
  EXPECT_HMOE_ERROR(moe::route_topk(logits, 0), "k = 0");
  EXPECT_HMOE_ERROR(moe::route_topk(zeros({4}), 1), "[T, N]");
  EXPECT_HMOE_ERROR(moe::route_topk(zeros({2, 3}, {DType::i64}), 1), "float");
  EXPECT_HMOE_ERROR(moe::route_topk(full({2, 3}, NAN), 1), "NaN");
  moe::RouterConfig rc;
  rc.capacity_factor = -1;
  EXPECT_HMOE_ERROR(moe::route_topk(logits, 1, rc), "capacity_factor");
  EXPECT_HMOE_ERROR(moe::smooth_load(logits, logits, zeros({4, 2}), 1), "one shape");
}

TEST(MoeRouter, DeterministicAcrossThreadCounts) {
  Tensor logits = randn_t({3000, 16}, 3, DType::f32, true);
  auto run = [&] {
    auto r = moe::route_topk(logits, 2);
    (sum(r.gates * r.gates) + moe::router_z_loss(logits)).backward();
    std::vector<double> out = r.gates.to_vector();
    const auto g = logits.grad().to_vector();
    out.insert(out.end(), g.begin(), g.end());
    logits.zero_grad();
    return out;
  };
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  const auto b = run();
  EXPECT_EQ(a, b);
}
