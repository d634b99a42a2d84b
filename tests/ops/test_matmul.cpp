// matmul, linear and the raw gemm against loops in double: every rank pair 1-d..4-d,
// broadcast batches, strided/transposed/expanded operands, awkward and empty sizes,
// half types, tiled sizes, thread-count determinism, gradients and errors.
#include <array>
#include <cstring>

#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// NumPy matmul in double, by index arithmetic on the operands' logical values.
std::pair<std::vector<double>, Shape> ref_matmul(const Tensor& a_in, const Tensor& b_in) {
  Shape sa = a_in.shape(), sb = b_in.shape();
  const bool va = sa.size() == 1, vb = sb.size() == 1;
  if (va) sa.insert(sa.begin(), 1);
  if (vb) sb.push_back(1);
  const int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  const Shape ba(sa.begin(), sa.end() - 2), bb(sb.begin(), sb.end() - 2);
  const Shape batch = broadcast_shapes(ba, bb, "ref");
  const auto av = a_in.contiguous().to_vector(), bv = b_in.contiguous().to_vector();
  // Flat offset of a batch index (row-major over `batch`) inside an operand's batch.
  auto batch_offset = [&](const Shape& own, int64_t flat) {
    int64_t off = 0, mul = 1;
    for (int64_t d = int64_t(batch.size()) - 1, o = int64_t(own.size()) - 1; d >= 0; --d, --o) {
      const int64_t idx = flat % batch[size_t(d)];
      flat /= batch[size_t(d)];
      if (o >= 0) {
        if (own[size_t(o)] != 1) off += idx * mul;
        mul *= own[size_t(o)];
      }
    }
    return off;
  };
  const int64_t nb = shape_numel(batch);
  std::vector<double> c(static_cast<size_t>(nb * m * n), 0.0);
  for (int64_t bi = 0; bi < nb; ++bi) {
    const int64_t oa = batch_offset(ba, bi) * m * k, ob = batch_offset(bb, bi) * k * n;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += av[size_t(oa + i * k + p)] * bv[size_t(ob + p * n + j)];
        c[size_t((bi * m + i) * n + j)] = s;
      }
  }
  Shape out = batch;
  if (!va) out.push_back(m);
  if (!vb) out.push_back(n);
  return {c, out};
}

void expect_matmul_ref(const Tensor& a, const Tensor& b, double tol) {
  const Tensor c = matmul(a, b);
  const auto [ref, shape] = ref_matmul(a.to(DType::f64), b.to(DType::f64));
  ASSERT_EQ(shape_str(c.shape()), shape_str(shape)) << a.meta_str() << " @ " << b.meta_str();
  const auto got = c.to_vector();
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::abs(got[i] - ref[i]));
  EXPECT_LE(err, tol) << a.meta_str() << " @ " << b.meta_str();
}

}  // namespace

TEST(Matmul, EveryRankPairWithBroadcasting) {
  // Shapes for ranks 1..4 with size-1 batch dims so broadcasting happens both ways.
  const std::vector<Shape> as = {{5}, {3, 5}, {2, 3, 5}, {4, 1, 3, 5}};
  const std::vector<Shape> bs = {{5}, {5, 4}, {1, 5, 4}, {1, 2, 5, 4}};
  uint64_t seed = 1;
  for (const Shape& sa : as)
    for (const Shape& sb : bs) {
      const Tensor a = rand_t(sa, seed++), b = rand_t(sb, seed++);
      expect_matmul_ref(a, b, 1e-12);
      expect_matmul_ref(a.to(DType::f32), b.to(DType::f32), 1e-5);
    }
}

TEST(Matmul, AwkwardAndTiledSizes) {
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 5}, {1, 64, 1}, {64, 7, 129},
                                                            {600, 70, 530}, {530, 3, 1100}}) {
    const Tensor a = rand_t({m, k}, uint64_t(m * 7 + k)), b = rand_t({k, n}, uint64_t(n * 3 + 1));
    expect_matmul_ref(a, b, 1e-11);
    expect_matmul_ref(a.to(DType::f32), b.to(DType::f32), 1e-4);
  }
}

TEST(Matmul, StridedOperands) {
  const Tensor a = rand_t({6, 9}, 1), b = rand_t({9, 4}, 2);
  // Transposed views go in as flags; column slices, row steps and offsets too.
  expect_matmul_ref(rand_t({9, 6}, 3).t(), b, 1e-12);
  expect_matmul_ref(a, rand_t({4, 9}, 4).t(), 1e-12);
  expect_matmul_ref(rand_t({9, 6}, 3).t(), rand_t({4, 9}, 4).t(), 1e-12);
  expect_matmul_ref(rand_t({6, 20}, 5).slice(1, 3, 12), b, 1e-12);        // ld > k, offset
  expect_matmul_ref(rand_t({6, 18}, 6).slice(1, 0, 18, 2), b, 1e-12);     // column step: copied
  expect_matmul_ref(rand_t({12, 9}, 7).slice(0, 0, 12, 2), b, 1e-12);     // row step
  expect_matmul_ref(rand_t({1, 9}, 8).expand({6, 9}), b, 1e-12);          // stride-0 rows
  expect_matmul_ref(a, rand_t({9, 1}, 9).expand({9, 4}), 1e-12);          // stride-0 columns
  // Batched: permuted batch dims, expanded batch dims, mixed broadcasting (outer loop).
  const Tensor p = rand_t({3, 6, 2, 9}, 10).permute({2, 0, 1, 3});  // [2, 3, 6, 9]
  expect_matmul_ref(p, rand_t({2, 3, 9, 4}, 11), 1e-12);
  expect_matmul_ref(rand_t({6, 9}, 12).expand({2, 3, 6, 9}), rand_t({2, 3, 9, 4}, 13), 1e-12);
  expect_matmul_ref(rand_t({2, 1, 6, 9}, 14), rand_t({1, 3, 9, 4}, 15), 1e-12);
  expect_matmul_ref(rand_t({2, 3, 9, 6}, 16).transpose(-1, -2), rand_t({3, 4, 9}, 17).transpose(-1, -2), 1e-12);
  expect_matmul_ref(rand_t({5, 2, 9}, 18).permute({1, 0, 2}).unsqueeze(2), rand_t({9, 3}, 19), 1e-12);  // [2,5,1,9]
}

TEST(Matmul, EmptyDims) {
  Tensor c = matmul(rand_t({3, 0}, 1), rand_t({0, 4}, 2));  // k = 0: zeros
  EXPECT_EQ(c.shape(), (Shape{3, 4}));
  expect_close(c, zeros({3, 4}, {DType::f64}), 0);
  EXPECT_EQ(matmul(rand_t({0, 3}, 1), rand_t({3, 4}, 2)).shape(), (Shape{0, 4}));
  EXPECT_EQ(matmul(rand_t({2, 3}, 1), rand_t({3, 0}, 2)).shape(), (Shape{2, 0}));
  EXPECT_EQ(matmul(rand_t({0, 2, 3}, 1), rand_t({3, 4}, 2)).shape(), (Shape{0, 2, 4}));
  EXPECT_EQ(matmul(rand_t({0}, 1), rand_t({0}, 2)).item(), 0.0);
  // k = 0 through linear: the bias alone.
  expect_close(linear(rand_t({2, 0}, 3), rand_t({3, 0}, 4), from_vector(std::vector<double>{1, 2, 3}, {3},
                                                                          {DType::f64})),
               std::vector<double>{1, 2, 3, 1, 2, 3}, 0);
  // Gradients through empty products are empty or zero.
  Tensor a = rand_t({3, 0}, 5, -1, 1, DType::f64, true), b = rand_t({0, 4}, 6, -1, 1, DType::f64, true);
  sum(matmul(a, b)).backward();
  EXPECT_EQ(a.grad().shape(), (Shape{3, 0}));
  EXPECT_EQ(b.grad().shape(), (Shape{0, 4}));
}

TEST(Matmul, HalfTypes) {
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tensor a = rand_t({2, 17, 40}, 1).to(dt), b = rand_t({40, 9}, 2).to(dt);
    // Inputs are exact in f64; the product is rounded once, so the error is half an ulp.
    const Tensor c = matmul(a, b);
    EXPECT_EQ(c.dtype(), dt);
    const auto [ref, shape] = ref_matmul(a.to(DType::f64), b.to(DType::f64));
    const auto got = c.to_vector();
    const double ulp = dt == DType::bf16 ? 1.0 / 128 : 1.0 / 1024;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_LE(std::abs(got[i] - ref[i]), ulp * std::max(1.0, std::abs(ref[i])));
    expect_matmul_ref(rand_t({3, 5}, 3).to(dt).t(), rand_t({3, 4}, 4).to(dt), 0.05);
  }
}

TEST(Matmul, ThreadCountDoesNotChangeBits) {
  const Tensor a = rand_t({700, 300}, 1, -1, 1, DType::f32), b = rand_t({300, 650}, 2, -1, 1, DType::f32);
  const Tensor ab = rand_t({40, 16, 24}, 3, -1, 1, DType::f32), bb = rand_t({40, 24, 8}, 4, -1, 1, DType::f32);
  const int saved = num_threads();
  set_num_threads(1);
  const Tensor c1 = matmul(a, b), d1 = matmul(ab, bb), h1 = matmul(a.to(DType::bf16), b.to(DType::bf16));
  set_num_threads(2);
  const Tensor c2 = matmul(a, b), d2 = matmul(ab, bb), h2 = matmul(a.to(DType::bf16), b.to(DType::bf16));
  set_num_threads(saved);
  EXPECT_TRUE(bit_equal(c1, c2));
  EXPECT_TRUE(bit_equal(d1, d2));
  EXPECT_TRUE(bit_equal(h1, h2));
}

TEST(Linear, AgainstLoops) {
  const Tensor w = rand_t({7, 5}, 1), bias = rand_t({7}, 2);
  for (const Shape& xs : std::vector<Shape>{{5}, {4, 5}, {2, 3, 5}, {0, 5}}) {
    const Tensor x = rand_t(xs, 3);
    Tensor ref = matmul(x, w.t());
    expect_close(linear(x, w), ref, 1e-12);
    expect_close(linear(x, w, bias), ref + bias, 1e-12);
  }
  // Non-contiguous input and weight (weight stored [in, out] and transposed).
  const Tensor xt = rand_t({5, 4}, 4).t(), wt = rand_t({5, 7}, 5).t();
  expect_close(linear(xt, wt, bias), matmul(xt, wt.t()) + bias, 1e-12);
  const Tensor xb = rand_t({3, 5}, 6).to(DType::bf16);
  const Tensor yb = linear(xb, w.to(DType::bf16), bias.to(DType::bf16));
  EXPECT_EQ(yb.dtype(), DType::bf16);
  expect_close(yb.to(DType::f64),
               matmul(xb.to(DType::f64), w.to(DType::bf16).to(DType::f64).t()) + bias.to(DType::bf16).to(DType::f64),
               0.03);
}

TEST(Gemm, RawKernel) {
  // Two batches of C = 2 A^T B + 0.5 C with strided batches and padded leading dims.
  const Tensor a = rand_t({2, 4, 8}, 1), b = rand_t({2, 4, 6}, 2);  // A^T: [3 x 4] inside ld 8
  Tensor c = rand_t({2, 3, 7}, 3);
  const Tensor c0 = c.clone();
  GemmArgs g;
  g.trans_a = true;
  g.m = 3;
  g.n = 5;
  g.k = 4;
  g.lda = 8;
  g.ldb = 6;
  g.ldc = 7;
  g.batch = 2;
  g.stride_a = 32;
  g.stride_b = 24;
  g.stride_c = 21;
  g.alpha = 2;
  g.beta = 0.5;
  gemm(g, a, b, c);
  const Tensor ref = 2.0 * matmul(a.narrow(2, 0, 3).transpose(1, 2), b.narrow(2, 0, 5)) + 0.5 * c0.narrow(2, 0, 5);
  expect_close(c.narrow(2, 0, 5), ref, 1e-12);
  expect_close(c.narrow(2, 5, 2), c0.narrow(2, 5, 2), 0);  // padding untouched
  // Bounds and dtypes are checked before any pointer is read.
  g.batch = 3;
  EXPECT_HMOE_ERROR(gemm(g, a, b, c), "runs past the storage");
  g.batch = 2;
  g.lda = 2;
  EXPECT_HMOE_ERROR(gemm(g, a, b, c), "leading dim");
  g.lda = 8;
  EXPECT_HMOE_ERROR(gemm(g, a.to(DType::f32), b, c), "dtypes differ");
  EXPECT_HMOE_ERROR(gemm(g, a.to(DType::i64), b.to(DType::i64), c.to(DType::i64)), "floating");
}

TEST(Matmul, Errors) {
  const Tensor m = rand_t({4, 3}, 1);
  EXPECT_HMOE_ERROR(matmul(m, m), "inner dimensions");
  EXPECT_HMOE_ERROR(matmul(rand_t({2, 4, 3}, 2), rand_t({3, 4, 2}, 3)), "matmul");  // batch 2 vs 3
  EXPECT_HMOE_ERROR(matmul(m, m.to(DType::f32).t()), "dtypes differ");
  EXPECT_HMOE_ERROR(matmul(full({}, 1.0), m), "at least one dim");
  EXPECT_HMOE_ERROR(matmul(m, full({}, 1.0)), "at least one dim");
  EXPECT_HMOE_ERROR(matmul(ones({2, 2}, {DType::i64}), ones({2, 2}, {DType::i64})), "floating");
  EXPECT_HMOE_ERROR(matmul(ones({2, 2}, {DType::b8}), ones({2, 2}, {DType::b8})), "floating");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 5})), "does not match");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 3}), zeros({3})), "bias");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 3}, {DType::f64})), "dtypes differ");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({4, 3}), zeros({4}, {DType::f64})), "dtypes differ");
  EXPECT_HMOE_ERROR(linear(zeros({2, 3}), zeros({3})), "weight must be");
}

TEST(Matmul, Gradients) {
  auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  auto rg = [](const Shape& s, uint64_t seed) { return rand_t(s, seed, -1, 1, DType::f64, true); };
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{3, 4}, {4, 2}},       {{4}, {4}},          {{4}, {4, 3}},       {{3, 4}, {4}},
      {{2, 3, 4}, {4, 2}},    {{3, 4}, {2, 4, 5}}, {{4}, {2, 4, 3}},    {{2, 3, 4}, {4}},
      {{2, 1, 3, 4}, {3, 4, 2}}, {{1, 3, 4}, {2, 4, 2}}};
  uint64_t seed = 1;
  for (const auto& [sa, sb] : cases) EXPECT_GRADCHECK(mm, (std::vector<Tensor>{rg(sa, seed++), rg(sb, seed++)}));
  // Transposed and expanded operands.
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0].t(), in[1].transpose(-1, -2)); },
                   (std::vector<Tensor>{rg({4, 3}, 20), rg({2, 5, 4}, 21)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return matmul(in[0].expand({2, 3, 4}), in[1]); },
                   (std::vector<Tensor>{rg({1, 3, 4}, 22), rg({2, 4, 2}, 23)}));
  // Only one operand requiring grad.
  EXPECT_GRADCHECK(mm, (std::vector<Tensor>{rg({2, 3, 4}, 24), rand_t({4, 2}, 25)}));
  EXPECT_GRADCHECK(mm, (std::vector<Tensor>{rand_t({3, 4}, 26), rg({2, 4, 2}, 27)}));
}

TEST(Linear, Gradients) {
  auto rg = [](const Shape& s, uint64_t seed) { return rand_t(s, seed, -1, 1, DType::f64, true); };
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                   (std::vector<Tensor>{rg({2, 3, 4}, 1), rg({5, 4}, 2), rg({5}, 3)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
                   (std::vector<Tensor>{rg({4}, 4), rg({5, 4}, 5)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0].t(), in[1].t(), in[2]); },
                   (std::vector<Tensor>{rg({4, 3}, 6), rg({4, 5}, 7), rg({5}, 8)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); },
                   (std::vector<Tensor>{rand_t({3, 4}, 9), rg({5, 4}, 10), rand_t({5}, 11)}));
}

// Compact checks against a plain loop.
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

TEST(MatmulOps, TwoDimAgainstLoops) {
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

TEST(MatmulOps, RanksAndBroadcasting) {
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

TEST(MatmulOps, GradientsOfBatchedVectorAndLinear) {
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
