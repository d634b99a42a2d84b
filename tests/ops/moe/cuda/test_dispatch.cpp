// The MoE token-dispatch kernels on the cuda device against the CPU backend: the plan
// (counts, offsets, perm, inverse exactly equal) on its three paths (one fused block,
// per-tile blocks for many routed rows, the sort path for many groups), with pad_to > 1,
// empty experts, every token on one expert, T = 1, k = N, N = 1, [T] and [T, k] ids, i32
// and i64; padding slots written (checked through the stub with a non-poison fill);
// permute_rows / combine forward and backward (gates and rows) in f32 and f64, vector and
// scalar rows; selection patterns, their distinct values and the pattern plan; bad ids
// raise hmoe::Error; every check under each emulator schedule, bit-identical across them.
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/moe_kernels.h"
#include "ops/moe/token_dispatch.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

void expect_exact(const Tensor& out, const Tensor& ref, const std::string& what) {
  EXPECT_TRUE(bit_equal(host(out), host(ref))) << what << ": device " << host(out).str() << "\ncpu " << ref.str();
}

// Distinct expert ids per row (as a router gives): the top-k of random scores.
Tensor distinct_ids(int64_t T, int64_t N, int64_t k, uint64_t seed, DType it) {
  return topk(testing::rand_t({T, N}, seed), k, 1).second.to(it);
}

void expect_plan_matches(const Tensor& ids, int64_t G, int64_t pad, SameBits& bits, const std::string& what) {
  SCOPED_TRACE(what);
  const moe::Plan pc = moe::make_plan(ids, G, pad);
  const moe::Plan pd = moe::make_plan(dev(ids), G, pad);
  ASSERT_TRUE(pd.perm.device().is_cuda() && pd.inverse.device().is_cuda() && pd.counts.device().is_cuda());
  EXPECT_EQ(pd.rows, pc.rows);
  EXPECT_EQ(pd.k, pc.k);
  expect_exact(pd.counts, pc.counts, "counts");
  expect_exact(pd.offsets, pc.offsets, "offsets");
  expect_exact(pd.perm, pc.perm, "perm");
  expect_exact(pd.inverse, pc.inverse, "inverse");
  bits.check(what + " perm", pd.perm);
  bits.check(what + " inverse", pd.inverse);
}

// Shapes that take the fused one-block path (<= 4096 routed rows; 2049..4096 loop over
// two tiles), the per-tile path (more rows) and the sort path (more than 2048 groups).
TEST(CudaMoePlan, MatchesCpuOnEveryPath) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 10;
    for (DType it : {DType::i32, DType::i64}) {
      struct Case {
        int64_t T, k, G;
      };
      for (const Case& c : {Case{1, 1, 1}, Case{1, 4, 4}, Case{37, 2, 8}, Case{10, 3, 3}, Case{1500, 2, 8},
                            Case{3000, 2, 64}, Case{20000, 2, 16}, Case{300, 4, 2048}, Case{2600, 2, 2048}})
        for (int64_t pad : {int64_t(1), int64_t(4), int64_t(128)}) {
          const std::string what = dn(it) + " T=" + std::to_string(c.T) + " k=" + std::to_string(c.k) +
                                   " G=" + std::to_string(c.G) + " pad=" + std::to_string(pad);
          expect_plan_matches(rand_ids({c.T, c.k}, 0, c.G, ++seed, it), c.G, pad, bits, what);
        }
      // Empty experts (ids from half the groups) and every token on one expert, both paths.
      for (int64_t T : {50, 3000}) {
        expect_plan_matches(rand_ids({T, 2}, 2, 5, ++seed, it), 8, 4, bits,
                            dn(it) + " empty experts T=" + std::to_string(T));
        expect_plan_matches(full({T, 1}, 3.0, {it}), 5, 1, bits, dn(it) + " all on one T=" + std::to_string(T));
      }
      // [T] ids (k = 1), as the pattern plan and the capacity flags use; N = 1.
      expect_plan_matches(rand_ids({777}, 0, 9, ++seed, it), 9, 1, bits, dn(it) + " [T]");
      expect_plan_matches(zeros({40, 1}, {it}), 1, 3, bits, dn(it) + " N=1");
      // The sort path: thousands of groups (pattern plans), with padding.
      expect_plan_matches(rand_ids({5000}, 0, 3000, ++seed, it), 3000, 1, bits, dn(it) + " sort path");
      expect_plan_matches(rand_ids({900, 2}, 0, 2500, ++seed, it), 2500, 2, bits, dn(it) + " sort path pad");
      // More rows than kMaxTiles tiles of 2048: the tiles grow.
      if (it == DType::i32)
        expect_plan_matches(rand_ids({300000, 2}, 0, 64, ++seed, it), 64, 8, bits, "i32 600000 routed rows");
      // No tokens at all.
      expect_plan_matches(zeros({0, 2}, {it}), 3, 2, bits, dn(it) + " T=0");
    }
  });
}

// Through the stub with outputs pre-filled with 77 (poison reads as -1 for integers, the
// padding value): every slot of perm, padding included, must be written.
TEST(CudaMoePlan, WritesEveryPaddingSlot) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (auto [n, G, pad] : std::vector<std::array<int64_t, 3>>{{100, 6, 8}, {9000, 12, 32}, {3000, 2100, 3}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " G=" + std::to_string(G));
      const Tensor ids = rand_ids({n}, 0, G, uint64_t(n + G));
      const int64_t len = n + G * (pad - 1);
      const Tensor counts = dev(full({G}, 77.0, {DType::i64})), offsets = dev(full({G + 1}, 77.0, {DType::i64}));
      const Tensor perm = dev(full({len}, 77.0, {DType::i64})), inverse = dev(full({n}, 77.0, {DType::i64}));
      moe::plan_stub.get(kDev)(dev(ids), G, pad, counts, offsets, perm, inverse);
      const Tensor cc = empty({G}, {DType::i64}), oc = empty({G + 1}, {DType::i64});
      const Tensor pc = empty({len}, {DType::i64}), ic = empty({n}, {DType::i64});
      moe::plan_stub.get(Device::cpu())(ids, G, pad, cc, oc, pc, ic);
      expect_exact(counts, cc, "counts");
      expect_exact(offsets, oc, "offsets");
      expect_exact(perm, pc, "perm");
      expect_exact(inverse, ic, "inverse");
    }
  });
}

TEST(CudaMoePlan, OutOfRangeIdsAreErrors) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType it : {DType::i32, DType::i64})
      for (int64_t G : {4, 3000})
        for (int64_t n : {10, 6000}) {  // fused / per-tile (or sort) paths
          SCOPED_TRACE(dn(it) + " G=" + std::to_string(G) + " n=" + std::to_string(n));
          std::vector<int64_t> v(size_t(n), 1);
          v[size_t(n / 2)] = G;
          v[size_t(n - 1)] = -3;
          const std::string want = "id " + std::to_string(G) + " at position " + std::to_string(n / 2) +
                                   " is out of range [0, " + std::to_string(G) + ")";
          EXPECT_HMOE_ERROR(moe::make_plan(dev(from_vector(v, {n}).to(it)), G), want);
          v[size_t(n / 2)] = 1;
          EXPECT_HMOE_ERROR(moe::make_plan(dev(from_vector(v, {n}).to(it)), G),
                            "id -3 at position " + std::to_string(n - 1));
        }
  });
}

// permute_rows and combine forward, and the gradients of x, ys and gates, against the CPU.
void check_permute_combine(int64_t T, int64_t N, int64_t k, int64_t pad, int64_t d, DType dt, uint64_t seed,
                           SameBits& bits) {
  const std::string what = dn(dt) + " T=" + std::to_string(T) + " N=" + std::to_string(N) + " k=" + std::to_string(k) +
                           " pad=" + std::to_string(pad) + " d=" + std::to_string(d);
  SCOPED_TRACE(what);
  const Tensor ids = distinct_ids(T, N, k, seed, DType::i32);
  const moe::Plan pc = moe::make_plan(ids, N, pad), pd = moe::make_plan(dev(ids), N, pad);
  const Tensor x = rand_cpu({T, d}, seed + 1, dt), g = rand_cpu({T, k}, seed + 2, dt, 0, 1);
  const Tensor w = rand_cpu({pc.rows, d}, seed + 3, dt), gy = rand_cpu({T, d}, seed + 4, dt);
  const Tensor xc = leaf(x, Device::cpu()), gc = leaf(g, Device::cpu());
  const Tensor xd = leaf(x, kDev), gd = leaf(g, kDev);
  // xs = permute(x); ys = xs * w (rows of the experts' work); y = combine(ys, gates).
  const Tensor xsc = moe::permute_rows(xc, pc), xsd = moe::permute_rows(xd, pd);
  expect_exact(xsd, xsc, "permute");
  const Tensor yc = moe::combine(xsc * w, gc, pc), yd = moe::combine(xsd * dev(w), gd, pd);
  expect_matches(yd, yc, -1, "combine");
  bits.check(what + " combine", yd);
  yc.backward(gy);
  yd.backward(dev(gy));
  expect_matches(xd.grad(), xc.grad(), -1, "dx");
  expect_matches(gd.grad(), gc.grad(), -1, "dgates");
  bits.check(what + " dgates", gd.grad());
  // Gate-less combine (unpermute for k = 1).
  const Tensor uc = moe::combine(xsc.detach(), Tensor(), pc), ud = moe::combine(xsd.detach(), Tensor(), pd);
  expect_matches(ud, uc, -1, "combine without gates");
}

TEST(CudaMoeDispatch, PermuteCombineForwardBackward) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 200;
    for (DType dt : {DType::f32, DType::f64}) {
      check_permute_combine(13, 5, 2, 1, 8, dt, seed += 5, bits);    // 16-byte packs
      check_permute_combine(13, 5, 2, 4, 3, dt, seed += 5, bits);    // scalar rows, padding
      check_permute_combine(1, 4, 4, 1, 33, dt, seed += 5, bits);    // T = 1, k = N
      check_permute_combine(9, 1, 1, 2, 16, dt, seed += 5, bits);    // N = 1
      check_permute_combine(40, 8, 3, 8, 300, dt, seed += 5, bits);  // long rows, padding
      check_permute_combine(700, 8, 2, 1, 4, dt, seed += 5, bits);   // many tokens
    }
    // bf16 goes through f32 (differentiably), as on the CPU.
    check_permute_combine(10, 4, 2, 1, 8, DType::bf16, 290, bits);
  });
}

TEST(CudaMoeDispatch, SelectionPatterns) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 300;
    for (DType it : {DType::i32, DType::i64})
      for (auto [T, N, k] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {50, 4, 2}, {3000, 64, 3}, {40, 64, 64}}) {
        const std::string what = dn(it) + " T=" + std::to_string(T) + " N=" + std::to_string(N);
        SCOPED_TRACE(what);
        const Tensor ids = distinct_ids(T, N, k, ++seed, it);
        const Tensor bc = moe::pattern_ids(ids, N), bd = moe::pattern_ids(dev(ids), N);
        expect_exact(bd, bc, "pattern ids");
        const moe::Patterns pc = moe::unique_patterns(bc), pd = moe::unique_patterns(bd);
        ASSERT_TRUE(pd.patterns.device().is_cuda() && pd.token_pattern.device().is_cuda());
        expect_exact(pd.patterns, pc.patterns, "patterns");
        expect_exact(pd.token_pattern, pc.token_pattern, "token_pattern");
        bits.check(what + " token_pattern", pd.token_pattern);
        const moe::Plan qc = moe::pattern_plan(pc), qd = moe::pattern_plan(pd);
        expect_exact(qd.perm, qc.perm, "pattern plan perm");
        expect_exact(qd.counts, qc.counts, "pattern plan counts");
      }
    // Expert 63 sets the sign bit: patterns ascend as unsigned.
    const Tensor hi = from_vector(std::vector<int64_t>{63, 0, 1, 63, 5}, {5, 1});
    const moe::Patterns ph = moe::selection_patterns(dev(hi), 64);
    expect_exact(ph.patterns, moe::selection_patterns(hi, 64).patterns, "sign bit");
    expect_exact(ph.token_pattern, from_vector(std::vector<int32_t>{3, 0, 1, 3, 2}, {5}), "sign bit order");
    // No tokens.
    const moe::Patterns p0 = moe::unique_patterns(dev(zeros({0}, {DType::i64})));
    EXPECT_EQ(p0.patterns.numel(), 0);
    EXPECT_EQ(p0.token_pattern.numel(), 0);
    // Bad ids: out of range and an expert twice in a row, reported as on the CPU.
    for (DType it : {DType::i32, DType::i64}) {
      const Tensor bad = from_vector(std::vector<int64_t>{0, 1, 2, 3, 1, 9, 4, 4}, {4, 2}).to(it);
      EXPECT_HMOE_ERROR(moe::pattern_ids(dev(bad), 8), "expert id 9 of token 2 is out of range [0, 8)");
      const Tensor twice = from_vector(std::vector<int64_t>{0, 1, 2, 2, 1, 7}, {3, 2}).to(it);
      EXPECT_HMOE_ERROR(moe::pattern_ids(dev(twice), 8), "token 1 selects expert 2 twice");
    }
  });
}

// The hyper adapter end to end on the device (plan over patterns, two grouped GEMMs,
// unpermute) with every gradient, against the CPU: the ops chain stays on the device.
TEST(CudaMoeDispatch, HyperAdapterEndToEnd) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    const int64_t T = 30, d = 8, r = 4, N = 6, k = 2;
    const moe::Patterns pat = moe::selection_patterns(distinct_ids(T, N, k, 401, DType::i32), N);
    const int64_t P = pat.patterns.numel();
    const std::vector<Tensor> in = {rand_cpu({T, d}, 402, DType::f32), rand_cpu({P, d, r}, 403, DType::f32),
                                    rand_cpu({P, r}, 404, DType::f32), rand_cpu({P, r, d}, 405, DType::f32),
                                    rand_cpu({P, d}, 406, DType::f32)};
    std::vector<Tensor> lc, ld;
    for (const Tensor& t : in) {
      lc.push_back(leaf(t, Device::cpu()));
      ld.push_back(leaf(t, kDev));
    }
    const moe::Patterns patd = moe::selection_patterns(dev(distinct_ids(T, N, k, 401, DType::i32)), N);
    const Tensor yc = moe::hyper_adapter(lc[0], pat.token_pattern, lc[1], lc[2], lc[3], lc[4]);
    const Tensor yd = moe::hyper_adapter(ld[0], patd.token_pattern, ld[1], ld[2], ld[3], ld[4]);
    expect_matches(yd, yc, -1, "hyper adapter");
    const Tensor g = rand_cpu({T, d}, 407, DType::f32);
    yc.backward(g);
    yd.backward(dev(g));
    for (size_t i = 0; i < in.size(); ++i) expect_matches(ld[i].grad(), lc[i].grad(), -1, "grad " + std::to_string(i));
  });
}

}  // namespace
}  // namespace hmoe
