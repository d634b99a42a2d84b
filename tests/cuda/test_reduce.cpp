// Reduction kernels on the cuda device against the CPU backend: sum, mean, max/min with
// indices, argmax ties and NaN, logsumexp, over leading, middle, last and all dims with
// keepdim, odd sizes, integers, gradients; and bit-identical results across schedules.
#include "tests/cuda/cuda_test_util.h"

namespace hmoe::testing::cuda {
namespace {

TEST(CudaReduce, AllOpsOverDims) {
  HMOE_REQUIRE_CUDA();
  const std::vector<std::pair<Shape, std::vector<int64_t>>> cases{
      {{1}, {0}},       {{7}, {0}},          {{5, 300}, {1}},   {{300, 5}, {0}},   {{4, 37, 9}, {1}},
      {{3, 4, 5}, {0, 2}}, {{2, 3, 70}, {0, 1, 2}}, {{33, 1000}, {1}}, {{3, 1}, {1}}};
  for_each_schedule([&] {
    uint64_t seed = 40;
    for (DType dt : {DType::f32, DType::bf16, DType::f64})
      for (const auto& [sh, dims] : cases)
        for (bool keep : {false, true}) {
          SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(sh) + (keep ? " keepdim" : ""));
          Tensor x = rand_cpu(sh, ++seed, dt);
          Tensor xd = x.to(kDev);
          expect_matches(sum(xd, dims, keep), sum(x, dims, keep), -1, "sum");
          expect_matches(mean(xd, dims, keep), mean(x, dims, keep), -1, "mean");
          expect_matches(logsumexp(xd, dims, keep), logsumexp(x, dims, keep), -1, "logsumexp");
          if (dims.size() == 1) {
            auto [mc, ic] = max(x, dims[0], keep);
            auto [md, id] = max(xd, dims[0], keep);
            expect_matches(md, mc, 0, "max");
            EXPECT_EQ(id.to(Device::cpu()).to_vector(), ic.to_vector()) << "argmax indices";
            auto [nc, jc] = min(x, dims[0], keep);
            auto [nd, jd] = min(xd, dims[0], keep);
            expect_matches(nd, nc, 0, "min");
            EXPECT_EQ(jd.to(Device::cpu()).to_vector(), jc.to_vector()) << "argmin indices";
          }
        }
  });
}

TEST(CudaReduce, TiesNaNAndIntegers) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([] {
    // Ties go to the first index; a NaN wins (its first occurrence).
    Tensor t = from_vector(std::vector<float>{1, 3, 3, 0, 3, 2, NAN, 5, NAN, 1, 1, 1}, {3, 4});
    EXPECT_EQ(argmax(t.to(kDev), 1).to(Device::cpu()).to_vector(), argmax(t, 1).to_vector());
    EXPECT_EQ(argmin(t.to(kDev), 1).to(Device::cpu()).to_vector(), argmin(t, 1).to_vector());
    EXPECT_EQ(argmax(t.to(kDev), 0).to(Device::cpu()).to_vector(), argmax(t, 0).to_vector());
    Tensor big = zeros({2, 5000});  // all ties across many slices: index 0
    EXPECT_EQ(argmax(big.to(kDev), 1).to(Device::cpu()).to_vector(), std::vector<double>({0, 0}));
    // Integers reduce exactly.
    Tensor i = arange(-500, 700, 1, {DType::i64}).reshape({3, 400});
    EXPECT_EQ(sum(i.to(kDev), {1}).to(Device::cpu()).to_vector(), sum(i, {1}).to_vector());
    EXPECT_EQ(max(i.to(kDev), 0).first.to(Device::cpu()).to_vector(), max(i, 0).first.to_vector());
    // logsumexp of -inf rows is -inf, of +inf rows +inf.
    Tensor inf = from_vector(std::vector<float>{-INFINITY, -INFINITY, INFINITY, 1.f}, {2, 2});
    EXPECT_EQ(logsumexp(inf.to(kDev), {1}).to(Device::cpu()).to_vector(), logsumexp(inf, {1}).to_vector());
    EXPECT_HMOE_ERROR(max(zeros({3, 0}).to(kDev), 1), "empty");
  });
}

TEST(CudaReduce, GradientsAndDeterminism) {
  HMOE_REQUIRE_CUDA();
  Tensor x = rand_cpu({6, 50, 7}, 5, DType::f32);
  auto grads = [&](Device dev) {
    Tensor xd = x.to(dev).detach().set_requires_grad(true);
    Tensor y = sum(logsumexp(xd, {1}) * 2.0) + sum(max(xd, 2).first) + sum(mean(xd, {0, 2}));
    y.backward();
    return std::make_pair(y.detach().to(Device::cpu()), xd.grad().to(Device::cpu()));
  };
  auto [yc, gc] = grads(Device::cpu());
  std::vector<double> first;
  for_each_schedule([&] {
    auto [yd, gd] = grads(kDev);
    EXPECT_LE(rel_error(yd, yc), 1e-5);
    EXPECT_LE(rel_error(gd, gc), 1e-5);
    // Same bits under every schedule.
    const auto v = sum(rand_cpu({3, 100000}, 9, DType::f32).to(kDev), {1}).to(Device::cpu()).to_vector();
    if (first.empty()) first = v;
    EXPECT_EQ(v, first);
  });
}

}  // namespace
}  // namespace hmoe::testing::cuda
