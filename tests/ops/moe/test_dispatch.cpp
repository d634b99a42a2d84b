// Token dispatch tests: plan (stable counting sort, padding, edge cases, errors),
// permute / combine against per-token loops with gradients, selection patterns.
#include "ops/moe/token_dispatch.h"

#include "tests/support/moe_ref.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace ref = hmoe::testing::moe_ref;

namespace {
// The plan by definition: slots listed expert by expert, tokens in order.
void expect_plan_matches(const moe::Plan& p, const std::vector<int64_t>& ids, int64_t N, int64_t k, int64_t pad = 1) {
  std::vector<int64_t> counts(static_cast<size_t>(N), 0), offsets{0}, perm, inv(ids.size());
  for (int64_t e = 0; e < N; ++e) {
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] == e) {
        inv[i] = int64_t(perm.size());
        perm.push_back(int64_t(i));
        ++counts[size_t(e)];
      }
    while (int64_t(perm.size()) % pad) perm.push_back(-1);
    offsets.push_back(int64_t(perm.size()));
  }
  EXPECT_EQ(ref::ints(p.counts), counts);
  EXPECT_EQ(ref::ints(p.offsets), offsets);
  EXPECT_EQ(ref::ints(p.perm), perm);
  EXPECT_EQ(ref::ints(p.inverse), inv);
  EXPECT_EQ(p.k, k);
  EXPECT_EQ(p.rows, offsets.back());
}

std::vector<int64_t> random_ids(int64_t T, int64_t N, int64_t k, uint64_t seed) {
  // Distinct experts per token, as top-k gives.
  auto r = rand_t({T, N}, seed, 0, 1).to_vector();
  std::vector<int64_t> ids;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int64_t> o(static_cast<size_t>(N));
    std::iota(o.begin(), o.end(), 0);
    std::sort(o.begin(), o.end(), [&](int64_t a, int64_t b) { return r[size_t(t * N + a)] > r[size_t(t * N + b)]; });
    ids.insert(ids.end(), o.begin(), o.begin() + k);
  }
  return ids;
}
}  // namespace

TEST(MoeDispatch, PlanIsAStableCountingSort) {
  Tensor ids = from_vector(std::vector<int32_t>{2, 0, 0, 2, 2, 1}, {3, 2});  // no token uses expert 3
  auto plan = moe::make_plan(ids, 4);
  expect_close(plan.counts, {2, 1, 3, 0});
  expect_close(plan.offsets, {0, 2, 3, 6, 6});
  expect_close(plan.perm, {1, 2, 5, 0, 3, 4});
  for (auto [T, N, k] : std::vector<std::array<int64_t, 3>>{{50, 8, 2}, {1, 3, 1}, {7, 4, 4}, {6, 1, 1}, {0, 5, 2}}) {
    const auto v = random_ids(T, N, k, uint64_t(T * 100 + N * 10 + k));
    for (DType dt : {DType::i32, DType::i64}) {
      Tensor t = from_vector(v, {T, k}).to(dt);
      expect_plan_matches(moe::make_plan(t, N), v, N, k);
      expect_plan_matches(moe::make_plan(t, N, 4), v, N, k, 4);
    }
  }
  auto all = moe::make_plan(zeros({5, 1}, {DType::i64}), 3);  // every token on one expert
  expect_close(all.counts, {5, 0, 0});
  auto flat = moe::make_plan(from_vector(std::vector<int64_t>{1, 0, 1}, {3}), 2);  // [T]: k = 1
  expect_close(flat.perm, {1, 0, 2});
  expect_close(moe::row_groups(moe::make_plan(ids, 4, 2)), {0, 0, 1, 1, 2, 2, 2, 2});
}

TEST(MoeDispatch, PlanErrors) {
  EXPECT_HMOE_ERROR(moe::make_plan(from_vector(std::vector<int32_t>{4}, {1, 1}), 4), "out of range");
  EXPECT_HMOE_ERROR(moe::make_plan(from_vector(std::vector<int32_t>{0, -1}, {1, 2}), 4), "out of range");
  EXPECT_HMOE_ERROR(moe::make_plan(zeros({2, 5}, {DType::i64}), 4), "exceeds");
  EXPECT_HMOE_ERROR(moe::make_plan(zeros({2, 1}), 4), "integer");
  EXPECT_HMOE_ERROR(moe::make_plan(zeros({2, 1}, {DType::i64}), 0), "at least one group");
  EXPECT_HMOE_ERROR(moe::make_plan(zeros({2, 1}, {DType::i64}), 2, 0), "pad_to");
}

TEST(MoeDispatch, PermuteAndCombineMatchLoops) {
  for (auto [T, N, k, pad] : std::vector<std::array<int64_t, 4>>{{13, 5, 2, 1}, {13, 5, 2, 4}, {1, 2, 2, 1}, {4, 1, 1, 1}}) {
    const int64_t d = 6;
    const auto v = random_ids(T, N, k, uint64_t(T + N + k));
    auto plan = moe::make_plan(from_vector(v, {T, k}), N, pad);
    Tensor x = rand_t({T, d}, 2, -1, 1, DType::f64, true);
    Tensor xs = moe::permute_rows(x, plan);
    const auto xv = x.to_vector(), xsv = xs.to_vector();
    const auto pm = ref::ints(plan.perm);
    for (int64_t r = 0; r < plan.rows; ++r)
      for (int64_t c = 0; c < d; ++c)
        EXPECT_EQ(xsv[size_t(r * d + c)], pm[size_t(r)] < 0 ? 0.0 : xv[size_t((pm[size_t(r)] / k) * d + c)]);
    Tensor gates = rand_t({T, k}, 3, 0, 1, DType::f64, true);
    Tensor ys = rand_t({plan.rows, d}, 4, -1, 1, DType::f64, true);
    const auto yv = ys.to_vector(), gv = gates.to_vector();
    const auto inv = ref::ints(plan.inverse);
    std::vector<double> want(static_cast<size_t>(T * d), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j)
        for (int64_t c = 0; c < d; ++c)
          want[size_t(t * d + c)] += gv[size_t(t * k + j)] * yv[size_t(inv[size_t(t * k + j)] * d + c)];
    expect_close(moe::combine(ys, gates, plan), want, 1e-12);
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::combine(in[0], in[1], plan); },
                     (std::vector<Tensor>{ys, gates}));
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::permute_rows(in[0], plan); },
                     std::vector<Tensor>{x});
    // Permute then gate-less combine sums each token's k copies.
    expect_close(moe::combine(moe::permute_rows(x, plan), Tensor(), plan), (x * double(k)).detach(), 1e-12);
  }
}

TEST(MoeDispatch, ViewsHalfTypesEmptyAndErrors) {
  auto plan = moe::make_plan(from_vector(std::vector<int32_t>{1, 0, 2, 1}, {2, 2}), 3);
  Tensor base = rand_t({5, 2}, 7, -1, 1, DType::f32);
  Tensor x = base.t();  // [2, 5] non-contiguous
  expect_close(moe::permute_rows(x, plan).select(0, 0), x.select(0, 0).contiguous(), 0);
  Tensor xb = x.to(DType::bf16);
  Tensor xsb = moe::permute_rows(xb, plan);
  EXPECT_EQ(xsb.dtype(), DType::bf16);
  expect_close(moe::combine(xsb, Tensor(), plan), (xb.to(DType::f32) * 2.0), 1e-2);
  auto empty = moe::make_plan(zeros({0, 2}, {DType::i64}), 3);
  EXPECT_EQ(moe::permute_rows(zeros({0, 4}), empty).numel(), 0);
  EXPECT_EQ(moe::combine(zeros({0, 4}), zeros({0, 2}), empty).shape(), (Shape{0, 4}));
  EXPECT_HMOE_ERROR(moe::permute_rows(zeros({3, 4}), plan), "[T = 2");
  EXPECT_HMOE_ERROR(moe::combine(zeros({3, 4}), zeros({2, 2}), plan), "ys must be");
  EXPECT_HMOE_ERROR(moe::combine(zeros({4, 4}), zeros({2, 1}), plan), "gates");
  EXPECT_HMOE_ERROR(moe::unpermute_rows(zeros({4, 4}), plan), "k = 1");
  EXPECT_HMOE_ERROR(moe::permute_rows(zeros({2, 4}), moe::Plan{}), "plan is empty");
}

TEST(MoeDispatch, SelectionPatterns) {
  Tensor ids = from_vector(std::vector<int32_t>{0, 2, 2, 0, 1, 2, 3, 0}, {4, 2});
  expect_close(moe::pattern_ids(ids, 4), {5, 5, 6, 9});
  auto pat = moe::selection_patterns(ids, 4);
  expect_close(pat.patterns, {5, 6, 9});  // {0,2}, {1,2}, {0,3}, ascending
  EXPECT_EQ(pat.token_pattern.dtype(), DType::i32);
  expect_close(pat.token_pattern, {0, 0, 1, 2});
  auto plan = moe::pattern_plan(pat);  // tokens grouped by pattern, k = 1
  expect_close(plan.counts, {2, 1, 1});
  expect_close(plan.perm, {0, 1, 2, 3});
  // Expert 63 sets the sign bit: order is unsigned.
  Tensor hi = from_vector(std::vector<int64_t>{63, 0, 1}, {3, 1});
  auto ph = moe::selection_patterns(hi, 64);
  EXPECT_EQ(ref::ints(ph.token_pattern), (std::vector<int64_t>{2, 0, 1}));
  // Random: naive bitmasks and sorted distinct values.
  const int64_t T = 40, N = 8, k = 2;
  const auto v = random_ids(T, N, k, 77);
  auto p = moe::selection_patterns(from_vector(v, {T, k}), N);
  const auto pv = ref::ints(p.patterns), tp = ref::ints(p.token_pattern);
  EXPECT_TRUE(std::is_sorted(pv.begin(), pv.end()));
  for (int64_t t = 0; t < T; ++t)
    EXPECT_EQ(pv[size_t(tp[size_t(t)])], (int64_t(1) << v[size_t(t * k)]) | (int64_t(1) << v[size_t(t * k + 1)]));
  EXPECT_EQ(moe::unique_patterns(zeros({0}, {DType::i64})).patterns.numel(), 0);
  EXPECT_HMOE_ERROR(moe::pattern_ids(ids, 65), "N <= 64");
  EXPECT_HMOE_ERROR(moe::pattern_ids(ids, 3), "out of range");
  EXPECT_HMOE_ERROR(moe::pattern_ids(from_vector(std::vector<int32_t>{1, 1}, {1, 2}), 4), "twice");
  EXPECT_HMOE_ERROR(moe::pattern_ids(zeros({2, 5}, {DType::i64}), 4), "exceeds");
  EXPECT_HMOE_ERROR(moe::unique_patterns(zeros({2, 1}, {DType::i64})), "i64 [T]");
}

TEST(MoeDispatch, DeterministicAcrossThreadCounts) {
  const int64_t T = 4096, N = 8, k = 2, d = 96;
  const auto v = random_ids(T, N, k, 5);
  Tensor x = randn_t({T, d}, 6, DType::f32, true);
  Tensor gates = rand_t({T, k}, 7, 0, 1, DType::f32, true);
  auto run = [&] {
    auto plan = moe::make_plan(from_vector(v, {T, k}), N);
    Tensor y = moe::combine(moe::permute_rows(x, plan) * 1.5, gates, plan);
    sum(y * y).backward();
    std::vector<double> out = y.to_vector();
    for (const Tensor* t : {&x, &gates}) {
      const auto g = t->grad().to_vector();
      out.insert(out.end(), g.begin(), g.end());
    }
    x.zero_grad();
    gates.zero_grad();
    return out;
  };
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  EXPECT_EQ(a, run());
}
