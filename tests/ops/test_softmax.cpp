// softmax, log_softmax and cross_entropy: values against loops in double over every
// dim and layout and the half types, stability, gradcheck, fused backward against the
// composite formula, ignore_index and reductions, errors, and thread determinism.
#include <cmath>
#include <limits>

#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// Softmax of x along dim in double, returned in x's logical row-major order.
std::vector<double> ref_softmax(const Tensor& x, int64_t dim, bool log) {
  const int64_t r = x.dim();
  dim = dim < 0 ? dim + r : dim;
  // Move dim last, compute per row, move back.
  std::vector<int64_t> perm;
  for (int64_t d = 0; d < r; ++d)
    if (d != dim) perm.push_back(d);
  perm.push_back(dim);
  const Tensor xp = x.permute(perm).to(DType::f64).contiguous();
  auto v = xp.to_vector();
  const int64_t n = x.size(dim);
  for (size_t o = 0; o + size_t(n) <= v.size() && n > 0; o += size_t(n)) {
    double m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, v[o + size_t(j)]);
    double s = 0;
    for (int64_t j = 0; j < n; ++j) s += std::exp(v[o + size_t(j)] - m);
    for (int64_t j = 0; j < n; ++j)
      v[o + size_t(j)] = log ? v[o + size_t(j)] - m - std::log(s) : std::exp(v[o + size_t(j)] - m) / s;
  }
  std::vector<int64_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inv[size_t(perm[i])] = int64_t(i);
  return from_vector(v, xp.shape(), {DType::f64}).permute(inv).contiguous().to_vector();
}

// Per-row loss in double; NaN marks an ignored row.
std::vector<double> ref_ce_rows(const Tensor& logits, const std::vector<int64_t>& tg, int64_t ignore) {
  const auto v = logits.to_vector();
  const int64_t N = logits.size(0), C = logits.size(1);
  std::vector<double> out;
  for (int64_t i = 0; i < N; ++i) {
    if (tg[size_t(i)] == ignore) {
      out.push_back(NAN);
      continue;
    }
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; ++c) m = std::max(m, v[size_t(i * C + c)]);
    for (int64_t c = 0; c < C; ++c) s += std::exp(v[size_t(i * C + c)] - m);
    out.push_back(m + std::log(s) - v[size_t(i * C + tg[size_t(i)])]);
  }
  return out;
}

}  // namespace

TEST(Softmax, ValuesOverDimsLayoutsAndDtypes) {
  const std::vector<Tensor> xs = {rand_t({3, 5, 7}, 1, -4, 4), rand_t({7, 3, 5}, 2, -4, 4).permute({1, 2, 0}),
                                  rand_t({3, 10, 7}, 3, -4, 4).slice(1, 1, 10, 2), rand_t({2, 1000}, 4, -9, 9),
                                  rand_t({2, 50, 300}, 5, -9, 9), rand_t({4, 1}, 6), rand_t({5}, 7)};
  for (const Tensor& x0 : xs)
    for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
      const Tensor x = x0.to(dt);
      const double tol = dt == DType::f64 ? 1e-13 : dt == DType::f32 ? 2e-6 : 1e-2;
      for (int64_t d = -x.dim(); d < x.dim(); ++d)
        for (bool log : {false, true}) {
          const Tensor y = log ? log_softmax(x, d) : softmax(x, d);
          EXPECT_EQ(y.dtype(), dt);
          expect_values(y, x.shape(), ref_softmax(x, d, log), tol);
        }
    }
  // Stability and masking: huge values, -inf entries (probability 0), a 0-d tensor.
  expect_close(softmax(from_vector(std::vector<double>{1000, 1000, -INFINITY}, {3}, {DType::f64})), {0.5, 0.5, 0});
  expect_close(log_softmax(from_vector(std::vector<float>{-1e30f, 0}, {2})), {-1e30, 0}, 1e23);
  expect_close(softmax(full({}, 3.0, {DType::f64})), {1.0});
  expect_close(log_softmax(full({}, 3.0, {DType::f64})), {0.0});
  EXPECT_EQ(softmax(zeros({0, 4}), 1).shape(), (Shape{0, 4}));
  EXPECT_EQ(softmax(zeros({3, 0}), 1).shape(), (Shape{3, 0}));
}

TEST(Softmax, Gradients) {
  Tensor x = rand_t({3, 4, 5}, 11, -2, 2, DType::f64, true);
  for (int64_t d : {0, 1, 2, -1}) {
    EXPECT_GRADCHECK([d](const std::vector<Tensor>& in) { return softmax(in[0], d); }, std::vector<Tensor>{x});
    EXPECT_GRADCHECK([d](const std::vector<Tensor>& in) { return log_softmax(in[0], d); }, std::vector<Tensor>{x});
    EXPECT_GRADCHECK([d](const std::vector<Tensor>& in) { return softmax(in[0].permute({2, 0, 1}), d); },
                     std::vector<Tensor>{x});
  }
  // Fused backward against the composite formula, for the column path and bf16.
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor a = rand_t({2, 40, 300}, 12, -3, 3, dt, true);
    Tensor gy = rand_t({2, 40, 300}, 13, -1, 1, dt);
    for (int64_t d : {1, 2})
      for (bool log : {false, true}) {
        a.zero_grad();
        Tensor y = log ? log_softmax(a, d) : softmax(a, d);
        y.backward(gy);
        const Tensor yd = y.detach().to(DType::f64), gd = gy.to(DType::f64);
        const Tensor want = log ? gd - exp(yd) * sum(gd, {d}, true) : yd * (gd - sum(gd * yd, {d}, true));
        EXPECT_LE(max_abs_diff(a.grad().to(DType::f64), want), dt == DType::f32 ? 1e-5 : 3e-2);
        EXPECT_EQ(a.grad().dtype(), dt);
      }
  }
  EXPECT_HMOE_ERROR(softmax(ones({3}, {DType::i64})), "floating");
  EXPECT_HMOE_ERROR(log_softmax(rand_t({2, 3}, 1), 2), "out of range");
}

TEST(CrossEntropy, ValuesReductionsAndIgnoreIndex) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16})
    for (int64_t C : {1, 5, 1000})
      for (DType it : {DType::i64, DType::i32}) {
        const int64_t N = 9;
        const Tensor logits = rand_t({N, C}, 21, -5, 5, dt);
        std::vector<int64_t> tg;
        for (int64_t i = 0; i < N; ++i) tg.push_back(i % 4 == 3 ? -100 : (i * 7) % C);
        const Tensor targets = from_vector(tg, {N}).to(it);
        const auto rows = ref_ce_rows(logits.to(DType::f64), tg, -100);
        double s = 0;
        int count = 0;
        std::vector<double> none;
        for (double r : rows) {
          none.push_back(std::isnan(r) ? 0 : r);
          if (!std::isnan(r)) s += r, ++count;
        }
        const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-6 : 1e-2;
        expect_values(cross_entropy(logits, targets, -100, Reduction::none), {N}, none, tol);
        expect_values(cross_entropy(logits, targets, -100, Reduction::sum), {}, {s}, tol);
        expect_values(cross_entropy(logits, targets), {}, {s / count}, tol);
        EXPECT_EQ(cross_entropy(logits, targets).dtype(), dt);
      }
  // A custom ignore_index that is a valid class; strided logits; [C] logits with a 0-d target.
  Tensor lt = rand_t({6, 4}, 22, -3, 3).t();  // [4, 6], non-contiguous
  std::vector<int64_t> tg = {2, 5, 2, 0};
  const auto rows = ref_ce_rows(lt, tg, 2);
  expect_values(cross_entropy(lt, from_vector(tg, {4}), 2, Reduction::none), {4}, {0, rows[1], 0, rows[3]}, 1e-12);
  expect_values(cross_entropy(lt, from_vector(tg, {4}), 2), {}, {(rows[1] + rows[3]) / 2}, 1e-12);
  const Tensor one = rand_t({6}, 23);
  const auto r1 = ref_ce_rows(one.reshape({1, 6}), {4}, -100);
  expect_values(cross_entropy(one, full({}, 4, {DType::i64}), -100, Reduction::none), {}, {r1[0]}, 1e-12);
  expect_values(cross_entropy(one, full({}, 4, {DType::i64})), {}, {r1[0]}, 1e-12);
  // Stable at extreme logits.
  Tensor big = from_vector(std::vector<double>{1000, 0, -1000, 1000}, {2, 2}, {DType::f64});
  expect_values(cross_entropy(big, from_vector(std::vector<int64_t>{1, 0}, {2}), -100, Reduction::none), {2},
                {1000, 2000}, 1e-12);
  // Every target ignored: mean is NaN (0/0, as in PyTorch), sum is 0, the gradient is 0.
  Tensor l2 = rand_t({3, 4}, 24, -1, 1, DType::f64, true);
  Tensor ign = full({3}, -100, {DType::i64});
  Tensor m = cross_entropy(l2, ign);
  EXPECT_TRUE(std::isnan(m.item()));
  m.backward();
  expect_close(l2.grad(), std::vector<double>(12, 0.0));
  EXPECT_EQ(cross_entropy(l2, ign, -100, Reduction::sum).item(), 0.0);
  // No rows at all.
  EXPECT_EQ(cross_entropy(zeros({0, 5}), zeros({0}, {DType::i64}), -100, Reduction::none).shape(), (Shape{0}));
  EXPECT_EQ(cross_entropy(zeros({0, 5}), zeros({0}, {DType::i64}), -100, Reduction::sum).item(), 0.0);
}

TEST(CrossEntropy, Gradients) {
  Tensor logits = rand_t({6, 5}, 31, -2, 2, DType::f64, true);
  Tensor tg = from_vector(std::vector<int64_t>{0, 4, -1, 2, 2, 1}, {6});
  for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], tg, -1, r); },
                     std::vector<Tensor>{logits});
    EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0].t(), tg.narrow(0, 0, 5), -1, r); },
                     std::vector<Tensor>{rand_t({5, 5}, 32, -2, 2, DType::f64, true)});
  }
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cross_entropy(in[0], full({}, 3, {DType::i32})); },
                   std::vector<Tensor>{rand_t({5}, 33, -2, 2, DType::f64, true)});
  // Fused backward in f32 and bf16 against (softmax - onehot) / count.
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor l = rand_t({7, 3000}, 34, -4, 4, dt, true);
    std::vector<int64_t> t = {5, 2999, -100, 0, 17, 1500, 3};
    cross_entropy(l, from_vector(t, {7})).backward();
    const Tensor p = softmax(l.detach().to(DType::f64), 1);
    auto want = p.to_vector();
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t c = 0; c < 3000; ++c) {
        double& w = want[size_t(i * 3000 + c)];
        w = t[size_t(i)] < 0 ? 0 : (w - (c == t[size_t(i)] ? 1 : 0)) / 6;
      }
    EXPECT_LE(max_abs_diff(l.grad().to(DType::f64), from_vector(want, {7, 3000}, {DType::f64})),
              dt == DType::f32 ? 1e-7 : 2e-3);
  }
}

TEST(CrossEntropy, Errors) {
  Tensor logits = rand_t({4, 6}, 41);
  EXPECT_HMOE_ERROR(cross_entropy(logits, from_vector(std::vector<int64_t>{6, 0, 0, 0}, {4})), "out of range");
  EXPECT_HMOE_ERROR(cross_entropy(logits, from_vector(std::vector<int64_t>{0, 0, -1, 0}, {4})), "target -1 at row 2");
  EXPECT_HMOE_ERROR(cross_entropy(logits, from_vector(std::vector<int32_t>{0, 9, 0, 0}, {4})), "[0, 6)");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({4})), "class indices");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({4}, {DType::b8})), "class indices");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({3}, {DType::i64})), "do not match");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({4, 1}, {DType::i64})), "do not match");
  EXPECT_HMOE_ERROR(cross_entropy(rand_t({2, 3, 4}, 1), zeros({2}, {DType::i64})), "[N, C] or [C]");
  EXPECT_HMOE_ERROR(cross_entropy(ones({2, 3}, {DType::i64}), zeros({2}, {DType::i64})), "floating");
  EXPECT_HMOE_ERROR(cross_entropy(zeros({2, 0}), zeros({2}, {DType::i64})), "no classes");
}

TEST(SoftmaxCrossEntropy, BitIdenticalAcrossThreadCounts) {
  Tensor x = rand_t({300, 1000}, 51, -5, 5, DType::f32, true);
  Tensor xb = rand_t({30, 70, 40}, 52, -5, 5, DType::bf16, true);
  std::vector<int64_t> t;
  for (int i = 0; i < 300; ++i) t.push_back((i * 37) % 1000);
  const Tensor tg = from_vector(t, {300});
  auto run = [&] {
    x.zero_grad();
    xb.zero_grad();
    Tensor s = softmax(x, 1), ls = log_softmax(xb, 1), ce = cross_entropy(x, tg);
    sum(s * s).backward();
    sum(ls * ls).backward();
    Tensor g1 = x.grad().clone();
    x.zero_grad();
    ce.backward();
    return std::vector<Tensor>{s, ls, ce, g1, x.grad().clone(), xb.grad().clone()};
  };
  const int before = num_threads();
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  const auto b = run();
  set_num_threads(before);
  for (size_t i = 0; i < a.size(); ++i) expect_identical(a[i], b[i]);
}

// Compact checks against plain formulas.
TEST(SoftmaxOps, SoftmaxAndLogSoftmax) {
  Tensor x = rand_t({3, 5}, 1, -3, 3, DType::f64, true);
  auto v = x.to_vector();
  Tensor s = softmax(x, 1);
  for (int i = 0; i < 3; ++i) {
    double z = 0;
    for (int j = 0; j < 5; ++j) z += std::exp(v[size_t(i * 5 + j)]);
    for (int j = 0; j < 5; ++j) EXPECT_NEAR(s.to_vector()[size_t(i * 5 + j)], std::exp(v[size_t(i * 5 + j)]) / z, 1e-14);
  }
  expect_close(log_softmax(x, 0), log(softmax(x, 0)), 1e-12);
  expect_close(softmax(full({2}, 1000.0, {DType::f64}), 0), {0.5, 0.5});  // stable
  expect_close(softmax(x.to(DType::bf16), 1).to(DType::f64), s.detach(), 0.01);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return softmax(in[0], 1); }, std::vector<Tensor>{x});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return log_softmax(in[0].t(), 1); }, std::vector<Tensor>{x});
}

TEST(SoftmaxOps, CrossEntropy) {
  Tensor logits = rand_t({4, 6}, 2, -2, 2, DType::f64, true);
  Tensor tg = from_vector(std::vector<int64_t>{1, 5, -100, 0}, {4});
  auto v = logits.to_vector();
  double ref = 0;
  for (int i : {0, 1, 3}) {
    const int t = i == 0 ? 1 : (i == 1 ? 5 : 0);
    double z = 0;
    for (int j = 0; j < 6; ++j) z += std::exp(v[size_t(i * 6 + j)]);
    ref += std::log(z) - v[size_t(i * 6 + t)];
  }
  EXPECT_NEAR(cross_entropy(logits, tg).item(), ref / 3, 1e-12);
  EXPECT_NEAR(cross_entropy(logits, tg, -100, Reduction::sum).item(), ref, 1e-12);
  EXPECT_EQ(cross_entropy(logits, tg, -100, Reduction::none).shape(), (Shape{4}));
  EXPECT_TRUE(std::isnan(cross_entropy(logits, full({4}, -100.0, {DType::i64})).item()));
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return cross_entropy(in[0], tg); }, std::vector<Tensor>{logits});
  EXPECT_HMOE_ERROR(cross_entropy(logits, from_vector(std::vector<int64_t>{6, 0, 0, 0}, {4})), "out of range");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({4})), "class indices");
  EXPECT_HMOE_ERROR(cross_entropy(logits, zeros({3}, {DType::i64})), "do not match");
}
