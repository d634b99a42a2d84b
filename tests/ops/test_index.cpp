// Indexing, joining and ordering ops: values, gradients, determinism and errors.
#include "tests/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;

TEST(Index, EmbeddingAndIndexSelect) {
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

TEST(Index, GatherScatterMaskedOneHot) {
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

TEST(Index, CatStackSplitChunk) {
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

TEST(Sort, TopkSortCumsumBincount) {
  Tensor x = from_vector(std::vector<double>{3, 1, 3, 2, NAN, 0}, {2, 3}, {DType::f64});
  auto [v, i] = topk(x, 2, 1);
  expect_close(i.select(0, 0), {0, 2});  // ties: lower index first
  EXPECT_TRUE(std::isnan(v.select(0, 1).select(0, 0).item()));  // NaN is largest
  auto [sv, si] = sort(from_vector(std::vector<double>{2, 1, 2, 1}, {4}, {DType::f64}));
  expect_close(si, {1, 3, 0, 2});  // stable
  auto [dv, di] = sort(from_vector(std::vector<double>{2, 1, 2, 1}, {4}, {DType::f64}), 0, true);
  expect_close(di, {0, 2, 1, 3});
  EXPECT_EQ(topk(x, 0, 1).first.shape(), (Shape{2, 0}));
  EXPECT_HMOE_ERROR(topk(x, 4, 1), "out of range");
  Tensor r = rand_t({3, 5}, 4, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return topk(in[0], 2, 1).first; }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return sort(in[0], 0).first; }, std::vector<Tensor>{r});
  expect_close(cumsum(from_vector(std::vector<double>{1, 2, 3}, {3}, {DType::f64}), 0), {1, 3, 6});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cumsum(in[0], 1); }, std::vector<Tensor>{r});
  expect_close(bincount(from_vector(std::vector<int64_t>{1, 1, 3}, {3}), 5), {0, 2, 0, 1, 0});
  expect_close(bincount(from_vector(std::vector<int64_t>{1, 1}, {2}), 0, full({2}, 0.5, {DType::f64})), {0, 1});
  EXPECT_HMOE_ERROR(bincount(from_vector(std::vector<int64_t>{-1}, {1})), "negative");
}
