// Tensor::from_blob (the caller's memory, no copy, its deleter run once when the last
// tensor sharing it dies, views keeping it alive) and float -> integer conversion
// truncating toward zero (issue 20).
#include <memory>
#include <vector>

#include "engine/tensor.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "tests/support/test_util.h"
#ifdef HMOE_WITH_CUDA_BACKEND
#include "engine/cuda/runtime.h"
#endif

using namespace hmoe;
using namespace hmoe::testing;

namespace {

TEST(FromBlob, WrapsTheCallersMemoryWithoutACopy) {
  std::vector<float> mem{1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_blob(mem.data(), {2, 3}, DType::f32);
  EXPECT_EQ(t.data_ptr<float>(), mem.data());
  EXPECT_TRUE(t.is_contiguous());
  expect_close(t.select(0, 1), std::vector<double>{4, 5, 6}, 0);
  t.fill_(7.0);  // writes reach the caller's memory
  EXPECT_EQ(mem[5], 7.f);
  mem[0] = -1;  // and the caller's writes the tensor
  EXPECT_EQ(t.to_vector()[0], -1.0);
  const Tensor y = t * 2.0;  // a result is a tensor of its own
  EXPECT_NE(y.data_ptr<float>(), mem.data());
}

TEST(FromBlob, DeleterRunsOnceWhenTheLastViewDies) {
  int calls = 0;
  void* seen = nullptr;
  auto owner = std::make_shared<std::vector<double>>(std::vector<double>{1, 2, 3, 4});
  const std::weak_ptr<std::vector<double>> alive = owner;
  double* data = owner->data();
  {
    Tensor view;
    {
      // The deleter holds the memory's owner and lets it go.
      Tensor t = Tensor::from_blob(data, {4}, DType::f64, Device::cpu(),
                                   [&calls, &seen, keep = std::move(owner)](void* p) mutable {
                                     ++calls;
                                     seen = p;
                                     keep.reset();
                                   });
      Tensor copy = t;  // another handle
      view = t.narrow(0, 1, 2);
      EXPECT_EQ(calls, 0);
    }
    EXPECT_EQ(calls, 0) << "a view keeps the memory alive";
    expect_close(view, std::vector<double>{2, 3}, 0);
  }
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, data);
  EXPECT_TRUE(alive.expired());
}

TEST(FromBlob, ChecksItsInput) {
  alignas(8) char buf[16] = {};
  EXPECT_HMOE_ERROR(Tensor::from_blob(nullptr, {2}, DType::f32), "null data");
  EXPECT_HMOE_ERROR(Tensor::from_blob(buf + 1, {2}, DType::f32), "not aligned");
  EXPECT_HMOE_ERROR(Tensor::from_blob(buf, {-1}, DType::f32), "negative dimension");
  EXPECT_EQ(Tensor::from_blob(nullptr, {0, 3}, DType::f32).numel(), 0);
  // Autograd works on it as on any leaf.
  std::vector<float> mem{1, 2};
  Tensor p = Tensor::from_blob(mem.data(), {2}, DType::f32).set_requires_grad(true);
  (p * p).backward(ones({2}));
  expect_close(p.grad(), std::vector<double>{2, 4}, 0);
}

// Floating to integer conversion truncates toward zero (tensor.h), on every device.
TEST(Conversion, FloatToIntegerTruncatesTowardZero) {
  // Exact in f32 too, but for 2.7 (2.70000005 in f32: the same integer part).
  const std::vector<double> x{2.7, -2.7, 0.5, -0.5, 3.0, -1e9, 1099511627776.5};
  const std::vector<int64_t> want{2, -2, 0, 0, 3, -1000000000, 1099511627776};
  std::vector<Device> devices{Device::cpu()};
#ifdef HMOE_WITH_CUDA_BACKEND
  if (cuda::device_available()) devices.push_back(Device::cuda());
#endif
  for (Device d : devices)
    for (DType src : {DType::f64, DType::f32}) {
      SCOPED_TRACE(d.str() + " " + std::string(dtype_name(src)));
      const Tensor t = from_vector(x, {int64_t(x.size())}, {src, d});
      EXPECT_EQ(t.to(DType::i64).to(Device::cpu()).to_vector_as<int64_t>(), want);
      const std::vector<int32_t> small = t.narrow(0, 0, 5).to(DType::i32).to(Device::cpu()).to_vector_as<int32_t>();
      EXPECT_EQ(small, (std::vector<int32_t>{2, -2, 0, 0, 3}));
    }
}

}  // namespace
