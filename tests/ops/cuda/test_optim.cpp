// The optimizer kernel family on the cuda device against the CPU: fused AdamW and SGD
// (f32 / f64 master weights, f32 / bf16 / f16 gradients, bf16 / f16 copies written in the
// same pass; sizes that hit the 4-wide body, its tail and the unaligned scalar path),
// the chunked sum of squares (exactly the same for every schedule), clip_grad_norm_,
// and the AdamW class with bf16 parameters on the device.
#include <gtest/gtest.h>

#include "models/optim/optimizer.h"
#include "ops/optim.h"
#include "ops/optim_kernels.h"
#include "tests/support/cuda_util.h"
#include "tests/support/ref.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

struct UpdateCase {
  DType master, grad, copy;  // copy: DType::b8 for none
};

// One tensor per role on both devices; `offset` > 0 makes every device tensor start off
// its 16-byte boundary (a narrow of a larger buffer), forcing the scalar path.
struct Operands {
  Tensor x, m, v, g, p;
};
Operands make(const UpdateCase& c, int64_t n, int64_t offset, uint64_t seed, Device d) {
  auto on = [&](const Tensor& t) {
    const Tensor h = d.is_cpu() ? t.clone() : t.to(d);
    return h.narrow(0, offset, n);
  };
  Operands o;
  o.x = on(rand_cpu({n + offset}, seed, c.master, -1, 1));
  o.m = on(rand_cpu({n + offset}, seed + 1, c.master, -0.1, 0.1));
  o.v = on(rand_cpu({n + offset}, seed + 2, c.master, 0.001, 0.01));
  o.g = on(rand_cpu({n + offset}, seed + 3, c.grad, -1, 1));
  if (c.copy != DType::b8) o.p = on(rand_cpu({n + offset}, seed + 4, c.copy, -1, 1));
  return o;
}

const std::vector<UpdateCase> kCases = {{DType::f32, DType::f32, DType::b8},  {DType::f32, DType::bf16, DType::bf16},
                                        {DType::f32, DType::f16, DType::f16}, {DType::f32, DType::f32, DType::bf16},
                                        {DType::f64, DType::f64, DType::b8},  {DType::f64, DType::f32, DType::f32}};
const std::vector<int64_t> kSizes = {1, 3, 4, 7, 257, 4099};

TEST(CudaOptim, AdamWMatchesCpu) {
  HMOE_REQUIRE_CUDA();
  AdamWStep s;
  s.lr = 0.01;
  s.weight_decay = 0.1;
  s.step = 3;
  for_each_schedule([&] {
    uint64_t seed = 100;
    for (const UpdateCase& c : kCases)
      for (int64_t n : kSizes)
        for (int64_t off : {0, 1}) {
          SCOPED_TRACE(std::string(dtype_name(c.master)) + "/" + std::string(dtype_name(c.grad)) + "/" +
                       std::string(dtype_name(c.copy)) + " n " + std::to_string(n) + " offset " + std::to_string(off));
          Operands h = make(c, n, off, seed, Device::cpu()), d = make(c, n, off, seed, kDev);
          seed += 10;
          adamw_update_(h.x, h.m, h.v, h.g, h.p, s);
          adamw_update_(d.x, d.m, d.v, d.g, d.p, s);
          expect_matches(d.x, h.x, -1, "master");
          expect_matches(d.m, h.m, -1, "exp_avg");
          expect_matches(d.v, h.v, -1, "exp_avg_sq");
          if (h.p.defined()) expect_matches(d.p, h.p, -1, "copy");
        }
  });
}

TEST(CudaOptim, SgdMatchesCpu) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    uint64_t seed = 500;
    for (const UpdateCase& c : kCases)
      for (int64_t n : {int64_t(5), int64_t(1031)})
        for (bool nesterov : {false, true})
          for (bool first : {false, true}) {
            SGDStep s;
            s.lr = 0.1;
            s.momentum = 0.9;
            s.weight_decay = 0.01;
            s.nesterov = nesterov;
            s.first = first;
            Operands h = make(c, n, 0, seed, Device::cpu()), d = make(c, n, 0, seed, kDev);
            seed += 10;
            sgd_update_(h.x, h.m, h.g, h.p, s);
            sgd_update_(d.x, d.m, d.g, d.p, s);
            expect_matches(d.x, h.x, -1, "master");
            expect_matches(d.m, h.m, -1, "momentum");
            if (h.p.defined()) expect_matches(d.p, h.p, -1, "copy");
          }
    SGDStep plain;  // no momentum: no buffer is read
    Operands h = make(kCases[0], 9, 0, 7, Device::cpu()), d = make(kCases[0], 9, 0, 7, kDev);
    sgd_update_(h.x, Tensor(), h.g, Tensor(), plain);
    sgd_update_(d.x, Tensor(), d.g, Tensor(), plain);
    expect_matches(d.x, h.x, -1, "plain sgd");
  });
}

TEST(CudaOptim, SumSquaresAndClipping) {
  HMOE_REQUIRE_CUDA();
  const Tensor big = rand_cpu({3 * kSumSquaresChunk + 17}, 9, DType::f32);
  Tensor first;
  for_each_schedule([&] {
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64})
      for (int64_t n : {int64_t(1), int64_t(100), kSumSquaresChunk, 2 * kSumSquaresChunk + 1}) {
        const Tensor x = rand_cpu({n}, 20 + uint64_t(n), dt);
        EXPECT_NEAR(sum_squares(x.to(kDev)).item(), sum_squares(x).item(), 1e-12 * sum_squares(x).item())
            << dtype_name(dt) << " n " << n;
      }
    EXPECT_EQ(sum_squares(Tensor::empty({0}, {DType::f32, kDev})).item(), 0.0);
    const Tensor s = sum_squares(big.to(kDev)).to(Device::cpu());
    if (!first.defined()) first = s;
    EXPECT_TRUE(bit_equal(s, first)) << "sum_squares differs between schedules";

    // clip_grad_norm_ on device parameters: the same norm and clipped gradients.
    Tensor a = rand_cpu({300}, 31, DType::f32).set_requires_grad(true);
    Tensor b = rand_cpu({7, 5}, 32, DType::f32).set_requires_grad(true);
    Tensor ad = a.detach().to(kDev).set_requires_grad(true), bd = b.detach().to(kDev).set_requires_grad(true);
    a.set_grad(rand_cpu({300}, 33, DType::f32));
    b.set_grad(rand_cpu({7, 5}, 34, DType::f32));
    ad.set_grad(a.grad().to(kDev));
    bd.set_grad(b.grad().to(kDev));
    const double nh = optim::clip_grad_norm_({a, b}, 0.5), nd = optim::clip_grad_norm_({ad, bd}, 0.5);
    EXPECT_NEAR(nd, nh, 1e-9 * nh);
    expect_matches(ad.grad(), a.grad(), -1, "clipped a");
    expect_matches(bd.grad(), b.grad(), -1, "clipped b");
  });
}

// The AdamW class on the device with bf16 parameters: f32 masters on the device, the
// same trajectory as on the CPU.
TEST(CudaOptim, AdamWClassWithBf16ParametersOnDevice) {
  HMOE_REQUIRE_CUDA();
  const Tensor init = rand_cpu({2, 65}, 40, DType::bf16);
  Tensor ph = init.clone().set_requires_grad(true), pd = init.to(kDev).set_requires_grad(true);
  optim::AdamWOptions o;
  o.lr = 0.02;
  o.weight_decay = 0.05;
  optim::AdamW oh({ph}, o), od({pd}, o);
  for (int t = 0; t < 3; ++t) {
    const Tensor g = rand_cpu({2, 65}, 41 + uint64_t(t), DType::bf16);
    ph.set_grad(g);
    pd.set_grad(g.to(kDev));
    oh.step();
    od.step();
  }
  EXPECT_EQ(pd.dtype(), DType::bf16);
  EXPECT_TRUE(pd.device().is_cuda());
  const auto sh = oh.state_tensors(), sd = od.state_tensors();
  ASSERT_EQ(sd.size(), 3u);
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_TRUE(sd[i].second.device().is_cuda()) << sd[i].first;
    expect_matches(sd[i].second, sh[i].second, 1e-5, sd[i].first);
  }
  expect_matches(pd, ph, -1, "bf16 parameter");
}

TEST(CudaOptim, MixedDevicesAreAnError) {
  HMOE_REQUIRE_CUDA();
  const Tensor m = zeros({4});
  EXPECT_THROW(adamw_update_(m, m.clone(), m.clone(), zeros({4}, {DType::f32, kDev}), Tensor(), {}), Error);
}

}  // namespace
}  // namespace hmoe
