// Reductions (sum, mean, var, max/min with indices, argmax/argmin, logsumexp, norm):
// values against loops in double, keepdim, negative and multiple dims, strided inputs,
// the long-row and column kernel paths, empty dims, NaN, gradcheck, errors, determinism.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

double r_sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }
double r_mean(const std::vector<double>& v) { return r_sum(v) / double(v.size()); }
double r_var(const std::vector<double>& v, int64_t corr) {
  const double m = r_mean(v);
  double q = 0;
  for (double x : v) q += (x - m) * (x - m);
  return q / double(int64_t(v.size()) - corr);
}
double r_max(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
double r_min(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double r_argmax(const std::vector<double>& v) { return double(std::max_element(v.begin(), v.end()) - v.begin()); }
double r_argmin(const std::vector<double>& v) { return double(std::min_element(v.begin(), v.end()) - v.begin()); }
double r_lse(const std::vector<double>& v) {
  if (v.empty()) return -INFINITY;
  const double m = r_max(v);
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}
double r_norm(const std::vector<double>& v, double p) {
  if (std::isinf(p)) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
  }
  double s = 0;
  for (double x : v) s += std::pow(std::abs(x), p);
  return std::pow(s, 1 / p);
}

// Inputs in several layouts holding the same logical [3, 4, 5] values.
std::vector<Tensor> layouts(DType dt) {
  Tensor base = rand_t({3, 4, 5}, 11, -2, 2, dt);
  return {base, rand_t({5, 3, 4}, 12, -2, 2, dt).permute({1, 2, 0}),  // non-contiguous
          rand_t({3, 8, 5}, 13, -2, 2, dt).slice(1, 0, 8, 2)};       // strided slice
}

constexpr double kInf = std::numeric_limits<double>::infinity();
const std::vector<std::vector<int64_t>> kDimSets = {{0}, {1}, {2}, {-1}, {0, 2}, {-3, 1}, {1, 2}, {0, 1, 2}};

}  // namespace

TEST(Reductions, ValuesMatchLoopsOverDimsAndLayouts) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 2e-6 : 2e-2;
    for (const Tensor& x : layouts(dt)) {
      // The reference sees the values as stored (bf16-rounded), in double.
      const Tensor xd = x.to(DType::f64);
      for (const auto& dims : kDimSets)
        for (bool kd : {false, true}) {
          Shape s;
          expect_values(sum(x, dims, kd), s, naive_reduce(xd, dims, kd, r_sum, s), tol);
          expect_values(mean(x, dims, kd), s, naive_reduce(xd, dims, kd, r_mean, s), tol);
          expect_values(var(x, dims, kd), s, naive_reduce(xd, dims, kd, [](auto& v) { return r_var(v, 1); }, s),
                        tol * 4);
          expect_values(var(x, dims, kd, 0), s, naive_reduce(xd, dims, kd, [](auto& v) { return r_var(v, 0); }, s),
                        tol * 4);
          expect_values(logsumexp(x, dims, kd), s, naive_reduce(xd, dims, kd, r_lse, s), tol);
          for (double p : {1.0, 2.0, 3.0, 0.5, kInf})
            expect_values(norm(x, p, dims, kd), s, naive_reduce(xd, dims, kd, [p](auto& v) { return r_norm(v, p); }, s),
                          tol * 4);
          EXPECT_EQ(sum(x, dims, kd).dtype(), dt);
        }
      for (int64_t d : {0, 1, 2, -1, -2})
        for (bool kd : {false, true}) {
          Shape s;
          auto [mx, imx] = max(x, d, kd);
          auto [mn, imn] = min(x, d, kd);
          expect_values(mx, s, naive_reduce(xd, {d}, kd, r_max, s), 0);
          expect_values(mn, s, naive_reduce(xd, {d}, kd, r_min, s), 0);
          expect_values(imx, s, naive_reduce(xd, {d}, kd, r_argmax, s), 0);
          expect_values(imn, s, naive_reduce(xd, {d}, kd, r_argmin, s), 0);
          expect_values(argmax(x, d, kd), s, naive_reduce(xd, {d}, kd, r_argmax, s), 0);
          expect_values(argmin(x, d, kd), s, naive_reduce(xd, {d}, kd, r_argmin, s), 0);
          EXPECT_EQ(imx.dtype(), DType::i64);
          EXPECT_EQ(mx.dtype(), dt);
        }
      EXPECT_EQ(max(x).item(), r_max(xd.to_vector()));
      EXPECT_EQ(min(x).item(), r_min(xd.to_vector()));
      EXPECT_EQ(max(x).dim(), 0);
      Shape s;
      expect_values(norm(x), {}, naive_reduce(xd, {0, 1, 2}, false, [](auto& v) { return r_norm(v, 2); }, s), tol);
    }
  }
}

TEST(Reductions, LongRowsColumnsAndIntegers) {
  // Rows long enough to be cut into chunks (few outputs), and wide column blocks.
  for (const Shape& shp : {Shape{2, 300001}, Shape{1, 131072}, Shape{7, 1000}, Shape{3, 5, 700}, Shape{600, 1}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      Tensor x = rand_t(shp, 21, -3, 3, dt);
      const Tensor xd = x.to(DType::f64);
      const double tol = dt == DType::f64 ? 1e-11 : 1e-5;
      const int64_t d = 1;
      Shape s;
      expect_values(sum(x, {d}), s, naive_reduce(xd, {d}, false, r_sum, s), tol);
      expect_values(logsumexp(x, {d}), s, naive_reduce(xd, {d}, false, r_lse, s), tol);
      expect_values(max(x, d).first, s, naive_reduce(xd, {d}, false, r_max, s), 0);
      expect_values(argmin(x, d), s, naive_reduce(xd, {d}, false, r_argmin, s), 0);
      expect_values(sum(x, {0}), s, naive_reduce(xd, {0}, false, r_sum, s), tol);
      expect_values(argmax(x, 0), s, naive_reduce(xd, {0}, false, r_argmax, s), 0);
    }
  }
  // Ties across chunks of a long row: the first index wins.
  Tensor t = zeros({1, 300000});
  t.narrow(1, 200000, 1).fill_(5);
  t.narrow(1, 70000, 1).fill_(5);
  t.narrow(1, 250000, 1).fill_(-5);
  EXPECT_EQ(argmax(t, 1).item(), 70000);
  EXPECT_EQ(argmin(t, 1).item(), 250000);
  EXPECT_EQ(argmin(neg(t), 1).item(), 70000);
  // Integer reductions: sums in i64, max/min keep the dtype.
  Tensor xi = from_vector(std::vector<int32_t>{3, -7, 3, 9, 9, 0}, {2, 3});
  EXPECT_EQ(sum(xi, {1}).dtype(), DType::i64);
  expect_close(sum(xi, {1}), {-1, 18});
  EXPECT_EQ(max(xi, 1).first.dtype(), DType::i32);
  expect_close(max(xi, 1).first, {3, 9});
  expect_close(argmax(xi, 1), {0, 0});
  expect_close(argmin(xi, 0), {0, 0, 1});
  EXPECT_EQ(sum(ones({5}, {DType::b8})).item(), 5);
}

TEST(Reductions, NanTiesAndEmpty) {
  Tensor x = from_vector(std::vector<double>{1, NAN, 3, NAN, 2, 2, 4, 4}, {2, 4}, {DType::f64});
  EXPECT_TRUE(std::isnan(max(x, 1).first.to_vector()[0]));
  EXPECT_EQ(argmax(x, 1).to_vector()[0], 1);  // the first NaN
  EXPECT_EQ(argmin(x, 1).to_vector()[0], 1);
  EXPECT_EQ(max(x, 1).first.to_vector()[1], 4);
  EXPECT_EQ(argmax(x, 1).to_vector()[1], 2);  // first of the tied maxima
  EXPECT_EQ(argmin(x, 1).to_vector()[1], 0);
  EXPECT_TRUE(std::isnan(max(x).item()));
  // Rows long enough for the vector lanes: ties in different and in the same lane,
  // NaN after a tie, -inf everywhere, for f32, f64 and i64.
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    Tensor r = zeros({4, 100}, {dt});
    for (int64_t at : {40, 17, 81}) r.select(0, 0).narrow(0, at, 1).fill_(5);
    for (int64_t at : {49, 33, 65}) r.select(0, 1).narrow(0, at, 1).fill_(-5);
    if (dt != DType::i64) {
      r.select(0, 2).narrow(0, 70, 1).fill_(NAN);
      r.select(0, 2).narrow(0, 90, 1).fill_(NAN);
      r.select(0, 2).narrow(0, 3, 1).fill_(7);
      r.select(0, 3).fill_(-INFINITY);
    }
    expect_close(argmax(r, 1), {17, 0, dt == DType::i64 ? 0.0 : 70.0, 0});
    expect_close(argmin(r, 1), {0, 33, dt == DType::i64 ? 0.0 : 70.0, 0});
    const auto mx = max(r, 1).first.to_vector();
    EXPECT_EQ(mx[0], 5);
    EXPECT_EQ(mx[1], 0);
    if (dt != DType::i64) {
      EXPECT_TRUE(std::isnan(mx[2]));
      EXPECT_EQ(mx[3], -INFINITY);
    }
  }
  // Empty reductions: sum 0, mean NaN, logsumexp -inf, max an error.
  Tensor e = zeros({3, 0, 2});
  expect_close(sum(e, {1}), std::vector<double>(6, 0.0));
  EXPECT_EQ(sum(e, {1}).shape(), (Shape{3, 2}));
  EXPECT_TRUE(std::isnan(mean(e, {1}).to_vector()[0]));
  EXPECT_EQ(logsumexp(e, {1}).to_vector()[0], -INFINITY);
  EXPECT_EQ(norm(e, 2.0, {1}).to_vector()[0], 0.0);
  EXPECT_EQ(sum(e, {0}).shape(), (Shape{0, 2}));
  EXPECT_EQ(max(e, 0).first.shape(), (Shape{0, 2}));  // nothing to reduce into: fine
  EXPECT_EQ(sum(e).item(), 0.0);
  EXPECT_HMOE_ERROR(max(e, 1), "empty");
  EXPECT_HMOE_ERROR(argmin(e, -2), "empty");
  EXPECT_HMOE_ERROR(max(e), "empty");
  EXPECT_HMOE_ERROR(norm(e, INFINITY, {1}), "empty");
  // 0-d tensors reduce to themselves.
  Tensor z = full({}, 2.5, {DType::f64});
  EXPECT_EQ(sum(z).item(), 2.5);
  EXPECT_EQ(max(z, 0).first.item(), 2.5);
  EXPECT_EQ(argmax(z, -1).item(), 0);
  EXPECT_EQ(logsumexp(z, {0}).item(), 2.5);
}

TEST(Reductions, Gradients) {
  auto g = [](std::function<Tensor(const Tensor&)> f, const Tensor& x) {
    EXPECT_GRADCHECK([f](const std::vector<Tensor>& in) { return f(in[0]); }, std::vector<Tensor>{x});
  };
  Tensor x = rand_t({3, 4, 5}, 31, -2, 2, DType::f64, true);
  Tensor xt = rand_t({5, 4, 3}, 32, -2, 2, DType::f64, true);
  for (const auto& dims : kDimSets) {
    g([dims](const Tensor& t) { return sum(t, dims); }, x);
    g([dims](const Tensor& t) { return mean(t, dims, true); }, x);
    g([dims](const Tensor& t) { return var(t, dims); }, x);
    g([dims](const Tensor& t) { return var(t.permute({2, 1, 0}), dims, true, 0); }, xt);
    g([dims](const Tensor& t) { return logsumexp(t, dims); }, x);
    g([dims](const Tensor& t) { return logsumexp(t.permute({2, 1, 0}), dims, true); }, xt);
    for (double p : {1.0, 2.0, 3.0, 1.5, kInf}) g([dims, p](const Tensor& t) { return norm(t, p, dims); }, x);
  }
  for (int64_t d : {0, 1, -1}) {
    g([d](const Tensor& t) { return max(t, d).first; }, x);
    g([d](const Tensor& t) { return min(t.permute({2, 1, 0}), d, true).first; }, xt);
  }
  g([](const Tensor& t) { return max(t); }, x);
  g([](const Tensor& t) { return min(t.t()); }, rand_t({4, 6}, 33, -1, 1, DType::f64, true));
  // Ties: the whole gradient goes to the first of the tied elements.
  Tensor tie = from_vector(std::vector<double>{1, 3, 3, 0}, {4}, {DType::f64}).set_requires_grad(true);
  max(tie, 0).first.backward();
  expect_close(tie.grad(), {0, 1, 0, 0});
  // Norm: gradient 0 at 0, for every p.
  for (double p : {1.0, 2.0, 3.0, 0.5, kInf}) {
    Tensor z = zeros({2, 3}, {DType::f64}).set_requires_grad(true);
    norm(z, p).backward();
    expect_close(z.grad(), std::vector<double>(6, 0.0));
    Tensor part = from_vector(std::vector<double>{0, 0, 3, 4}, {2, 2}, {DType::f64}).set_requires_grad(true);
    sum(norm(part, p, {1})).backward();
    EXPECT_EQ(part.grad().to_vector()[0], 0.0);
    EXPECT_FALSE(std::isnan(part.grad().to_vector()[2]));
  }
  // logsumexp over an all -inf row: value -inf, gradient 0 (not NaN).
  Tensor ninf = full({2, 3}, -INFINITY, {DType::f64}).set_requires_grad(true);
  sum(logsumexp(ninf, {0})).backward();
  expect_close(ninf.grad(), std::vector<double>(6, 0.0));
}

TEST(Reductions, Errors) {
  Tensor x = rand_t({2, 3}, 41);
  EXPECT_HMOE_ERROR(sum(x, {2}), "out of range");
  EXPECT_HMOE_ERROR(mean(x, {-3}), "out of range");
  EXPECT_HMOE_ERROR(sum(x, {1, -1}), "twice");
  EXPECT_HMOE_ERROR(max(x, 5), "out of range");
  EXPECT_HMOE_ERROR(argmax(x, -3), "out of range");
  EXPECT_HMOE_ERROR(max(ones({3}, {DType::b8}), 0), "bool");
  EXPECT_HMOE_ERROR(var(ones({3}, {DType::i64}), {0}), "floating");
  EXPECT_HMOE_ERROR(var(x, {0}, false, -1), "correction");
  EXPECT_HMOE_ERROR(mean(ones({3}, {DType::i32})), "floating");
  EXPECT_HMOE_ERROR(logsumexp(ones({3}, {DType::i32}), {0}), "floating");
  EXPECT_HMOE_ERROR(norm(x, 0.0), "positive");
  EXPECT_HMOE_ERROR(norm(x, -1.0), "positive");
  EXPECT_HMOE_ERROR(norm(ones({3}, {DType::i64})), "floating");
  // var with no degrees of freedom left: NaN, like PyTorch.
  EXPECT_TRUE(std::isnan(var(ones({1, 3}, {DType::f64}), {0}).to_vector()[0]));
}

TEST(Reductions, BitIdenticalAcrossThreadCounts) {
  Tensor rows = rand_t({513, 777}, 51, -1, 1, DType::f32);
  Tensor lng = rand_t({2, 300000}, 52, -1, 1, DType::f32);
  Tensor cols = rand_t({9, 300, 700}, 53, -1, 1, DType::bf16);
  auto run = [&] {
    return std::vector<Tensor>{sum(rows, {0}), sum(rows, {1}), logsumexp(rows, {1}), logsumexp(rows, {0}),
                               var(rows, {1}), norm(rows, 2.0, {0}), argmax(rows, 1), max(rows, 0).first,
                               sum(lng, {1}), logsumexp(lng, {1}), argmax(lng, 1), sum(lng),
                               sum(cols, {1}), max(cols, 1).first, logsumexp(cols, {0, 2})};
  };
  const int before = num_threads();
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  const auto b = run();
  set_num_threads(3);
  const auto c = run();
  set_num_threads(before);
  for (size_t i = 0; i < a.size(); ++i) {
    expect_identical(a[i], b[i]);
    expect_identical(a[i], c[i]);
  }
}

// Compact checks of the same ops against inline loops.
TEST(Reductions, SumMeanVarOverDims) {
  Tensor x = rand_t({3, 4, 5}, 1);
  auto v = x.to_vector();
  auto at = [&](int i, int j, int k) { return v[size_t((i * 4 + j) * 5 + k)]; };
  Tensor s = sum(x, {0, 2});
  for (int j = 0; j < 4; ++j) {
    double r = 0;
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 5; ++k) r += at(i, j, k);
    EXPECT_NEAR(s.to_vector()[size_t(j)], r, 1e-12);
  }
  EXPECT_EQ(sum(x, {-1}, true).shape(), (Shape{3, 4, 1}));
  expect_close(mean(x, {1}), sum(x, {1}) / 4.0, 1e-14);
  expect_close(sum(x.permute({2, 0, 1}), {1}), sum(x, {0}).t(), 1e-12);
  Tensor vv = var(x, {2});
  for (int i = 0; i < 3; ++i) {
    double m = 0, q = 0;
    for (int k = 0; k < 5; ++k) m += at(i, 0, k) / 5;
    for (int k = 0; k < 5; ++k) q += (at(i, 0, k) - m) * (at(i, 0, k) - m) / 4;
    EXPECT_NEAR(vv.select(0, i).select(0, 0).item(), q, 1e-12);
  }
  EXPECT_EQ(sum(zeros({0, 3}), {0}).to_vector(), std::vector<double>(3, 0.0));
  EXPECT_EQ(sum(ones({4}, {DType::i32})).dtype(), DType::i64);
  EXPECT_HMOE_ERROR(sum(x, {3}), "out of range");
  EXPECT_HMOE_ERROR(sum(x, {1, 1}), "twice");
  for (auto dims : std::vector<std::vector<int64_t>>{{0}, {1}, {0, 2}, {-1}}) {
    EXPECT_GRADCHECK([dims](const std::vector<Tensor>& in) { return sum(in[0], dims); },
                     std::vector<Tensor>{rand_t({2, 3, 4}, 2, -1, 1, DType::f64, true)});
    EXPECT_GRADCHECK([dims](const std::vector<Tensor>& in) { return var(in[0], dims, true); },
                     std::vector<Tensor>{rand_t({2, 3, 4}, 3, -1, 1, DType::f64, true)});
  }
}

TEST(Reductions, MaxMinArgAndLogsumexp) {
  Tensor x = from_vector(std::vector<double>{1, 5, 5, 2, -1, 0}, {2, 3}, {DType::f64});
  auto [mx, ix] = max(x, 1);
  expect_close(mx, {5, 2});
  expect_close(ix, {1, 0});  // first of ties
  auto [mn, in] = min(x, 0, true);
  EXPECT_EQ(mn.shape(), (Shape{1, 3}));
  expect_close(in, {0, 1, 1});
  EXPECT_DOUBLE_EQ(max(x).item(), 5.0);
  expect_close(argmax(x, 0), {1, 0, 0});
  Tensor l = logsumexp(x, {1});
  EXPECT_NEAR(l.to_vector()[0], std::log(std::exp(1) + 2 * std::exp(5)), 1e-12);
  EXPECT_NEAR(logsumexp(full({3}, -1000.0, {DType::f64}), {0}).item(), -1000 + std::log(3.0), 1e-9);
  EXPECT_HMOE_ERROR(max(zeros({2, 0}), 1), "empty");
  Tensor r = rand_t({3, 4}, 5, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return max(in[0], 1).first; }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return min(in[0], 0, true).first; }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return logsumexp(in[0], {0, 1}); }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return norm(in[0], 2.0, {1}); }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return norm(in[0], 3.0); }, std::vector<Tensor>{r});
  EXPECT_NEAR(norm(from_vector(std::vector<double>{3, 4}, {2}, {DType::f64})).item(), 5.0, 1e-12);
}

TEST(Reductions, SumsDeterministicAcrossThreadCounts) {
  Tensor x = rand_t({513, 777}, 9, -1, 1, DType::f32);
  set_num_threads(1);
  Tensor a = sum(x, {0}), b = sum(x, {1}), c = logsumexp(x, {1});
  set_num_threads(2);
  expect_close(sum(x, {0}), a, 0);
  expect_close(sum(x, {1}), b, 0);
  expect_close(logsumexp(x, {1}), c, 0);
}
