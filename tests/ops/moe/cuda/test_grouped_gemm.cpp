// The grouped GEMM family on the cuda device against the CPU backend (reference in f64):
// the public op forward and backward (out, dx, dw, dbias, dscale) over empty groups
// (first, middle, last), all rows in one group, one row, G = 1, sizes that are not
// multiples of the tiles, with and without a gather index (with -1 padding rows), scale
// and bias, f32 / f64 (CUDA cores) and bf16 / f16 (tensor cores, both tile heights);
// each kernel directly (trans_w with index/scale/bias, dW and db alone and for empty
// groups, the scatter, the row dot); unaligned inputs (scalar loads); the ldmatrix +
// mma.sync kernels against the WMMA ones, bit for bit; K = 0 and M = 0;
// bad input; bit-identical results across emulator schedules; the grouped FFN's fused
// activation steps against the unfused kernels, bit for bit. The grouped FFN (two
// grouped GEMMs around an activation, chunked) on the device against the CPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "hmoe.h"
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/moe_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/moe_ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using moe::GroupedGemmArgs;
using namespace testing;
namespace moe_ref = testing::moe_ref;

const Device kCpu = Device::cpu();

Tensor i64(const std::vector<int64_t>& v) { return from_vector(v, {int64_t(v.size())}); }
Tensor dev_rand(const Shape& s, DType dt) { return rand_cpu(s, 1, dt).to(kDev); }

Tensor leaf(const Tensor& t, Device d, DType dt) {
  Tensor l = t.detach().to(dt).to(d);
  if (d.is_cpu() && l.data_ptr<void>() == t.data_ptr<void>()) l = l.clone();
  l.set_requires_grad(true);
  return l;
}

// The compute dtype of a kernel's scale / bias / db / row dot (f32 for bf16 / f16).
DType aux(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

using moe_ref::gather_index;

struct Problem {
  std::string name;
  std::vector<int64_t> off;
  int64_t k, n;
  int64_t x_rows = 0;  // > 0: rows come through a gather index into x [x_rows, k]
  bool scale = false, bias = false;
  bool index_i32 = false;
};

// The op forward and every gradient on the device against the CPU op in f64 on the same
// (dtype-rounded) values, within the output dtype's tolerance.
void check_op(const Problem& p, DType dt, uint64_t seed) {
  SCOPED_TRACE(p.name + " " + std::string(dtype_name(dt)) + " k " + std::to_string(p.k) + " n " + std::to_string(p.n));
  const int64_t G = int64_t(p.off.size()) - 1, M = p.off.back();
  const Tensor x = rand_cpu({p.x_rows > 0 ? p.x_rows : M, p.k}, seed, dt);
  const Tensor w = rand_cpu({G, p.k, p.n}, seed + 1, dt);
  const Tensor s = rand_cpu({M}, seed + 2, dt, 0.5, 1.5);
  const Tensor b = rand_cpu({G, p.n}, seed + 3, dt);
  const Tensor g = rand_cpu({M, p.n}, seed + 4, dt);
  Tensor idx;
  if (p.x_rows > 0) {
    idx = i64(gather_index(M, p.x_rows, seed));
    if (p.index_i32) idx = idx.to(DType::i32);
  }
  const Tensor offs = i64(p.off);
  struct Side {
    Tensor x, w, s, b, y;
  } side[2];
  for (int i = 0; i < 2; ++i) {
    const Device d = i == 0 ? kDev : kCpu;
    const DType t = i == 0 ? dt : DType::f64;
    Side& sd = side[i];
    sd.x = leaf(x, d, t);
    sd.w = leaf(w, d, t);
    sd.s = p.scale ? leaf(s, d, t) : Tensor();
    sd.b = p.bias ? leaf(b, d, t) : Tensor();
    sd.y = moe::grouped_gemm(sd.x, sd.w, offs, idx.defined() ? idx.to(d) : idx, sd.s, sd.b);
    sd.y.backward(g.to(t).to(d));
  }
  expect_matches(side[0].y, side[1].y, -1, "forward");
  EXPECT_EQ(side[0].y.dtype(), dt);
  expect_matches(side[0].x.grad(), side[1].x.grad(), -1, "dx");
  expect_matches(side[0].w.grad(), side[1].w.grad(), -1, "dw");
  if (p.scale) expect_matches(side[0].s.grad(), side[1].s.grad(), -1, "dscale");
  if (p.bias) expect_matches(side[0].b.grad(), side[1].b.grad(), -1, "dbias");
}

// Shapes across the tile edges (tiles: 64/128 rows, 128 columns, reduction 8/16/32).
const std::vector<Problem>& problems() {
  static const std::vector<Problem> ps = {
      {"empty first/middle/last, gather with -1, scale, bias", {0, 0, 37, 37, 100, 100}, 33, 17, 60, true, true},
      {"all rows in one group, vector path, scale", {0, 0, 130, 130}, 40, 72, 0, true, false},
      {"one row total, G = 1, i32 index, bias", {0, 1}, 7, 1, 5, false, true, true},
      {"G = 1, gather, bias, two column tiles", {0, 100}, 16, 136, 120, false, true},
      {"long groups (128-row tiles), scale, bias", {0, 256, 384, 384, 512}, 64, 256, 0, true, true},
      {"k = 1, n = 7", {0, 5, 5, 12}, 1, 7, 0, true, true},
      {"k not a multiple of 8, gather", {0, 17, 50, 51}, 17, 32, 40, true, false},
      {"nine uneven groups, three column tiles", {0, 0, 3, 67, 132, 133, 133, 263, 280, 280}, 72, 264, 150, true, true},
      {"128-row tiles with a gather, n = 200", {0, 256, 512}, 48, 200, 300, true, true},
  };
  return ps;
}

void op_for(DType dt) {
  for_each_schedule([&] {
    uint64_t seed = 100;
    for (const Problem& p : problems()) check_op(p, dt, seed += 10);
  });
}

TEST(CudaMoeGroupedGemm, OpF32) {
  HMOE_REQUIRE_CUDA();
  op_for(DType::f32);
}
TEST(CudaMoeGroupedGemm, OpBf16) {
  HMOE_REQUIRE_CUDA();
  op_for(DType::bf16);
}
TEST(CudaMoeGroupedGemm, OpF16) {
  HMOE_REQUIRE_CUDA();
  op_for(DType::f16);
}
TEST(CudaMoeGroupedGemm, OpF64) {
  HMOE_REQUIRE_CUDA();
  op_for(DType::f64);
}

// The forward kernel with trans_w (w [G, n, k]) and a gather, scale and bias together
// (the op only uses trans_w for dX, without them), against the CPU kernel in f64.
TEST(CudaMoeGroupedGemm, KernelTransWWithGatherScaleBias) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64})
      for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{33, 17}, {48, 136}, {5, 9}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " k " + std::to_string(k) + " n " + std::to_string(n));
        seed += 10;
        const std::vector<int64_t> off{0, 0, 70, 70, 131, 131};
        const int64_t G = 5, M = 131, XR = 90;
        const Tensor x = rand_cpu({XR, k}, seed, dt), w = rand_cpu({G, n, k}, seed + 1, dt);
        const Tensor s = rand_cpu({M}, seed + 2, aux(dt)), b = rand_cpu({G, n}, seed + 3, aux(dt));
        const Tensor idx = i64(gather_index(M, XR, seed));
        const GroupedGemmArgs a{G, M, k, n, XR, true};
        Tensor ref = Tensor::empty({M, n}, {DType::f64});
        moe::grouped_gemm_stub.get(kCpu)(a, x.to(DType::f64), w.to(DType::f64), i64(off), idx, s.to(DType::f64),
                                         b.to(DType::f64), ref);
        Tensor out = Tensor::empty({M, n}, {dt, kDev});
        moe::grouped_gemm_stub.get(kDev)(a, x.to(kDev), w.to(kDev), i64(off), idx.to(kDev), s.to(kDev), b.to(kDev),
                                         out);
        expect_matches(out, ref, -1, "trans_w forward");
      }
  });
}

// dW and db directly: both, dW alone, db alone; empty groups (first, middle, last) get
// zeros; k, n across the tile edges; with and without the gather.
TEST(CudaMoeGroupedGemm, KernelDwDbAndEmptyGroups) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 700;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (const auto& [k, n, gather] :
           std::vector<std::tuple<int64_t, int64_t, bool>>{{33, 17, true}, {136, 40, false}, {8, 129, true}}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " k " + std::to_string(k) + " n " + std::to_string(n));
        seed += 10;
        const std::vector<int64_t> off{0, 0, 45, 45, 110, 110};
        const int64_t G = 5, M = 110, XR = gather ? 70 : M;
        const Tensor x = rand_cpu({XR, k}, seed, dt), dy = rand_cpu({M, n}, seed + 1, dt);
        const Tensor idx = gather ? i64(gather_index(M, XR, seed)) : Tensor();
        const GroupedGemmArgs a{G, M, k, n, XR, false};
        Tensor dw_ref = Tensor::empty({G, k, n}, {DType::f64}), db_ref = Tensor::empty({G, n}, {DType::f64});
        moe::grouped_gemm_dw_stub.get(kCpu)(a, x.to(DType::f64), idx, dy.to(DType::f64), i64(off), dw_ref, db_ref);
        const Tensor xd = x.to(kDev), dyd = dy.to(kDev), idd = gather ? idx.to(kDev) : Tensor();
        for (int which = 0; which < 3; ++which) {  // both, dw only, db only
          Tensor dw = which != 2 ? Tensor::empty({G, k, n}, {dt, kDev}) : Tensor();
          Tensor db = which != 1 ? Tensor::empty({G, n}, {aux(dt), kDev}) : Tensor();
          moe::grouped_gemm_dw_stub.get(kDev)(a, xd, idd, dyd, i64(off), dw, db);
          if (dw.defined()) {
            expect_matches(dw, dw_ref, -1, "dw");
            for (int64_t g : {0, 2, 4}) EXPECT_EQ(max_abs_diff(dw.select(0, g).to(kCpu), zeros({k, n}, {dt})), 0.0);
          }
          if (db.defined()) {
            expect_matches(db, db_ref, dt == DType::f64 ? 1e-12 : 1e-5, "db");
            for (int64_t g : {0, 2, 4}) EXPECT_EQ(max_abs_diff(db.select(0, g).to(kCpu), zeros({n}, {aux(dt)})), 0.0);
          }
        }
      }
  });
}

// The dX scatter: repeated destinations summed in row order, -1 rows skipped,
// destinations without a source zero; vector and scalar widths.
TEST(CudaMoeGroupedGemm, KernelScatterRows) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 900;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (int64_t k : {1, 8, 37, 264}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " k " + std::to_string(k));
        seed += 10;
        const int64_t R = 150, D = 80;  // destinations 79 and up get no source
        std::vector<int64_t> ix(static_cast<size_t>(R));
        for (int64_t r = 0; r < R; ++r) ix[size_t(r)] = r % 7 == 3 ? -1 : (r * 13) % 70;
        const Tensor src = rand_cpu({R, k}, seed, dt), sc = rand_cpu({R}, seed + 1, aux(dt), 0.5, 1.5);
        for (bool with_scale : {true, false}) {
          Tensor ref = Tensor::empty({D, k}, {DType::f64});
          moe::scatter_rows_stub.get(kCpu)(src.to(DType::f64), i64(ix), with_scale ? sc.to(DType::f64) : Tensor(), ref);
          Tensor out = Tensor::empty({D, k}, {dt, kDev});
          moe::scatter_rows_stub.get(kDev)(src.to(kDev), i64(ix).to(kDev), with_scale ? sc.to(kDev) : Tensor(), out);
          expect_matches(out, ref, -1, with_scale ? "scatter with scale" : "scatter");
          EXPECT_EQ(max_abs_diff(out.narrow(0, 70, 10).to(kCpu), zeros({10, k}, {dt})), 0.0);
        }
      }
  });
}

// The scale gradient's row dot, with and without bias, with and without the gather.
TEST(CudaMoeGroupedGemm, KernelRowDot) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 1100;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (bool gather : {true, false})
        for (bool bias : {true, false}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + (gather ? " gather" : "") + (bias ? " bias" : ""));
          seed += 10;
          const std::vector<int64_t> off{0, 0, 30, 30, 77, 77};
          const int64_t G = 5, M = 77, k = 45, n = 70, XR = gather ? 50 : M;
          const Tensor x = rand_cpu({XR, k}, seed, dt), gx = rand_cpu({M, k}, seed + 1, dt);
          const Tensor dy = rand_cpu({M, n}, seed + 2, dt), b = rand_cpu({G, n}, seed + 3, aux(dt));
          const Tensor idx = gather ? i64(gather_index(M, XR, seed)) : Tensor();
          const GroupedGemmArgs a{G, M, k, n, XR, false};
          Tensor ref = Tensor::empty({M}, {DType::f64});
          moe::grouped_row_dot_stub.get(kCpu)(a, x.to(DType::f64), idx, gx.to(DType::f64), dy.to(DType::f64),
                                              bias ? b.to(DType::f64) : Tensor(), i64(off), ref);
          Tensor out = Tensor::empty({M}, {aux(dt), kDev});
          moe::grouped_row_dot_stub.get(kDev)(a, x.to(kDev), gather ? idx.to(kDev) : Tensor(), gx.to(kDev), dy.to(kDev),
                                              bias ? b.to(kDev) : Tensor(), i64(off), out);
          expect_matches(out, ref, dt == DType::f64 ? 1e-12 : dt == DType::f32 ? 1e-5 : 1e-2, "row dot");
        }
  });
}

// Inputs whose data starts off a 16-byte boundary (contiguous views at an odd element
// offset): the kernels fall back to element loads and stores with the same results.
TEST(CudaMoeGroupedGemm, UnalignedInputs) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16}) {
      SCOPED_TRACE(std::string(dtype_name(dt)));
      const std::vector<int64_t> off{0, 40, 40, 96};
      const int64_t G = 3, M = 96, k = 32, n = 64;
      const Tensor xf = rand_cpu({1 + M * k}, 1, dt), wf = rand_cpu({1 + G * k * n}, 2, dt);
      const Tensor b = rand_cpu({G, n}, 3, dt), g = rand_cpu({M, n}, 4, dt);
      Tensor res[2][3];
      for (int i = 0; i < 2; ++i) {
        const Device d = i == 0 ? kDev : kCpu;
        const DType t = i == 0 ? dt : DType::f64;
        Tensor xl = leaf(xf, d, t), wl = leaf(wf, d, t), bl = leaf(b, d, t);
        const Tensor x = xl.narrow(0, 1, M * k).reshape({M, k}), w = wl.narrow(0, 1, G * k * n).reshape({G, k, n});
        Tensor y = moe::grouped_gemm(x, w, i64(off), Tensor(), Tensor(), bl);
        y.backward(g.to(t).to(d));
        res[i][0] = y;
        res[i][1] = xl.grad();
        res[i][2] = wl.grad();
      }
      expect_matches(res[0][0], res[1][0], -1, "forward");
      expect_matches(res[0][1].narrow(0, 1, M * k), res[1][1].narrow(0, 1, M * k), -1, "dx");
      expect_matches(res[0][2].narrow(0, 1, G * k * n), res[1][2].narrow(0, 1, G * k * n), -1, "dw");
    }
  });
}

// The ldmatrix + mma.sync kernels (16-byte-aligned operands: swizzled panels, epilogue
// from registers) and the WMMA kernels (x at an odd element offset: element loads) add
// the same products in the same order: the forward with gather, scale and bias, plain
// and trans_w (the dX kernel), at both tile heights, gives the same bits.
TEST(CudaMoeGroupedGemm, MmaSyncAndWmmaKernelsGiveTheSameBits) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 1700;
    for (DType dt : {DType::bf16, DType::f16})
      for (bool trans : {false, true})
        for (const std::vector<int64_t>& off : {std::vector<int64_t>{0, 40, 40, 96, 230}, {0, 256, 512}}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " trans_w " << trans << " rows " << off.back());
          seed += 10;
          const int64_t G = int64_t(off.size()) - 1, M = off.back(), XR = 300, k = 72, n = 136;
          const Tensor x_odd = rand_cpu({1 + XR * k}, seed, dt).to(kDev).narrow(0, 1, XR * k).reshape({XR, k});
          const Tensor x = x_odd.clone();
          const Tensor w = rand_cpu(trans ? Shape{G, n, k} : Shape{G, k, n}, seed + 1, dt).to(kDev);
          const Tensor s = rand_cpu({M}, seed + 2, aux(dt), 0.5, 1.5).to(kDev);
          const Tensor b = rand_cpu({G, n}, seed + 3, aux(dt)).to(kDev);
          const Tensor idx = i64(gather_index(M, XR, seed)).to(kDev);
          const GroupedGemmArgs args{G, M, k, n, XR, trans};
          Tensor wmma = Tensor::empty({M, n}, {dt, kDev}), mma = Tensor::empty({M, n}, {dt, kDev});
          moe::grouped_gemm_stub.get(kDev)(args, x_odd, w, i64(off), idx, s, b, wmma);
          moe::grouped_gemm_stub.get(kDev)(args, x, w, i64(off), idx, s, b, mma);
          EXPECT_TRUE(bit_equal(wmma.to(kCpu), mma.to(kCpu))) << max_abs_diff(wmma.to(kCpu), mma.to(kCpu));
        }
  });
}

// K = 0 (out = scale * bias, dW empty, db = column sums) and M = 0 (nothing to do, dW
// zero) on the device.
TEST(CudaMoeGroupedGemm, EmptyReductionAndNoRows) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor b = leaf(rand_cpu({2, 3}, 1, dt), kDev, dt), s = leaf(rand_cpu({4}, 2, dt), kDev, dt);
      const Tensor x0 = leaf(zeros({4, 0}, {dt}), kDev, dt), w0 = leaf(zeros({2, 0, 3}, {dt}), kDev, dt);
      Tensor y = moe::grouped_gemm(x0, w0, i64({0, 1, 4}), Tensor(), s, b);
      const auto bv = b.to(kCpu).to_vector(), sv = s.to(kCpu).to_vector();
      std::vector<double> want;
      for (int64_t r = 0; r < 4; ++r)
        for (int64_t c = 0; c < 3; ++c) want.push_back(sv[size_t(r)] * bv[size_t((r < 1 ? 0 : 1) * 3 + c)]);
      expect_matches(y, from_vector(want, {4, 3}, {DType::f64}), -1, "K = 0 forward");
      y.backward(ones(y.shape(), {dt, kDev}));
      std::vector<double> db_want{
          sv[0], sv[0], sv[0], sv[1] + sv[2] + sv[3], sv[1] + sv[2] + sv[3], sv[1] + sv[2] + sv[3]};
      expect_matches(b.grad(), from_vector(db_want, {2, 3}, {DType::f64}), -1, "K = 0 dbias");
      const Tensor w = leaf(rand_cpu({3, 4, 5}, 3, dt), kDev, dt), x = leaf(zeros({0, 4}, {dt}), kDev, dt);
      Tensor y0 = moe::grouped_gemm(x, w, i64({0, 0, 0, 0}));
      EXPECT_EQ(y0.shape(), (Shape{0, 5}));
      y0.backward(Tensor::empty({0, 5}, {dt, kDev}));
      EXPECT_EQ(max_abs_diff(w.grad().to(kCpu), zeros({3, 4, 5}, {dt})), 0.0);
    }
  });
}

// Bad input raises hmoe::Error on the device path: the op's checks (a device index out
// of range, validated before any kernel runs) and the kernels' own (dtypes, shapes).
TEST(CudaMoeGroupedGemm, Errors) {
  HMOE_REQUIRE_CUDA();
  const Tensor x = dev_rand({7, 3}, DType::f32), w = dev_rand({4, 3, 2}, DType::f32);
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 3, 3}), i64({0, 1, 7}).to(kDev)), "out of range");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 3, 3}), i64({0, -2, 1}).to(kDev)), "out of range");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 7, 7}).to(kDev)), "cpu i64");
  EXPECT_HMOE_ERROR(moe::grouped_gemm(x, w, i64({0, 2, 2, 7, 7}), Tensor(), zeros({7})), "different devices");
  const GroupedGemmArgs a{4, 7, 3, 2, 7, false};
  const Tensor out = Tensor::empty({7, 2}, {DType::bf16, kDev});
  const Tensor xb = x.to(DType::bf16), wb = w.to(DType::bf16);
  // bf16 operands take f32 scale / bias
  EXPECT_HMOE_ERROR(moe::grouped_gemm_stub.get(kDev)(a, xb, wb, i64({0, 2, 2, 7, 7}), Tensor(),
                                                     Tensor::empty({7}, {DType::bf16, kDev}), Tensor(), out),
                    "scale must be");
  EXPECT_HMOE_ERROR(moe::grouped_gemm_stub.get(kDev)(a, xb, wb, i64({0, 2, 2, 6, 7}), Tensor(), Tensor(), Tensor(),
                                                     Tensor::empty({6, 2}, {DType::bf16, kDev})),
                    "out must be");
  EXPECT_HMOE_ERROR(
      moe::grouped_gemm_stub.get(kDev)(a, xb, wb, i64({0, 2, 2, 8, 7}), Tensor(), Tensor(), Tensor(), out),
      "must not decrease");
  EXPECT_HMOE_ERROR(moe::grouped_gemm_dw_stub.get(kDev)(a, xb, Tensor(), Tensor::empty({7, 2}, {DType::bf16, kDev}),
                                                        i64({0, 2, 2, 7, 7}),
                                                        Tensor::empty({4, 2, 3}, {DType::bf16, kDev}), Tensor()),
                    "dw must be");
  GroupedGemmArgs acc = a;  // adding to dw: the CPU's kernels only
  acc.accumulate = true;
  EXPECT_HMOE_ERROR(moe::grouped_gemm_dw_stub.get(kDev)(acc, xb, Tensor(), Tensor::empty({7, 2}, {DType::bf16, kDev}),
                                                        i64({0, 2, 2, 7, 7}),
                                                        Tensor::empty({4, 3, 2}, {DType::bf16, kDev}), Tensor()),
                    "accumulate");
  // The grouped FFN's fused activation steps: an FFN activation only, and dh without a
  // scale or bias (as on the CPU).
  GroupedGemmArgs fused = a;
  fused.x_act = UnaryOp::exp;
  EXPECT_HMOE_ERROR(
      moe::grouped_gemm_stub.get(kDev)(fused, xb, wb, i64({0, 2, 2, 7, 7}), Tensor(), Tensor(), Tensor(), out),
      "x_act must be relu, gelu_erf, gelu_tanh or silu");
  EXPECT_HMOE_ERROR(moe::grouped_gemm_dw_stub.get(kDev)(fused, xb, Tensor(), Tensor::empty({7, 2}, {DType::bf16, kDev}),
                                                        i64({0, 2, 2, 7, 7}),
                                                        Tensor::empty({4, 3, 2}, {DType::bf16, kDev}), Tensor()),
                    "x_act must be");
  fused.x_act.reset();
  fused.out_act_grad = UnaryOp::relu;
  EXPECT_HMOE_ERROR(moe::grouped_gemm_stub.get(kDev)(fused, xb, wb, i64({0, 2, 2, 7, 7}), Tensor(), Tensor(),
                                                     Tensor::empty({4, 2}, {DType::f32, kDev}), out),
                    "no scale or bias");
}

// The fused steps of the grouped FFN (GroupedGemmArgs::x_act, out_act_grad) give the bits
// of the device's unfused kernels: the GEMM of the activated x (forward, and dW through
// a gather with repeats and -1 rows), and dh = (dy W^T) * act'(h) written over h against
// the product then the activation's backward; every activation, every dtype (CUDA and
// tensor cores, both tile heights), vector and element loads, an empty group, every
// schedule.
TEST(CudaMoeGroupedGemm, FusedActivationStepsGiveTheUnfusedBits) {
  HMOE_REQUIRE_CUDA();
  const UnaryOp acts[] = {UnaryOp::gelu_erf, UnaryOp::gelu_tanh, UnaryOp::relu, UnaryOp::silu};
  for_each_schedule([&] {
    uint64_t seed = 1300;
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64})
      for (const auto& [off, k, n] : std::vector<std::tuple<std::vector<int64_t>, int64_t, int64_t>>{
               {{0, 256, 256, 360}, 48, 72},       // vector loads; unfused: 128-row tensor-core tiles
               {{0, 40, 40, 70, 110}, 33, 17}}) {  // element loads; 64-row tiles
        for (UnaryOp act : acts) {
          SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " k " << k << " n " << n << " act " << int(act));
          seed += 10;
          const int64_t G = int64_t(off.size()) - 1, M = off.back(), XR = 100;
          auto input = [&](const Shape& shape, uint64_t i) { return rand_cpu(shape, seed + i, dt).to(kDev); };
          const Tensor x = input({XR, k}, 0), w = input({G, k, n}, 1), wt = input({G, k, n}, 2);
          const Tensor dy = input({M, n}, 3), h = input({M, k}, 4);
          const Tensor idx = i64(gather_index(M, XR, seed)).to(kDev);
          const Tensor xa = moe_ref::ffn_activation(act, x).detach();
          GroupedGemmArgs plain{G, M, k, n, XR, false}, fused = plain;
          fused.x_act = act;
          Tensor want = Tensor::empty({M, n}, {dt, kDev}), got = Tensor::empty({M, n}, {dt, kDev});
          moe::grouped_gemm_stub.get(kDev)(plain, xa, w, i64(off), idx, Tensor(), Tensor(), want);
          moe::grouped_gemm_stub.get(kDev)(fused, x, w, i64(off), idx, Tensor(), Tensor(), got);
          EXPECT_TRUE(bit_equal(want.to(kCpu), got.to(kCpu))) << "x_act forward";
          Tensor dw_want = Tensor::empty({G, k, n}, {dt, kDev}), dw_got = Tensor::empty({G, k, n}, {dt, kDev});
          moe::grouped_gemm_dw_stub.get(kDev)(plain, xa, idx, dy, i64(off), dw_want, Tensor());
          moe::grouped_gemm_dw_stub.get(kDev)(fused, x, idx, dy, i64(off), dw_got, Tensor());
          EXPECT_TRUE(bit_equal(dw_want.to(kCpu), dw_got.to(kCpu))) << "x_act dW";
          // dh over h: w [G, k, n] read as W^T ([n] -> [k]).
          GroupedGemmArgs back{G, M, n, k, M, true}, back_fused = back;
          back_fused.out_act_grad = act;
          Tensor prod = Tensor::empty({M, k}, {dt, kDev});
          moe::grouped_gemm_stub.get(kDev)(back, dy, wt, i64(off), Tensor(), Tensor(), Tensor(), prod);
          Tensor hh = h.clone().set_requires_grad(true);
          sum(moe_ref::ffn_activation(act, hh) * prod).backward();
          Tensor dh = h.clone();
          moe::grouped_gemm_stub.get(kDev)(back_fused, dy, wt, i64(off), Tensor(), Tensor(), Tensor(), dh);
          EXPECT_TRUE(bit_equal(hh.grad().to(kCpu), dh.to(kCpu)))
              << "out_act_grad " << max_abs_diff(hh.grad().to(kCpu), dh.to(kCpu));
        }
      }
  });
}

// The grouped FFN on the device (its kernels, views of chunks of groups, the recomputed
// activation, dh in place) against the CPU in f64, forward and every gradient; chunking
// and recomputing the pre-activation give the same bits on the device too.
TEST(CudaMoeGroupedGemm, GroupedFfnMatchesCpuAtAnyChunking) {
  HMOE_REQUIRE_CUDA();
  const std::vector<int64_t> off{0, 0, 37, 38, 100, 170};
  const int64_t G = 5, M = 170, XR = 90, d = 24, f = 72, e = 20;
  for (DType dt : {DType::f32, DType::bf16})
    for (UnaryOp act : {UnaryOp::gelu_erf, UnaryOp::relu}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " act " + std::to_string(int(act)));
      const Tensor x = rand_cpu({XR, d}, 1, dt), w1 = rand_cpu({G, d, f}, 2, dt, -0.5, 0.5);
      const Tensor b1 = rand_cpu({G, f}, 3, dt), w2 = rand_cpu({G, f, e}, 4, dt, -0.5, 0.5);
      const Tensor b2 = rand_cpu({G, e}, 5, dt), g = rand_cpu({M, e}, 6, dt);
      const Tensor idx = i64(gather_index(M, XR, 3));
      auto run = [&](Device dv, DType t, int64_t chunk, bool recompute = false) {
        std::vector<Tensor> in{leaf(x, dv, t), leaf(w1, dv, t), leaf(b1, dv, aux(t)), leaf(w2, dv, t),
                               leaf(b2, dv, aux(t))};
        Tensor y = moe::grouped_ffn(in[0], in[1], in[2], in[3], in[4], i64(off), idx.to(dv), act, chunk, recompute);
        y.backward(g.to(t).to(dv));
        std::vector<Tensor> out{y};
        for (const Tensor& l : in) out.push_back(l.grad());
        return out;
      };
      const std::vector<Tensor> want = run(kCpu, DType::f64, 0);
      const char* names[] = {"forward", "dx", "dw1", "db1", "dw2", "db2"};
      for_each_schedule([&] {
        const std::vector<Tensor> all = run(kDev, dt, 0);
        // The f32 bias gradients of a bf16 run sum bf16 values: bf16's bound for all.
        for (size_t i = 0; i < all.size(); ++i) expect_matches(all[i], want[i], testing::tolerance(dt), names[i]);
        for (int64_t chunk : {1, 40, 0})
          for (bool recompute : {false, true}) {
            if (chunk == 0 && !recompute) continue;  // that is `all`
            const std::vector<Tensor> part = run(kDev, dt, chunk, recompute);
            for (size_t i = 0; i < all.size(); ++i)
              EXPECT_TRUE(bit_equal(part[i], all[i])) << names[i] << " chunk " << chunk << " recompute " << recompute;
          }
      });
    }
}

// Same inputs, same bits under every schedule: forward and all gradients, both paths.
TEST(CudaMoeGroupedGemm, DeterministicAcrossSchedules) {
  HMOE_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16}) {
    const std::vector<int64_t> off{0, 50, 50, 190, 200};
    const int64_t G = 4, M = 200, XR = 120, k = 40, n = 48;
    const Tensor x = rand_cpu({XR, k}, 1, dt), w = rand_cpu({G, k, n}, 2, dt), s = rand_cpu({M}, 3, dt, 0.5, 1.5);
    const Tensor b = rand_cpu({G, n}, 4, dt), g = rand_cpu({M, n}, 5, dt);
    const Tensor idx = i64(gather_index(M, XR, 7));
    std::vector<Tensor> first;
    for_each_schedule([&] {
      Tensor xd = leaf(x, kDev, dt), wd = leaf(w, kDev, dt), sd = leaf(s, kDev, dt), bd = leaf(b, kDev, dt);
      Tensor y = moe::grouped_gemm(xd, wd, i64(off), idx.to(kDev), sd, bd);
      y.backward(g.to(kDev));
      const std::vector<Tensor> got{y.to(kCpu), xd.grad().to(kCpu), wd.grad().to(kCpu), sd.grad().to(kCpu),
                                    bd.grad().to(kCpu)};
      if (first.empty())
        first = got;
      else
        for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_equal(got[i], first[i])) << dtype_name(dt) << " " << i;
    });
  }
}

}  // namespace
}  // namespace hmoe
