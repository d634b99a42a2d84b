// The sort kernel family on the cuda device against the CPU backend: topk and sort
// (ties to the lower index, NaN largest, -0 == 0, both directions, short lines in
// shared memory and long lines through the general path, strided lines), their
// gradients, cumsum forward and reverse (block scan and per-column paths), bincount
// with and without weights; f32/bf16/f16/f64 and integer data, i32/i64 ids, two runs
// giving the same bits, out-of-range errors; every check under each schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/index_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

void expect_same_bits(const Tensor& out, const Tensor& ref, const std::string& what = "") {
  ASSERT_TRUE(out.device().is_cuda()) << what;
  EXPECT_TRUE(bit_equal(host(out), ref)) << what << ": device " << host(out).str() << "\ncpu " << ref.str();
}

// topk on the device equals the CPU's: values bit for bit, indices exactly.
void expect_topk_matches(const Tensor& t, int64_t k, int64_t dim, bool largest, const std::string& what) {
  const auto [vc, ic] = topk(t, k, dim, largest);
  const auto [vd, id] = topk(dev(t), k, dim, largest);
  expect_same_bits(vd, vc, what + " values");
  expect_same_bits(id, ic, what + " indices");
}

const std::vector<DType> kSortTypes = {DType::f32, DType::bf16, DType::f16, DType::f64, DType::i32, DType::i64};

TEST(CudaTopk, MatchesCpuWithTies) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 10;
    for (DType dt : kSortTypes) {
      for (int64_t n : {1, 7, 64, 100}) {
        const Tensor t = rand_ties({5, n}, 4, ++seed).to(dt);  // few levels: many ties
        for (int64_t k : {int64_t(1), std::min<int64_t>(2, n), n})
          for (bool largest : {true, false}) {
            const std::string what = dn((dt)) + " n=" + std::to_string(n) + " k=" +
                                      std::to_string(k) + (largest ? " largest" : " smallest");
            expect_topk_matches(t, k, 1, largest, what);
            expect_topk_matches(t.t(), k, 0, largest, what + " strided lines");
          }
      }
    }
    // Lines along a middle dim, a transposed (non-contiguous) input, 3-d.
    const Tensor t3 = testing::rand_cpu({3, 9, 4}, 77, DType::f32);
    expect_topk_matches(t3, 3, 1, true, "3-d dim 1");
    expect_topk_matches(t3.permute({2, 1, 0}), 5, 1, false, "3-d permuted");
    expect_topk_matches(t3, 4, -1, true, "3-d last");
    // k = 0, empty and 0-d.
    EXPECT_EQ(topk(dev(t3), 0, 1).first.shape(), (Shape{3, 0, 4}));
    EXPECT_EQ(topk(dev(zeros({0, 4})), 2, 1).first.shape(), (Shape{0, 2}));
    const auto [s0, i0] = topk(dev(full({}, 2.5)), 1);
    EXPECT_EQ(s0.shape(), Shape{});
    EXPECT_EQ(host(s0).item(), 2.5);
    EXPECT_EQ(host(i0).item(), 0);
  });
}

TEST(CudaTopk, NaNInfSignedZeroAndWideIntegers) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const std::vector<double> v = {3, NAN, -0.0, 0.0, -INFINITY, 1, NAN, INFINITY, -2, 0.0, 3, -0.0};
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      const Tensor t = from_vector(v, {2, 6}, {DType::f64}).to(dt);
      for (bool largest : {true, false}) {
        expect_topk_matches(t, 6, 1, largest, dn((dt)) + " full");
        expect_topk_matches(t, 2, 1, largest, dn((dt)) + " k=2");
        expect_topk_matches(t.reshape({12}), 12, 0, largest, dn((dt)) + " one line");
      }
    }
    const int64_t big = int64_t(1) << 60;
    const Tensor wide = from_vector(std::vector<int64_t>{big, big + 1, big - 1, -big, big + 1}, {5});
    expect_topk_matches(wide, 3, 0, true, "i64 beyond 2^53");
    expect_topk_matches(wide, 5, 0, false, "i64 ascending");
  });
}

TEST(CudaSort, StableBothDirectionsShortAndLongLines) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 30;
    // Long lines take the general path (past 4096 packs for 32-bit keys, 2048 for 64-bit).
    struct Case {
      DType dt;
      int64_t lines, n;
    };
    for (const Case& c : {Case{DType::f32, 3, 40}, Case{DType::bf16, 2, 333}, Case{DType::i32, 2, 5000},
                          Case{DType::f64, 2, 2100}, Case{DType::i64, 1, 4500}, Case{DType::f32, 1, 9000}}) {
      const std::string what = dn((c.dt)) + " n=" + std::to_string(c.n);
      const Tensor t = rand_ties({c.lines, c.n}, 50, ++seed).to(c.dt);
      for (bool descending : {false, true}) {
        const auto [vc, ic] = sort(t, 1, descending);
        const auto [vd, id] = sort(dev(t), 1, descending);
        expect_same_bits(vd, vc, what + " values");
        expect_same_bits(id, ic, what + " indices");
        // Two runs, the same bits.
        EXPECT_TRUE(bit_equal(host(id), host(sort(dev(t), 1, descending).second)));
      }
      expect_topk_matches(t, 10, 1, true, what + " topk 10");
      expect_same_bits(argsort(dev(t.t()), 0, true), argsort(t.t(), 0, true), what + " argsort strided");
    }
  });
}

TEST(CudaTopk, GradientsScatterToIndices) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      const Tensor x = testing::rand_cpu({4, 9}, 5, dt);
      const Tensor g = testing::rand_cpu({4, 3}, 6, dt);
      Tensor xc = x.clone(), xd = dev(x);
      xc.set_requires_grad(true);
      xd.set_requires_grad(true);
      topk(xc, 3, 1).first.backward(g);
      topk(xd, 3, 1).first.backward(dev(g));
      expect_same_bits(xd.grad(), xc.grad(), dn(dt));
      // sort's gradient too (a permutation of g).
      const Tensor gs = testing::rand_cpu({4, 9}, 7, dt);
      Tensor yc = x.clone(), yd = dev(x);
      yc.set_requires_grad(true);
      yd.set_requires_grad(true);
      sort(yc, 1, true).first.backward(gs);
      sort(yd, 1, true).first.backward(dev(gs));
      expect_same_bits(yd.grad(), yc.grad(), dn(dt));
    }
  });
}

TEST(CudaCumsum, ForwardAndReverseMatchCpu) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 60;
    // (shape, dim): block scan rows (one chunk, several chunks), short rows, columns.
    struct Case {
      Shape shape;
      int64_t dim;
    };
    for (const Case& c : {Case{{3, 200}, 1}, Case{{2, 2500}, 1}, Case{{5, 7}, 1}, Case{{300, 4}, 0},
                          Case{{3, 4, 5}, 1}, Case{{1}, 0}, Case{{65}, 0}}) {
      for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i32}) {
        const std::string what = dn((dt)) + " " + shape_str(c.shape) + " dim " +
                                 std::to_string(c.dim);
        const Tensor x = dt == DType::i32 ? rand_ids(c.shape, -50, 50, ++seed, DType::i32)
                                          : testing::rand_cpu(c.shape, ++seed, dt);
        const Tensor yc = cumsum(x, c.dim), yd = cumsum(dev(x), c.dim);
        if (dt == DType::i32 || c.shape[size_t(c.dim)] < 64 || c.dim != int64_t(c.shape.size()) - 1)
          expect_same_bits(yd, yc, what);  // sequential on both sides (or integers)
        else
          expect_matches(yd, yc, dt == DType::f64 ? 1e-14 : -1, what);
        EXPECT_TRUE(bit_equal(host(yd), host(cumsum(dev(x), c.dim)))) << what << ": not deterministic";
        if (dt == DType::i32) continue;
        // Reverse: the backward of cumsum is the cumulative sum from the end.
        const Tensor g = testing::rand_cpu(c.shape, ++seed, dt);
        Tensor xc = x.clone(), xd = dev(x);
        xc.set_requires_grad(true);
        xd.set_requires_grad(true);
        cumsum(xc, c.dim).backward(g);
        cumsum(xd, c.dim).backward(dev(g));
        expect_matches(xd.grad(), xc.grad(), dt == DType::f64 ? 1e-14 : -1, what + " reverse");
      }
    }
    // bool and i64 sum in i64, exactly; empty.
    const Tensor b = gt(testing::rand_cpu({2, 150}, 90, DType::f64), zeros({1}, {DType::f64}));
    expect_same_bits(cumsum(dev(b), 1), cumsum(b, 1));
    const int64_t big = int64_t(1) << 62;
    expect_same_bits(cumsum(dev(from_vector(std::vector<int64_t>{big, 1, -3}, {3})), 0),
                     cumsum(from_vector(std::vector<int64_t>{big, 1, -3}, {3}), 0));
    EXPECT_EQ(cumsum(dev(zeros({0, 3})), 0).shape(), (Shape{0, 3}));
  });
}

// bincount's kernel through its stub (the public op also needs the cuda min/max).
Tensor bincount_dev(const Tensor& ids, int64_t len, const Tensor& w, DType out_dt) {
  Tensor out = Tensor::empty({len}, {out_dt, kDev});
  bincount_stub.get(kDev)(dev(ids), w.defined() ? dev(w) : Tensor(), out);
  return out;
}

TEST(CudaBincount, CountsAndWeightedSumsMatchCpu) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 70;
    for (DType it : {DType::i64, DType::i32}) {
      for (int64_t n : {1, 200, 5000}) {  // 5000: past one sort tile
        const Tensor ids = cat({rand_ids({n}, 0, 3, ++seed, it), rand_ids({n / 4 + 1}, 0, 40, ++seed, it)}, 0);
        const std::string what = dn((it)) + " n=" + std::to_string(n);
        expect_same_bits(bincount_dev(ids, 45, Tensor(), DType::i64), bincount(ids, 45), what);
        for (DType wt : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
          const Tensor w = wt == DType::i64 ? rand_ids({ids.numel()}, -5, 5, ++seed)
                                            : testing::rand_cpu({ids.numel()}, ++seed, wt);
          const Tensor ref = bincount(ids, 45, w);
          const Tensor a = bincount_dev(ids, 45, w, ref.dtype());
          expect_same_bits(a, ref, what + " weights " + dn(wt));
          EXPECT_TRUE(bit_equal(host(a), host(bincount_dev(ids, 45, w, ref.dtype()))));
        }
      }
    }
    // Non-contiguous ids and weights, empty ids (all-zero bins), no bins.
    const Tensor ids2 = rand_ids({20}, 0, 4, 3).slice(0, 0, 20, 2);
    const Tensor w2 = testing::rand_cpu({20}, 4, DType::f32).slice(0, 1, 20, 2);
    expect_same_bits(bincount_dev(ids2, 6, w2, DType::f32), bincount(ids2, 6, w2));
    expect_same_bits(bincount_dev(ids2, 6, Tensor(), DType::i64), bincount(ids2, 6));
    const Tensor none = zeros({0}, {DType::i64});
    expect_same_bits(bincount_dev(none, 4, Tensor(), DType::i64), bincount(none, 4));
    expect_same_bits(bincount_dev(none, 4, zeros({0}), DType::f32), bincount(none, 4, zeros({0})));
    EXPECT_EQ(bincount_dev(none, 0, Tensor(), DType::i64).shape(), (Shape{0}));
    // Ids outside the bins.
    const Tensor bad = from_vector(std::vector<int64_t>{1, 5, 7}, {3});
    EXPECT_HMOE_ERROR(bincount_dev(bad, 5, Tensor(), DType::i64), "bincount: id 5 at position 1 is out of range [0, 5)");
    EXPECT_HMOE_ERROR(bincount_dev(from_vector(std::vector<int32_t>{-1}, {1}), 5, zeros({1}), DType::f32),
                      "id -1 at position 0");
  });
}

TEST(CudaBincount, PublicOp) {
  HMOE_REQUIRE_CUDA();
  const Tensor ids = rand_ids({300}, 0, 9, 1);
  for_each_schedule([&] {
    const Tensor w = testing::rand_cpu({300}, 2, DType::f32);
    expect_same_bits(bincount(dev(ids)), bincount(ids));
    expect_same_bits(bincount(dev(ids), 12, dev(w)), bincount(ids, 12, w));
    EXPECT_HMOE_ERROR(bincount(dev(from_vector(std::vector<int64_t>{2, -1}, {2}))), "negative");
  });
}

}  // namespace
}  // namespace hmoe
