// The cuda attention family against the CPU backend: causal attention forward (out and
// lse) and backward (dq, dk, dv) over T and Dh across the tile and head-dim-bucket
// boundaries, q/k/v as strided slices of a packed projection and other layouts, f32,
// f64, bf16 and f16 (tensor-core path); gradients through the public op; bit-identical
// results across emulator schedules; dropout masks bit-identical to the CPU's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/attention_kernels.h"
#include "ops/dispatch.h"
#include "tests/support/cuda_util.h"

namespace hmoe {

namespace {

using namespace testing;

struct Qkv {
  Tensor q, k, v;
};

enum class Layout { packed, separate, bthd };

// q, k, v on `dev` from the same CPU values: packed = slices of one [B, T, 3, H, Dh]
// projection permuted to [B, H, T, Dh] (what the model does); separate = three
// contiguous tensors; bthd = [B, T, H, Dh] tensors transposed. The views are taken on
// the device, so the kernels see the strides.
Qkv make_qkv(const Shape& s, DType dt, Layout layout, uint64_t seed, Device dev) {
  const int64_t B = s[0], H = s[1], T = s[2], D = s[3];
  switch (layout) {
    case Layout::packed: {
      const Tensor p = rand_cpu({B, T, 3, H, D}, seed, dt).to(dev).permute({2, 0, 3, 1, 4});
      return {p.select(0, 0), p.select(0, 1), p.select(0, 2)};
    }
    case Layout::separate:
      return {rand_cpu(s, seed, dt).to(dev), rand_cpu(s, seed + 1, dt).to(dev), rand_cpu(s, seed + 2, dt).to(dev)};
    case Layout::bthd:
      return {rand_cpu({B, T, H, D}, seed, dt).to(dev).transpose(1, 2),
              rand_cpu({B, T, H, D}, seed + 1, dt).to(dev).transpose(1, 2),
              rand_cpu({B, T, H, D}, seed + 2, dt).to(dev).transpose(1, 2)};
  }
  return {};
}

DType stat_dtype(DType dt) { return dt == DType::f64 ? DType::f64 : DType::f32; }

struct Fwd {
  Tensor out, lse;
};

Fwd forward(const Qkv& x, double scale) {
  const Shape& s = x.q.shape();
  Fwd f{Tensor::empty(s, {x.q.dtype(), x.q.device()}),
        Tensor::empty({s[0], s[1], s[2]}, {stat_dtype(x.q.dtype()), x.q.device()})};
  attention_forward_stub.get(x.q.device())(x.q, x.k, x.v, scale, f.out, f.lse);
  return f;
}

struct Grads {
  Tensor dq, dk, dv;
};

Grads backward(const Qkv& x, const Fwd& f, const Tensor& gout, double scale) {
  const Shape& s = x.q.shape();
  const TensorOptions opt{x.q.dtype(), x.q.device()};
  Grads g{Tensor::empty(s, opt), Tensor::empty(s, opt), Tensor::empty(s, opt)};
  attention_backward_stub.get(x.q.device())(x.q, x.k, x.v, f.out, gout, f.lse, scale, g.dq, g.dk, g.dv);
  return g;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (double x : t.to(Device::cpu()).to_vector()) m = std::isnan(x) ? INFINITY : std::max(m, std::abs(x));
  return m;
}

// Forward and backward of one configuration on both devices; the cuda results must
// match the CPU's within the dtype's bound and be bit-identical under every schedule.
void check_config(const Shape& s, DType dt, Layout layout, uint64_t seed, double scale = 0) {
  SCOPED_TRACE(::testing::Message() << "shape " << shape_str(s) << " " << dtype_name(dt) << " layout "
                                    << int(layout) << " seed " << seed);
  const double sc = scale == 0 ? 1.0 / std::sqrt(double(s[3])) : scale;
  const Qkv xc = make_qkv(s, dt, layout, seed, Device::cpu());
  const Qkv xd = make_qkv(s, dt, layout, seed, kDev);
  // dO as a transposed [B, T, H, Dh] view (unit stride along Dh, other strides permuted).
  const Tensor g_cpu = rand_cpu({s[0], s[2], s[1], s[3]}, seed + 7, dt);
  const Tensor gc = g_cpu.transpose(1, 2), gd = g_cpu.to(kDev).transpose(1, 2);
  const Fwd fc = forward(xc, sc);
  const Grads rc = backward(xc, fc, gc, sc);
  std::vector<Tensor> first;
  for_each_schedule([&] {
    const Fwd fd = forward(xd, sc);
    const Grads rd = backward(xd, fd, gd, sc);
    expect_matches(fd.out, fc.out, -1, "out");
    expect_matches(fd.lse, fc.lse, dt == DType::f64 ? 1e-12 : 1e-5, "lse");
    if (s[2] == 1) {
      // One position: P = 1 and dS = P (dP - D) = 0 exactly, so dq and dk are rounding
      // noise on both devices (a relative error means nothing); they must be ~0.
      EXPECT_LE(max_abs(rd.dq), 1e-3);
      EXPECT_LE(max_abs(rd.dk), 1e-3);
    } else {
      expect_matches(rd.dq, rc.dq, -1, "dq");
      expect_matches(rd.dk, rc.dk, -1, "dk");
    }
    expect_matches(rd.dv, rc.dv, -1, "dv");
    const std::vector<Tensor> now{fd.out, fd.lse, rd.dq, rd.dk, rd.dv};
    if (first.empty()) {
      first = now;
    } else {
      for (size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(bit_equal(now[i], first[i])) << "output " << i;
    }
  });
}

const std::vector<int64_t> kTs{1, 2, 17, 64, 65, 130};
const std::vector<int64_t> kDhs{8, 32, 64, 80, 128};

TEST(CudaAttention, F32AllSizes) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 100;
  for (int64_t T : kTs)
    for (int64_t D : kDhs) check_config({1, 2, T, D}, DType::f32, Layout::packed, seed++);
}

TEST(CudaAttention, Bf16AllSizes) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 200;
  for (int64_t T : kTs)
    for (int64_t D : kDhs) check_config({1, 2, T, D}, DType::bf16, Layout::packed, seed++);
}

TEST(CudaAttention, F16AllSizes) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 300;
  for (int64_t T : kTs)
    for (int64_t D : kDhs) check_config({1, 2, T, D}, DType::f16, Layout::packed, seed++);
}

TEST(CudaAttention, F64AllSizes) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 350;
  for (int64_t T : kTs)
    for (int64_t D : kDhs) check_config({2, 1, T, D}, DType::f64, Layout::packed, seed++);
}

TEST(CudaAttention, LayoutsBatchesAndScale) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 400;
  for (DType dt : {DType::f32, DType::bf16}) {
    for (Layout l : {Layout::separate, Layout::bthd}) check_config({2, 3, 70, 32}, dt, l, seed++);
    check_config({3, 1, 9, 5}, dt, Layout::packed, seed++, 0.7);  // odd Dh: scalar loads
    check_config({2, 2, 66, 1}, dt, Layout::separate, seed++);
  }
  // Row strides that allow 16-byte loads but a base one element off alignment
  // (the kernels must fall back to scalar loads).
  for (DType dt : {DType::f32, DType::bf16}) {
    auto shifted = [&](uint64_t seed, Device dev) { return rand_cpu({1, 2, 33, 24}, seed, dt).to(dev).narrow(3, 1, 16); };
    const Qkv xc{shifted(1, Device::cpu()), shifted(2, Device::cpu()), shifted(3, Device::cpu())};
    const Fwd fc = forward(xc, 0.3);
    for_each_schedule([&] {
      const Fwd fd = forward({shifted(1, kDev), shifted(2, kDev), shifted(3, kDev)}, 0.3);
      expect_matches(fd.out, fc.out, -1, "out (misaligned)");
      expect_matches(fd.lse, fc.lse, 1e-5, "lse (misaligned)");
    });
  }
  // k and v shared by every head (stride 0 along H).
  const Shape s{1, 3, 40, 16};
  const Tensor qc = rand_cpu(s, 1, DType::f32), kc = rand_cpu({1, 1, 40, 16}, 2, DType::f32).expand(s),
               vc = rand_cpu({1, 1, 40, 16}, 3, DType::f32).expand(s);
  const Fwd fc = forward({qc, kc, vc}, 0.25);
  for_each_schedule([&] {
    const Fwd fd = forward({qc.to(kDev), kc.to(kDev), vc.to(kDev)}, 0.25);
    expect_matches(fd.out, fc.out, -1, "out");
  });
}

// The public op end to end: values and the gradients autograd delivers to strided leaves.
TEST(CudaAttention, GradientsThroughPublicOp) {
  HMOE_REQUIRE_CUDA();
  uint64_t seed = 500;
  for (DType dt : {DType::f32, DType::bf16})
    for (const Shape& s : std::vector<Shape>{{2, 2, 65, 24}, {1, 3, 130, 64}}) {
      SCOPED_TRACE(shape_str(s) + " " + std::string(dtype_name(dt)));
      auto run = [&](Device dev) {
        const Qkv x = make_qkv(s, dt, Layout::packed, seed, dev);
        Tensor q = x.q.detach().set_requires_grad(true), k = x.k.detach().set_requires_grad(true),
               v = x.v.detach().set_requires_grad(true);
        const Tensor out = causal_attention(q, k, v);
        out.backward(rand_cpu(s, seed + 9, dt).to(dev));
        return std::vector<Tensor>{out.detach(), q.grad(), k.grad(), v.grad()};
      };
      const auto ref = run(Device::cpu());
      for_each_schedule([&] {
        const auto got = run(kDev);
        const char* names[] = {"out", "dq", "dk", "dv"};
        for (size_t i = 0; i < got.size(); ++i) expect_matches(got[i], ref[i], -1, names[i]);
      });
      ++seed;
    }
}

TEST(CudaAttention, EmptyAndErrors) {
  HMOE_REQUIRE_CUDA();
  const TensorOptions f32{DType::f32, kDev};
  EXPECT_EQ(causal_attention(Tensor::empty({1, 2, 0, 8}, f32), Tensor::empty({1, 2, 0, 8}, f32),
                             Tensor::empty({1, 2, 0, 8}, f32))
                .shape(),
            (Shape{1, 2, 0, 8}));
  const Tensor big = rand_cpu({1, 1, 4, 129}, 1, DType::f32).to(kDev);
  EXPECT_HMOE_ERROR(causal_attention(big, big, big), "head dims up to 128");
}

// Dropout: the mask and the kept values bit-identical to the CPU's, for several
// seeds, offsets and p (p = 0 through the kernel keeps everything).
TEST(CudaDropout, BitIdenticalToCpu) {
  HMOE_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
    const Tensor x = rand_cpu({37, 53}, 11, dt, 0.5, 2);
    const Tensor xd = x.to(kDev);
    for (double p : {0.0, 0.1, 0.5})
      for (uint64_t seed : {uint64_t(1), uint64_t(0x9e3779b97f4a7c15ull)})
        for (uint64_t offset : {uint64_t(0), uint64_t(12345), uint64_t(1) << 40}) {
          SCOPED_TRACE(::testing::Message() << dtype_name(dt) << " p " << p << " seed " << seed << " offset "
                                            << offset);
          const Tensor yc = Tensor::empty(x.shape(), {dt, Device::cpu()});
          dropout_stub.get(Device::cpu())(x, yc, p, seed, offset);
          for_each_schedule([&] {
            const Tensor yd = Tensor::empty(x.shape(), {dt, kDev});
            dropout_stub.get(kDev)(xd, yd, p, seed, offset);
            EXPECT_TRUE(bit_equal(yd, yc));
          });
        }
  }
  // Through the public op with a generator: same draw on both devices.
  for (double p : {0.1, 0.5}) {
    Generator gc(42, 7), gd(42, 7);
    const Tensor x = rand_cpu({3, 1000}, 12, DType::f32);
    EXPECT_TRUE(bit_equal(dropout(x.to(kDev), p, true, gd), dropout(x, p, true, gc)));
    EXPECT_EQ(gc.offset(), gd.offset());
  }
}

}  // namespace
}  // namespace hmoe
