// Tests of the CUDA backend's host layer: the device runtime (memory, guard canaries,
// copies, memset, streams, events), the caching device allocator and poisoning, tensor
// moves to and from the device for every dtype, and the copy/fill/arange/random/gemm
// kernels against the CPU backend.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <vector>

#include "engine/cuda/allocator.h"
#include "engine/cuda/blas.h"
#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "tests/support/cuda_util.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;

TEST(CudaRuntime, DeviceAndProperties) {
  HMOE_REQUIRE_CUDA();
  EXPECT_GE(cuda::device_count(), 1);
  const auto& p = cuda::properties(0);
  EXPECT_FALSE(p.name.empty());
  EXPECT_GE(p.major, 8);
  EXPECT_GT(p.multiprocessors, 0);
  EXPECT_EQ(p.warp_size, 32);
  EXPECT_FALSE(p.str().empty());
  EXPECT_HMOE_ERROR(cuda::check_device(cuda::device_count()), "cuda:");
  EXPECT_HMOE_ERROR(cuda::check_device(-1), "cuda:");
}

TEST(CudaRuntime, RawMallocCopyMemsetRoundTrip) {
  HMOE_REQUIRE_CUDA();
  for (size_t n : {size_t(1), size_t(7), size_t(256), size_t(1000), size_t(1) << 20}) {
    void* d = cuda::raw_malloc(n, 0);
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 256, 0u);
    EXPECT_EQ(cuda::pointer_device(d), 0);
    std::vector<unsigned char> h(n), back(n, 0);
    for (size_t i = 0; i < n; ++i) h[i] = static_cast<unsigned char>(i * 31 + 7);
    const cuda::Stream& s = cuda::current_stream(0);
    cuda::memcpy_async(d, h.data(), n, cuda::CopyKind::host_to_device, s);
    cuda::memcpy_async(back.data(), d, n, cuda::CopyKind::device_to_host, s);
    s.synchronize();
    EXPECT_EQ(h, back);
    // Device to device, then a memset over part of it.
    void* d2 = cuda::raw_malloc(n, 0);
    cuda::memcpy_async(d2, d, n, cuda::CopyKind::device_to_device, s);
    cuda::memset_async(d2, 0xAB, n / 2, s);
    cuda::memcpy_async(back.data(), d2, n, cuda::CopyKind::device_to_host, s);
    s.synchronize();
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(back[i], i < n / 2 ? 0xAB : h[i]) << i;
    cuda::raw_free(d2, 0);
    cuda::raw_free(d, 0);
  }
  EXPECT_EQ(cuda::pointer_device(nullptr), -1);
  int host = 0;
  EXPECT_EQ(cuda::pointer_device(&host), -1);
}

TEST(CudaRuntime, GuardCanaryViolationIsReported) {
  HMOE_REQUIRE_CUDA();
  if (!cuda::is_emulated()) GTEST_SKIP() << "guard canaries exist only in the emulated runtime";
  // Overrun by one byte past the end: the emulator's device memory is host memory, so
  // the test can play the faulty kernel.
  char* p = static_cast<char*>(cuda::raw_malloc(100, 0));
  p[100] = 1;
  EXPECT_HMOE_ERROR(cuda::raw_free(p, 0), "after the device allocation of 100 bytes");
  char* q = static_cast<char*>(cuda::raw_malloc(64, 0));
  q[-3] = 0;
  EXPECT_HMOE_ERROR(cuda::raw_free(q, 0), "before the device allocation of 64 bytes");
  // Freeing twice or freeing a foreign pointer.
  void* r = cuda::raw_malloc(8, 0);
  cuda::raw_free(r, 0);
  EXPECT_HMOE_ERROR(cuda::raw_free(r, 0), "freed twice");
  // Copies that leave device memory are refused.
  void* d = cuda::raw_malloc(16, 0);
  std::vector<char> h(32);
  EXPECT_HMOE_ERROR(
      cuda::memcpy_async(d, h.data(), 32, cuda::CopyKind::host_to_device, cuda::current_stream(0)),
      "not inside one device allocation");
  EXPECT_HMOE_ERROR(
      cuda::memcpy_async(h.data(), h.data() + 16, 16, cuda::CopyKind::device_to_host, cuda::current_stream(0)),
      "not inside one device allocation");
  cuda::raw_free(d, 0);
}

TEST(CudaRuntimeDeathTest, TensorGuardOverrunAborts) {
  HMOE_REQUIRE_CUDA();
  if (!cuda::is_emulated()) GTEST_SKIP() << "tensor guards exist only in the emulated runtime";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Tensor t = Tensor::empty({10}, {DType::f32, kDev});
        t.data_ptr<float>()[10] = 1.0f;  // one element past the end
      },
      "guard bytes after the device tensor memory of 40 bytes");
}

TEST(CudaRuntime, StreamsAndEvents) {
  HMOE_REQUIRE_CUDA();
  cuda::Stream a(0), b(0);
  EXPECT_NE(a.id(), b.id());
  EXPECT_NE(a.id(), cuda::current_stream(0).id());
  {
    cuda::StreamGuard g(a);
    EXPECT_EQ(cuda::current_stream(0).id(), a.id());
    {
      cuda::StreamGuard g2(b);
      EXPECT_EQ(cuda::current_stream(0).id(), b.id());
    }
    EXPECT_EQ(cuda::current_stream(0).id(), a.id());
  }
  EXPECT_NE(cuda::current_stream(0).id(), a.id());
  // Moving a stream keeps its id and handle.
  const uint64_t id = a.id();
  cuda::Stream moved(std::move(a));
  EXPECT_EQ(moved.id(), id);
  cuda::Event start(0), end(0);
  start.record(moved);
  std::vector<float> h(1 << 16, 1.5f), back(h.size());
  void* d = cuda::raw_malloc(h.size() * 4, 0);
  cuda::memcpy_async(d, h.data(), h.size() * 4, cuda::CopyKind::host_to_device, moved);
  cuda::memcpy_async(back.data(), d, h.size() * 4, cuda::CopyKind::device_to_host, moved);
  end.record(moved);
  end.wait_on(b);
  end.synchronize();
  EXPECT_TRUE(end.query());
  EXPECT_GE(start.elapsed_ms(end), 0.0f);
  EXPECT_EQ(h, back);
  cuda::raw_free(d, 0);
  cuda::device_synchronize(0);
  cuda::PinnedBuffer pb(4096);
  EXPECT_NE(pb.data(), nullptr);
  EXPECT_EQ(pb.size(), 4096u);
  cuda::PinnedBuffer pb2(std::move(pb));
  EXPECT_EQ(pb.data(), nullptr);
  EXPECT_EQ(pb2.size(), 4096u);
}

TEST(CudaAllocator, CachingStatsOnTheDevice) {
  HMOE_REQUIRE_CUDA();
  auto& ca = cuda::caching_allocator(0);
  const auto before = ca.stats();
  {
    Tensor t = Tensor::empty({1000}, {DType::f32, kDev});
    const auto mid = ca.stats();
    EXPECT_EQ(mid.allocations, before.allocations + 1);
    EXPECT_GE(mid.allocated, before.allocated + 4000);
  }
  const auto after = ca.stats();
  EXPECT_EQ(after.allocated, before.allocated);
  EXPECT_EQ(after.frees, before.frees + 1);
  // The same size again comes from the cache.
  { Tensor t = Tensor::empty({1000}, {DType::f32, kDev}); }
  EXPECT_GT(ca.stats().cache_hits, after.cache_hits);
  ca.empty_cache();
  EXPECT_LE(ca.stats().reserved, after.reserved);
  // A block used on another stream is recorded through an event and then reused.
  cuda::Stream s(0);
  void* p = ca.allocate(4096, cuda::current_stream(0).id());
  ca.record_stream(p, s.id());
  ca.free(p);
  void* q = ca.allocate(4096, cuda::current_stream(0).id());
  ca.free(q);
  // Empty tensors have no storage.
  Tensor e = Tensor::empty({0, 3}, {DType::f32, kDev});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.to(Device::cpu()).numel(), 0);
}

TEST(CudaAllocator, PoisonVisibleInFreshAllocations) {
  HMOE_REQUIRE_CUDA();
  const bool was = cuda::poison_allocations();
  cuda::set_poison_allocations(true);
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    Tensor t = Tensor::empty({37}, {dt, kDev});
    for (double v : t.to(Device::cpu()).to_vector()) EXPECT_TRUE(std::isnan(v)) << dtype_name(dt);
  }
  Tensor i = Tensor::empty({5}, {DType::i64, kDev});
  for (double v : i.to(Device::cpu()).to_vector()) EXPECT_EQ(v, -1.0);
  cuda::set_poison_allocations(was);
}

// Every dtype to the device and back, contiguous and not.
TEST(CudaCopy, ToDeviceAndBackEveryDType) {
  HMOE_REQUIRE_CUDA();
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::b8}) {
    SCOPED_TRACE(std::string(dtype_name(dt)));
    Tensor src = testing::rand_t({5, 7, 3}, 11, -50, 50, DType::f64).to(dt);
    Tensor d = src.to(kDev);
    EXPECT_TRUE(d.device().is_cuda());
    EXPECT_EQ(d.to(Device::cpu()).to_vector(), src.to_vector());
    // Non-contiguous views on the host side and on the device side.
    Tensor v = src.permute({2, 0, 1}).slice(2, 1, 7, 2);
    EXPECT_EQ(v.to(kDev).to(Device::cpu()).to_vector(), v.to_vector());
    Tensor dv = d.permute({2, 0, 1}).slice(2, 1, 7, 2);
    EXPECT_EQ(dv.to(Device::cpu()).to_vector(), v.to_vector());
    EXPECT_EQ(dv.contiguous().to(Device::cpu()).to_vector(), v.to_vector());
    // A scalar.
    Tensor s = src.select(0, 2).select(0, 3).select(0, 1);
    EXPECT_EQ(s.to(kDev).item(), s.item());
  }
}

// The bytes of a tensor (moved to the CPU, made contiguous): for bit-exact checks.
std::vector<unsigned char> bytes_of(const Tensor& t) {
  Tensor c = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr<void>());
  return std::vector<unsigned char>(p, p + c.nbytes());
}

const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::b8};
const std::vector<DType> kFloatDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16};

// Values that exercise the conversions: rounding ties of bf16 and f16, f16 overflow and
// subnormals, signed zero, infinities (float destinations only).
Tensor special_values() {
  std::vector<double> v = {0.0, -0.0, 1.0, -1.0, 1.00390625, 1.01171875, 1.0009765625, 1.0029296875, 65504.0,
                           65520.0, 70000.0, -1e6, 1e-5, 6e-8, 3e-8, 1e-40, 3.4e38, 1e300, -1e-300,
                           std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                           0.1, 1.0 / 3, 2.5, -2.5, 1e5 + 0.5, 16777217.0};
  return from_vector(v, {int64_t(v.size())}, {DType::f64});
}

TEST(CudaCopy, ConversionsMatchCpuBitForBit) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType from : kAllDTypes) {
      for (DType to : kAllDTypes) {
        SCOPED_TRACE(std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to)));
        // Random values in a range every dtype holds, in several layouts.
        Tensor x = testing::rand_t({4, 9, 5}, 100 + uint64_t(from) * 7 + uint64_t(to), -100, 100).to(from);
        Tensor xd = x.to(kDev);
        EXPECT_EQ(bytes_of(xd.to(to)), bytes_of(x.to(to)));
        Tensor xv = x.permute({1, 2, 0}).slice(0, 1, 8, 3), xdv = xd.permute({1, 2, 0}).slice(0, 1, 8, 3);
        EXPECT_EQ(bytes_of(xdv.to(to)), bytes_of(xv.to(to)));
        Tensor xe = x.select(1, 2).unsqueeze(1).expand({4, 6, 5}), xde = xd.select(1, 2).unsqueeze(1).expand({4, 6, 5});
        EXPECT_EQ(bytes_of(xde.to(to)), bytes_of(xe.to(to)));
        if (is_floating(to) && is_floating(from)) {
          Tensor sp = special_values().to(from);
          EXPECT_EQ(bytes_of(sp.to(kDev).to(to)), bytes_of(sp.to(to)));
        }
      }
    }
  });
}

TEST(CudaCopy, StridedCopiesAnyRank) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    // One element, a size not a multiple of the block, and rank 8 permuted.
    for (const Shape& shape : {Shape{1}, Shape{1000003 % 4099}, Shape{2, 3, 1, 2, 3, 2, 2, 3}}) {
      Tensor x = testing::rand_t(shape, 7, -3, 3, DType::f32);
      Shape perm(shape.size());
      for (size_t i = 0; i < perm.size(); ++i) perm[i] = int64_t(perm.size() - 1 - i);
      Tensor xp = x.permute(perm);
      Tensor d = xp.to(kDev);
      EXPECT_EQ(bytes_of(d), bytes_of(xp));
      EXPECT_TRUE(d.is_contiguous());
      EXPECT_EQ(bytes_of(x.to(kDev).permute(perm).contiguous()), bytes_of(xp.contiguous()));
    }
    // copy_ into a non-contiguous device view with dtype conversion and broadcasting.
    Tensor dst = zeros({6, 8}, {DType::bf16, kDev});
    Tensor src = testing::rand_t({8}, 9, -2, 2, DType::f64).to(kDev);
    dst.t().slice(1, 1, 6, 2).copy_(src.unsqueeze(1).expand({8, 3}));
    Tensor ref = zeros({6, 8}, {DType::bf16});
    ref.t().slice(1, 1, 6, 2).copy_(src.to(Device::cpu()).unsqueeze(1).expand({8, 3}));
    EXPECT_EQ(bytes_of(dst), bytes_of(ref));
    // Empty.
    EXPECT_EQ(Tensor::empty({0, 4}, {DType::f32, kDev}).to(DType::f16).numel(), 0);
  });
}

TEST(CudaFactory, FillArangeMatchCpu) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : kAllDTypes) {
      SCOPED_TRACE(std::string(dtype_name(dt)));
      for (double v : {0.0, 1.0, -1.0, 0.1, 3.75, 300.5}) {
        EXPECT_EQ(bytes_of(full({3, 37}, v, {dt, kDev})), bytes_of(full({3, 37}, v, {dt})));
      }
      EXPECT_EQ(bytes_of(zeros({1}, {dt, kDev})), bytes_of(zeros({1}, {dt})));
      // A strided fill leaves the other elements alone.
      Tensor d = full({5, 9}, 2.0, {dt, kDev}), c = full({5, 9}, 2.0, {dt});
      d.t().slice(0, 1, 9, 3).fill_(-7.25);
      c.t().slice(0, 1, 9, 3).fill_(-7.25);
      EXPECT_EQ(bytes_of(d), bytes_of(c));
      if (dt != DType::b8) {
        EXPECT_EQ(bytes_of(arange(-3.5, 250.0, 0.37, {dt, kDev})), bytes_of(arange(-3.5, 250.0, 0.37, {dt})));
        EXPECT_EQ(bytes_of(arange(1000, {dt, kDev})), bytes_of(arange(1000, {dt})));
        EXPECT_EQ(arange(5.0, 5.0, 1.0, {dt, kDev}).numel(), 0);
      } else {
        EXPECT_HMOE_ERROR(arange(4, {dt, kDev}), "arange");
      }
    }
  });
}

TEST(CudaFactory, RandomMatchesCpuPhilox) {
  HMOE_REQUIRE_CUDA();
  for_each_schedule([&] {
    for (DType dt : kFloatDTypes) {
      SCOPED_TRACE(std::string(dtype_name(dt)));
      for (const Shape& shape : {Shape{1}, Shape{1031}, Shape{4, 333}}) {
        Generator g1(1234 + uint64_t(dt), 77), g2(1234 + uint64_t(dt), 77);
        Tensor ud = uniform(shape, g1, -0.5, 2.0, {dt, kDev}), uc = uniform(shape, g2, -0.5, 2.0, {dt});
        EXPECT_EQ(bytes_of(ud), bytes_of(uc));
        Tensor nd = normal(shape, g1, 0.25, 1.5, {dt, kDev}), nc = normal(shape, g2, 0.25, 1.5, {dt});
        if (cuda::is_emulated()) {
          EXPECT_EQ(bytes_of(nd), bytes_of(nc));  // the emulator uses the host's log/cos
        } else {
          // The device's double log/cos may differ from glibc's in the last ulp.
          expect_matches(nd, nc, dt == DType::f64 ? 1e-14 : testing::tolerance(dt));
        }
        EXPECT_EQ(g1.offset(), g2.offset());
      }
    }
    EXPECT_HMOE_ERROR(
        [] {
          Generator g(1);
          return uniform({3}, g, 0, 1, {DType::i32, kDev});
        }(),
        "uniform");
  });
}

// gemm through the public matmul/linear ops: transposes, batches with broadcasting, k = 0.
TEST(CudaGemm, MatmulMatchesCpu) {
  HMOE_REQUIRE_CUDA();
  struct Case {
    Shape a, b;
    bool ta, tb;
  };
  const std::vector<Case> cases = {
      {{1, 1}, {1, 1}, false, false},     {{7, 13}, {13, 5}, false, false}, {{7, 13}, {13, 5}, true, true},
      {{33, 65}, {65, 17}, true, false},  {{3, 9, 4}, {3, 4, 6}, false, false}, {{2, 1, 5, 8}, {3, 8, 4}, false, false},
      {{4, 6, 5}, {5, 7}, false, false},  {{6, 0}, {0, 3}, false, false},   {{0, 4}, {4, 3}, false, false},
      {{129}, {129, 3}, false, false},    {{2, 5, 64}, {2, 64, 70}, false, true}};
  for_each_schedule([&] {
    for (DType dt : kFloatDTypes) {
      for (const Case& c : cases) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(c.a) + " x " + shape_str(c.b));
        Tensor a = testing::rand_t(c.a, 5 + c.a.size(), -1, 1, DType::f64).to(dt);
        Tensor b = testing::rand_t(c.b, 6 + c.b.size(), -1, 1, DType::f64).to(dt);
        if (c.ta) a = a.transpose(-1, -2).contiguous().transpose(-1, -2);  // a column-major view
        if (c.tb) b = b.transpose(-1, -2).contiguous().transpose(-1, -2);
        Tensor ref = matmul(a, b);
        Tensor out = matmul(a.to(kDev), b.to(kDev));
        expect_matches(out, ref);
      }
      // linear: x W^T + b.
      Tensor x = testing::rand_t({3, 4, 10}, 31, -1, 1, DType::f64).to(dt);
      Tensor w = testing::rand_t({6, 10}, 32, -1, 1, DType::f64).to(dt);
      Tensor bias = testing::rand_t({6}, 33, -1, 1, DType::f64).to(dt);
      const double tol = dt == DType::bf16 ? 2e-2 : -1;  // the bias add rounds once more in bf16
      expect_matches(linear(x.to(kDev), w.to(kDev), bias.to(kDev)), linear(x, w, bias), tol);
    }
  });
}

TEST(CudaGemm, BlasLayerArgumentsAndBeta) {
  HMOE_REQUIRE_CUDA();
  Tensor a = testing::rand_t({2, 3, 4}, 1, -1, 1, DType::f32).to(kDev);
  Tensor b = testing::rand_t({2, 4, 5}, 2, -1, 1, DType::f32).to(kDev);
  Tensor c = testing::rand_t({2, 3, 5}, 3, -1, 1, DType::f32).to(kDev);
  cuda::blas::Gemm g;
  g.m = 3, g.n = 5, g.k = 4, g.lda = 4, g.ldb = 5, g.ldc = 5, g.batch = 2, g.stride_a = 12, g.stride_b = 20,
  g.stride_c = 15, g.alpha = 0.5, g.beta = 2.0;
  const Tensor c0 = c.to(Device::cpu());
  cuda::blas::gemm(g, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>(), cuda::current_stream(0));
  Tensor ref = matmul(a.to(Device::cpu()), b.to(Device::cpu())) * 0.5 + c0 * 2.0;
  expect_matches(c, ref);
  // k = 0 scales C by beta; beta = 0 clears it even when it held NaN (poison).
  g.k = 0;
  g.beta = 0;
  Tensor p = Tensor::empty({2, 3, 5}, {DType::f32, kDev});
  cuda::set_poison_allocations(true);
  Tensor poisoned = Tensor::empty({2, 3, 5}, {DType::f32, kDev});
  cuda::blas::gemm(g, a.data_ptr<void>(), b.data_ptr<void>(), poisoned.data_ptr<void>(), cuda::current_stream(0));
  for (double v : poisoned.to_vector()) EXPECT_EQ(v, 0.0);
  g.k = 4;
  g.lda = 3;
  EXPECT_HMOE_ERROR(
      cuda::blas::gemm(g, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>(), cuda::current_stream(0)),
      "lda=3");
  g.lda = 4;
  g.dtype = DType::i32;
  EXPECT_HMOE_ERROR(
      cuda::blas::gemm(g, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>(), cuda::current_stream(0)),
      "unsupported dtype");
  (void)p;
}

}  // namespace
}  // namespace hmoe
