// softmax, log_softmax, cross_entropy, layer/rms norm, dropout and causal attention
// against plain formulas, with gradients and errors.
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(NnOps, SoftmaxAndLogSoftmax) {
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

TEST(NnOps, CrossEntropy) {
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

TEST(NnOps, LayerNormAndRmsNorm) {
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

TEST(NnOps, DropoutAndAttention) {
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
