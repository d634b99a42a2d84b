// topk, sort, argsort, cumsum, bincount: values against naive references (ties, NaN,
// non-contiguous, empty, k = 0 and k = n), stability, gradcheck, determinism, errors.
#include <algorithm>
#include <numeric>

#include "tests/support/ref.h"

using namespace hmoe;
using namespace hmoe::testing;

namespace {

// Reference order of one line: std::stable_sort with NaN as the largest value.
std::vector<int64_t> ref_order(const std::vector<double>& line, bool descending) {
  std::vector<int64_t> ord(line.size());
  std::iota(ord.begin(), ord.end(), 0);
  auto less = [](double a, double b) { return std::isnan(a) ? false : std::isnan(b) ? true : a < b; };
  std::stable_sort(ord.begin(), ord.end(), [&](int64_t i, int64_t j) {
    return descending ? less(line[size_t(j)], line[size_t(i)]) : less(line[size_t(i)], line[size_t(j)]);
  });
  return ord;
}

// The first k of each line along dim, as (values f64, indices i64).
std::pair<Tensor, Tensor> ref_topk(const Tensor& t, int64_t dim, int64_t k, bool descending) {
  const auto v = t.to_vector();
  const Shape& s = t.shape();
  Shape os = s;
  os[size_t(dim)] = k;
  std::vector<double> ov(static_cast<size_t>(shape_numel(os)));
  std::vector<int64_t> oi(ov.size());
  const int64_t n = s[size_t(dim)];
  for (int64_t f = 0; f < shape_numel(os); ++f) {
    Shape at = unravel(f, os);
    if (at[size_t(dim)] != 0) continue;  // once per line
    std::vector<double> line;
    for (int64_t j = 0; j < n; ++j) {
      at[size_t(dim)] = j;
      line.push_back(v[size_t(ravel(at, s))]);
    }
    const auto ord = ref_order(line, descending);
    for (int64_t j = 0; j < k; ++j) {
      at[size_t(dim)] = j;
      ov[size_t(ravel(at, os))] = line[size_t(ord[size_t(j)])];
      oi[size_t(ravel(at, os))] = ord[size_t(j)];
    }
  }
  return {from_vector(ov, os, {DType::f64}), from_vector(oi, os)};
}

void expect_same_bits_or_nan(const Tensor& a, const Tensor& b) {
  expect_close(a.to(DType::f64), b, 0);  // NaN positions must agree too
}

Tensor cumsum_ref(const Tensor& t, int64_t dim) {
  const auto v = t.to_vector();
  std::vector<double> out(v.size());
  for (int64_t f = 0; f < int64_t(v.size()); ++f) {
    Shape at = unravel(f, t.shape());
    double acc = 0;
    const int64_t upto = at[size_t(dim)];
    for (int64_t j = 0; j <= upto; ++j) {
      at[size_t(dim)] = j;
      acc += v[size_t(ravel(at, t.shape()))];
    }
    out[size_t(f)] = acc;
  }
  return from_vector(out, t.shape(), {DType::f64});
}

}  // namespace

TEST(Topk, MatchesReferenceWithTies) {
  const Tensor t = rand_ties({4, 9, 3}, 4, 1);  // few distinct values: many ties
  for (int64_t dim : {0, 1, 2, -1, -2}) {
    const int64_t wd = dim < 0 ? dim + 3 : dim;
    const int64_t n = t.size(wd);
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(2), n - 1, n}) {
      for (bool largest : {true, false}) {
        SCOPED_TRACE(::testing::Message() << "dim " << dim << " k " << k << " largest " << largest);
        const auto [v, i] = topk(t, k, dim, largest);
        const auto [rv, ri] = ref_topk(t, wd, k, largest);
        EXPECT_EQ(i.dtype(), DType::i64);
        expect_close(v, rv, 0);
        expect_close(i, ri, 0);
      }
    }
  }
  // Non-contiguous input, long rows (selection path), all dtypes.
  const Tensor p = rand_ties({6, 5, 40}, 7, 2).permute({2, 0, 1});  // [40, 6, 5]
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64}) {
    SCOPED_TRACE(dtype_name(dt));
    const Tensor pd = p.to(dt);
    for (int64_t k : {1, 3, 9, 20, 40}) {  // insertion, selection and full-sort paths
      const auto [v, i] = topk(pd, k, 0);
      const auto [rv, ri] = ref_topk(pd.contiguous(), 0, k, true);
      EXPECT_EQ(v.dtype(), dt);
      expect_close(v.to(DType::f64), rv, 0);
      expect_close(i, ri, 0);
    }
  }
  // Random distinct values in long rows.
  const Tensor r = randn_t({3, 1000}, 3, DType::f32);
  for (int64_t k : {5, 100}) {
    const auto [v, i] = topk(r, k, 1, false);
    const auto [rv, ri] = ref_topk(r, 1, k, false);
    expect_close(v, rv, 0);
    expect_close(i, ri, 0);
  }
}

TEST(Topk, EdgeCasesAndNaN) {
  const Tensor x = from_vector(std::vector<double>{3, 1, 3, 2, NAN, 0, NAN, 5}, {2, 4}, {DType::f64});
  auto [v, i] = topk(x, 2, 1);
  expect_close(i.select(0, 0), {0, 2}, 0);  // ties: lower index first
  expect_close(i.select(0, 1), {0, 2}, 0);  // NaN is the largest, NaNs tie by index
  EXPECT_TRUE(std::isnan(v.select(0, 1).select(0, 0).item()));
  auto [sv, si] = topk(x, 2, 1, false);
  expect_close(si.select(0, 1), {1, 3}, 0);  // smallest skips the NaNs
  // -0.0 and 0.0 are equal keys.
  auto [zv, zi] = topk(from_vector(std::vector<double>{0.0, -0.0, 0.0}, {3}, {DType::f64}), 3, 0);
  expect_close(zi, {0, 1, 2}, 0);
  // i64 beyond 2^53 is compared exactly.
  const int64_t big = (int64_t(1) << 60);
  auto [bv, bi] = topk(from_vector(std::vector<int64_t>{big, big + 1, big - 1}, {3}), 2, 0);
  EXPECT_EQ(bi.to_vector_as<int64_t>(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(bv.to_vector_as<int64_t>(), (std::vector<int64_t>{big + 1, big}));
  // Empty and 0-d.
  EXPECT_EQ(topk(x, 0, 1).first.shape(), (Shape{2, 0}));
  EXPECT_EQ(topk(zeros({0, 4}), 2, 1).first.shape(), (Shape{0, 2}));
  EXPECT_EQ(topk(zeros({3, 0}), 0, 1).second.shape(), (Shape{3, 0}));
  auto [s0, i0] = topk(full({}, 2.5), 1);
  EXPECT_EQ(s0.shape(), Shape{});
  EXPECT_EQ(s0.item(), 2.5);
  EXPECT_EQ(i0.item(), 0);
  // Errors.
  EXPECT_HMOE_ERROR(topk(x, 5, 1), "out of range [0, 4]");
  EXPECT_HMOE_ERROR(topk(x, -1, 1), "out of range");
  EXPECT_HMOE_ERROR(topk(x, 1, 2), "out of range for a tensor of rank 2");
  EXPECT_HMOE_ERROR(topk(zeros({3}, {DType::b8}), 1), "bool");
}

TEST(Topk, GradientsAndDeterminism) {
  const Tensor r = rand_t({3, 5}, 4, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return topk(in[0], 2, 1).first; }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return topk(in[0], 3, 0, false).first; },
                   std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return topk(in[0].t(), 3, -1).first; },
                   std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return topk(in[0], 0, 1).first; }, std::vector<Tensor>{r});
  // The gradient lands on the chosen indices.
  const Tensor x = from_vector(std::vector<double>{1, 5, 3, 5}, {4}, {DType::f64}).set_requires_grad(true);
  const Tensor w = from_vector(std::vector<double>{10, 20}, {2}, {DType::f64});
  sum(topk(x, 2, 0).first * w).backward();
  expect_close(x.grad(), {0, 10, 0, 20}, 0);
  // Rows big enough to run in parallel give the same answer with 1 and 2 threads.
  const Tensor big = rand_ties({4000, 64}, 16, 5, DType::f32);
  Tensor i1, i2;
  {
    ThreadScope ts(1);
    i1 = topk(big, 4, 1).second;
  }
  {
    ThreadScope ts(2);
    i2 = topk(big, 4, 1).second;
  }
  EXPECT_TRUE(bit_equal(i1, i2));
}

TEST(Sort, StableBothDirections) {
  const Tensor t = rand_ties({5, 11, 2}, 3, 6);
  for (int64_t dim : {0, 1, 2, -1, -2}) {
    const int64_t wd = dim < 0 ? dim + 3 : dim;
    for (bool desc : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "dim " << dim << " desc " << desc);
      const auto [v, i] = sort(t, dim, desc);
      const auto [rv, ri] = ref_topk(t, wd, t.size(wd), desc);
      expect_close(v, rv, 0);
      expect_close(i, ri, 0);
      expect_close(argsort(t, dim, desc), ri, 0);
      expect_close(gather(t, dim, i), v, 0);
    }
  }
  // All-equal keys keep the identity order, ascending and descending.
  const Tensor eq = full({3, 50}, 1.5, {DType::f32});
  std::vector<double> iota(50);
  std::iota(iota.begin(), iota.end(), 0.0);
  for (bool desc : {false, true}) expect_close(sort(eq, 1, desc).second.select(0, 2), iota, 0);
  // NaN: last ascending, first descending, NaNs in index order.
  const Tensor x = from_vector(std::vector<double>{NAN, 2, -1, NAN, 2, -INFINITY, INFINITY}, {7}, {DType::f64});
  expect_close(argsort(x), {5, 2, 1, 4, 6, 0, 3}, 0);
  expect_close(argsort(x, 0, true), {0, 3, 6, 1, 4, 2, 5}, 0);
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    expect_close(argsort(x.to(dt)), {5, 2, 1, 4, 6, 0, 3}, 0);
    expect_close(argsort(x.to(dt), 0, true), {0, 3, 6, 1, 4, 2, 5}, 0);
  }
  // Signed zeros tie; tiny and huge magnitudes keep their order.
  const Tensor z = from_vector(std::vector<double>{0.0, -1e-40, -0.0, 1e-40, -3e38, 3e38, 0.0}, {7}, {DType::f64});
  expect_close(argsort(z), {4, 1, 0, 2, 6, 3, 5}, 0);
  expect_close(argsort(z.to(DType::f32)), {4, 1, 0, 2, 6, 3, 5}, 0);  // f32 denormals
  expect_close(argsort(z, 0, true), {5, 3, 0, 2, 6, 1, 4}, 0);
  expect_same_bits_or_nan(sort(x).first, from_vector(std::vector<double>{-INFINITY, -1, 2, 2, INFINITY, NAN, NAN},
                                                     {7}, {DType::f64}));
  // Non-contiguous, empty, 0-d, integer.
  const Tensor p = rand_ties({7, 4}, 5, 7).t();
  const auto [pv, pi] = sort(p, 1, true);
  expect_close(pi, ref_topk(p.contiguous(), 1, 7, true).second, 0);
  EXPECT_EQ(sort(zeros({3, 0}), 1).first.shape(), (Shape{3, 0}));
  EXPECT_EQ(sort(zeros({0, 3}), 1).second.shape(), (Shape{0, 3}));
  EXPECT_EQ(sort(full({}, 1.0)).second.item(), 0);
  const Tensor ints = rand_ids({20}, -3, 3, 8, DType::i32);
  expect_close(sort(ints).second, ref_topk(ints, 0, 20, false).second, 0);
  // Gradients flow through the values only.
  const Tensor r = rand_t({3, 5}, 9, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return sort(in[0], 0).first; }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return sort(in[0].t(), -1, true).first; },
                   std::vector<Tensor>{r});
  EXPECT_FALSE(argsort(r).requires_grad());
  EXPECT_HMOE_ERROR(sort(zeros({2}, {DType::b8})), "bool");
  EXPECT_HMOE_ERROR(argsort(zeros({2, 2}), 2), "out of range");
}

TEST(Cumsum, ValuesDtypesAndGradients) {
  const Tensor t = randn_t({3, 4, 5}, 1);
  for (int64_t dim : {0, 1, 2, -1, -3}) {
    SCOPED_TRACE(dim);
    expect_close(cumsum(t, dim), cumsum_ref(t, dim < 0 ? dim + 3 : dim), 1e-13);
  }
  const Tensor p = t.permute({2, 0, 1});
  expect_close(cumsum(p, 1), cumsum_ref(p.contiguous(), 1), 1e-13);
  // Sequential per line: f64 results are exactly the left-to-right sums.
  const Tensor line = randn_t({1, 300}, 2);
  expect_close(cumsum(line, 1), cumsum_ref(line, 1), 0);
  // dtypes: floats keep theirs, integers and bool go to i64.
  EXPECT_EQ(cumsum(t.to(DType::f32), 0).dtype(), DType::f32);
  expect_close(cumsum(t.to(DType::f32), 2), cumsum_ref(t.to(DType::f32), 2), 1e-5);
  EXPECT_EQ(cumsum(t.to(DType::bf16), 0).dtype(), DType::bf16);
  const Tensor ints = rand_ids({4, 6}, -50, 50, 3, DType::i32);
  const Tensor ci = cumsum(ints, 1);
  EXPECT_EQ(ci.dtype(), DType::i64);
  expect_close(ci.to(DType::f64), cumsum_ref(ints, 1), 0);
  const Tensor bools = gt(randn_t({8}, 4), zeros({1}, {DType::f64}));
  expect_close(cumsum(bools, 0).to(DType::f64), cumsum_ref(bools.to(DType::f64), 0), 0);
  const int64_t big = int64_t(1) << 62;
  EXPECT_EQ(cumsum(from_vector(std::vector<int64_t>{big, 1}, {2}), 0).to_vector_as<int64_t>(),
            (std::vector<int64_t>{big, big + 1}));
  EXPECT_EQ(cumsum(zeros({0, 3}), 0).shape(), (Shape{0, 3}));
  EXPECT_EQ(cumsum(zeros({3, 0}), 1).shape(), (Shape{3, 0}));
  EXPECT_EQ(cumsum(full({}, 2.0), 0).item(), 2.0);
  // Gradients: the reverse cumulative sum, exactly.
  const Tensor r = rand_t({3, 5}, 5, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cumsum(in[0], 1); }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cumsum(in[0].t(), -1); }, std::vector<Tensor>{r});
  EXPECT_GRADCHECK([](const std::vector<Tensor>& in) { return cumsum(cumsum(in[0], 0) * in[0], 1); },
                   std::vector<Tensor>{r});
  const Tensor w = randn_t({3, 5}, 6);
  sum(cumsum(r, 1) * w).backward();
  const auto wv = w.to_vector(), gv = r.grad().to_vector();
  for (int64_t i = 0; i < 3; ++i) {
    double acc = 0;
    for (int64_t j = 4; j >= 0; --j) {
      acc += wv[size_t(i * 5 + j)];
      EXPECT_EQ(gv[size_t(i * 5 + j)], acc);
    }
  }
  // Deterministic across threads.
  const Tensor many = randn_t({2000, 100}, 7, DType::f32);
  Tensor a, b;
  {
    ThreadScope ts(1);
    a = cumsum(many, 0);
  }
  {
    ThreadScope ts(2);
    b = cumsum(many, 0);
  }
  EXPECT_TRUE(bit_equal(a, b));
  EXPECT_HMOE_ERROR(cumsum(t, 3), "out of range");
}

TEST(Bincount, CountsWeightsAndErrors) {
  for (DType it : {DType::i64, DType::i32}) {
    const Tensor ids = rand_ids({200}, 0, 9, 1, it);
    const Tensor c = bincount(ids);
    EXPECT_EQ(c.dtype(), DType::i64);
    const auto iv = ids.to(DType::i64).to_vector_as<int64_t>();
    const int64_t hi = *std::max_element(iv.begin(), iv.end());
    std::vector<double> ref(static_cast<size_t>(hi + 1), 0.0);
    for (int64_t v : iv) ref[size_t(v)] += 1;
    expect_close(c, ref, 0);
    // Weights: float keeps its dtype, summed in input order.
    const Tensor w = randn_t({200}, 2);
    std::vector<double> wref(static_cast<size_t>(hi + 1), 0.0);
    const auto wv = w.to_vector();
    for (size_t i = 0; i < iv.size(); ++i) wref[size_t(iv[i])] += wv[i];
    const Tensor cw = bincount(ids, 0, w);
    EXPECT_EQ(cw.dtype(), DType::f64);
    expect_close(cw, wref, 0);
    EXPECT_EQ(bincount(ids, 0, w.to(DType::f32)).dtype(), DType::f32);
    expect_close(bincount(ids, 0, w.to(DType::f32)), wref, 1e-5);
    EXPECT_EQ(bincount(ids, 0, ones({200}, {DType::i64})).dtype(), DType::f64);
  }
  expect_close(bincount(from_vector(std::vector<int64_t>{1, 1, 3}, {3}), 5), {0, 2, 0, 1, 0}, 0);
  expect_close(bincount(from_vector(std::vector<int64_t>{1, 1, 3}, {3}), 2), {0, 2, 0, 1}, 0);
  EXPECT_EQ(bincount(zeros({0}, {DType::i64})).shape(), (Shape{0}));
  EXPECT_EQ(bincount(zeros({0}, {DType::i64}), 4).shape(), (Shape{4}));
  // Non-contiguous ids and weights.
  const Tensor ids2 = rand_ids({10}, 0, 4, 3).slice(0, 0, 10, 2);
  const Tensor w2 = randn_t({10}, 4).slice(0, 1, 10, 2);
  expect_close(bincount(ids2, 0, w2), bincount(ids2.contiguous(), 0, w2.contiguous()), 0);

  EXPECT_HMOE_ERROR(bincount(from_vector(std::vector<int64_t>{2, -1}, {2})), "negative");
  EXPECT_HMOE_ERROR(bincount(zeros({2, 2}, {DType::i64})), "1-d");
  EXPECT_HMOE_ERROR(bincount(zeros({2})), "1-d i32/i64");
  EXPECT_HMOE_ERROR(bincount(zeros({2}, {DType::i64}), -1), "minlength");
  EXPECT_HMOE_ERROR(bincount(zeros({2}, {DType::i64}), 0, zeros({3})), "do not match");
  EXPECT_HMOE_ERROR(bincount(zeros({2}, {DType::i64}), 0, zeros({2}, {DType::b8})), "numeric");
}

// Compact checks of the ordering ops through one call each.
TEST(SortOps, TopkSortCumsumBincount) {
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
