// GEMM throughput: hmoe::matmul (f32) against cblas_sgemm called directly on the same
// buffers, at square, tall-skinny and MoE-like shapes. Counter: GFLOP/s (2mnk / s).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include "hmoe.h"

using namespace hmoe;

namespace {
Tensor rn(const Shape& s, uint64_t seed) {
  Generator g(seed);
  return normal(s, g);
}

void set_flops(benchmark::State& st, int64_t m, int64_t n, int64_t k) {
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                              benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  st.counters["GFLOP/s"].value /= 1e9;
}

void BM_hmoe_matmul(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  Tensor a = rn({m, k}, 1), b = rn({k, n}, 2);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b));
  set_flops(st, m, n, k);
}

void BM_cblas_sgemm(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  Tensor a = rn({m, k}, 1), b = rn({k, n}, 2), c = zeros({m, n});
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.f, a.data_ptr<float>(), int(k),
                b.data_ptr<float>(), int(n), 0.f, c.data_ptr<float>(), int(n));
    benchmark::ClobberMemory();
  }
  set_flops(st, m, n, k);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->Args({512, 512, 512})->Args({1024, 1024, 1024})->Args({2048, 2048, 2048})->Args({4096, 1024, 1024})
      ->Args({8192, 512, 128})->Args({2048, 128, 512})->Unit(benchmark::kMillisecond)->UseRealTime();
}
}  // namespace

BENCHMARK(BM_hmoe_matmul)->Apply(shapes);
BENCHMARK(BM_cblas_sgemm)->Apply(shapes);
BENCHMARK_MAIN();
