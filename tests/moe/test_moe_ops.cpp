// MoE ops against per-token loops: router, plan, permute/combine, grouped GEMM,
// patterns and the hyper adapter; gradients; edge cases; bad input.
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(Moe, RouterTopkGatesAndLosses) {
  Tensor logits = rand_t({6, 4}, 1, -2, 2, DType::f64, true);
  moe::RouterConfig rc;
  rc.k = 2;
  rc.renormalize = true;
  auto r = moe::route(logits, rc);
  EXPECT_EQ(r.expert_ids.dtype(), DType::i32);
  expect_close(sum(r.gates, {1}), std::vector<double>(6, 1.0), 1e-12);
  auto p = softmax(logits.detach(), 1).to_vector();
  auto ids = r.expert_ids.to(DType::i64).to_vector_as<int64_t>();
  for (int t = 0; t < 6; ++t) EXPECT_GE(p[size_t(t * 4 + ids[size_t(t * 2)])], p[size_t(t * 4 + ids[size_t(t * 2 + 1)])]);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::route(in[0], rc).gates; }, std::vector<Tensor>{logits});
  rc.k = 1;
  rc.renormalize = false;
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::route(in[0], rc).gates; }, std::vector<Tensor>{logits});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::load_balancing_loss(moe::route(in[0], rc)); },
                   std::vector<Tensor>{logits});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::router_z_loss(in[0]); }, std::vector<Tensor>{logits});
  // Uniform routing balances perfectly: LB loss = 1, cv^2 = 0.
  auto flat = moe::route(zeros({8, 4}, {DType::f64}), rc);
  EXPECT_NEAR(moe::load_balancing_loss(flat).item(), 1.0, 1e-12);
  rc.capacity_factor = 1.0;  // C = 2 tokens per expert; ties route every token to expert 0
  auto capped = moe::route(zeros({8, 4}, {DType::f64}), rc);
  expect_close(capped.dropped, {0, 0, 1, 1, 1, 1, 1, 1});
  rc.k = 5;
  EXPECT_HMOE_ERROR(moe::route(logits, rc), "k = 5");
}

TEST(Moe, PlanPermuteCombine) {
  Tensor ids = from_vector(std::vector<int32_t>{2, 0, 0, 2, 2, 1}, {3, 2});  // no token uses expert 3
  auto plan = moe::make_plan(ids, 4);
  expect_close(plan.counts, {2, 1, 3, 0});
  expect_close(plan.offsets, {0, 2, 3, 6, 6});
  expect_close(plan.perm, {1, 2, 5, 0, 3, 4});  // stable inside each expert
  Tensor x = rand_t({3, 5}, 2, -1, 1, DType::f64, true);
  Tensor xs = moe::permute_rows(x, plan);
  expect_close(xs.select(0, 0), x.select(0, 0).detach());  // slot 0 <- flat 1 <- token 0
  Tensor gates = rand_t({3, 2}, 3, 0, 1, DType::f64, true);
  Tensor ys = rand_t({6, 5}, 4, -1, 1, DType::f64, true);
  Tensor y = moe::combine(ys, gates, plan);
  // y_0 = g00 * ys[inv(0)] + g01 * ys[inv(1)]
  auto inv = plan.inverse.to_vector_as<int64_t>();
  expect_close(y.select(0, 0), (ys.select(0, inv[0]) * gates.select(0, 0).select(0, 0) +
                                ys.select(0, inv[1]) * gates.select(0, 0).select(0, 1)).detach(), 1e-12);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::combine(in[0], in[1], plan); },
                   (std::vector<Tensor>{ys, gates}));
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::permute_rows(in[0], plan); }, std::vector<Tensor>{x});
  EXPECT_HMOE_ERROR(moe::make_plan(from_vector(std::vector<int32_t>{4}, {1, 1}), 4), "out of range");
  EXPECT_HMOE_ERROR(moe::make_plan(zeros({2, 5}, {DType::i64}), 4), "exceeds");
  // One expert takes everything; T = 1.
  auto all = moe::make_plan(zeros({5, 1}, {DType::i64}), 3);
  expect_close(all.counts, {5, 0, 0});
  auto one = moe::make_plan(from_vector(std::vector<int32_t>{1}, {1, 1}), 2);
  expect_close(one.offsets, {0, 0, 1});
}

TEST(Moe, GroupedGemmMatchesPerGroupProducts) {
  Tensor x = rand_t({7, 3}, 5, -1, 1, DType::f64, true), w = rand_t({4, 3, 2}, 6, -1, 1, DType::f64, true);
  Tensor off = from_vector(std::vector<int64_t>{0, 2, 2, 7, 7}, {5});  // groups 1 and 3 empty
  Tensor y = moe::grouped_gemm(x, w, off);
  expect_close(y.narrow(0, 2, 5), matmul(x.narrow(0, 2, 5), w.select(0, 2)).detach(), 1e-12);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::grouped_gemm(in[0], in[1], off); },
                   (std::vector<Tensor>{x, w}));
  sum(moe::grouped_gemm(x, w, off)).backward();
  EXPECT_EQ(max_abs_diff(w.grad().select(0, 1), zeros({3, 2}, {DType::f64})), 0.0);  // empty group: zero dW
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, from_vector(std::vector<int64_t>{0, 2, 2, 7, 6}, {5})), "from 0 to M");
}

TEST(Moe, PatternsAndHyperAdapter) {
  Tensor ids = from_vector(std::vector<int32_t>{0, 2, 2, 0, 1, 2, 3, 0}, {4, 2});
  auto pat = moe::selection_patterns(ids, 4);
  expect_close(pat.patterns, {5, 6, 9});  // {0,2}, {1,2}, {0,3}
  expect_close(pat.token_pattern, {0, 0, 1, 2});
  EXPECT_HMOE_ERROR(moe::selection_patterns(ids, 65), "N <= 64");
  const int64_t T = 4, d = 3, r = 2, P = 3;
  Tensor x = rand_t({T, d}, 1, -1, 1, DType::f64, true);
  Tensor wd = rand_t({P, d, r}, 2, -1, 1, DType::f64, true), bd = rand_t({P, r}, 3, -1, 1, DType::f64, true);
  Tensor wu = rand_t({P, r, d}, 4, -1, 1, DType::f64, true), bu = rand_t({P, d}, 5, -1, 1, DType::f64, true);
  Tensor y = moe::hyper_adapter(x, pat.token_pattern, wd, bd, wu, bu);
  const auto tp = pat.token_pattern.to_vector_as<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t p = tp[size_t(t)];
    Tensor ref = matmul(relu(matmul(x.select(0, t), wd.select(0, p)) + bd.select(0, p)), wu.select(0, p)) + bu.select(0, p);
    expect_close(y.select(0, t), ref.detach(), 1e-12);
  }
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) {
    return moe::hyper_adapter(in[0], pat.token_pattern, in[1], in[2], in[3], in[4]);
  }, (std::vector<Tensor>{x, wd, bd, wu, bu}));
}
