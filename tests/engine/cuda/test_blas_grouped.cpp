// The BLAS layer's grouped GEMM (cublasGemmGroupedBatchedEx; OpenBLAS per product under
// emulation) against the CPU's matmul: products of different sizes in one call, every
// transpose pair, alpha and beta, f32 / bf16 / f16, padded leading dimensions, products
// with m = 0 (skipped, C untouched) and k = 0 (C cleared from poison), and bad input.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/cuda/blas.h"
#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "tests/support/cuda_util.h"
#include "tests/support/test_util.h"

namespace hmoe {
namespace {

using namespace testing;
namespace blas = cuda::blas;

struct Sizes {
  int64_t m, n, k;
};

// Row-major [rows, cols] with leading dimension cols + pad, random, on the device.
Tensor padded(int64_t rows, int64_t cols, int64_t pad, uint64_t seed, DType dt) {
  return rand_cpu({rows, cols + pad}, seed, dt, -1, 1).to(kDev);
}
Tensor valid(const Tensor& t, int64_t cols) { return t.narrow(1, 0, cols); }

TEST(CudaBlasGrouped, MatchesMatmulPerProduct) {
  HMOE_REQUIRE_CUDA();
  const std::vector<Sizes> sizes{{5, 7, 3}, {0, 4, 6}, {17, 9, 33}, {1, 1, 1}, {8, 3, 0}, {40, 24, 16}};
  uint64_t seed = 10;
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + (ta ? " A^T" : "") + (tb ? " B^T" : ""));
        blas::GroupedGemm g{.dtype = dt, .trans_a = ta, .trans_b = tb, .alpha = 0.5, .beta = 2.0};
        std::vector<Tensor> as, bs, cs, c0;
        for (const Sizes& s : sizes) {
          const int64_t ra = ta ? s.k : s.m, ca = ta ? s.m : s.k, rb = tb ? s.n : s.k, cb = tb ? s.k : s.n;
          as.push_back(padded(ra, ca, 1, seed++, dt));
          bs.push_back(padded(rb, cb, 2, seed++, dt));
          cs.push_back(padded(s.m, s.n, 3, seed++, dt));
          c0.push_back(cs.back().to(Device::cpu()));
          g.problems.push_back({s.m, s.n, s.k, ca + 1, cb + 2, s.n + 3, as.back().data_ptr<void>(),
                                bs.back().data_ptr<void>(), cs.back().data_ptr<void>()});
        }
        blas::grouped_gemm(g, cuda::current_stream(0));
        for (size_t i = 0; i < sizes.size(); ++i) {
          const Sizes& s = sizes[i];
          Tensor a = valid(as[i], ta ? s.m : s.k).to(Device::cpu()).to(DType::f64);
          Tensor b = valid(bs[i], tb ? s.k : s.n).to(Device::cpu()).to(DType::f64);
          if (ta) a = a.transpose(0, 1);
          if (tb) b = b.transpose(0, 1);
          const Tensor ref = matmul(a, b) * 0.5 + valid(c0[i], s.n).to(DType::f64) * 2.0;
          expect_matches(valid(cs[i], s.n).contiguous(), ref, -1, "product " + std::to_string(i));
          // The padding columns of C are never written.
          EXPECT_TRUE(bit_equal(cs[i].narrow(1, s.n, 3).to(Device::cpu()), c0[i].narrow(1, s.n, 3)));
        }
      }
}

TEST(CudaBlasGrouped, EmptyReductionClearsAndBadInputThrows) {
  HMOE_REQUIRE_CUDA();
  const Tensor a = rand_cpu({4, 3}, 1, DType::f32).to(kDev), b = rand_cpu({3, 5}, 2, DType::f32).to(kDev);
  Tensor c = Tensor::empty({4, 5}, {DType::f32, kDev});  // poisoned: NaN
  blas::GroupedGemm g;
  g.problems.push_back({4, 5, 0, 3, 5, 5, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>()});
  blas::grouped_gemm(g, cuda::current_stream(0));
  for (double v : c.to_vector()) EXPECT_EQ(v, 0.0);
  g.problems[0].k = 3;
  g.problems[0].lda = 2;
  EXPECT_HMOE_ERROR(blas::grouped_gemm(g, cuda::current_stream(0)), "lda=2");
  g.problems[0].lda = 3;
  g.dtype = DType::f64;
  EXPECT_HMOE_ERROR(blas::grouped_gemm(g, cuda::current_stream(0)), "f32, bf16 or f16");
}

}  // namespace
}  // namespace hmoe
