// The MoE router kernels on the cuda device against the CPU backend, through the public
// ops: route_topk (register rows of 1..256 experts and streamed longer rows, every k up to
// N, renormalised or not, tied logits, T = 1, N = 1), its gradient through gates and
// probs, capacity flags, dense gates with i32/i64 ids and its gradient, the smooth load
// and its gradients (several column-sum chunks, k = N), the auxiliary losses end to end;
// f32 and f64; NaN logits and out-of-range ids raise hmoe::Error; every check under each
// emulator schedule, with results bit-identical across schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/moe/router.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

// Integer (or any) outputs that must equal the CPU's exactly.
void expect_exact(const Tensor& out, const Tensor& ref, const std::string& what) {
  ASSERT_TRUE(out.device().is_cuda()) << what;
  EXPECT_TRUE(bit_equal(host(out), ref)) << what << ": device " << host(out).str() << "\ncpu " << ref.str();
}

// route_topk forward (probs, gates within tolerance, ids exactly) and the logits gradient
// of sum(gates * wg) + sum(probs * wp) (either term optional), device against CPU.
void check_route(const Tensor& logits, int64_t k, bool renorm, bool via_gates, bool via_probs, SameBits& bits,
                 const std::string& what) {
  SCOPED_TRACE(what);
  moe::RouterConfig rc;
  rc.renormalize = renorm;
  const Tensor lc = leaf(logits, Device::cpu()), ld = leaf(logits, kDev);
  const auto rcpu = moe::route_topk(lc, k, rc);
  const auto rdev = moe::route_topk(ld, k, rc);
  expect_exact(rdev.expert_ids, rcpu.expert_ids, "ids");
  expect_matches(rdev.probs, rcpu.probs, -1, "probs");
  expect_matches(rdev.gates, rcpu.gates, -1, "gates");
  bits.check(what + " ids", rdev.expert_ids);
  bits.check(what + " probs", rdev.probs);
  bits.check(what + " gates", rdev.gates);
  const int64_t T = logits.size(0), N = logits.size(1);
  const Tensor wg = rand_cpu({T, k}, uint64_t(T * 7 + N), rcpu.gates.dtype());
  const Tensor wp = rand_cpu({T, N}, uint64_t(T * 11 + N), rcpu.gates.dtype());
  auto loss = [&](const moe::RouterOutput& r, const Tensor& g, const Tensor& p) {
    Tensor l = zeros({}, {r.gates.dtype(), r.gates.device()});
    if (via_gates) l = l + sum(r.gates * g);
    if (via_probs) l = l + sum(r.probs * p);
    return l;
  };
  loss(rcpu, wg, wp).backward();
  loss(rdev, dev(wg), dev(wp)).backward();
  expect_matches(ld.grad(), lc.grad(), -1, "dlogits");
  bits.check(what + " dlogits", ld.grad());
}

struct RouteCase {
  int64_t T, N;
};
// Rows of 1, 3, 6, 33 (two registers per lane, partial), 64, 100, 256 (8 per lane) and
// 300 experts (the streamed path); T = 1 among them.
const std::vector<RouteCase> kRouteCases = {{1, 1}, {9, 3}, {37, 6}, {5, 33}, {1, 64}, {12, 100}, {4, 256}, {3, 300}};

void route_for(DType dt) {
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 100;
    for (const RouteCase& c : kRouteCases) {
      const Tensor logits = rand_cpu({c.T, c.N}, ++seed, dt, -3, 3);
      std::vector<int64_t> ks = {1, std::min<int64_t>(2, c.N), c.N};
      if (c.N > 8) ks.push_back(8);
      for (int64_t k : ks)
        for (bool renorm : {false, true}) {
          const std::string what = dn(dt) + " T=" + std::to_string(c.T) + " N=" + std::to_string(c.N) +
                                   " k=" + std::to_string(k) + (renorm ? " renorm" : "");
          check_route(logits, k, renorm, true, true, bits, what);
        }
    }
    // Gradient through the gates only and through the probs only (undefined dprobs / dgates).
    const Tensor l = rand_cpu({11, 10}, 7, dt);
    check_route(l, 3, true, true, false, bits, dn(dt) + " gates only");
    check_route(l, 3, false, true, false, bits, dn(dt) + " gates only, no renorm");
    check_route(l, 3, true, false, true, bits, dn(dt) + " probs only");
  });
}

TEST(CudaMoeRouter, TopkForwardBackwardF32) {
  HMOE_REQUIRE_CUDA();
  route_for(DType::f32);
}
TEST(CudaMoeRouter, TopkForwardBackwardF64) {
  HMOE_REQUIRE_CUDA();
  route_for(DType::f64);
}

// Tied logits (few levels, whole rows equal): ties go to the lower index, on the device too.
TEST(CudaMoeRouter, TiesGoToTheLowerIndex) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::f64}) {
      check_route(rand_ties({13, 8}, 3, 21).to(dt), 3, true, true, true, bits, dn(dt) + " 3 levels");
      check_route(rand_ties({6, 70}, 2, 22).to(dt), 5, false, true, true, bits, dn(dt) + " 2 levels, N=70");
      check_route(rand_ties({4, 300}, 2, 23).to(dt), 4, true, true, true, bits, dn(dt) + " 2 levels, N=300");
      check_route(zeros({3, 5}, {dt}), 5, true, true, true, bits, dn(dt) + " all equal");
      const auto r = moe::route_topk(dev(zeros({2, 40}, {dt})), 3);
      expect_exact(r.expert_ids, from_vector(std::vector<int32_t>{0, 1, 2, 0, 1, 2}, {2, 3}), "zeros");
    }
    // Half-type logits are routed in f32, as on the CPU.
    check_route(rand_cpu({7, 12}, 24, DType::bf16), 2, true, true, true, bits, "bf16 logits");
  });
}

TEST(CudaMoeRouter, NaNLogitsAndCapacity) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::f64})
      for (int64_t N : {6, 300}) {
        std::vector<double> v(size_t(5 * N), 0.5);
        v[size_t(3 * N + 2)] = NAN;
        v[size_t(4 * N + 1)] = NAN;
        const Tensor l = from_vector(v, {5, N}, {DType::f64}).to(dt);
        EXPECT_HMOE_ERROR(moe::route_topk(dev(l), 2), "logits contain NaN (token 3, expert 2)");
      }
    // Capacity flags (position priority on the top-1 choice) as the CPU sets them.
    for (double cf : {0.5, 1.0, 1.25}) {
      moe::RouterConfig rc;
      rc.capacity_factor = cf;
      const Tensor l = rand_ties({40, 4}, 3, 31, DType::f32);
      const auto rc_cpu = moe::route_topk(l, 2, rc);
      const auto rc_dev = moe::route_topk(dev(l), 2, rc);
      expect_exact(rc_dev.dropped, rc_cpu.dropped, "dropped cf=" + std::to_string(cf));
    }
    moe::RouterConfig all;
    all.capacity_factor = 1.0;  // zero logits: every token's first choice is expert 0
    expect_exact(moe::route_topk(dev(zeros({8, 4})), 1, all).dropped,
                 from_vector(std::vector<int32_t>{0, 0, 1, 1, 1, 1, 1, 1}, {8}).to(DType::b8), "all on expert 0");
    const auto none = moe::route_topk(dev(zeros({0, 4})), 2, all);  // T = 0
    EXPECT_EQ(none.dropped.numel(), 0);
    EXPECT_EQ(none.gates.shape(), (Shape{0, 2}));
  });
}

TEST(CudaMoeRouter, DenseGatesAndCounts) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 40;
    for (DType dt : {DType::f32, DType::f64})
      for (DType it : {DType::i32, DType::i64})
        for (auto [T, N, k] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 5, 3}, {6, 64, 8}, {30, 4, 4}}) {
          const std::string what = dn(dt) + "/" + dn(it) + " T=" + std::to_string(T) + " N=" + std::to_string(N);
          SCOPED_TRACE(what);
          // Repeated ids in a row add up in j order.
          const Tensor ids = rand_ids({T, k}, 0, N, ++seed, it);
          const Tensor g = rand_cpu({T, k}, ++seed, dt, 0, 1);
          const Tensor gc = leaf(g, Device::cpu()), gd = leaf(g, kDev);
          const Tensor oc = moe::dense_gates(gc, ids, N), od = moe::dense_gates(gd, dev(ids), N);
          expect_exact(od, oc, "dense");
          bits.check(what + " dense", od);
          const Tensor w = rand_cpu({T, N}, ++seed, dt);
          sum(oc * w).backward();
          sum(od * dev(w)).backward();
          expect_exact(gd.grad(), gc.grad(), "dgates");
        }
    // Out-of-range ids, reported at the first bad position as on the CPU.
    for (DType it : {DType::i32, DType::i64}) {
      const Tensor g = rand_cpu({3, 2}, 5, DType::f32, 0, 1);
      const Tensor bad = from_vector(std::vector<int64_t>{0, 1, 2, 7, 9, 1}, {3, 2}).to(it);
      EXPECT_HMOE_ERROR(moe::dense_gates(dev(g), dev(bad), 4), "expert id 7 at position 3 is out of range [0, 4)");
      const Tensor neg = from_vector(std::vector<int64_t>{0, 1, -1, 2, 3, 1}, {3, 2}).to(it);
      EXPECT_HMOE_ERROR(moe::dense_gates(dev(g), dev(neg), 4), "expert id -1 at position 2");
    }
    // expert_counts and the load-balancing loss with its gradient, end to end.
    for (DType dt : {DType::f32, DType::f64}) {
      const Tensor l = rand_cpu({50, 8}, 77, dt);
      const Tensor lc = leaf(l, Device::cpu()), ld = leaf(l, kDev);
      const auto rcpu = moe::route_topk(lc, 2), rdev = moe::route_topk(ld, 2);
      expect_exact(moe::expert_counts(rdev), moe::expert_counts(rcpu), dn(dt) + " counts");
      const Tensor lbc = moe::load_balancing_loss(rcpu) + moe::cv_squared_loss(rcpu);
      const Tensor lbd = moe::load_balancing_loss(rdev) + moe::cv_squared_loss(rdev);
      expect_matches(lbd, lbc, -1, dn(dt) + " losses");
      lbc.backward();
      lbd.backward();
      expect_matches(ld.grad(), lc.grad(), -1, dn(dt) + " dlogits of the losses");
    }
  });
}

// Smooth load forward and gradients of clean, noisy and std, device against CPU.
void check_smooth_load(int64_t T, int64_t N, int64_t k, DType dt, uint64_t seed, SameBits& bits) {
  const std::string what = dn(dt) + " T=" + std::to_string(T) + " N=" + std::to_string(N) + " k=" + std::to_string(k);
  SCOPED_TRACE(what);
  const Tensor c = rand_cpu({T, N}, seed, dt, -1, 1);
  const Tensor s = rand_cpu({T, N}, seed + 1, dt, 0.3, 1.0);
  const Tensor z = (c + rand_cpu({T, N}, seed + 2, dt, -1, 1) * s).detach();
  const Tensor cc = leaf(c, Device::cpu()), zc = leaf(z, Device::cpu()), sc = leaf(s, Device::cpu());
  const Tensor cd = leaf(c, kDev), zd = leaf(z, kDev), sd = leaf(s, kDev);
  const Tensor lc = moe::smooth_load(cc, zc, sc, k), ld = moe::smooth_load(cd, zd, sd, k);
  expect_matches(ld, lc, -1, "load");
  bits.check(what + " load", ld);
  const Tensor w = rand_cpu({N}, seed + 3, dt);
  sum(lc * w).backward();
  sum(ld * dev(w)).backward();
  expect_matches(cd.grad(), cc.grad(), -1, "dclean");
  expect_matches(zd.grad(), zc.grad(), -1, "dnoisy");
  expect_matches(sd.grad(), sc.grad(), -1, "dstd");
  bits.check(what + " dnoisy", zd.grad());
}

TEST(CudaMoeRouter, SmoothLoadAndCvLoss) {
  HMOE_REQUIRE_CUDA();
  SameBits bits;
  for_each_schedule([&] {
    uint64_t seed = 60;
    for (DType dt : {DType::f32, DType::f64}) {
      check_smooth_load(1, 4, 1, dt, seed += 4, bits);
      check_smooth_load(50, 8, 2, dt, seed += 4, bits);
      check_smooth_load(600, 6, 3, dt, seed += 4, bits);  // three column-sum chunks
      check_smooth_load(5, 40, 39, dt, seed += 4, bits);
      check_smooth_load(6, 5, 5, dt, seed += 4, bits);  // k = N: load = T, zero gradients
      check_smooth_load(3, 1, 1, dt, seed += 4, bits);  // N = 1
    }
    // cv^2 loss with the smooth load (noisy top-k training), end to end.
    const Tensor c = rand_cpu({20, 6}, 91, DType::f32), s = rand_cpu({20, 6}, 92, DType::f32, 0.3, 1.0);
    const Tensor z = (c + rand_cpu({20, 6}, 93, DType::f32) * s).detach();
    const Tensor cc = leaf(c, Device::cpu()), zc = leaf(z, Device::cpu());
    const Tensor cd = leaf(c, kDev), zd = leaf(z, kDev);
    const Tensor lc = moe::cv_squared_loss(moe::route_topk(zc, 2), s, cc);
    const Tensor ld = moe::cv_squared_loss(moe::route_topk(zd, 2), dev(s), cd);
    expect_matches(ld, lc, -1, "cv loss");
    lc.backward();
    ld.backward();
    expect_matches(cd.grad(), cc.grad(), -1, "dclean of the cv loss");
    expect_matches(zd.grad(), zc.grad(), -1, "dnoisy of the cv loss");
  });
}

}  // namespace
}  // namespace hmoe
