// causal_attention against an explicit masked softmax in double (values and
// gradients, block-boundary sizes, strided inputs, half types), dropout's mask rule,
// gradients and generator use, thread-count determinism, and errors.
#include <cstring>

#include "ops/attention_kernels.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// Explicit causal attention in double from the logical values.
std::vector<double> ref_attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  if (scale == 0) scale = 1.0 / std::sqrt(double(D));
  const auto qv = q.contiguous().to_vector(), kv = k.contiguous().to_vector(), vv = v.contiguous().to_vector();
  std::vector<double> out(qv.size(), 0.0), s(static_cast<size_t>(T));
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < T; ++i) {
      const size_t qi = size_t((bh * T + i) * D);
      double mx = -INFINITY;
      for (int64_t j = 0; j <= i; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qv[qi + size_t(d)] * kv[size_t((bh * T + j) * D + d)];
        s[size_t(j)] = dot * scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      double z = 0;
      for (int64_t j = 0; j <= i; ++j) z += std::exp(s[size_t(j)] - mx);
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t d = 0; d < D; ++d)
          out[qi + size_t(d)] += std::exp(s[size_t(j)] - mx) / z * vv[size_t((bh * T + j) * D + d)];
    }
  return out;
}

// The same attention composed of differentiable ops (for gradients at larger sizes).
Tensor composite_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t T = q.size(2);
  const Tensor s = matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(double(q.size(3))));
  const Tensor future = gt(arange(T).unsqueeze(0), arange(T).unsqueeze(1));
  return matmul(softmax(masked_fill(s, future, -INFINITY), -1), v);
}

}  // namespace

TEST(Attention, AgainstExplicitSoftmax) {
  // T across the 64-query block boundary, Dh from 1 to odd sizes.
  for (const Shape& s : std::vector<Shape>{{1, 1, 1, 1}, {2, 3, 5, 4}, {1, 2, 64, 8}, {1, 1, 65, 3}, {2, 1, 130, 33}}) {
    const Tensor q = rand_t(s, 1, -2, 2), k = rand_t(s, 2, -2, 2), v = rand_t(s, 3);
    expect_close(causal_attention(q, k, v), ref_attention(q, k, v, 0), 1e-12);
    expect_close(causal_attention(q, k, v, 0.7), ref_attention(q, k, v, 0.7), 1e-12);
    expect_close(causal_attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32)), ref_attention(q, k, v, 0),
                 2e-5);
  }
  // Query 0 sees only key 0.
  const Tensor q = rand_t({1, 2, 5, 4}, 4), k = rand_t({1, 2, 5, 4}, 5), v = rand_t({1, 2, 5, 4}, 6);
  expect_close(causal_attention(q, k, v).select(2, 0), v.select(2, 0), 1e-15);
}

TEST(Attention, StridedAndHalfInputs) {
  // q, k, v as slices of one [B, T, 3, H, Dh] projection, permuted to [B, H, T, Dh].
  const Tensor qkv = rand_t({2, 70, 3, 2, 8}, 1, -2, 2).permute({2, 0, 3, 1, 4});
  const Tensor q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
  expect_close(causal_attention(q, k, v), ref_attention(q, k, v, 0), 1e-12);
  // A non-unit stride along Dh is copied.
  const Tensor qt = rand_t({1, 2, 8, 70}, 2).transpose(2, 3);
  expect_close(causal_attention(qt, k.narrow(0, 0, 1), v.narrow(0, 0, 1)),
               ref_attention(qt, k.narrow(0, 0, 1), v.narrow(0, 0, 1), 0), 1e-12);
  for (DType dt : {DType::bf16, DType::f16}) {
    const Tensor qh = q.to(dt), kh = k.to(dt), vh = v.to(dt);
    const Tensor o = causal_attention(qh, kh, vh);
    EXPECT_EQ(o.dtype(), dt);
    expect_close(o, ref_attention(qh.to(DType::f64), kh.to(DType::f64), vh.to(DType::f64), 0),
                 dt == DType::bf16 ? 0.02 : 0.003);
  }
}

TEST(Attention, GradientsMatch) {
  auto att = [](const std::vector<Tensor>& in) { return causal_attention(in[0], in[1], in[2]); };
  auto rg = [](const Shape& s, uint64_t seed) { return rand_t(s, seed, -1, 1, DType::f64, true); };
  EXPECT_GRADCHECK(att, (std::vector<Tensor>{rg({1, 2, 5, 4}, 1), rg({1, 2, 5, 4}, 2), rg({1, 2, 5, 4}, 3)}));
  EXPECT_GRADCHECK(att, (std::vector<Tensor>{rg({1, 1, 67, 2}, 4), rg({1, 1, 67, 2}, 5), rg({1, 1, 67, 2}, 6)}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return causal_attention(in[0], in[1], in[2], 0.3); },
                   (std::vector<Tensor>{rg({2, 1, 4, 3}, 7), rand_t({2, 1, 4, 3}, 8), rg({2, 1, 4, 3}, 9)}));
  // Larger: the fused backward against autograd through the composite formulation.
  const Shape s{2, 2, 150, 16};
  Tensor q = rg(s, 10), k = rg(s, 11), v = rg(s, 12);
  const Tensor w = rand_t(s, 13);
  sum(causal_attention(q, k, v) * w).backward();
  const Tensor gq = q.grad(), gk = k.grad(), gv = v.grad();
  q.zero_grad();
  k.zero_grad();
  v.zero_grad();
  sum(composite_attention(q, k, v) * w).backward();
  expect_close(gq, q.grad(), 1e-11);
  expect_close(gk, k.grad(), 1e-11);
  expect_close(gv, v.grad(), 1e-11);
  // f32 gradients are close to the f64 ones.
  Tensor qf = q.detach().to(DType::f32).set_requires_grad(true), kf = k.detach().to(DType::f32).set_requires_grad(true),
         vf = v.detach().to(DType::f32).set_requires_grad(true);
  sum(causal_attention(qf, kf, vf) * w.to(DType::f32)).backward();
  expect_close(qf.grad(), gq, 1e-4);
  expect_close(kf.grad(), gk, 1e-4);
  expect_close(vf.grad(), gv, 1e-4);
}

TEST(Attention, ThreadCountDoesNotChangeBits) {
  const Shape s{2, 2, 200, 24};
  auto run = [&](int threads) {
    set_num_threads(threads);
    Tensor q = rand_t(s, 1, -1, 1, DType::f32, true), k = rand_t(s, 2, -1, 1, DType::f32, true),
           v = rand_t(s, 3, -1, 1, DType::f32, true);
    Tensor o = causal_attention(q, k, v);
    sum(o * rand_t(s, 4, -1, 1, DType::f32)).backward();
    return std::vector<Tensor>{o.detach(), q.grad(), k.grad(), v.grad()};
  };
  const int saved = num_threads();
  const auto r1 = run(1), r2 = run(2);
  set_num_threads(saved);
  for (size_t i = 0; i < r1.size(); ++i) EXPECT_TRUE(bit_equal(r1[i], r2[i])) << "output " << i;
}

TEST(Attention, EmptyAndErrors) {
  EXPECT_EQ(causal_attention(zeros({0, 2, 3, 4}), zeros({0, 2, 3, 4}), zeros({0, 2, 3, 4})).shape(),
            (Shape{0, 2, 3, 4}));
  EXPECT_EQ(causal_attention(zeros({1, 2, 0, 4}), zeros({1, 2, 0, 4}), zeros({1, 2, 0, 4})).shape(),
            (Shape{1, 2, 0, 4}));
  Tensor q = rand_t({1, 1, 3, 0}, 1, -1, 1, DType::f64, true);
  sum(causal_attention(q, q, q)).backward();
  EXPECT_EQ(q.grad().shape(), (Shape{1, 1, 3, 0}));
  const Tensor a = rand_t({1, 2, 5, 4}, 1);
  EXPECT_HMOE_ERROR(causal_attention(a, a, rand_t({1, 2, 4, 4}, 1)), "share one");
  EXPECT_HMOE_ERROR(causal_attention(a.select(0, 0), a.select(0, 0), a.select(0, 0)), "share one");
  EXPECT_HMOE_ERROR(causal_attention(a, a.to(DType::f32), a), "dtypes differ");
  EXPECT_HMOE_ERROR(causal_attention(ones({1, 1, 2, 2}, {DType::i64}), ones({1, 1, 2, 2}, {DType::i64}),
                                     ones({1, 1, 2, 2}, {DType::i64})),
                    "floating");
  EXPECT_HMOE_ERROR(causal_attention(a, a, a, INFINITY), "finite");
}

TEST(Dropout, MaskRuleAndScale) {
  const Tensor x = rand_t({40, 50}, 1, 1, 2);
  Generator g(77, 5);
  const Tensor y = dropout(x, 0.3, true, g);
  EXPECT_EQ(g.offset(), 5u + 2000u);  // one counter per element
  const auto xv = x.to_vector(), yv = y.to_vector();
  int dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    const bool keep = dropout_keep(77, 5, i, 0.3f);
    EXPECT_EQ(yv[i], keep ? xv[i] * (1.0 / (1.0 - 0.3)) : 0.0) << i;
    dropped += !keep;
  }
  EXPECT_NEAR(dropped / 2000.0, 0.3, 0.04);
  // The mask follows the logical (row-major) index, whatever the strides.
  Generator g1(9), g2(9);
  const Tensor xt = rand_t({50, 40}, 2).t();
  expect_close(dropout(xt, 0.5, true, g1), dropout(xt.contiguous(), 0.5, true, g2), 0);
  // f32 and bf16: the same mask, scaled in f32.
  Generator g3(77, 5), g4(77, 5);
  const Tensor yf = dropout(x.to(DType::f32), 0.3, true, g3), yb = dropout(x.to(DType::bf16), 0.3, true, g4);
  const auto yfv = yf.to_vector(), ybv = yb.to_vector();
  for (size_t i = 0; i < xv.size(); ++i) {
    EXPECT_EQ(yfv[i] == 0, yv[i] == 0);
    EXPECT_EQ(ybv[i] == 0, yv[i] == 0);
  }
  // Identity when not training or p == 0; the generator is untouched.
  Generator g5(1);
  EXPECT_TRUE(dropout(x, 0.3, false, g5).is_same(x));
  EXPECT_TRUE(dropout(x, 0.0, true, g5).is_same(x));
  EXPECT_EQ(g5.offset(), 0u);
}

TEST(Dropout, GradientIsMaskTimesScale) {
  Generator g(3);
  Tensor x = rand_t({300}, 1, -1, 1, DType::f64, true);
  const Generator copy = g;
  const Tensor y = dropout(x, 0.4, true, g);
  y.backward(ones({300}, {DType::f64}));
  const auto gv = x.grad().to_vector();
  for (size_t i = 0; i < gv.size(); ++i)
    EXPECT_EQ(gv[i], dropout_keep(copy.seed(), copy.offset(), i, 0.4f) ? 1.0 / (1.0 - 0.4) : 0.0);
  Generator g2(9);
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        Generator gg = g2;  // the same mask every evaluation
        return dropout(in[0], 0.5, true, gg);
      },
      std::vector<Tensor>{rand_t({4, 5}, 7, -1, 1, DType::f64, true)});
}

TEST(Dropout, DeterminismAndErrors) {
  const Tensor x = rand_t({300000}, 1, -1, 1, DType::f32);
  const int saved = num_threads();
  Generator g1(4), g2(4);
  set_num_threads(1);
  const Tensor a = dropout(x, 0.1, true, g1);
  set_num_threads(2);
  const Tensor b = dropout(x, 0.1, true, g2);
  set_num_threads(saved);
  EXPECT_TRUE(bit_equal(a, b));
  Generator g(1);
  EXPECT_HMOE_ERROR(dropout(x, 1.0, true, g), "[0, 1)");
  EXPECT_HMOE_ERROR(dropout(x, -0.1, true, g), "[0, 1)");
  EXPECT_HMOE_ERROR(dropout(x, NAN, true, g), "[0, 1)");
  EXPECT_HMOE_ERROR(dropout(ones({3}, {DType::i64}), 0.1, true, g), "floating");
  EXPECT_EQ(dropout(zeros({0, 3}), 0.5, true, g).shape(), (Shape{0, 3}));
}

// Compact checks against plain formulas.
TEST(AttentionOps, DropoutAndAttention) {
  Generator g1(5), g2(5);
  Tensor x = rand_t({1000}, 6, 1, 2, DType::f64, true);
  Tensor d1 = dropout(x, 0.3, true, g1), d2 = dropout(x, 0.3, true, g2);
  expect_close(d1, d2, 0);  // same seed, same mask
  int zeros_n = 0;
  for (double v : d1.to_vector()) zeros_n += v == 0;
  EXPECT_NEAR(zeros_n / 1000.0, 0.3, 0.06);
  EXPECT_TRUE(dropout(x, 0.3, false, g1).is_same(x));
  EXPECT_HMOE_ERROR(dropout(x, 1.0, true, g1), "[0, 1)");
  Generator g3(9);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) {
    Generator gg = g3;  // the same mask every evaluation
    return dropout(in[0], 0.5, true, gg);
  }, std::vector<Tensor>{rand_t({20}, 7, -1, 1, DType::f64, true)});

  Tensor q = rand_t({1, 2, 5, 4}, 8, -1, 1, DType::f64, true), k = rand_t({1, 2, 5, 4}, 9, -1, 1, DType::f64, true),
         v = rand_t({1, 2, 5, 4}, 10, -1, 1, DType::f64, true);
  Tensor o = causal_attention(q, k, v);
  // Query 0 sees only key 0: its output is v[0].
  expect_close(o.select(2, 0), v.select(2, 0).detach(), 1e-12);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return causal_attention(in[0], in[1], in[2]); },
                   (std::vector<Tensor>{q, k, v}));
  EXPECT_HMOE_ERROR(causal_attention(q, k, rand_t({1, 2, 4, 4}, 1)), "share one");
}
