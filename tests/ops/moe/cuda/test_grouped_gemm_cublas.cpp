// The grouped GEMM family's cuBLAS backend (moe::GroupedGemmBackend::cublas: cuBLAS's
// grouped GEMM with the gather, activation steps, bias and scale as passes around it)
// against the CPU in f64: the op forward and every gradient (dx, dw, dscale, dbias) over
// empty and uneven groups, with and without a gather; the FFN's fused steps (x_act
// forward and dW, dh over h) against hmoe's kernels; the grouped FFN end to end; auto,
// which picks hmoe's kernels under the emulator (the same bits); f64, which cuBLAS's
// grouped GEMM does not take; the backend names.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "hmoe.h"
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/moe_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/moe_ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using moe::GroupedGemmArgs;
using moe::GroupedGemmBackend;
using namespace testing;
namespace moe_ref = testing::moe_ref;

const Device kCpu = Device::cpu();

Tensor i64(const std::vector<int64_t>& v) { return from_vector(v, {int64_t(v.size())}); }
DType aux(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

// A fresh leaf on d in dtype dt with t's values.
Tensor leaf_on(const Tensor& t, Device d, DType dt) { return leaf(t.to(dt), d); }
using moe_ref::gather_index;

struct Problem {
  std::string name;
  std::vector<int64_t> off;
  int64_t k, n, x_rows;  // x_rows > 0: a gather index into x [x_rows, k]
  bool scale, bias;
};

// grouped_gemm with backend cublas on the device against the CPU op in f64.
void check_op(const Problem& p, DType dt, uint64_t seed) {
  SCOPED_TRACE(p.name + " " + std::string(dtype_name(dt)));
  const int64_t G = int64_t(p.off.size()) - 1, M = p.off.back();
  const Tensor x = rand_cpu({p.x_rows > 0 ? p.x_rows : M, p.k}, seed, dt);
  const Tensor w = rand_cpu({G, p.k, p.n}, seed + 1, dt), s = rand_cpu({M}, seed + 2, dt, 0.5, 1.5);
  const Tensor b = rand_cpu({G, p.n}, seed + 3, dt), g = rand_cpu({M, p.n}, seed + 4, dt);
  const Tensor idx = p.x_rows > 0 ? i64(gather_index(M, p.x_rows, seed)) : Tensor();
  std::vector<Tensor> res[2];
  for (int i = 0; i < 2; ++i) {
    const Device d = i == 0 ? kDev : kCpu;
    const DType t = i == 0 ? dt : DType::f64;
    Tensor xl = leaf_on(x, d, t), wl = leaf_on(w, d, t);
    Tensor sl = p.scale ? leaf_on(s, d, t) : Tensor(), bl = p.bias ? leaf_on(b, d, t) : Tensor();
    Tensor y =
        moe::grouped_gemm(xl, wl, i64(p.off), idx.defined() ? idx.to(d) : idx, sl, bl, GroupedGemmBackend::cublas);
    y.backward(g.to(t).to(d));
    res[i] = {y, xl.grad(), wl.grad()};
    if (p.scale) res[i].push_back(sl.grad());
    if (p.bias) res[i].push_back(bl.grad());
  }
  const char* names[] = {"forward", "dx", "dw", "dscale or dbias", "dbias"};
  for (size_t i = 0; i < res[0].size(); ++i) expect_matches(res[0][i], res[1][i], -1, names[i]);
}

TEST(CudaMoeGroupedGemmCublas, OpMatchesCpu) {
  HMOE_REQUIRE_CUDA();
  const std::vector<Problem> ps = {
      {"empty first/middle/last, gather with -1, scale, bias", {0, 0, 37, 37, 100, 100}, 33, 17, 60, true, true},
      {"uneven groups, no gather, bias", {0, 3, 67, 132, 133, 133, 263}, 24, 40, 0, false, true},
      {"one row, G = 1, gather", {0, 1}, 7, 5, 4, false, false},
      {"all rows in one group, scale", {0, 0, 90, 90}, 16, 32, 0, true, false},
  };
  uint64_t seed = 100;
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (const Problem& p : ps) check_op(p, dt, seed += 10);
}

// The grouped FFN's fused steps through cuBLAS against hmoe's kernels on the same inputs:
// act(x) W (with a gather), dW of act(x), and dh = (dy W^T) * act'(h) written over h.
TEST(CudaMoeGroupedGemmCublas, FusedActivationStepsMatchHmoe) {
  HMOE_REQUIRE_CUDA();
  const std::vector<int64_t> off{0, 40, 40, 70, 110};
  const int64_t G = 4, M = 110, XR = 80, k = 33, n = 20;
  uint64_t seed = 300;
  for (DType dt : {DType::f32, DType::bf16})
    for (UnaryOp act : {UnaryOp::gelu_erf, UnaryOp::silu}) {
      SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " act " << int(act));
      seed += 10;
      auto input = [&](const Shape& shape, uint64_t i) { return rand_cpu(shape, seed + i, dt).to(kDev); };
      const Tensor x = input({XR, k}, 0), w = input({G, k, n}, 1), dy = input({M, n}, 2), h = input({M, k}, 3);
      const Tensor idx = i64(gather_index(M, XR, seed)).to(kDev);
      auto both = [&](GroupedGemmArgs a, const std::function<void(const GroupedGemmArgs&, const Tensor&)>& run,
                      const Tensor& start, const char* what) {
        Tensor ours = start.clone(), theirs = start.clone();
        run(a, ours);
        a.backend = GroupedGemmBackend::cublas;
        run(a, theirs);
        expect_matches(theirs, ours.to(kCpu).to(DType::f64), -1, what);
      };
      GroupedGemmArgs fwd{G, M, k, n, XR, false};
      fwd.x_act = act;
      both(
          fwd,
          [&](const GroupedGemmArgs& a, const Tensor& o) {
            moe::grouped_gemm_stub.get(kDev)(a, x, w, i64(off), idx, Tensor(), Tensor(), o);
          },
          Tensor::empty({M, n}, {dt, kDev}), "x_act forward");
      both(
          fwd,
          [&](const GroupedGemmArgs& a, const Tensor& o) {
            moe::grouped_gemm_dw_stub.get(kDev)(a, x, idx, dy, i64(off), o, Tensor());
          },
          Tensor::empty({G, k, n}, {dt, kDev}), "x_act dW");
      GroupedGemmArgs back{G, M, n, k, M, true};
      back.out_act_grad = act;
      both(
          back,
          [&](const GroupedGemmArgs& a, const Tensor& o) {
            moe::grouped_gemm_stub.get(kDev)(a, dy, w, i64(off), Tensor(), Tensor(), Tensor(), o);
          },
          h, "dh over h");
    }
}

// The grouped FFN with every GEMM on cuBLAS, against the CPU in f64; auto gives hmoe's
// bits under the emulator; forced cuBLAS refuses f64, which auto runs on hmoe's kernels.
TEST(CudaMoeGroupedGemmCublas, GroupedFfnAndAuto) {
  HMOE_REQUIRE_CUDA();
  const std::vector<int64_t> off{0, 0, 37, 38, 100, 170};
  const int64_t G = 5, M = 170, XR = 90, d = 24, f = 72, e = 20;
  for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    const Tensor x = rand_cpu({XR, d}, 1, dt), w1 = rand_cpu({G, d, f}, 2, dt, -0.5, 0.5);
    const Tensor b1 = rand_cpu({G, f}, 3, dt), w2 = rand_cpu({G, f, e}, 4, dt, -0.5, 0.5);
    const Tensor b2 = rand_cpu({G, e}, 5, dt), g = rand_cpu({M, e}, 6, dt);
    const Tensor idx = i64(gather_index(M, XR, 3));
    auto run = [&](Device dv, DType t, GroupedGemmBackend backend, bool recompute) {
      std::vector<Tensor> in{leaf_on(x, dv, t), leaf_on(w1, dv, t), leaf_on(b1, dv, aux(t)), leaf_on(w2, dv, t),
                             leaf_on(b2, dv, aux(t))};
      Tensor y = moe::grouped_ffn(in[0], in[1], in[2], in[3], in[4], i64(off), idx.to(dv), UnaryOp::gelu_erf, 0,
                                  recompute, backend);
      y.backward(g.to(t).to(dv));
      std::vector<Tensor> out{y};
      for (const Tensor& l : in) out.push_back(l.grad());
      return out;
    };
    const char* names[] = {"forward", "dx", "dw1", "db1", "dw2", "db2"};
    const std::vector<Tensor> hm = run(kDev, dt, GroupedGemmBackend::hmoe, false);
    const std::vector<Tensor> au = run(kDev, dt, GroupedGemmBackend::auto_, false);
    for (size_t i = 0; i < hm.size(); ++i) EXPECT_TRUE(bit_equal(au[i], hm[i])) << "auto " << names[i];
    if (dt == DType::f64) {
      EXPECT_HMOE_ERROR(run(kDev, dt, GroupedGemmBackend::cublas, false), "cublas backend");
      continue;
    }
    const std::vector<Tensor> want = run(kCpu, DType::f64, GroupedGemmBackend::hmoe, false);
    for (bool recompute : {false, true}) {
      const std::vector<Tensor> cb = run(kDev, dt, GroupedGemmBackend::cublas, recompute);
      for (size_t i = 0; i < cb.size(); ++i)
        expect_matches(cb[i], want[i], tolerance(dt), std::string(names[i]) + (recompute ? " recompute" : ""));
    }
  }
}

TEST(CudaMoeGroupedGemmCublas, BackendNames) {
  for (GroupedGemmBackend b : {GroupedGemmBackend::hmoe, GroupedGemmBackend::cublas, GroupedGemmBackend::auto_})
    EXPECT_EQ(moe::parse_grouped_gemm_backend(moe::name(b)), b);
  EXPECT_HMOE_ERROR(moe::parse_grouped_gemm_backend("cutlass"), "hmoe, cublas, auto");
}

}  // namespace
}  // namespace hmoe
