// The index kernel family on the cuda device against the CPU backend: index_select
// and embedding (forward, and backward = index_add, bit for bit with repeated ids),
// gather, scatter_add (both device paths), one_hot; several dims, non-contiguous and
// empty inputs, f32/bf16/f64 and integer/bool data, i32/i64 indices, determinism
// (two runs, same bits) and out-of-range errors, every check under each schedule.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "hmoe.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

// The device result equals the CPU's bit for bit (same dtype and shape).
void expect_same_bits(const Tensor& out, const Tensor& ref, const std::string& what = "") {
  ASSERT_TRUE(out.device().is_cuda()) << what;
  EXPECT_TRUE(bit_equal(host(out), ref)) << what << ": device " << host(out).str() << "\ncpu " << ref.str();
}

// A device leaf with the values of t that requires grad.
Tensor dev_leaf(const Tensor& t) {
  Tensor d = dev(t.detach());
  d.set_requires_grad(true);
  return d;
}
Tensor cpu_leaf(const Tensor& t) {
  Tensor c = t.detach().clone();
  c.set_requires_grad(true);
  return c;
}

const std::vector<DType> kFloatTypes = {DType::f32, DType::bf16, DType::f64};
const std::vector<DType> kIndexTypes = {DType::i64, DType::i32};

TEST(CudaIndexSelect, MatchesCpuOnEveryDim) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 100;
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::b8}) {
      SCOPED_TRACE(dn(dt));
      for (const Shape& shape : {Shape{4, 5, 3}, Shape{2, 7, 33}, Shape{1}, Shape{3, 1, 9}}) {
        Tensor t = testing::rand_cpu(shape, ++seed, DType::f64, -3, 3);
        t = dt == DType::b8 ? gt(t, zeros({1}, {DType::f64})) : t.to(dt);
        for (int64_t dim = 0; dim < int64_t(shape.size()); ++dim) {
          for (DType it : kIndexTypes) {
            const Tensor idx = rand_ids({9}, 0, t.size(dim), ++seed, it);  // repeats likely
            expect_same_bits(index_select(dev(t), dim, dev(idx)), index_select(t, dim, idx),
                             "dim " + std::to_string(dim));
          }
        }
      }
      // Non-contiguous source.
      const Tensor p = testing::rand_cpu({6, 4, 5}, ++seed, DType::f32).to(dt == DType::b8 ? DType::f32 : dt)
                           .permute({2, 0, 1});
      const Tensor pidx = rand_ids({7}, 0, 6, ++seed);
      expect_same_bits(index_select(dev(p), 1, dev(pidx)), index_select(p, 1, pidx));
    }
    // Rows of odd byte counts (narrow words), 0-d index, empty index and empty source dim.
    const Tensor h = testing::rand_cpu({5, 3}, 7, DType::bf16);
    const Tensor hi = from_vector(std::vector<int64_t>{4, 0, 4}, {3});
    expect_same_bits(index_select(dev(h), 0, dev(hi)), index_select(h, 0, hi));
    expect_same_bits(index_select(dev(h), 1, dev(full({}, 2, {DType::i64}))), index_select(h, 1, full({}, 2, {DType::i64})));
    const Tensor e = index_select(dev(h), 0, dev(from_vector(std::vector<int64_t>{}, {0})));
    EXPECT_EQ(e.shape(), (Shape{0, 3}));
    EXPECT_EQ(index_select(dev(zeros({0, 3})), 0, dev(from_vector(std::vector<int64_t>{}, {0}))).shape(),
              (Shape{0, 3}));
  });
}

TEST(CudaIndexSelect, BackwardSumsRepeatsPerOuterSlice) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : kFloatTypes) {
      SCOPED_TRACE(dn(dt));
      const Tensor x = testing::rand_cpu({3, 7, 5}, 11, dt);
      const Tensor idx = rand_ids({20}, 0, 7, 12, DType::i32);  // repeats along dim 1, outer = 3
      const Tensor g = testing::rand_cpu({3, 20, 5}, 13, dt);
      Tensor xc = cpu_leaf(x), xd = dev_leaf(x);
      index_select(xc, 1, idx).backward(g);
      index_select(xd, 1, dev(idx)).backward(dev(g));
      expect_same_bits(xd.grad(), xc.grad());
      expect_matches(xd.grad(), xc.grad());
    }
  });
}

TEST(CudaEmbedding, ForwardAndBackwardWithRepeatedIds) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 200;
    for (DType dt : kFloatTypes) {
      for (DType it : kIndexTypes) {
        // (V, D, ids): hot ids with V < n (per-row search); V > n (per-position runs);
        // D not a multiple of the vector width; D = 1.
        struct Case {
          int64_t V, D, n, hot;
        };
        for (const Case& c : {Case{37, 260, 1500, 5}, Case{1000, 64, 50, 3}, Case{9, 7, 300, 2}, Case{4, 1, 33, 1},
                              Case{1, 3, 1, 1}}) {
          SCOPED_TRACE(dn((dt)) + " " + dn(it) + " V=" + std::to_string(c.V) +
                       " D=" + std::to_string(c.D));
          const Tensor w = testing::rand_cpu({c.V, c.D}, ++seed, dt);
          const Tensor ids =
              cat({rand_ids({c.n}, 0, c.hot, ++seed, it), rand_ids({c.n / 3 + 1}, 0, c.V, ++seed, it)}, 0)
                  .reshape({-1, 1});
          const Tensor g = testing::rand_cpu({ids.size(0), 1, c.D}, ++seed, dt);
          Tensor wc = cpu_leaf(w), wd = dev_leaf(w);
          const Tensor yc = embedding(wc, ids), yd = embedding(wd, dev(ids));
          expect_same_bits(yd, yc, "forward");
          yc.backward(g);
          yd.backward(dev(g));
          // The same summation order as the CPU: equal bits, f32 included.
          expect_same_bits(wd.grad(), wc.grad(), "backward");
          // Deterministic: a second run gives the same bits.
          Tensor wd2 = dev_leaf(w);
          embedding(wd2, dev(ids)).backward(dev(g));
          EXPECT_TRUE(bit_equal(host(wd.grad()), host(wd2.grad())));
        }
      }
    }
    // Non-contiguous weight and ids; empty ids give a zero gradient.
    const Tensor wt = testing::rand_cpu({6, 5}, 300, DType::f32).t();  // [5, 6]
    const Tensor ids = rand_ids({3, 4}, 0, 5, 301).t();
    expect_same_bits(embedding(dev(wt), dev(ids)), embedding(wt, ids));
    Tensor w3 = dev_leaf(testing::rand_cpu({4, 2}, 302, DType::f32));
    const Tensor y3 = embedding(w3, dev(zeros({0}, {DType::i64})));
    EXPECT_EQ(y3.shape(), (Shape{0, 2}));
    y3.backward(dev(zeros({0, 2})));
    expect_same_bits(w3.grad(), zeros({4, 2}));
  });
}

TEST(CudaEmbedding, HeavyRepeatsAreBitExactAndDeterministic) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(dn(dt));
      const Tensor w = testing::rand_cpu({50, 64}, 3, dt);
      // Past one sort tile (4096 packs): the merge passes run too.
      const Tensor ids = cat({rand_ids({4500}, 0, 3, 1), rand_ids({700}, 0, 50, 2)}, 0);
      const Tensor g = testing::rand_cpu({5200, 64}, 4, dt);
      Tensor wc = cpu_leaf(w);
      embedding(wc, ids).backward(g);
      Tensor g1, g2;
      for (Tensor* out : {&g1, &g2}) {
        Tensor wd = dev_leaf(w);
        embedding(wd, dev(ids)).backward(dev(g));
        *out = host(wd.grad());
      }
      EXPECT_TRUE(bit_equal(g1, g2));
      EXPECT_TRUE(bit_equal(g1, wc.grad()));
    }
  });
}

TEST(CudaIndex, OutOfRangeIndicesRaise) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const Tensor t = dev(testing::rand_cpu({3, 4}, 1, DType::f32));
    EXPECT_HMOE_ERROR(index_select(t, 1, dev(from_vector(std::vector<int64_t>{1, 4}, {2}))),
                      "index_select: index 4 at position 1 is out of range [0, 4)");
    EXPECT_HMOE_ERROR(index_select(t, 0, dev(from_vector(std::vector<int32_t>{0, -1, 7}, {3}))),
                      "index -1 at position 1 is out of range [0, 3)");
    EXPECT_HMOE_ERROR(index_select(dev(zeros({0, 3})), 0, dev(zeros({1}, {DType::i64}))), "out of range [0, 0)");
    EXPECT_HMOE_ERROR(embedding(t, dev(from_vector(std::vector<int64_t>{0, 2, 3, 9}, {2, 2}))),
                      "embedding: index 3 at position 2 is out of range [0, 3)");
    EXPECT_HMOE_ERROR(gather(t, 1, dev(from_vector(std::vector<int64_t>{0, 1, 4, 2}, {2, 2}))),
                      "gather: index 4 is out of range [0, 4) for dim 1");
    EXPECT_HMOE_ERROR(gather(t, 0, dev(from_vector(std::vector<int32_t>{-1}, {1, 1}))), "out of range [0, 3)");
    EXPECT_HMOE_ERROR(scatter_add(t, 1, dev(from_vector(std::vector<int64_t>{5}, {1, 1})), dev(zeros({1, 1}, {DType::f32}))),
                      "scatter_add: index 5 is out of range [0, 4)");
    EXPECT_HMOE_ERROR(one_hot(dev(from_vector(std::vector<int64_t>{0, 3}, {2})), 3),
                      "one_hot: id 3 at position 1 is out of range [0, 3)");
    EXPECT_HMOE_ERROR(one_hot(dev(from_vector(std::vector<int32_t>{-2}, {1})), 3), "out of range");
    // A failed call leaves nothing behind: the next one works.
    expect_same_bits(index_select(t, 1, dev(from_vector(std::vector<int64_t>{3}, {1}))),
                     index_select(host(t), 1, from_vector(std::vector<int64_t>{3}, {1})));
  });
}

TEST(CudaGather, MatchesCpuAndGradients) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 400;
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::b8}) {
      SCOPED_TRACE(dn(dt));
      Tensor t = testing::rand_cpu({4, 5, 3}, ++seed, DType::f64);
      t = dt == DType::b8 ? gt(t, zeros({1}, {DType::f64})) : t.to(dt);
      for (int64_t dim = 0; dim < 3; ++dim) {
        Shape is = {3, 4, 2};
        is[size_t(dim)] = 6;  // longer than t along dim
        for (DType it : kIndexTypes) {
          const Tensor idx = rand_ids(is, 0, t.size(dim), ++seed, it);
          expect_same_bits(gather(dev(t), dim, dev(idx)), gather(t, dim, idx));
        }
      }
    }
    // Non-contiguous t and index, 0-d, empty.
    const Tensor tt = testing::rand_cpu({5, 4}, 13, DType::f32).t();
    const Tensor it = rand_ids({5, 3}, 0, 5, 14).t();
    expect_same_bits(gather(dev(tt), 1, dev(it)), gather(tt, 1, it));
    expect_same_bits(gather(dev(tt), 1, dev(it.slice(1, 0, 5, 2))), gather(tt, 1, it.slice(1, 0, 5, 2)));
    expect_same_bits(gather(dev(full({}, 3.5)), 0, dev(full({}, 0, {DType::i64}))), full({}, 3.5));
    EXPECT_EQ(gather(dev(tt), 1, dev(zeros({4, 0}, {DType::i64}))).shape(), (Shape{4, 0}));
    // Gradient: scatter_add of the upstream gradient.
    for (DType dt : kFloatTypes) {
      const Tensor x = testing::rand_cpu({6, 9}, 15, dt);
      const Tensor idx = rand_ids({6, 20}, 0, 9, 16);
      const Tensor g = testing::rand_cpu({6, 20}, 17, dt);
      Tensor xc = cpu_leaf(x), xd = dev_leaf(x);
      gather(xc, 1, idx).backward(g);
      gather(xd, 1, dev(idx)).backward(dev(g));
      expect_same_bits(xd.grad(), xc.grad(), dn(dt));
    }
  });
}

TEST(CudaScatterAdd, MatchesCpuOnBothPaths) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i32}) {
      SCOPED_TRACE(dn(dt));
      // One thread per line: every dim of a 3-d tensor, src larger than index.
      const Tensor t = testing::rand_cpu({4, 5, 3}, ++seed, DType::f64, -9, 9).to(dt);
      for (int64_t dim = 0; dim < 3; ++dim) {
        Shape is = {3, 4, 2};
        is[size_t(dim)] = 7;
        const Tensor idx = rand_ids(is, 0, t.size(dim), ++seed, dim == 1 ? DType::i32 : DType::i64);
        const Tensor src = testing::rand_cpu({7, 7, 7}, ++seed, DType::f64, -9, 9).to(dt);
        expect_same_bits(scatter_add(dev(t), dim, dev(idx), dev(src)), scatter_add(t, dim, idx, src));
      }
      // Few long lines (sorted by destination): heavy collisions and spread destinations.
      for (const auto& [lines, len, width] : {std::tuple{8, 3000, 3}, std::tuple{2, 1000, 500}, std::tuple{1, 700, 9},
                                                   std::tuple{2, 5000, 40}}) {
        const Tensor dst = testing::rand_cpu({lines, width}, ++seed, DType::f64, -9, 9).to(dt);
        const Tensor idx = rand_ids({lines, len}, 0, width, ++seed);
        const Tensor src = testing::rand_cpu({lines, len}, ++seed, DType::f64, -9, 9).to(dt);
        const Tensor ref = scatter_add(dst, 1, idx, src);
        const Tensor a = scatter_add(dev(dst), 1, dev(idx), dev(src));
        const Tensor b = scatter_add(dev(dst), 1, dev(idx), dev(src));
        expect_same_bits(a, ref, "lines " + std::to_string(lines));
        EXPECT_TRUE(bit_equal(host(a), host(b)));
      }
    }
    // Non-contiguous everything; the input is not modified; empty index.
    const Tensor tt = testing::rand_cpu({5, 4}, 24, DType::f32).t();
    const Tensor it = rand_ids({6, 4}, 0, 5, 25).t();
    const Tensor st = testing::rand_cpu({6, 4}, 26, DType::f32).t();
    const Tensor tdev = dev(tt);
    const Tensor before = host(tdev).clone();
    expect_same_bits(scatter_add(tdev, 1, dev(it), dev(st)), scatter_add(tt, 1, it, st));
    EXPECT_TRUE(bit_equal(host(tdev), before));
    expect_same_bits(scatter_add(tdev, 0, dev(zeros({0, 5}, {DType::i64})), dev(st)), tt.contiguous());
    // Gradients in t and src.
    const Tensor x = testing::rand_cpu({3, 4}, 27, DType::f32);
    const Tensor s = testing::rand_cpu({4, 3}, 28, DType::f32);
    const Tensor idx = from_vector(std::vector<int64_t>{0, 3, 1, 1, 2, 0}, {3, 2});
    const Tensor g = testing::rand_cpu({3, 4}, 29, DType::f32);
    Tensor xc = cpu_leaf(x), sc = cpu_leaf(s), xd = dev_leaf(x), sd = dev_leaf(s);
    scatter_add(xc, 1, idx, sc).backward(g);
    scatter_add(xd, 1, dev(idx), sd).backward(dev(g));
    expect_same_bits(xd.grad(), xc.grad());
    expect_same_bits(sd.grad(), sc.grad());
  });
}

TEST(CudaOneHot, MatchesCpu) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType it : kIndexTypes) {
      const Tensor ids = rand_ids({3, 5}, 0, 7, 9, it);
      for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i64, DType::b8}) {
        const Tensor o = one_hot(dev(ids), 7, dt);
        EXPECT_EQ(o.shape(), (Shape{3, 5, 7}));
        expect_same_bits(o, one_hot(ids, 7, dt), dn(dt));
      }
      expect_same_bits(one_hot(dev(ids.t()), 7), one_hot(ids.t(), 7));
    }
    expect_same_bits(one_hot(dev(full({}, 1, {DType::i64})), 3, DType::bf16), one_hot(full({}, 1, {DType::i64}), 3, DType::bf16));
    EXPECT_EQ(one_hot(dev(zeros({0}, {DType::i64})), 4).shape(), (Shape{0, 4}));
    expect_same_bits(one_hot(dev(from_vector(std::vector<int64_t>{0}, {1})), 1), ones({1, 1}));
  });
}

}  // namespace
}  // namespace hmoe
