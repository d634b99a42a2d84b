// embedding, index_select, gather, scatter_add, masked_fill, one_hot: values against
// naive loops, non-contiguous and empty inputs, gradcheck, determinism and errors.
#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

Tensor index_select_ref(const Tensor& t, int64_t dim, const Tensor& idx) {
  const auto tv = t.to_vector();
  const auto iv = idx.to(DType::i64).to_vector_as<int64_t>();
  Shape shape = t.shape();
  shape[size_t(dim)] = int64_t(iv.size());
  std::vector<double> out(static_cast<size_t>(shape_numel(shape)));
  for (int64_t f = 0; f < int64_t(out.size()); ++f) {
    Shape at = unravel(f, shape);
    at[size_t(dim)] = iv[size_t(at[size_t(dim)])];
    out[size_t(f)] = tv[size_t(ravel(at, t.shape()))];
  }
  return from_vector(out, shape, {DType::f64});
}

Tensor gather_ref(const Tensor& t, int64_t dim, const Tensor& index) {
  const auto tv = t.to_vector();
  const auto iv = index.to(DType::i64).to_vector_as<int64_t>();
  std::vector<double> out(iv.size());
  for (int64_t f = 0; f < int64_t(iv.size()); ++f) {
    Shape at = unravel(f, index.shape());
    at[size_t(dim)] = iv[size_t(f)];
    out[size_t(f)] = tv[size_t(ravel(at, t.shape()))];
  }
  return from_vector(out, index.shape(), {DType::f64});
}

// In row-major order over index, so in f64 it matches the kernel bit for bit.
Tensor scatter_add_ref(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src) {
  auto out = t.to_vector();
  const auto sv = src.to_vector();
  const auto iv = index.to(DType::i64).to_vector_as<int64_t>();
  for (int64_t f = 0; f < int64_t(iv.size()); ++f) {
    const Shape at = unravel(f, index.shape());
    Shape dst = at;
    dst[size_t(dim)] = iv[size_t(f)];
    out[size_t(ravel(dst, t.shape()))] += sv[size_t(ravel(at, src.shape()))];
  }
  return from_vector(out, t.shape(), {DType::f64});
}

// The gradient of embedding: rows of g summed per id in increasing position, in f32.
Tensor embedding_grad_ref(int64_t V, int64_t D, const Tensor& ids, const Tensor& g) {
  const auto iv = ids.reshape({-1}).to(DType::i64).to_vector_as<int64_t>();
  const auto gv = g.reshape({-1, D}).contiguous().to_vector_as<float>();
  std::vector<float> out(static_cast<size_t>(V * D), 0.0f);
  for (size_t j = 0; j < iv.size(); ++j)
    for (int64_t c = 0; c < D; ++c) out[size_t(iv[j] * D + c)] += gv[j * size_t(D) + size_t(c)];
  return from_vector(out, {V, D});
}

}  // namespace

TEST(IndexSelect, MatchesReference) {
  const Tensor t = randn_t({4, 5, 3}, 1);
  for (int64_t dim : {0, 1, 2, -1, -3}) {
    SCOPED_TRACE(dim);
    const int64_t n = t.size(dim < 0 ? dim + 3 : dim);
    for (DType it : {DType::i64, DType::i32}) {
      const Tensor idx = rand_ids({7}, 0, n, 10 + uint64_t(dim + 3), it);  // repeats likely
      const int64_t wd = dim < 0 ? dim + 3 : dim;
      expect_close(index_select(t, dim, idx), index_select_ref(t, wd, idx), 0);
      // Non-contiguous input.
      const Tensor p = t.permute({2, 0, 1});
      const Tensor pidx = rand_ids({5}, 0, p.size(wd), 20 + uint64_t(wd), it);
      expect_close(index_select(p, dim, pidx), index_select_ref(p.contiguous(), wd, pidx), 0);
    }
  }
  // Empty index, 0-d index, other dtypes.
  EXPECT_EQ(index_select(t, 1, from_vector(std::vector<int64_t>{}, {0})).shape(), (Shape{4, 0, 3}));
  EXPECT_EQ(index_select(t, 1, full({}, 2, {DType::i64})).shape(), (Shape{4, 1, 3}));
  const Tensor ti = rand_ids({3, 4}, -100, 100, 3);
  expect_close(index_select(ti, 1, from_vector(std::vector<int64_t>{3, 0}, {2})).to(DType::f64),
               index_select_ref(ti, 1, from_vector(std::vector<int64_t>{3, 0}, {2})), 0);
  const Tensor tb = t.to(DType::bf16);
  const Tensor ib = from_vector(std::vector<int64_t>{1, 1, 0}, {3});
  EXPECT_TRUE(bit_equal(index_select(tb, 0, ib), index_select_ref(tb, 0, ib).to(DType::bf16)));
  // An empty source dim with an empty index is fine.
  EXPECT_EQ(index_select(zeros({0, 3}), 0, from_vector(std::vector<int64_t>{}, {0})).shape(), (Shape{0, 3}));
}

TEST(IndexSelect, GradientsAndErrors) {
  const Tensor x = rand_t({3, 4}, 2, -1, 1, DType::f64, true);
  const Tensor idx = from_vector(std::vector<int32_t>{3, 1, 3, 3}, {4});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return index_select(in[0].t(), 0, idx); },
                   std::vector<Tensor>{x});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return index_select(in[0], -1, idx); },
                   std::vector<Tensor>{x});
  // Backward equals the naive index-add.
  const Tensor up = randn_t({3, 4}, 3);
  sum(index_select(x, 1, idx) * up).backward();
  Tensor ref = zeros({3, 4}, {DType::f64});
  for (int64_t j = 0; j < 4; ++j) {
    NoGradGuard ng;
    const int64_t c = int64_t(idx.select(0, j).item());
    ref.narrow(1, c, 1).copy_(ref.narrow(1, c, 1) + up.narrow(1, j, 1));
  }
  expect_close(x.grad(), ref, 1e-15);

  const Tensor t = zeros({3, 4});
  EXPECT_HMOE_ERROR(index_select(t, 1, from_vector(std::vector<int64_t>{4}, {1})), "out of range");
  EXPECT_HMOE_ERROR(index_select(t, 1, from_vector(std::vector<int64_t>{0, -1}, {2})), "out of range");
  EXPECT_HMOE_ERROR(index_select(t, 1, zeros({2})), "i32 or i64");
  EXPECT_HMOE_ERROR(index_select(t, 1, zeros({2, 1}, {DType::i64})), "1-d");
  EXPECT_HMOE_ERROR(index_select(t, 2, zeros({1}, {DType::i64})), "out of range for a tensor of rank 2");
  EXPECT_HMOE_ERROR(index_select(full({}, 1.0), 0, zeros({1}, {DType::i64})), "at least one dim");
  EXPECT_HMOE_ERROR(index_select(zeros({0, 3}), 0, zeros({1}, {DType::i64})), "out of range [0, 0)");
}

TEST(Embedding, ValuesAndShapes) {
  const Tensor w = randn_t({6, 4}, 5, DType::f32);
  for (DType it : {DType::i64, DType::i32}) {
    const Tensor ids = rand_ids({2, 3}, 0, 6, 6, it);
    const Tensor e = embedding(w, ids);
    EXPECT_EQ(e.shape(), (Shape{2, 3, 4}));
    expect_close(e.reshape({6, 4}), index_select_ref(w, 0, ids.reshape({-1})), 0);
  }
  EXPECT_EQ(embedding(w, full({}, 2, {DType::i64})).shape(), (Shape{4}));
  expect_close(embedding(w, full({}, 2, {DType::i64})), w.select(0, 2), 0);
  EXPECT_EQ(embedding(w, zeros({0, 5}, {DType::i64})).shape(), (Shape{0, 5, 4}));
  // Non-contiguous weight and ids.
  const Tensor wt = randn_t({4, 6}, 7).t();
  const Tensor ids = rand_ids({3, 2}, 0, 6, 8).t();
  expect_close(embedding(wt, ids).reshape({6, 4}), index_select_ref(wt, 0, ids.contiguous().reshape({-1})), 0);
}

TEST(Embedding, GradientIsExactSumInOrder) {
  const Tensor w = rand_t({5, 3}, 1, -1, 1, DType::f64, true);
  const Tensor ids = from_vector(std::vector<int64_t>{4, 0, 4, 2, 4, 4}, {2, 3});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, std::vector<Tensor>{w});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return embedding(in[0], ids.to(DType::i32).t()); },
                   std::vector<Tensor>{w});
  // f32 with many repeats: bit-identical to the sequential per-id sum.
  const int64_t V = 37, D = 1100;  // D spans several column blocks
  const Tensor wf = rand_t({V, D}, 2, -1, 1, DType::f32, true);
  const Tensor many = rand_ids({3000}, 0, 5, 3);  // 5 hot ids
  const Tensor more = cat({many, rand_ids({500}, 0, V, 4)}, 0);
  const Tensor up = randn_t({3500, D}, 5, DType::f32);
  sum(embedding(wf, more) * up).backward();
  EXPECT_TRUE(bit_equal(wf.grad(), embedding_grad_ref(V, D, more, up)));
  // Unused rows get exact zeros.
  const Tensor w2 = rand_t({4, 2}, 6, -1, 1, DType::f32, true);
  sum(embedding(w2, from_vector(std::vector<int64_t>{1, 1}, {2}))).backward();
  expect_close(w2.grad(), {0, 0, 2, 2, 0, 0, 0, 0}, 0);
  // Empty ids: zero gradient.
  const Tensor w3 = rand_t({4, 2}, 7, -1, 1, DType::f64, true);
  sum(embedding(w3, zeros({0}, {DType::i64}))).backward();
  expect_close(w3.grad(), zeros({4, 2}, {DType::f64}), 0);
}

TEST(Embedding, BackwardDeterministicAcrossThreads) {
  for (DType dt : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor w = rand_t({50, 64}, 3, -1, 1, dt, true);
    const Tensor ids = cat({rand_ids({20000}, 0, 3, 1), rand_ids({5000}, 0, 50, 2)}, 0);
    const Tensor up = rand_t({25000, 64}, 4, -1, 1, dt);
    Tensor g1, g2;
    {
      ThreadScope ts(1);
      sum(embedding(w, ids) * up).backward();
      g1 = w.grad().clone();
      w.zero_grad();
    }
    {
      ThreadScope ts(2);
      sum(embedding(w, ids) * up).backward();
      g2 = w.grad().clone();
      w.zero_grad();
    }
    EXPECT_TRUE(bit_equal(g1, g2));
    if (dt == DType::f32) {
      EXPECT_TRUE(bit_equal(g1, embedding_grad_ref(50, 64, ids, up)));
    }
  }
}

TEST(Embedding, Errors) {
  const Tensor w = zeros({5, 3});
  EXPECT_HMOE_ERROR(embedding(w, from_vector(std::vector<int64_t>{5}, {1})), "embedding: index 5");
  EXPECT_HMOE_ERROR(embedding(w, from_vector(std::vector<int64_t>{-1}, {1})), "out of range [0, 5)");
  EXPECT_HMOE_ERROR(embedding(w, from_vector(std::vector<int32_t>{0, 7}, {2})), "out of range");
  EXPECT_HMOE_ERROR(embedding(w, zeros({2})), "i32 or i64");
  EXPECT_HMOE_ERROR(embedding(w, zeros({2}, {DType::b8})), "i32 or i64");
  EXPECT_HMOE_ERROR(embedding(zeros({5}), zeros({2}, {DType::i64})), "weight must be [V, D]");
  EXPECT_HMOE_ERROR(embedding(zeros({2, 5, 3}), zeros({2}, {DType::i64})), "weight must be [V, D]");
}

TEST(Gather, MatchesReference) {
  const Tensor t = randn_t({4, 5, 3}, 11);
  for (int64_t dim : {0, 1, 2, -1, -2}) {
    SCOPED_TRACE(dim);
    const int64_t wd = dim < 0 ? dim + 3 : dim;
    Shape is = {3, 4, 2};
    is[size_t(wd)] = 6;  // longer than t along dim is allowed; smaller elsewhere
    for (DType it : {DType::i64, DType::i32}) {
      const Tensor idx = rand_ids(is, 0, t.size(wd), 12 + uint64_t(wd), it);
      expect_close(gather(t, dim, idx), gather_ref(t, wd, idx), 0);
    }
  }
  // Non-contiguous t and index.
  const Tensor tt = randn_t({5, 4}, 13).t();  // [4, 5]
  const Tensor it = rand_ids({5, 3}, 0, 5, 14).t();  // [3, 5]
  expect_close(gather(tt, 1, it), gather_ref(tt.contiguous(), 1, it.contiguous()), 0);
  expect_close(gather(tt, 1, it.slice(1, 0, 5, 2)), gather_ref(tt.contiguous(), 1, it.slice(1, 0, 5, 2).contiguous()), 0);
  // Empty index, 0-d, ints and bool.
  EXPECT_EQ(gather(t, 1, zeros({4, 0, 3}, {DType::i64})).shape(), (Shape{4, 0, 3}));
  expect_close(gather(full({}, 3.5), 0, full({}, 0, {DType::i64})), {3.5});
  const Tensor ti = rand_ids({3, 4}, -9, 9, 15);
  const Tensor ix = rand_ids({3, 2}, 0, 4, 16);
  expect_close(gather(ti, 1, ix).to(DType::f64), gather_ref(ti, 1, ix), 0);
  const Tensor tb = gt(randn_t({3, 4}, 17), zeros({1}, {DType::f64}));
  expect_close(gather(tb, 1, ix).to(DType::f64), gather_ref(tb.to(DType::f64), 1, ix), 0);
}

TEST(Gather, GradientsAndErrors) {
  const Tensor t = rand_t({3, 4}, 5, -1, 1, DType::f64, true);
  const Tensor idx = from_vector(std::vector<int64_t>{0, 3, 1, 1, 2, 0}, {3, 2});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return gather(in[0], 1, idx); }, std::vector<Tensor>{t});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return gather(in[0].t(), 0, idx.t().contiguous()); },
                   std::vector<Tensor>{t});
  // Through a nonlinearity of the gathered values.
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        const Tensor y = gather(in[0], 1, idx);
        return sum(y * y);
      },
      std::vector<Tensor>{t});
  const Tensor x = zeros({3, 4});
  EXPECT_HMOE_ERROR(gather(x, 1, from_vector(std::vector<int64_t>{4}, {1, 1})), "gather: index 4 is out of range");
  EXPECT_HMOE_ERROR(gather(x, 0, from_vector(std::vector<int64_t>{-1}, {1, 1})), "out of range [0, 3)");
  EXPECT_HMOE_ERROR(gather(x, 1, zeros({4, 1}, {DType::i64})), "is larger than");
  EXPECT_HMOE_ERROR(gather(x, 1, zeros({3}, {DType::i64})), "rank");
  EXPECT_HMOE_ERROR(gather(x, 1, zeros({3, 1}, {DType::f32})), "i32 or i64");
  EXPECT_HMOE_ERROR(gather(x, 2, zeros({3, 1}, {DType::i64})), "out of range for a tensor of rank 2");
}

TEST(ScatterAdd, MatchesReference) {
  const Tensor t = randn_t({4, 5, 3}, 21);
  for (int64_t dim : {0, 1, 2, -1}) {
    SCOPED_TRACE(dim);
    const int64_t wd = dim < 0 ? dim + 3 : dim;
    Shape is = {3, 4, 2};
    is[size_t(wd)] = 7;  // many repeats along dim
    const Tensor idx = rand_ids(is, 0, t.size(wd), 22 + uint64_t(wd));
    const Tensor src = randn_t({7, 7, 7}, 23);  // larger than index: only the covered part is used
    expect_close(scatter_add(t, dim, idx, src), scatter_add_ref(t, wd, idx, src), 0);
  }
  // Non-contiguous everything, integer dtype, empty index.
  const Tensor tt = randn_t({5, 4}, 24).t();
  const Tensor it = rand_ids({6, 4}, 0, 5, 25).t();  // [4, 6]
  const Tensor st = randn_t({6, 4}, 26).t();
  expect_close(scatter_add(tt, 1, it, st), scatter_add_ref(tt.contiguous(), 1, it.contiguous(), st.contiguous()), 0);
  const Tensor ti = rand_ids({3, 4}, -9, 9, 27), si = rand_ids({3, 4}, -9, 9, 28);
  const Tensor ix = rand_ids({3, 4}, 0, 4, 29);
  expect_close(scatter_add(ti, 1, ix, si).to(DType::f64), scatter_add_ref(ti, 1, ix, si), 0);
  expect_close(scatter_add(tt, 0, zeros({0, 5}, {DType::i64}), st), tt, 0);
  // The input is not modified.
  const Tensor before = tt.clone();
  (void)scatter_add(tt, 1, it, st);
  expect_close(tt, before, 0);
}

TEST(ScatterAdd, GradientsDeterminismAndErrors) {
  const Tensor t = rand_t({3, 4}, 5, -1, 1, DType::f64, true);
  const Tensor idx = from_vector(std::vector<int64_t>{0, 3, 1, 1, 2, 0}, {3, 2});
  const Tensor src = rand_t({3, 2}, 6, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx, in[1]); },
                   (std::vector<Tensor>{t, src}));
  // src larger than index: uncovered src entries get zero gradient.
  const Tensor big = rand_t({4, 3}, 7, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx, in[1]); },
                   (std::vector<Tensor>{t, big}));
  sum(scatter_add(t.detach(), 1, idx, big)).backward();
  expect_close(big.grad(), {1, 1, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0}, 0);
  // Only t requires grad.
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx, src.detach()); },
                   std::vector<Tensor>{t});

  // Same bits for 1 and 2 threads with heavy collisions.
  const Tensor dst = zeros({8, 64}, {DType::f32});
  const Tensor many = rand_ids({8, 40000}, 0, 3, 30);
  const Tensor vals = randn_t({8, 40000}, 31, DType::f32);
  Tensor a, b;
  {
    ThreadScope ts(1);
    a = scatter_add(dst, 1, many, vals);
  }
  {
    ThreadScope ts(2);
    b = scatter_add(dst, 1, many, vals);
  }
  EXPECT_TRUE(bit_equal(a, b));

  const Tensor x = zeros({3, 4});
  const Tensor i1 = from_vector(std::vector<int64_t>{4}, {1, 1});
  EXPECT_HMOE_ERROR(scatter_add(x, 1, i1, zeros({1, 1})), "scatter_add: index 4 is out of range");
  EXPECT_HMOE_ERROR(scatter_add(x, 1, zeros({1, 1}, {DType::i64}), zeros({1, 1}, {DType::f64})), "dtypes differ");
  EXPECT_HMOE_ERROR(scatter_add(x, 1, zeros({1, 2}, {DType::i64}), zeros({1, 1})), "larger than src");
  EXPECT_HMOE_ERROR(scatter_add(x, 1, zeros({4, 1}, {DType::i64}), zeros({4, 1})), "is larger than");
  EXPECT_HMOE_ERROR(scatter_add(x, 1, zeros({1}, {DType::i64}), zeros({1})), "one rank");
  EXPECT_HMOE_ERROR(scatter_add(x, 1, zeros({1, 1}, {DType::f32}), zeros({1, 1})), "i32 or i64");
  EXPECT_HMOE_ERROR(scatter_add(zeros({2}, {DType::b8}), 0, zeros({1}, {DType::i64}), zeros({1}, {DType::b8})),
                    "bool");
}

TEST(MaskedFill, ValuesGradientsAndErrors) {
  const Tensor t = rand_t({3, 4}, 5, -1, 1, DType::f64, true);
  const Tensor mask = gt(randn_t({4}, 6), zeros({1}, {DType::f64}));  // broadcast over rows
  const Tensor mf = masked_fill(t, mask, -7);
  const auto tv = t.to_vector(), mv = mask.to_vector(), ov = mf.to_vector();
  for (size_t i = 0; i < tv.size(); ++i) EXPECT_EQ(ov[i], mv[i % 4] != 0 ? -7 : tv[i]);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return masked_fill(in[0], mask, 0); }, std::vector<Tensor>{t});
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return masked_fill(in[0].t(), mask.unsqueeze(1), 2.5); },
                   std::vector<Tensor>{t});
  sum(masked_fill(t, mask, 3) * 2.0).backward();
  const auto gv = t.grad().to_vector();
  for (size_t i = 0; i < gv.size(); ++i) EXPECT_EQ(gv[i], mv[i % 4] != 0 ? 0.0 : 2.0);
  // dtype is kept, -inf works, full-shape and 0-d masks.
  const Tensor ti = rand_ids({2, 3}, 0, 9, 7);
  const Tensor mi = masked_fill(ti, full({}, 1, {DType::b8}), 4);
  EXPECT_EQ(mi.dtype(), DType::i64);
  expect_close(mi, std::vector<double>(6, 4.0), 0);
  const Tensor tf = randn_t({2, 2}, 8, DType::f32);
  EXPECT_TRUE(std::isinf(masked_fill(tf, ones({2, 2}, {DType::b8}), -INFINITY).select(0, 0).select(0, 0).item()));
  EXPECT_EQ(masked_fill(tf, ones({2, 2}, {DType::b8}), 1.0).dtype(), DType::f32);
  EXPECT_EQ(masked_fill(zeros({0, 3}), zeros({3}, {DType::b8}), 1.0).shape(), (Shape{0, 3}));

  EXPECT_HMOE_ERROR(masked_fill(t, zeros({4}), 0), "mask must be bool");
  EXPECT_HMOE_ERROR(masked_fill(t, zeros({3}, {DType::b8}), 0), "masked_fill");
  EXPECT_HMOE_ERROR(masked_fill(t.detach(), zeros({2, 3, 4}, {DType::b8}), 0), "does not broadcast");
  EXPECT_HMOE_ERROR(masked_fill(ti, zeros({3}, {DType::b8}), NAN), "does not fit");
}

TEST(OneHot, ValuesAndErrors) {
  for (DType it : {DType::i64, DType::i32}) {
    const Tensor ids = rand_ids({3, 4}, 0, 5, 9, it);
    const Tensor oh = one_hot(ids, 5);
    EXPECT_EQ(oh.shape(), (Shape{3, 4, 5}));
    EXPECT_EQ(oh.dtype(), DType::f32);
    const auto iv = ids.to(DType::i64).to_vector_as<int64_t>();
    const auto ov = oh.to_vector();
    for (size_t i = 0; i < iv.size(); ++i)
      for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(ov[i * 5 + size_t(c)], c == iv[i] ? 1.0 : 0.0);
    expect_close(one_hot(ids.t(), 5, DType::f64), oh.to(DType::f64).transpose(0, 1), 0);
  }
  expect_close(one_hot(from_vector(std::vector<int64_t>{2, 0}, {2}), 3, DType::i64), {0, 0, 1, 1, 0, 0}, 0);
  expect_close(one_hot(from_vector(std::vector<int64_t>{1}, {1}), 2, DType::b8).to(DType::f64), {0, 1}, 0);
  expect_close(one_hot(full({}, 1, {DType::i64}), 3, DType::bf16).to(DType::f64), {0, 1, 0}, 0);
  EXPECT_EQ(one_hot(zeros({0}, {DType::i64}), 4).shape(), (Shape{0, 4}));
  EXPECT_HMOE_ERROR(one_hot(from_vector(std::vector<int64_t>{3}, {1}), 3), "[0, 3)");
  EXPECT_HMOE_ERROR(one_hot(from_vector(std::vector<int64_t>{-2}, {1}), 3), "out of range");
  EXPECT_HMOE_ERROR(one_hot(from_vector(std::vector<int64_t>{0}, {1}), 0), "positive");
  EXPECT_HMOE_ERROR(one_hot(zeros({2}), 3), "i32 or i64");
}

// Compact checks of indexing and joining through one call each.
TEST(IndexOps, EmbeddingAndIndexSelect) {
  Tensor w = rand_t({5, 3}, 1, -1, 1, DType::f64, true);
  Tensor ids = from_vector(std::vector<int64_t>{4, 0, 4, 2, 4, 4}, {2, 3});
  Tensor e = embedding(w, ids);
  EXPECT_EQ(e.shape(), (Shape{2, 3, 3}));
  expect_close(e.select(0, 0).select(0, 0), w.select(0, 4).detach());
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, std::vector<Tensor>{w});
  sum(embedding(w, ids)).backward();
  expect_close(w.grad().select(1, 0), {1, 0, 1, 0, 4});  // repeated ids sum
  EXPECT_HMOE_ERROR(embedding(w, from_vector(std::vector<int64_t>{5}, {1})), "out of range");
  EXPECT_HMOE_ERROR(embedding(w, from_vector(std::vector<int64_t>{-1}, {1})), "out of range");
  EXPECT_HMOE_ERROR(embedding(w, zeros({2})), "i32 or i64");
  Tensor x = rand_t({3, 4}, 2, -1, 1, DType::f64, true);
  Tensor idx = from_vector(std::vector<int32_t>{3, 1, 3}, {3});
  expect_close(index_select(x, 1, idx).select(1, 0), x.select(1, 3).detach());
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return index_select(in[0].t(), 0, idx); },
                   std::vector<Tensor>{x});
  // Deterministic backward with many repeats, for 1 and 2 threads.
  Tensor big = rand_t({50, 64}, 3, -1, 1, DType::f32, true);
  Generator g(1);
  Tensor many = uniform({20000}, g, 0, 49.99, {DType::f64}).to(DType::i64);
  Tensor up = rand_t({20000, 64}, 4, -1, 1, DType::f32);
  set_num_threads(1);
  sum(embedding(big, many) * up).backward();
  Tensor g1 = big.grad().clone();
  big.zero_grad();
  set_num_threads(2);
  sum(embedding(big, many) * up).backward();
  expect_close(big.grad(), g1, 0);
}

TEST(IndexOps, GatherScatterMaskedOneHot) {
  Tensor t = rand_t({3, 4}, 5, -1, 1, DType::f64, true);
  Tensor idx = from_vector(std::vector<int64_t>{0, 3, 1, 1, 2, 0}, {3, 2});
  Tensor g = gather(t, 1, idx);
  EXPECT_DOUBLE_EQ(g.select(0, 0).select(0, 1).item(), t.select(0, 0).select(0, 3).item());
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return gather(in[0], 1, idx); }, std::vector<Tensor>{t});
  Tensor src = rand_t({3, 2}, 6, -1, 1, DType::f64, true);
  Tensor s = scatter_add(t, 1, idx, src);
  EXPECT_NEAR(s.select(0, 1).select(0, 1).item(), t.select(0, 1).select(0, 1).item() + src.select(0, 1).select(0, 0).item() +
                                                      src.select(0, 1).select(0, 1).item(), 1e-12);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 1, idx, in[1]); },
                   (std::vector<Tensor>{t, src}));
  EXPECT_HMOE_ERROR(gather(t, 1, from_vector(std::vector<int64_t>{4}, {1, 1})), "out of range");
  Tensor mask = from_vector(std::vector<int64_t>{1, 0, 0, 1}, {4}).to(DType::b8);
  Tensor mf = masked_fill(t, mask, -7);
  EXPECT_DOUBLE_EQ(mf.select(0, 2).select(0, 3).item(), -7);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return masked_fill(in[0], mask, 0); }, std::vector<Tensor>{t});
  Tensor oh = one_hot(from_vector(std::vector<int64_t>{2, 0}, {2}), 3);
  expect_close(oh, {0, 0, 1, 1, 0, 0});
  EXPECT_HMOE_ERROR(one_hot(from_vector(std::vector<int64_t>{3}, {1}), 3), "[0, 3)");
}

TEST(IndexOps, CatStackSplitChunk) {
  Tensor a = rand_t({2, 3}, 1, -1, 1, DType::f64, true), b = rand_t({2, 1}, 2, -1, 1, DType::f64, true);
  Tensor c = cat({a, b}, -1);
  EXPECT_EQ(c.shape(), (Shape{2, 4}));
  expect_close(c.narrow(1, 3, 1), b.detach());
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cat({in[0], in[1] * 2.0}, 1); }, (std::vector<Tensor>{a, b}));
  EXPECT_EQ(stack({a, a}, 1).shape(), (Shape{2, 2, 3}));
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return stack({in[0], in[0].t().t()}, 0); }, std::vector<Tensor>{a});
  auto parts = split(c, 3, 1);
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[1].shape(), (Shape{2, 1}));
  auto ch = chunk(rand_t({7}, 3), 3, 0);
  ASSERT_EQ(ch.size(), 3u);
  EXPECT_EQ(ch[2].numel(), 1);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return split(in[0], std::vector<int64_t>{1, 2}, 1)[1]; },
                   std::vector<Tensor>{a});
  EXPECT_HMOE_ERROR(cat({a, zeros({3, 1}, {DType::f64})}, 1), "differ outside");
  EXPECT_HMOE_ERROR(cat({a, b.to(DType::f32)}, 1), "dtype");
  EXPECT_HMOE_ERROR(split(a, std::vector<int64_t>{1, 1}, 1), "sum to");
}
