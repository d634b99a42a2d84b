// cat, stack, split, chunk, unbind: values against naive loops, negative dims, empty and
// non-contiguous inputs, views for split/chunk, gradcheck and errors.
#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// out[at] = the input whose range along dim holds at[dim].
Tensor cat_ref(const std::vector<Tensor>& ts, int64_t dim) {
  Shape shape = ts[0].shape();
  shape[size_t(dim)] = 0;
  std::vector<std::vector<double>> vals;
  for (const Tensor& t : ts) {
    shape[size_t(dim)] += t.size(dim);
    vals.push_back(t.to_vector());
  }
  std::vector<double> out(static_cast<size_t>(shape_numel(shape)));
  for (int64_t f = 0; f < int64_t(out.size()); ++f) {
    Shape at = unravel(f, shape);
    size_t k = 0;
    while (at[size_t(dim)] >= ts[k].size(dim)) at[size_t(dim)] -= ts[k++].size(dim);
    out[size_t(f)] = vals[k][size_t(ravel(at, ts[k].shape()))];
  }
  return from_vector(out, shape, {DType::f64});
}

std::vector<int64_t> sizes_along(const std::vector<Tensor>& parts, int64_t dim) {
  std::vector<int64_t> s;
  for (const Tensor& p : parts) s.push_back(p.size(dim));
  return s;
}

}  // namespace

TEST(Cat, MatchesReference) {
  const Tensor a = randn_t({2, 3, 4}, 1), b = randn_t({2, 1, 4}, 2), c = randn_t({2, 5, 4}, 3);
  expect_close(cat({a, b, c}, 1), cat_ref({a, b, c}, 1), 0);
  expect_close(cat({a, b, c}, -2), cat_ref({a, b, c}, 1), 0);
  const Tensor d = randn_t({2, 3, 2}, 4);
  expect_close(cat({a, d}, -1), cat_ref({a, d}, 2), 0);
  expect_close(cat({a, a}, 0), cat_ref({a, a}, 0), 0);
  // Non-contiguous inputs, empty pieces, a single input (a copy, not an alias).
  const Tensor p = randn_t({4, 3, 2}, 5).permute({2, 1, 0});  // [2, 3, 4]
  const Tensor s = randn_t({2, 3, 8}, 6).slice(2, 0, 8, 2);   // [2, 3, 4]
  expect_close(cat({p, s, a}, 2), cat_ref({p.contiguous(), s.contiguous(), a}, 2), 0);
  const Tensor e = zeros({2, 0, 4}, {DType::f64});
  expect_close(cat({e, a, e}, 1), a, 0);
  EXPECT_EQ(cat({e, e}, 1).shape(), (Shape{2, 0, 4}));
  Tensor one = cat({a}, 0);
  EXPECT_FALSE(one.data_ptr<void>() == a.data_ptr<void>());
  expect_close(one, a, 0);
  // Other dtypes keep theirs.
  const Tensor i = rand_ids({2, 3}, -5, 5, 7), j = rand_ids({2, 2}, -5, 5, 8);
  const Tensor ij = cat({i, j}, 1);
  EXPECT_EQ(ij.dtype(), DType::i64);
  expect_close(ij.to(DType::f64), cat_ref({i, j}, 1), 0);
  const Tensor h = cat({a.to(DType::bf16), b.to(DType::bf16)}, 1);
  EXPECT_TRUE(bit_equal(h, cat_ref({a.to(DType::bf16), b.to(DType::bf16)}, 1).to(DType::bf16)));
}

TEST(Cat, GradientsAndErrors) {
  const Tensor a = rand_t({2, 3}, 1, -1, 1, DType::f64, true), b = rand_t({2, 1}, 2, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cat({in[0], in[1] * 2.0}, 1); },
                   (std::vector<Tensor>{a, b}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cat({in[0].t(), in[1].t(), in[0].t()}, -2); },
                   (std::vector<Tensor>{a, b}));
  // One input without grad.
  const Tensor c = rand_t({2, 2}, 3);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return cat({c, in[0]}, 1); }, std::vector<Tensor>{a});
  sum(cat({c, a}, 1) * 3.0).backward();
  expect_close(a.grad(), std::vector<double>(6, 3.0), 0);

  EXPECT_HMOE_ERROR(cat({a, zeros({3, 1}, {DType::f64})}, 1), "differ outside");
  EXPECT_HMOE_ERROR(cat({a, b.to(DType::f32)}, 1), "dtype");
  EXPECT_HMOE_ERROR(cat({a, zeros({2}, {DType::f64})}, 0), "rank");
  EXPECT_HMOE_ERROR(cat({full({}, 1.0), full({}, 2.0)}, 0), "0-d");
  EXPECT_HMOE_ERROR(cat({}, 0), "no tensors");
  EXPECT_HMOE_ERROR(cat({a, b}, 2), "out of range");
  EXPECT_HMOE_ERROR(cat({a, b}, -3), "out of range");
  EXPECT_HMOE_ERROR(cat({a, Tensor()}, 0), "undefined");
}

TEST(Stack, ValuesGradientsAndErrors) {
  const Tensor a = randn_t({2, 3}, 1), b = randn_t({2, 3}, 2);
  for (int64_t dim : {0, 1, 2, -1, -3}) {
    SCOPED_TRACE(dim);
    const int64_t wd = dim < 0 ? dim + 3 : dim;
    const Tensor s = stack({a, b}, dim);
    expect_close(s, cat_ref({a.unsqueeze(wd), b.unsqueeze(wd)}, wd), 0);
    expect_close(s.select(wd, 1), b, 0);
  }
  EXPECT_EQ(stack({a, a, a}, -1).shape(), (Shape{2, 3, 3}));
  EXPECT_EQ(stack({full({}, 1.0), full({}, 2.0)}, 0).shape(), (Shape{2}));
  EXPECT_EQ(stack({zeros({0, 2}), zeros({0, 2})}, 1).shape(), (Shape{0, 2, 2}));
  const Tensor x = rand_t({2, 3}, 3, -1, 1, DType::f64, true), y = rand_t({2, 3}, 4, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return stack({in[0], in[1].t().t(), in[0] * in[1]}, 1); },
                   (std::vector<Tensor>{x, y}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return stack({in[0].t(), in[1].t()}, -1); },
                   (std::vector<Tensor>{x, y}));
  EXPECT_HMOE_ERROR(stack({a, zeros({3, 2}, {DType::f64})}, 0), "differ in shape");
  EXPECT_HMOE_ERROR(stack({a, a.to(DType::f32)}, 0), "dtype");
  EXPECT_HMOE_ERROR(stack({a, b}, 3), "out of range");
  EXPECT_HMOE_ERROR(stack({}, 0), "no tensors");
}

TEST(Split, SizesViewsAndGradients) {
  const Tensor t = randn_t({3, 7}, 1);
  auto parts = split(t, 3, 1);
  EXPECT_EQ(sizes_along(parts, 1), (std::vector<int64_t>{3, 3, 1}));
  expect_close(cat(parts, 1), t, 0);
  for (const Tensor& p : parts) EXPECT_TRUE(p.storage() == t.storage());  // views, no copies
  EXPECT_EQ(sizes_along(split(t, 7, -1), 1), (std::vector<int64_t>{7}));
  EXPECT_EQ(sizes_along(split(t, 100, -1), 1), (std::vector<int64_t>{7}));
  EXPECT_EQ(sizes_along(split(t, 1, 0), 0), (std::vector<int64_t>{1, 1, 1}));
  auto lst = split(t, std::vector<int64_t>{2, 0, 5}, -1);
  EXPECT_EQ(sizes_along(lst, 1), (std::vector<int64_t>{2, 0, 5}));
  expect_close(lst[2], t.narrow(1, 2, 5), 0);
  // Non-contiguous input and an empty dim.
  const Tensor tt = t.t();
  expect_close(cat(split(tt, 2, 0), 0), tt, 0);
  EXPECT_EQ(split(zeros({0, 2}), 3, 0).size(), 1u);
  EXPECT_EQ(split(zeros({0, 2}), 0, 0).size(), 1u);

  const Tensor a = rand_t({2, 5}, 2, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return split(in[0], std::vector<int64_t>{1, 4}, 1)[1]; },
                   std::vector<Tensor>{a});
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        auto p = split(in[0], 2, -1);
        return cat({p[2] * 3.0, p[0] * p[1]}, 1);
      },
      std::vector<Tensor>{a});
  // Gradients of unused pieces are zero.
  sum(split(a, 2, 1)[1]).backward();
  expect_close(a.grad(), {0, 0, 1, 1, 0, 0, 0, 1, 1, 0}, 0);

  EXPECT_HMOE_ERROR(split(t, std::vector<int64_t>{1, 1}, 1), "sum to");
  EXPECT_HMOE_ERROR(split(t, std::vector<int64_t>{8, -1}, 1), "negative");
  EXPECT_HMOE_ERROR(split(t, 0, 1), "positive");
  EXPECT_HMOE_ERROR(split(t, -2, 1), "positive");
  EXPECT_HMOE_ERROR(split(t, 2, 2), "out of range");
  EXPECT_HMOE_ERROR(split(full({}, 1.0), 1, 0), "0-d");
}

TEST(Chunk, TorchSemantics) {
  const Tensor t = randn_t({7, 2}, 1);
  EXPECT_EQ(sizes_along(chunk(t, 3, 0), 0), (std::vector<int64_t>{3, 3, 1}));
  EXPECT_EQ(sizes_along(chunk(randn_t({6}, 2), 4, 0), 0), (std::vector<int64_t>{2, 2, 2}));  // fewer than asked
  EXPECT_EQ(sizes_along(chunk(randn_t({6}, 2), 6, 0), 0), (std::vector<int64_t>{1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(sizes_along(chunk(randn_t({2}, 2), 5, 0), 0), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(sizes_along(chunk(randn_t({5}, 2), 1, 0), 0), (std::vector<int64_t>{5}));
  EXPECT_EQ(sizes_along(chunk(zeros({0, 3}), 3, 0), 0), (std::vector<int64_t>{0, 0, 0}));  // empty: `chunks` pieces
  EXPECT_EQ(sizes_along(chunk(t, 2, -1), 1), (std::vector<int64_t>{1, 1}));
  expect_close(cat(chunk(t.t(), 3, 1), 1), t.t(), 0);
  for (const Tensor& p : chunk(t, 3, 0)) EXPECT_TRUE(p.storage() == t.storage());
  const Tensor a = rand_t({5, 3}, 3, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        auto p = chunk(in[0], 2, 0);  // 3 + 2 rows
        return cat({p[1], p[0].narrow(0, 0, 2) * p[1]}, 1);
      },
      std::vector<Tensor>{a});
  EXPECT_HMOE_ERROR(chunk(t, 0, 0), "positive");
  EXPECT_HMOE_ERROR(chunk(t, 2, -3), "out of range");
}

TEST(Unbind, ViewsGradientsAndOneNode) {
  const Tensor t = randn_t({3, 4, 5}, 1);
  auto parts = unbind(t, 1);
  ASSERT_EQ(parts.size(), 4u);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(parts[size_t(i)].shape(), (Shape{3, 5}));
    EXPECT_TRUE(parts[size_t(i)].storage() == t.storage());  // views, no copies
    expect_close(parts[size_t(i)], t.select(1, i), 0);
  }
  EXPECT_EQ(unbind(t, -1).size(), 5u);
  EXPECT_TRUE(unbind(zeros({2, 0}), 1).empty());
  const Tensor a = rand_t({3, 2, 4}, 2, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK(
      [](const std::vector<Tensor>& in) {
        auto p = unbind(in[0].permute({1, 0, 2}), 0);  // a non-contiguous input, as attention's q/k/v
        return p[0] * p[1] + p[1];
      },
      std::vector<Tensor>{a});
  // The pieces share one backward node, and pieces without a gradient get zeros.
  auto q = unbind(a, 0);
  EXPECT_TRUE(q[0].grad_fn() == q[2].grad_fn());
  sum(q[0] * 2.0 + q[2]).backward();
  std::vector<double> want(24, 0.0);
  for (int i = 0; i < 8; ++i) {
    want[size_t(i)] = 2.0;
    want[size_t(16 + i)] = 1.0;
  }
  expect_close(a.grad(), want, 0);
  EXPECT_HMOE_ERROR(unbind(full({}, 1.0), 0), "0-d");
  EXPECT_HMOE_ERROR(unbind(t, 3), "out of range");
}
