// hmoe's packed f32 GEMM (ops/cpu/gemm_kernel.h): every micro-kernel this CPU runs
// against the documented fma chain (bit for bit) and a double-precision loop, over odd
// and tiled shapes, transposes, alpha/beta, padded leading dims, gathered rows and any
// cache blocking, the skinny paths (no packing of the long operand) against the packed
// loop; a map fused into the A pack and an epilogue (in place over C too) against the
// unfused product and activation; the gemm op and the grouped GEMM giving the same bits
// for 1 and 2 threads.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ops/cpu/activation.h"
#include "ops/cpu/gemm_kernel.h"
#include "ops/moe/grouped_gemm.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;
using namespace hmoe::ops::cpu;

namespace {

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  float alpha, beta;
  int64_t pad = 0;      // extra elements at the end of every row (lda, ldb, ldc)
  bool gather = false;  // read A's stored rows through a shuffled index with -1 rows
};

struct Problem {
  Case cs;
  int64_t lda, ldb, ldc, stored_a;
  std::vector<float> a, b, c0;
  std::vector<int64_t> rows;

  explicit Problem(const Case& c) : cs(c) {
    std::mt19937 gen(uint32_t(c.m * 7919 + c.n * 104729 + c.k * 13 + c.ta * 2 + c.tb));
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    const int64_t ra = c.ta ? c.k : c.m, ca = c.ta ? c.m : c.k;
    const int64_t rb = c.tb ? c.n : c.k, cb = c.tb ? c.k : c.n;
    lda = ca + c.pad;
    ldb = cb + c.pad;
    ldc = c.n + c.pad;
    stored_a = c.gather ? ra + 3 : ra;  // the gather reads from a larger matrix
    a.resize(size_t(stored_a * lda));
    b.resize(size_t(rb * ldb));
    c0.resize(size_t(c.m * ldc));
    for (auto& v : a) v = u(gen);
    for (auto& v : b) v = u(gen);
    for (auto& v : c0) v = u(gen);
    if (c.gather) {
      rows.resize(size_t(ra));
      for (int64_t r = 0; r < ra; ++r) rows[size_t(r)] = (r * 5 + 2) % stored_a;
      for (int64_t r = 3; r < ra; r += 7) rows[size_t(r)] = -1;
    }
  }
  float A(int64_t i, int64_t p) const {
    int64_t r = cs.ta ? p : i;
    const int64_t col = cs.ta ? i : p;
    if (cs.gather) r = rows[size_t(r)];
    return r < 0 ? 0.f : a[size_t(r * lda + col)];
  }
  float B(int64_t p, int64_t j) const { return cs.tb ? b[size_t(j * ldb + p)] : b[size_t(p * ldb + j)]; }
  GemmA ga() const { return GemmA{a.data(), lda, cs.ta, cs.gather ? rows.data() : nullptr}; }
  GemmB gb() const { return GemmB{b.data(), ldb, cs.tb}; }

  // The contract of sgemm: one fused chain per element, k in order.
  std::vector<float> chain() const {
    std::vector<float> c = c0;
    for (int64_t i = 0; i < cs.m; ++i)
      for (int64_t j = 0; j < cs.n; ++j) {
        float acc = cs.beta == 0.f ? 0.f : cs.beta * c[size_t(i * ldc + j)];
        for (int64_t p = 0; p < cs.k; ++p) acc = std::fma(cs.alpha * A(i, p), B(p, j), acc);
        c[size_t(i * ldc + j)] = acc;
      }
    return c;
  }
  // The same product in double, with a rounding bound per element.
  void check_double(const std::vector<float>& got) const {
    for (int64_t i = 0; i < cs.m; ++i)
      for (int64_t j = 0; j < cs.n; ++j) {
        double s = 0, mag = 0;
        for (int64_t p = 0; p < cs.k; ++p) {
          s += double(A(i, p)) * B(p, j);
          mag += std::abs(double(A(i, p)) * B(p, j));
        }
        const double cv = c0[size_t(i * ldc + j)];
        const double want = double(cs.alpha) * s + (cs.beta == 0.f ? 0.0 : double(cs.beta) * cv);
        const double tol = 2e-7 * double(cs.k + 2) * (std::abs(cs.alpha) * mag + std::abs(cs.beta * cv)) + 1e-30;
        ASSERT_NEAR(got[size_t(i * ldc + j)], want, tol) << "at (" << i << ", " << j << ")";
      }
  }
};

std::vector<Case> cases() {
  std::vector<Case> v{
      {1, 1, 1, false, false, 1.f, 0.f},
      {13, 37, 71, false, false, 1.f, 0.f},
      {13, 37, 71, true, false, 0.5f, 0.f},
      {13, 37, 71, false, true, 1.f, 1.f},
      {13, 37, 71, true, true, -2.f, 0.25f},
      {14, 32, 5, false, false, 1.f, 0.f},    // exactly one AVX-512 tile
      {29, 65, 300, false, false, 1.f, 1.f},  // k over one cache block
      {6, 16, 1, false, true, 1.f, 0.f},
      {100, 3, 17, true, false, 1.f, -1.f},
      {3, 100, 17, false, true, 1.5f, 2.f},
      {31, 47, 600, true, true, 1.f, 0.5f, 5},
      {50, 70, 90, false, false, 1.f, 0.f, 3, true},  // gathered rows of A
      {50, 70, 300, true, false, 1.f, 0.f, 1, true},  // gathered rows of A^T (the dW shape)
      {256, 1024, 256, false, false, 1.f, 0.f},
      // Skinny products (m or n <= MR): B streamed in place or packed a micro-panel at a time.
      {8, 300, 700, false, false, 1.f, 0.f},      // small m, B read in place, one long chain
      {8, 300, 700, false, true, 0.5f, 1.f, 2},   // small m, B transposed, several k blocks
      {5, 37, 260, true, false, 1.f, -0.5f},      // small m, A^T, an edge column block
      {3, 90, 40, false, false, 1.f, 0.f, 0, true},  // small m with gathered rows
      {700, 8, 300, false, true, 1.f, 0.f},       // small n (a router): C^T on the small-m loop
      {700, 5, 300, true, false, 1.f, 0.75f, 1},  // small n with beta and padding
      {700, 8, 300, false, false, 2.f, 0.f},      // small n, alpha != 1: the packed loop
      {40, 6, 70, false, false, 1.f, 0.f, 0, true},  // small n with a gather: the packed loop
      // A few A panels (m up to 8 MR) against B read in place, every panel per column block.
      {40, 300, 700, false, false, 1.f, 0.f},        // 3 panels at AVX-512, the last one partial
      {112, 70, 90, false, false, 0.5f, 1.f},        // 8 full AVX-512 panels, beta, an edge column block
      {60, 45, 100, true, false, 1.f, 0.25f, 1},     // A^T, beta
      {70, 96, 50, false, false, 1.f, 0.f, 0, true},  // gathered rows
      {60, 64, 50, false, true, 1.f, 0.f},           // B transposed: the packed loop
      // One row (a decode step): the one-row kernels.
      {1, 300, 700, false, true, 0.5f, 1.f, 2},   // B transposed (a linear layer), several k blocks
      {1, 90, 40, false, false, 1.f, 0.f},        // B read in place
      {1, 37, 260, true, false, 1.f, -0.5f, 1},   // A^T, an edge column block, beta
      {1, 90, 40, false, false, 1.f, 0.f, 0, true},  // one gathered row
      {700, 1, 300, false, true, 1.f, 0.f},       // one column: C^T on the one-row kernel
  };
  return v;
}

std::vector<GemmIsa> isas() {
  std::vector<GemmIsa> v;
  for (GemmIsa isa : {GemmIsa::portable, GemmIsa::avx2, GemmIsa::avx512})
    if (gemm_isa_supported(isa)) v.push_back(isa);
  return v;
}

}  // namespace

TEST(GemmKernel, EveryIsaMatchesTheFmaChainAndDouble) {
  for (const Case& cs : cases()) {
    const Problem pr(cs);
    const std::vector<float> want = pr.chain();
    for (GemmIsa isa : isas()) {
      SCOPED_TRACE(::testing::Message() << gemm_isa_name(isa) << " " << cs.m << "x" << cs.n << "x" << cs.k << " ta "
                                        << cs.ta << " tb " << cs.tb << " beta " << cs.beta << " gather " << cs.gather);
      std::vector<float> got = pr.c0;
      sgemm(cs.m, cs.n, cs.k, cs.alpha, pr.ga(), pr.gb(), cs.beta, got.data(), pr.ldc, isa);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
      // Padding between rows of C is never written.
      for (int64_t i = 0; i < cs.m; ++i)
        for (int64_t j = cs.n; j < pr.ldc; ++j) EXPECT_EQ(got[size_t(i * pr.ldc + j)], pr.c0[size_t(i * pr.ldc + j)]);
      if (cs.m * cs.n * cs.k <= 1 << 20) pr.check_double(got);
    }
  }
}

TEST(GemmKernel, BlockingDoesNotChangeBits) {
  const Problem pr({45, 77, 333, false, true, 1.f, 0.5f, 2});
  const std::vector<float> want = pr.chain();
  for (GemmIsa isa : isas())
    for (const GemmBlocking& bl :
         {GemmBlocking{1, 1, 1}, GemmBlocking{20, 7, 40}, GemmBlocking{1000, 1000, 1000}, GemmBlocking{16, 64, 48}}) {
      std::vector<float> got = pr.c0;
      sgemm(45, 77, 333, 1.f, pr.ga(), pr.gb(), 0.5f, got.data(), pr.ldc, isa, bl);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << gemm_isa_name(isa) << " mc " << bl.mc << " kc " << bl.kc << " nc " << bl.nc;
    }
}

TEST(GemmKernel, SkinnyPathsGiveThePackedLoopsBits) {
  GemmBlocking packed;
  packed.small_off = true;
  for (const Case& cs : cases()) {
    if (cs.m > 128 && cs.n > 16) continue;  // neither skinny path
    const Problem pr(cs);
    for (GemmIsa isa : isas()) {
      std::vector<float> got = pr.c0, want = pr.c0;
      sgemm(cs.m, cs.n, cs.k, cs.alpha, pr.ga(), pr.gb(), cs.beta, got.data(), pr.ldc, isa);
      sgemm(cs.m, cs.n, cs.k, cs.alpha, pr.ga(), pr.gb(), cs.beta, want.data(), pr.ldc, isa, packed);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << gemm_isa_name(isa) << " " << cs.m << "x" << cs.n << "x" << cs.k;
    }
  }
}

// A map on A (the FFN's activation, fused into the pack) equals the product of the
// activated A; an epilogue (acc * act'(aux)) equals the product followed by the gradient
// rows, also with aux = C itself (dh written over h) and with k beyond one cache block
// (the epilogue's single k block), on every ISA, with gathered and transposed A.
TEST(GemmKernel, FusedMapAndEpilogueGiveTheUnfusedBits) {
  const UnaryOp acts[] = {UnaryOp::gelu_erf, UnaryOp::silu, UnaryOp::relu, UnaryOp::gelu_tanh};
  for (const Case& base : cases()) {
    if (base.alpha != 1.f) continue;  // a map needs alpha = 1
    Case cs = base;
    cs.beta = 0.f;  // an epilogue needs beta = 0
    const Problem pr(cs);
    const UnaryOp act = acts[size_t(cs.m + cs.k) % 4];
    const auto rows = activation_rows<float>(act);
    const auto grad_rows = activation_grad_rows<float>(act);
    // A, activated, as a plain row-major m x k matrix (gather and transpose resolved).
    std::vector<float> a_act(size_t(cs.m * cs.k));
    for (int64_t i = 0; i < cs.m; ++i)
      for (int64_t p = 0; p < cs.k; ++p) a_act[size_t(i * cs.k + p)] = pr.A(i, p);
    rows(a_act.data(), a_act.data(), int64_t(a_act.size()));
    std::vector<float> h(size_t(cs.m * pr.ldc));  // the epilogue's aux: a pre-activation
    std::mt19937 gen(7);
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    for (auto& v : h) v = u(gen);
    for (GemmIsa isa : isas()) {
      SCOPED_TRACE(::testing::Message() << gemm_isa_name(isa) << " " << cs.m << "x" << cs.n << "x" << cs.k << " ta "
                                        << cs.ta << " tb " << cs.tb << " gather " << cs.gather << " act " << int(act));
      std::vector<float> want = pr.c0, got = pr.c0;
      sgemm(cs.m, cs.n, cs.k, 1.f, GemmA{a_act.data(), cs.k}, pr.gb(), 0.f, want.data(), pr.ldc, isa);
      GemmA mapped = pr.ga();
      mapped.map = rows;
      sgemm(cs.m, cs.n, cs.k, 1.f, mapped, pr.gb(), 0.f, got.data(), pr.ldc, isa);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0) << "map";
      // The epilogue: separate aux, then aux = C (C holds h on entry).
      std::vector<float> plain = pr.c0;
      sgemm(cs.m, cs.n, cs.k, 1.f, pr.ga(), pr.gb(), 0.f, plain.data(), pr.ldc, isa);
      std::vector<float> dh = plain;
      for (int64_t i = 0; i < cs.m; ++i)
        grad_rows(h.data() + i * pr.ldc, plain.data() + i * pr.ldc, dh.data() + i * pr.ldc, cs.n);
      std::vector<float> sep = plain, inplace = h;
      sgemm(cs.m, cs.n, cs.k, 1.f, pr.ga(), pr.gb(), 0.f, sep.data(), pr.ldc, isa, {},
            GemmEpilogue{grad_rows, h.data(), pr.ldc});
      sgemm(cs.m, cs.n, cs.k, 1.f, pr.ga(), pr.gb(), 0.f, inplace.data(), pr.ldc, isa, {},
            GemmEpilogue{grad_rows, inplace.data(), pr.ldc});
      for (int64_t i = 0; i < cs.m; ++i) {
        EXPECT_EQ(std::memcmp(sep.data() + i * pr.ldc, dh.data() + i * pr.ldc, size_t(cs.n) * sizeof(float)), 0)
            << "epilogue, row " << i;
        EXPECT_EQ(std::memcmp(inplace.data() + i * pr.ldc, dh.data() + i * pr.ldc, size_t(cs.n) * sizeof(float)), 0)
            << "epilogue in place, row " << i;
      }
    }
  }
  // Misuse is refused: a map with alpha != 1, an epilogue with beta != 0 or no aux.
  std::vector<float> a{1.f}, b{1.f}, c{0.f};
  GemmA mapped{a.data(), 1};
  mapped.map = activation_rows<float>(UnaryOp::relu);
  EXPECT_THROW(sgemm(1, 1, 1, 2.f, mapped, GemmB{b.data(), 1}, 0.f, c.data(), 1), Error);
  const GemmEpilogue epi{activation_grad_rows<float>(UnaryOp::relu), c.data(), 1};
  EXPECT_THROW(sgemm(1, 1, 1, 1.f, GemmA{a.data(), 1}, GemmB{b.data(), 1}, 1.f, c.data(), 1, gemm_best_isa(), {}, epi),
               Error);
  EXPECT_THROW(sgemm(1, 1, 1, 1.f, GemmA{a.data(), 1}, GemmB{b.data(), 1}, 0.f, c.data(), 1, gemm_best_isa(), {},
                     GemmEpilogue{epi.fn, nullptr, 1}),
               Error);
}

TEST(GemmKernel, EmptyAndSpecialValues) {
  // k = 0: C = beta C, and beta = 0 clears NaN; m = 0 or n = 0 touch nothing.
  std::vector<float> c{1.f, NAN, 3.f, 4.f};
  const float one = 1.f;
  sgemm(2, 2, 0, 1.f, GemmA{&one, 1}, GemmB{&one, 2}, 2.f, c.data(), 2);
  EXPECT_EQ(c[0], 2.f);
  EXPECT_TRUE(std::isnan(c[1]));
  sgemm(2, 2, 0, 1.f, GemmA{&one, 1}, GemmB{&one, 2}, 0.f, c.data(), 2);
  for (float v : c) EXPECT_EQ(v, 0.f);
  std::vector<float> a{1.f, 2.f}, b{3.f, 4.f}, d{NAN, NAN};
  sgemm(1, 2, 1, 1.f, GemmA{a.data(), 1}, GemmB{b.data(), 2}, 0.f, d.data(), 2);  // beta 0: C not read
  EXPECT_EQ(d[0], 3.f);
  EXPECT_EQ(d[1], 4.f);
  sgemm(0, 2, 1, 1.f, GemmA{a.data(), 1}, GemmB{b.data(), 2}, 0.f, nullptr, 2);
  // Infinity in A reaches only its own row, however the tile is padded.
  std::vector<float> a3{INFINITY, 1.f, 1.f}, b3(40, 1.f), c3(3 * 40, 0.f);
  sgemm(3, 40, 1, 1.f, GemmA{a3.data(), 1}, GemmB{b3.data(), 40}, 0.f, c3.data(), 40);
  for (int j = 0; j < 40; ++j) {
    EXPECT_TRUE(std::isinf(c3[size_t(j)]));
    EXPECT_EQ(c3[size_t(40 + j)], 1.f);
    EXPECT_EQ(c3[size_t(80 + j)], 1.f);
  }
}

TEST(GemmKernel, GemmOpSameBitsFor1And2Threads) {
  ThreadScope restore(num_threads());
  // Big enough for a grid of several tiles; transposes and beta through GemmArgs.
  const Tensor a = rand_t({300, 513}, 1, -1, 1, DType::f32), b = rand_t({700, 300}, 2, -1, 1, DType::f32);
  const Tensor c0 = rand_t({513, 700}, 3, -1, 1, DType::f32);
  GemmArgs g;
  g.trans_a = true;
  g.trans_b = true;
  g.m = 513;
  g.n = 700;
  g.k = 300;
  g.lda = 513;
  g.ldb = 300;
  g.ldc = 700;
  g.alpha = 0.5;
  g.beta = 2;
  Tensor out[2];
  for (int t : {1, 2}) {
    set_num_threads(t);
    out[t - 1] = c0.clone();
    gemm(g, a, b, out[t - 1]);
  }
  EXPECT_TRUE(bit_equal(out[0], out[1]));
  const Tensor ref = 0.5 * matmul(a.to(DType::f64).t(), b.to(DType::f64).t()) + 2.0 * c0.to(DType::f64);
  EXPECT_LE(max_abs_diff(out[0].to(DType::f64), ref), 1e-3);
  // The f32 product is the documented chain: a matmul equals sgemm on the same operands.
  const Tensor x = rand_t({256, 256}, 4, -1, 1, DType::f32), w = rand_t({256, 1024}, 5, -1, 1, DType::f32);
  const Tensor y = matmul(x, w);
  std::vector<float> direct(256 * 1024);
  sgemm(256, 1024, 256, 1.f, GemmA{x.data_ptr<float>(), 256}, GemmB{w.data_ptr<float>(), 1024}, 0.f, direct.data(),
        1024);
  EXPECT_EQ(std::memcmp(direct.data(), y.data_ptr<float>(), direct.size() * sizeof(float)), 0);
}

TEST(GemmKernel, GroupedGemmGatherEqualsGatheredMatmul) {
  ThreadScope restore(num_threads());
  // Forward with the gather fused into the A pack = matmul of explicitly gathered rows,
  // bit for bit; forward and backward the same for 1 and 2 threads.
  const int64_t T = 300, K = 96, N = 200, G = 3;
  const std::vector<int64_t> off{0, 170, 170, 450};
  std::vector<int64_t> idx(450);
  for (size_t r = 0; r < idx.size(); ++r) idx[r] = int64_t((r * 37) % T);
  const Tensor offsets = from_vector(off, {G + 1}), index = from_vector(idx, {450});
  const Tensor x = rand_t({T, K}, 6, -1, 1, DType::f32), w = rand_t({G, K, N}, 7, -1, 1, DType::f32);
  const Tensor y = moe::grouped_gemm(x, w, offsets, index);
  const Tensor xg = index_select(x, 0, index);
  EXPECT_TRUE(bit_equal(y.narrow(0, 0, 170), matmul(xg.narrow(0, 0, 170), w.select(0, 0))));
  EXPECT_TRUE(bit_equal(y.narrow(0, 170, 280), matmul(xg.narrow(0, 170, 280), w.select(0, 2))));
  Tensor grads[2][2];
  for (int t : {1, 2}) {
    set_num_threads(t);
    Tensor xr = x.clone().set_requires_grad(true), wr = w.clone().set_requires_grad(true);
    const Tensor dy = rand_t({450, N}, 8, -1, 1, DType::f32);
    sum(moe::grouped_gemm(xr, wr, offsets, index) * dy).backward();
    grads[t - 1][0] = xr.grad();
    grads[t - 1][1] = wr.grad();
  }
  EXPECT_TRUE(bit_equal(grads[0][0], grads[1][0]));
  EXPECT_TRUE(bit_equal(grads[0][1], grads[1][1]));
}
