// matmul and linear against loops in double: ranks 1-4, broadcast batches, transposed
// operands, awkward and empty sizes, half types, gradients and errors.
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {
std::vector<double> naive_mm(const std::vector<double>& a, const std::vector<double>& b, int64_t m, int64_t k,
                             int64_t n) {
  std::vector<double> c(size_t(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) c[size_t(i * n + j)] += a[size_t(i * k + p)] * b[size_t(p * n + j)];
  return c;
}
}  // namespace

TEST(Matmul, TwoDimAgainstLoops) {
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 5}, {64, 7, 129}, {3, 0, 4}}) {
    Tensor a = rand_t({m, k}, uint64_t(m * 100 + k)), b = rand_t({k, n}, uint64_t(n));
    expect_close(matmul(a, b), naive_mm(a.to_vector(), b.to_vector(), m, k, n), 1e-12);
    expect_close(matmul(a.to(DType::f32), b.to(DType::f32)), naive_mm(a.to_vector(), b.to_vector(), m, k, n), 1e-4);
    // Transposed views go in as flags, same result.
    expect_close(matmul(a.t().contiguous().t(), b.t().contiguous().t()), matmul(a, b), 1e-12);
  }
  EXPECT_EQ(matmul(zeros({0, 3}), zeros({3, 2})).shape(), (Shape{0, 2}));
  Tensor ab = matmul(rand_t({8, 16}, 1, -1, 1, DType::bf16), rand_t({16, 4}, 2, -1, 1, DType::bf16));
  expect_close(ab.to(DType::f64), matmul(rand_t({8, 16}, 1, -1, 1, DType::bf16).to(DType::f64),
                                          rand_t({16, 4}, 2, -1, 1, DType::bf16).to(DType::f64)), 0.05);
}

TEST(Matmul, RanksAndBroadcasting) {
  Tensor v = rand_t({4}, 1), m = rand_t({4, 3}, 2), b3 = rand_t({2, 5, 4}, 3), b4 = rand_t({3, 1, 4, 6}, 4);
  EXPECT_EQ(matmul(v, v).dim(), 0);
  EXPECT_NEAR(matmul(v, v).item(), sum(v * v).item(), 1e-12);
  EXPECT_EQ(matmul(v, m).shape(), (Shape{3}));
  EXPECT_EQ(matmul(m.t(), v).shape(), (Shape{3}));
  Tensor r = matmul(b3, b4);  // [3, 2, 5, 6]
  EXPECT_EQ(r.shape(), (Shape{3, 2, 5, 6}));
  expect_close(r.select(0, 1).select(0, 1), matmul(b3.select(0, 1), b4.select(0, 1).select(0, 0)), 1e-12);
  EXPECT_HMOE_ERROR(matmul(m, m), "inner dimensions");
  EXPECT_HMOE_ERROR(matmul(m, m.to(DType::f32).t()), "dtypes differ");
  EXPECT_HMOE_ERROR(matmul(full({}, 1.0), m), "at least one dim");
  EXPECT_HMOE_ERROR(matmul(ones({2, 2}, {DType::i64}), ones({2, 2}, {DType::i64})), "floating");
}

TEST(Matmul, Gradients) {
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); },
                   (std::vector<Tensor>{rand_t({2, 1, 3, 4}, 1, -1, 1, DType::f64, true),
                                        rand_t({3, 4, 2}, 2, -1, 1, DType::f64, true)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0], in[1].t()); },
                   (std::vector<Tensor>{rand_t({4}, 3, -1, 1, DType::f64, true),
                                        rand_t({5, 4}, 4, -1, 1, DType::f64, true)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                   (std::vector<Tensor>{rand_t({2, 3, 4}, 5, -1, 1, DType::f64, true),
                                        rand_t({5, 4}, 6, -1, 1, DType::f64, true),
                                        rand_t({5}, 7, -1, 1, DType::f64, true)}));
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 5})), "does not match");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 3}), zeros({3})), "bias");
}
