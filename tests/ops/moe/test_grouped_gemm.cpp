// Grouped GEMM and hyper adapter tests: values against per-row loops (gather index,
// scale, bias, empty groups, a single row, tiling), the grouped FFN's fused activation
// steps against the unfused kernels, gradients, errors, determinism; an MoE layer built
// from the ops against a per-token loop.
#include "ops/moe/grouped_gemm.h"

#include "ops/moe/cpu/grouped_gemm_cpu.h"
#include "ops/moe/hyper_adapter.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"
#include "tests/support/moe_ref.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace ref = hmoe::testing::moe_ref;

namespace {
Tensor i64(const std::vector<int64_t>& v) { return from_vector(v, {int64_t(v.size())}); }
// Tiles small enough to split rows, columns and dW blocks of the tests' groups.
ops::cpu::GroupedTiling small_tiles(int64_t max_n, int64_t dw_max_n) {
  ops::cpu::GroupedTiling t;
  t.max_m = 64;
  t.max_n = max_n;
  t.split_flops = 0;
  t.dw_max_k = 16;
  t.dw_max_n = dw_max_n;
  return t;
}
}  // namespace

TEST(MoeGroupedGemm, MatchesLoopsWithIndexScaleBias) {
  const int64_t K = 3, N = 4;
  const std::vector<int64_t> off{0, 2, 2, 7, 7};  // groups 1 and 3 empty
  const std::vector<int64_t> idx{4, 0, -1, 4, 1, 3, 2};  // repeats and a padding row
  Tensor x = rand_t({5, K}, 1, -1, 1, DType::f64, true), w = rand_t({4, K, N}, 2, -1, 1, DType::f64, true);
  Tensor s = rand_t({7}, 3, 0.5, 1.5, DType::f64, true), b = rand_t({4, N}, 4, -1, 1, DType::f64, true);
  Tensor x7 = rand_t({7, K}, 5, -1, 1, DType::f64, true);
  const auto xv = x.to_vector(), wv = w.to_vector(), sv = s.to_vector(), bv = b.to_vector();
  expect_close(moe::grouped_gemm(x7, w, i64(off)), ref::grouped_gemm(x7.to_vector(), wv, off, {}, {}, {}, K, N), 1e-12);
  expect_close(moe::grouped_gemm(x, w, i64(off), i64(idx), s, b), ref::grouped_gemm(xv, wv, off, idx, sv, bv, K, N),
               1e-12);
  expect_close(moe::grouped_gemm(x, w, i64(off), from_vector(std::vector<int32_t>{4, 0, -1, 4, 1, 3, 2}, {7}), s),
               ref::grouped_gemm(xv, wv, off, idx, sv, {}, K, N), 1e-12);
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::grouped_gemm(in[0], in[1], i64(off)); },
                   (std::vector<Tensor>{x7, w}));
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) { return moe::grouped_gemm(in[0], in[1], i64(off), i64(idx), in[2], in[3]); },
      (std::vector<Tensor>{x, w, s, b}));
  sum(moe::grouped_gemm(x, w, i64(off), i64(idx), s, b)).backward();
  EXPECT_EQ(max_abs_diff(w.grad().select(0, 1), zeros({K, N}, {DType::f64})), 0.0);  // empty group: zero dW
  EXPECT_EQ(max_abs_diff(b.grad().select(0, 3), zeros({N}, {DType::f64})), 0.0);
}

TEST(MoeGroupedGemm, EdgeShapes) {
  Tensor w = rand_t({3, 4, 5}, 1, -1, 1, DType::f64, true);
  Tensor x = rand_t({6, 4}, 2, -1, 1, DType::f64, true);
  // Every row in one group; G = 1; M = 0; K = 0.
  expect_close(moe::grouped_gemm(x, w, i64({0, 0, 6, 6})).narrow(0, 0, 6), matmul(x, w.select(0, 1)).detach(), 1e-12);
  expect_close(moe::grouped_gemm(x, w.narrow(0, 2, 1), i64({0, 6})), matmul(x, w.select(0, 2)).detach(), 1e-12);
  Tensor none = rand_t({0, 4}, 3, -1, 1, DType::f64, true);
  Tensor y0 = moe::grouped_gemm(none, w, i64({0, 0, 0, 0}));
  EXPECT_EQ(y0.shape(), (Shape{0, 5}));
  sum(y0).backward();
  EXPECT_EQ(max_abs_diff(w.grad(), zeros({3, 4, 5}, {DType::f64})), 0.0);  // all groups empty: dW = 0
  expect_close(moe::grouped_gemm(zeros({2, 0}, {DType::f64}), zeros({1, 0, 3}, {DType::f64}), i64({0, 2}), Tensor(),
                                 Tensor(), full({1, 3}, 2.0, {DType::f64})),
               std::vector<double>(6, 2.0));
}

// T = 1: one row (M = 1) in one of three groups, read directly or gathered from a larger
// x, with and without a per-row scale and a bias; forward and every gradient against the
// loops, in f64 and in f32 (whose one-row GEMMs take the skinny path), and gradcheck.
TEST(MoeGroupedGemm, SingleRow) {
  const int64_t K = 5, N = 130, G = 3;
  const std::vector<int64_t> off{0, 0, 1, 1};  // the row in group 1, groups 0 and 2 empty
  for (DType dt : {DType::f64, DType::f32})
    for (bool gather : {false, true})
      for (bool scaled : {false, true}) {
        SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " gather " << gather << " scaled " << scaled);
        const int64_t X = gather ? 4 : 1, src = gather ? 2 : 0;
        const std::vector<int64_t> idx = gather ? std::vector<int64_t>{src} : std::vector<int64_t>{};
        Tensor x = rand_t({X, K}, 1, -1, 1, dt, true), w = rand_t({G, K, N}, 2, -1, 1, dt, true);
        Tensor s = rand_t({1}, 3, 0.5, 1.5, dt, true), b = rand_t({G, N}, 4, -1, 1, dt, true);
        const Tensor dy = rand_t({1, N}, 5, -1, 1, dt);
        const auto xv = x.to_vector(), wv = w.to_vector(), sv = s.to_vector(), bv = b.to_vector(), dyv = dy.to_vector();
        const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
        Tensor y = moe::grouped_gemm(x, w, i64(off), gather ? i64(idx) : Tensor(), scaled ? s : Tensor(), b);
        const auto want = ref::grouped_gemm(xv, wv, off, idx, scaled ? sv : std::vector<double>{}, bv, K, N);
        expect_close(y, want, tol);
        sum(y * dy).backward();
        // y = sc * (x[src] W_1 + b_1): dx[src] = sc * W_1 dy, dW_1 = sc * x[src]^T dy,
        // db_1 = sc * dy, ds = dy . (x[src] W_1 + b_1); nothing for other rows and groups.
        const double sc = scaled ? sv[0] : 1.0;
        std::vector<double> dx(size_t(X * K), 0.0), dw(size_t(G * K * N), 0.0), db(size_t(G * N), 0.0);
        double ds = 0;
        for (int64_t n = 0; n < N; ++n) {
          db[size_t(N + n)] = sc * dyv[size_t(n)];
          ds += dyv[size_t(n)] * want[size_t(n)] / sc;
          for (int64_t c = 0; c < K; ++c) {
            dx[size_t(src * K + c)] += sc * wv[size_t((K + c) * N + n)] * dyv[size_t(n)];
            dw[size_t((K + c) * N + n)] = sc * xv[size_t(src * K + c)] * dyv[size_t(n)];
          }
        }
        expect_close(x.grad(), dx, tol);
        expect_close(w.grad(), dw, tol);
        expect_close(b.grad(), db, tol);
        if (scaled) {
          expect_close(s.grad(), {ds}, tol * 10);
        } else {
          EXPECT_FALSE(s.grad().defined());
        }
      }
  Tensor x = rand_t({4, K}, 1, -1, 1, DType::f64, true), w = rand_t({G, K, N}, 2, -1, 1, DType::f64, true);
  Tensor s = rand_t({1}, 3, 0.5, 1.5, DType::f64, true), b = rand_t({G, N}, 4, -1, 1, DType::f64, true);
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) { return moe::grouped_gemm(in[0], in[1], i64(off), i64({2}), in[2], in[3]); },
      (std::vector<Tensor>{x, w, s, b}));
  EXPECT_GRADCHECK([&](const std::vector<Tensor>& in) { return moe::grouped_gemm(in[0], in[1], i64(off)); },
                   (std::vector<Tensor>{x.narrow(0, 1, 1).detach().clone().set_requires_grad(true), w}));
}

TEST(MoeGroupedGemm, TiledF32AndHalfMatchLoops) {
  // Big enough to split rows and columns into several tiles; groups not multiples of tiles.
  const int64_t K = 70, N = 1100;
  const std::vector<int64_t> off{0, 300, 301, 301, 700};
  Tensor x = rand_t({700, K}, 1, -1, 1, DType::f32), w = rand_t({4, K, N}, 2, -1, 1, DType::f32);
  Tensor s = rand_t({700}, 3, 0, 1, DType::f32);
  std::vector<int64_t> idx(700);
  for (int64_t r = 0; r < 700; ++r) idx[size_t(r)] = (r * 37) % 700;
  const auto want = ref::grouped_gemm(x.to_vector(), w.to_vector(), off, idx, s.to_vector(), {}, K, N);
  expect_close(moe::grouped_gemm(x, w, i64(off), i64(idx), s), want, 1e-4);
  // Small tiles: rows and columns split, groups not multiples of the tile.
  const ops::cpu::GroupedTiling small = small_tiles(128, 96);
  Tensor out = empty({700, N});
  moe::GroupedGemmArgs ga{4, 700, K, N, 700, false};
  ops::cpu::grouped_gemm_cpu_tiled(ga, x, w, i64(off), i64(idx), s, Tensor(), out, small);
  expect_close(out, want, 1e-4);
  Tensor dy = rand_t({700, N}, 4, -1, 1, DType::f32), dw = empty({4, K, N}), db = empty({4, N});
  ops::cpu::grouped_gemm_dw_cpu_tiled(ga, x, i64(idx), dy, i64(off), dw, db, small);
  Tensor dw_ref = empty({4, K, N}), db_ref = empty({4, N});
  ops::cpu::grouped_gemm_dw_cpu_tiled(ga, x, i64(idx), dy, i64(off), dw_ref, db_ref, ops::cpu::GroupedTiling{});
  expect_close(dw, dw_ref, 1e-3);
  expect_close(db, db_ref, 0);
  Tensor yb = moe::grouped_gemm(x.to(DType::bf16), w.to(DType::bf16), i64(off), i64(idx), s.to(DType::bf16));
  EXPECT_EQ(yb.dtype(), DType::bf16);
  EXPECT_LT(max_abs_diff(yb.to(DType::f32), from_vector(want, {700, N}, {DType::f64}).to(DType::f32)), 0.3);
}

// The fused steps of the grouped FFN (GroupedGemmArgs::x_act, out_act_grad) give the bits
// of the unfused kernels: the GEMM of the activated x, and the GEMM followed by the
// activation's backward, on hmoe's kernel, on the BLAS path (f32 through OpenBLAS, f64),
// with default and small tiles, a gather with repeats and -1 rows, and an empty group.
TEST(MoeGroupedGemm, FusedActivationStepsGiveTheUnfusedBits) {
  const int64_t K = 70, N = 150, X = 500, M = 700;
  const std::vector<int64_t> off{0, 300, 301, 301, 700};
  std::vector<int64_t> idx(M);
  for (int64_t r = 0; r < M; ++r) idx[size_t(r)] = r % 97 == 5 ? -1 : (r * 37) % X;
  const ops::cpu::GroupedTiling small = small_tiles(64, 48);
  ops::cpu::GroupedTiling blas;
  blas.f32_openblas = true;
  const UnaryOp acts[] = {UnaryOp::gelu_erf, UnaryOp::gelu_tanh, UnaryOp::relu, UnaryOp::silu};
  for (DType dt : {DType::f32, DType::f64})
    for (const ops::cpu::GroupedTiling& tl : {ops::cpu::GroupedTiling{}, small, blas})
      for (int ai = 0; ai < 4; ++ai) {
        const UnaryOp act = acts[ai];
        SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " max_m " << tl.max_m << " blas " << tl.f32_openblas
                                          << " act " << int(act));
        const Tensor x = randn_t({X, K}, 1 + ai, dt) * 2.0, w = randn_t({4, K, N}, 2, dt);
        const Tensor wt = randn_t({4, N, K}, 3, dt), dy = randn_t({M, N}, 4, dt);
        const Tensor x_act = ref::ffn_activation(act, x).detach();
        moe::GroupedGemmArgs plain{4, M, K, N, X, false}, fused = plain;
        fused.x_act = act;
        // Forward and dW with act(x) read in the pack.
        Tensor want = empty({M, N}, {dt}), got = empty({M, N}, {dt});
        ops::cpu::grouped_gemm_cpu_tiled(plain, x_act, w, i64(off), i64(idx), Tensor(), Tensor(), want, tl);
        ops::cpu::grouped_gemm_cpu_tiled(fused, x, w, i64(off), i64(idx), Tensor(), Tensor(), got, tl);
        EXPECT_TRUE(bit_equal(want, got)) << "x_act forward";
        Tensor dw_want = empty({4, K, N}, {dt}), dw_got = empty({4, K, N}, {dt});
        ops::cpu::grouped_gemm_dw_cpu_tiled(plain, x_act, i64(idx), dy, i64(off), dw_want, Tensor(), tl);
        ops::cpu::grouped_gemm_dw_cpu_tiled(fused, x, i64(idx), dy, i64(off), dw_got, Tensor(), tl);
        EXPECT_TRUE(bit_equal(dw_want, dw_got)) << "x_act dW";
        // dh = (dy W^T) * act'(h), written over h, against the product then act's backward.
        const Tensor h = randn_t({M, K}, 5, dt) * 2.0;
        moe::GroupedGemmArgs back{4, M, N, K, M, true}, back_fused = back;
        back_fused.out_act_grad = act;
        Tensor prod = empty({M, K}, {dt});
        ops::cpu::grouped_gemm_cpu_tiled(back, dy, wt, i64(off), Tensor(), Tensor(), Tensor(), prod, tl);
        Tensor hh = h.clone().set_requires_grad(true);
        sum(ref::ffn_activation(act, hh) * prod).backward();
        Tensor dh = h.clone();
        ops::cpu::grouped_gemm_cpu_tiled(back_fused, dy, wt, i64(off), Tensor(), Tensor(), Tensor(), dh, tl);
        EXPECT_TRUE(bit_equal(hh.grad(), dh)) << "out_act_grad";
      }
  // Misuse: a non-FFN activation, or out_act_grad with a bias.
  moe::GroupedGemmArgs a{1, 2, 3, 4, 2, false};
  a.x_act = UnaryOp::exp;
  EXPECT_HMOE_ERROR(ops::cpu::grouped_gemm_cpu_tiled(a, zeros({2, 3}), zeros({1, 3, 4}), i64({0, 2}), Tensor(),
                                                     Tensor(), Tensor(), empty({2, 4}), {}),
                    "x_act must be");
  a.x_act.reset();
  a.out_act_grad = UnaryOp::relu;
  EXPECT_HMOE_ERROR(ops::cpu::grouped_gemm_cpu_tiled(a, zeros({2, 3}), zeros({1, 3, 4}), i64({0, 2}), Tensor(),
                                                     Tensor(), zeros({1, 4}), empty({2, 4}), {}),
                    "no scale or bias");
}

TEST(MoeGroupedGemm, Errors) {
  Tensor x = zeros({7, 3}), w = zeros({4, 3, 2});
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 6, 6})), "from 0 to M");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 3, 2, 7, 7})), "must not decrease");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({1, 2, 2, 7, 7})), "offsets[0]");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 7, 7})), "[G + 1 = 5]");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, zeros({4, 2, 2}), i64({0, 2, 2, 7, 7})), "[G, K, N]");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, zeros({4, 3, 2}, {DType::f64}), i64({0, 2, 2, 7, 7})), "one dtype");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 3, 3}), i64({0, 1, 7})), "out of range");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 3, 3}), i64({0, 1})), "index must be");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 7, 7}), Tensor(), zeros({6})), "scale must be");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 7, 7}), Tensor(), Tensor(), zeros({4, 3})), "bias must be");
}

TEST(MoeGroupedGemm, DeterministicAcrossThreadCounts) {
  const int64_t M = 1500, K = 96, N = 700, G = 5;
  Tensor x = randn_t({1000, K}, 1, DType::f32, true), w = randn_t({G, K, N}, 2, DType::f32, true);
  Tensor s = rand_t({M}, 3, 0, 1, DType::f32, true), b = randn_t({G, N}, 4, DType::f32, true);
  Tensor off = i64({0, 600, 600, 1100, 1450, 1500});
  std::vector<int64_t> idx(static_cast<size_t>(M));
  for (int64_t r = 0; r < M; ++r) idx[size_t(r)] = (r * 7) % 1000;
  auto run = [&] {
    Tensor y = moe::grouped_gemm(x, w, off, i64(idx), s, b);
    sum(y * y).backward();
    std::vector<double> out = y.to_vector();
    for (Tensor* t : {&x, &w, &s, &b}) {
      const auto g = t->grad().to_vector();
      out.insert(out.end(), g.begin(), g.end());
      t->zero_grad();
    }
    return out;
  };
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  EXPECT_EQ(a, run());
}

TEST(MoeHyperAdapter, MatchesPerTokenLoopWithGradients) {
  Tensor ids = from_vector(std::vector<int32_t>{0, 2, 2, 0, 1, 2, 3, 0, 1, 2}, {5, 2});
  auto pat = moe::selection_patterns(ids, 4);
  const int64_t T = 5, d = 3, r = 2, P = 4;  // P larger than the 3 patterns present
  Tensor x = rand_t({T, d}, 1, -1, 1, DType::f64, true);
  Tensor wd = rand_t({P, d, r}, 2, -1, 1, DType::f64, true), bd = rand_t({P, r}, 3, -1, 1, DType::f64, true);
  Tensor wu = rand_t({P, r, d}, 4, -1, 1, DType::f64, true), bu = rand_t({P, d}, 5, -1, 1, DType::f64, true);
  Tensor y = moe::hyper_adapter(x, pat.token_pattern, wd, bd, wu, bu);
  const auto tp = ref::ints(pat.token_pattern);
  const auto xv = x.to_vector(), wdv = wd.to_vector(), bdv = bd.to_vector(), wuv = wu.to_vector(), buv = bu.to_vector();
  std::vector<double> want;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t p = tp[size_t(t)];
    std::vector<double> h(static_cast<size_t>(r));
    for (int64_t j = 0; j < r; ++j) {
      double a = bdv[size_t(p * r + j)];
      for (int64_t c = 0; c < d; ++c) a += xv[size_t(t * d + c)] * wdv[size_t((p * d + c) * r + j)];
      h[size_t(j)] = std::max(a, 0.0);
    }
    for (int64_t c = 0; c < d; ++c) {
      double a = buv[size_t(p * d + c)];
      for (int64_t j = 0; j < r; ++j) a += h[size_t(j)] * wuv[size_t((p * r + j) * d + c)];
      want.push_back(a);
    }
  }
  expect_close(y, want, 1e-12);
  EXPECT_GRADCHECK(
      [&](const std::vector<Tensor>& in) {
        return moe::hyper_adapter(in[0], pat.token_pattern, in[1], in[2], in[3], in[4]);
      },
      (std::vector<Tensor>{x, wd, bd, wu, bu}));
  sum(moe::hyper_adapter(x, pat.token_pattern, wd, bd, wu, bu)).backward();
  for (Tensor* t : {&wd, &bd, &wu, &bu})  // pattern 3 has no tokens: zero gradient
    EXPECT_EQ(max_abs_diff(t->grad().select(0, 3), zeros(t->grad().select(0, 3).shape(), {DType::f64})), 0.0);
  // T = 1 and one pattern.
  Tensor y1 = moe::hyper_adapter(x.narrow(0, 0, 1), from_vector(std::vector<int32_t>{0}, {1}), wd, bd, wu, bu);
  expect_close(y1, std::vector<double>(want.begin(), want.begin() + d), 1e-12);
  EXPECT_HMOE_ERROR(moe::hyper_adapter(x, pat.token_pattern, wd, bd, wu.narrow(2, 0, 2), bu), "do not fit");
  EXPECT_HMOE_ERROR(moe::hyper_adapter(x, from_vector(std::vector<int32_t>{0, 1, 4, 0, 0}, {5}), wd, bd, wu, bu),
                    "out of range");
  EXPECT_HMOE_ERROR(moe::hyper_adapter(x, pat.token_pattern.narrow(0, 0, 4), wd, bd, wu, bu), "token_pattern");
}

TEST(MoeLayer, OpsComposeToThePerTokenFormula) {
  // y_t = sum_j g_tj * (relu(x_t W1[e] + b1[e]) W2[e]) with e = ids[t, j], k = 2.
  const int64_t T = 11, d = 4, f = 5, N = 3, k = 2;
  Tensor x = rand_t({T, d}, 1, -1, 1, DType::f64, true);
  Tensor logits = rand_t({T, N}, 2, -2, 2, DType::f64, true);
  Tensor w1 = rand_t({N, d, f}, 3, -1, 1, DType::f64, true), b1 = rand_t({N, f}, 4, -1, 1, DType::f64, true);
  Tensor w2 = rand_t({N, f, d}, 5, -1, 1, DType::f64, true);
  auto layer = [&](const std::vector<Tensor>& in) {
    auto r = moe::route_topk(in[1], k);
    auto plan = moe::make_plan(r.expert_ids, N);
    // The gather is fused into the first GEMM: rows read x[perm / k] directly.
    Tensor tok = (plan.perm.to(DType::f64) / double(k)).to(DType::i64);
    Tensor h = relu(moe::grouped_gemm(in[0], in[2], plan.offsets, tok, Tensor(), in[3]));
    return moe::combine(moe::grouped_gemm(h, in[4], plan.offsets), r.gates, plan);
  };
  Tensor y = layer({x, logits, w1, b1, w2});
  auto rt = ref::route(logits.to_vector(), T, N, k, true);
  const auto xv = x.to_vector(), w1v = w1.to_vector(), b1v = b1.to_vector(), w2v = w2.to_vector();
  std::vector<double> want(static_cast<size_t>(T * d), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = rt.ids[size_t(t * k + j)];
      for (int64_t c = 0; c < d; ++c) {
        double o = 0;
        for (int64_t h = 0; h < f; ++h) {
          double a = b1v[size_t(e * f + h)];
          for (int64_t i = 0; i < d; ++i) a += xv[size_t(t * d + i)] * w1v[size_t((e * d + i) * f + h)];
          o += std::max(a, 0.0) * w2v[size_t((e * f + h) * d + c)];
        }
        want[size_t(t * d + c)] += rt.gates[size_t(t * k + j)] * o;
      }
    }
  expect_close(y, want, 1e-12);
  EXPECT_GRADCHECK(layer, (std::vector<Tensor>{x, logits, w1, b1, w2}));
}
