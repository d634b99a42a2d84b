// layer_norm and rms_norm: values against loops in double (one and two normalised
// dims, with and without bias, strided inputs, half types), gradcheck, fused backward
// against double formulas over many rows, empty inputs, errors, thread determinism.
#include <cmath>

#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// y for rows of length D = w.numel(); bias may be empty.
std::vector<double> ref_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps, bool rms) {
  const auto xv = x.to_vector(), wv = w.to_vector();
  const auto bv = b.defined() ? b.to_vector() : std::vector<double>(wv.size(), 0.0);
  const size_t D = wv.size();
  std::vector<double> y(xv.size());
  for (size_t o = 0; o < xv.size(); o += D) {
    double m = 0, q = 0;
    for (size_t j = 0; j < D; ++j) m += xv[o + j] / double(D);
    if (rms) m = 0;
    for (size_t j = 0; j < D; ++j) q += (xv[o + j] - m) * (xv[o + j] - m) / double(D);
    const double rs = 1 / std::sqrt(q + eps);
    for (size_t j = 0; j < D; ++j) y[o + j] = (xv[o + j] - m) * rs * wv[j] + bv[j];
  }
  return y;
}

// dx, dw, db in double for upstream gradient g.
struct NormGrads {
  std::vector<double> dx, dw, db;
};
NormGrads ref_norm_grads(const Tensor& x, const Tensor& w, const Tensor& g, double eps, bool rms) {
  const auto xv = x.to_vector(), wv = w.to_vector(), gv = g.to_vector();
  const size_t D = wv.size();
  NormGrads r{std::vector<double>(xv.size()), std::vector<double>(D), std::vector<double>(D)};
  for (size_t o = 0; o < xv.size(); o += D) {
    double m = 0, q = 0;
    for (size_t j = 0; j < D; ++j) m += xv[o + j] / double(D);
    if (rms) m = 0;
    for (size_t j = 0; j < D; ++j) q += (xv[o + j] - m) * (xv[o + j] - m) / double(D);
    const double rs = 1 / std::sqrt(q + eps);
    double a = 0, bq = 0;
    for (size_t j = 0; j < D; ++j) {
      const double xh = (xv[o + j] - m) * rs;
      a += gv[o + j] * wv[j] / double(D);
      bq += gv[o + j] * wv[j] * xh / double(D);
      r.dw[j] += gv[o + j] * xh;
      r.db[j] += gv[o + j];
    }
    if (rms) a = 0;
    for (size_t j = 0; j < D; ++j) r.dx[o + j] = rs * (gv[o + j] * wv[j] - a - (xv[o + j] - m) * rs * bq);
  }
  return r;
}

}  // namespace

TEST(Norms, ForwardValues) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    const double tol = dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 5e-6 : 2e-2;
    const std::vector<Tensor> xs = {rand_t({2, 3, 8}, 1, -2, 2, dt), rand_t({8, 3, 2}, 2, -2, 2, dt).permute({2, 1, 0}),
                                    rand_t({5, 1000}, 3, 1, 5, dt).slice(0, 0, 5, 2).narrow(1, 0, 8).contiguous(),
                                    rand_t({0, 8}, 4, -1, 1, dt)};
    for (const Tensor& x : xs) {
      const Tensor w = rand_t({8}, 5, 0.5, 1.5, dt), b = rand_t({8}, 6, -1, 1, dt);
      expect_values(layer_norm(x, w, b), x.shape(), ref_norm(x, w, b, 1e-5, false), tol);
      expect_values(layer_norm(x, w), x.shape(), ref_norm(x, w, Tensor(), 1e-5, false), tol);
      expect_values(rms_norm(x, w, 1e-3), x.shape(), ref_norm(x, w, Tensor(), 1e-3, true), tol);
      EXPECT_EQ(layer_norm(x, w, b).dtype(), dt);
    }
    // Two normalised dims; a long row (lanes and tails).
    Tensor x2 = rand_t({3, 4, 5}, 7, -3, 3, dt), w2 = rand_t({4, 5}, 8, 0.5, 1.5, dt), b2 = rand_t({4, 5}, 9, -1, 1, dt);
    expect_values(layer_norm(x2, w2, b2, 1e-2), x2.shape(), ref_norm(x2, w2, b2, 1e-2, false), tol);
    expect_values(rms_norm(x2, w2), x2.shape(), ref_norm(x2, w2, Tensor(), 1e-6, true), tol);
    Tensor x3 = rand_t({3, 1037}, 10, 2, 4, dt), w3 = rand_t({1037}, 11, 0.5, 1.5, dt);
    expect_values(layer_norm(x3, w3), x3.shape(), ref_norm(x3, w3, Tensor(), 1e-5, false), tol * 2);
    expect_values(rms_norm(x3, w3), x3.shape(), ref_norm(x3, w3, Tensor(), 1e-6, true), tol * 2);
  }
  // A constant row: variance 0, the output is the bias.
  expect_close(layer_norm(full({2, 4}, 3.0, {DType::f64}), ones({4}, {DType::f64}), full({4}, 0.5, {DType::f64})),
               std::vector<double>(8, 0.5));
}

TEST(Norms, Gradients) {
  Tensor x = rand_t({2, 3, 8}, 21, -2, 2, DType::f64, true);
  Tensor w = rand_t({8}, 22, 0.5, 1.5, DType::f64, true), b = rand_t({8}, 23, -1, 1, DType::f64, true);
  Tensor w2 = rand_t({3, 8}, 24, 0.5, 1.5, DType::f64, true), b2 = rand_t({3, 8}, 25, -1, 1, DType::f64, true);
  using V = std::vector<Tensor>;
  EXPECT_GRADCHECK([](const V& in) { return layer_norm(in[0], in[1], in[2]); }, (V{x, w, b}));
  EXPECT_GRADCHECK([](const V& in) { return layer_norm(in[0], in[1]); }, (V{x, w}));
  EXPECT_GRADCHECK([](const V& in) { return layer_norm(in[0], in[1], in[2], 0.1); }, (V{x, w2, b2}));
  EXPECT_GRADCHECK([](const V& in) { return layer_norm(in[0].permute({2, 1, 0}), in[1], in[2]); },
                   (V{rand_t({8, 3, 2}, 26, -2, 2, DType::f64, true), rand_t({8}, 27, 0.5, 1.5, DType::f64, true),
                      rand_t({8}, 28, -1, 1, DType::f64, true)}));
  EXPECT_GRADCHECK([](const V& in) { return rms_norm(in[0], in[1]); }, (V{x, w}));
  EXPECT_GRADCHECK([](const V& in) { return rms_norm(in[0], in[1], 0.5); }, (V{x, w2}));
  // Only some inputs need a gradient.
  Tensor xc = x.detach(), wc = w.detach();
  EXPECT_GRADCHECK([&](const V& in) { return layer_norm(xc, in[0], in[1]); }, (V{w, b}));
  EXPECT_GRADCHECK([&](const V& in) { return layer_norm(in[0], wc, in[1]); }, (V{x, b}));
  EXPECT_GRADCHECK([&](const V& in) { return rms_norm(xc, in[0]); }, (V{w}));
}

TEST(Norms, FusedBackwardManyRows) {
  // Enough rows for several weight-gradient chunks; f32 and bf16 against double loops.
  for (DType dt : {DType::f32, DType::bf16})
    for (bool rms : {false, true}) {
      const int64_t M = 1500, D = 96;
      Tensor x = rand_t({M, D}, 31, -2, 2, dt, true), w = rand_t({D}, 32, 0.5, 1.5, dt, true);
      Tensor b = rand_t({D}, 33, -1, 1, dt, true), g = rand_t({M, D}, 34, -1, 1, dt);
      Tensor y = rms ? rms_norm(x, w, 1e-5) : layer_norm(x, w, b, 1e-5);
      y.backward(g);
      const auto r = ref_norm_grads(x.detach(), w.detach(), g, 1e-5, rms);
      const double tol = dt == DType::f32 ? 2e-5 : 3e-2;
      expect_values(x.grad(), {M, D}, r.dx, tol);
      expect_values(w.grad(), {D}, r.dw, tol);
      if (!rms) expect_values(b.grad(), {D}, r.db, tol);
      EXPECT_EQ(x.grad().dtype(), dt);
    }
  // No rows: empty dx, zero dweight / dbias.
  Tensor x0 = zeros({0, 4}, {DType::f64}).set_requires_grad(true);
  Tensor w0 = ones({4}, {DType::f64}).set_requires_grad(true), b0 = ones({4}, {DType::f64}).set_requires_grad(true);
  sum(layer_norm(x0, w0, b0)).backward();
  expect_close(w0.grad(), std::vector<double>(4, 0.0));
  expect_close(b0.grad(), std::vector<double>(4, 0.0));
  EXPECT_EQ(x0.grad().shape(), (Shape{0, 4}));
}

TEST(Norms, Errors) {
  Tensor x = rand_t({2, 3, 8}, 41);
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({7}, 1)), "does not match");
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({2, 8}, 1)), "does not match");
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({1, 2, 3, 8}, 1)), "does not match");
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({8}, 1), rand_t({7}, 2)), "bias");
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({8}, 1), rand_t({8}, 2, -1, 1, DType::f32)), "dtype");
  EXPECT_HMOE_ERROR(rms_norm(x, rand_t({8}, 1, -1, 1, DType::f32)), "dtype");
  EXPECT_HMOE_ERROR(rms_norm(x, rand_t({8}, 1), -1.0), "eps");
  EXPECT_HMOE_ERROR(rms_norm(ones({2, 3}, {DType::i64}), ones({3}, {DType::i64})), "floating");
  EXPECT_HMOE_ERROR(layer_norm(x, Tensor()), "weight");
  EXPECT_HMOE_ERROR(rms_norm(x, full({}, 1.0, {DType::f64})), "does not match");
}

TEST(Norms, BitIdenticalAcrossThreadCounts) {
  for (DType dt : {DType::f32, DType::bf16}) {
    Tensor x = rand_t({777, 200}, 51, -2, 2, dt, true), w = rand_t({200}, 52, 0.5, 1.5, dt, true);
    Tensor b = rand_t({200}, 53, -1, 1, dt, true), g = rand_t({777, 200}, 54, -1, 1, dt);
    auto run = [&] {
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
      Tensor y = layer_norm(x, w, b);
      y.backward(g);
      std::vector<Tensor> out{y, x.grad().clone(), w.grad().clone(), b.grad().clone()};
      x.zero_grad();
      w.zero_grad();
      Tensor r = rms_norm(x, w);
      r.backward(g);
      out.insert(out.end(), {r, x.grad().clone(), w.grad().clone()});
      return out;
    };
    const int before = num_threads();
    set_num_threads(1);
    const auto a = run();
    set_num_threads(2);
    const auto c = run();
    set_num_threads(3);
    const auto d = run();
    set_num_threads(before);
    for (size_t i = 0; i < a.size(); ++i) {
      expect_identical(a[i], c[i]);
      expect_identical(a[i], d[i]);
    }
  }
}

// Compact checks against plain formulas.
TEST(NormOps, LayerNormAndRmsNorm) {
  Tensor x = rand_t({2, 3, 8}, 3, -2, 2, DType::f64, true);
  Tensor w = rand_t({8}, 4, 0.5, 1.5, DType::f64, true), b = rand_t({8}, 5, -1, 1, DType::f64, true);
  Tensor y = layer_norm(x, w, b);
  auto xv = x.to_vector(), yv = y.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  double m = 0, q = 0;
  for (int j = 0; j < 8; ++j) m += xv[size_t(j)] / 8;
  for (int j = 0; j < 8; ++j) q += (xv[size_t(j)] - m) * (xv[size_t(j)] - m) / 8;
  for (int j = 0; j < 8; ++j)
    EXPECT_NEAR(yv[size_t(j)], (xv[size_t(j)] - m) / std::sqrt(q + 1e-5) * wv[size_t(j)] + bv[size_t(j)], 1e-12);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2]); },
                   (std::vector<Tensor>{x, w, b}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1]); }, (std::vector<Tensor>{x, w}));
  EXPECT_HMOE_ERROR(layer_norm(x, rand_t({7}, 1)), "does not match");
}
