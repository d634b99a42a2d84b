// Reductions: values against loops in double, keepdim, several and negative dims,
// non-contiguous inputs, empty dims, gradients, determinism and errors.
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(Reduce, SumMeanVarOverDims) {
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

TEST(Reduce, MaxMinArgAndLogsumexp) {
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

TEST(Reduce, DeterministicAcrossThreadCounts) {
  Tensor x = rand_t({513, 777}, 9, -1, 1, DType::f32);
  set_num_threads(1);
  Tensor a = sum(x, {0}), b = sum(x, {1}), c = logsumexp(x, {1});
  set_num_threads(2);
  expect_close(sum(x, {0}), a, 0);
  expect_close(sum(x, {1}), b, 0);
  expect_close(logsumexp(x, {1}), c, 0);
}
