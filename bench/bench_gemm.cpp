// GEMM throughput: hmoe::gemm and hmoe::matmul (f32) side by side with cblas_sgemm
// called directly on the same buffers (OpenBLAS's own threading); hmoe's packed kernel
// on one core per ISA, its cache blocking, and the core's FMA peak; causal attention
// forward / forward+backward against the composite-op formulation.
// Counter GFLOP/s: 2mnk per GEMM; attention counts only the causal (unmasked) work.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <vector>

#include "hmoe.h"
#include "ops/cpu/gemm_kernel.h"

using namespace hmoe;

namespace {

Tensor rn(const Shape& s, uint64_t seed, bool grad = false) {
  Generator g(seed);
  Tensor t = normal(s, g);
  if (grad) t.set_requires_grad(true);
  return t;
}

void set_gflops(benchmark::State& st, double flops) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_hmoe_gemm(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const Tensor a = rn({m, k}, 1), b = rn({k, n}, 2), c = zeros({m, n});
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = k;
  g.lda = k;
  g.ldb = n;
  g.ldc = n;
  for (auto _ : st) {
    gemm(g, a, b, c);
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * double(m) * double(n) * double(k));
}

void BM_hmoe_matmul(benchmark::State& st) {  // includes allocating C
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const Tensor a = rn({m, k}, 1), b = rn({k, n}, 2);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b));
  set_gflops(st, 2.0 * double(m) * double(n) * double(k));
}

// Direct OpenBLAS as a user would call it: its own threads, as many as hmoe uses.
// (hmoe keeps OpenBLAS single-threaded and tiles over its own pool; restored after.)
void BM_cblas_sgemm(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const Tensor a = rn({m, k}, 1), b = rn({k, n}, 2), c = zeros({m, n});  // registers hmoe's kernels first
  openblas_set_num_threads(st.range(3) == 0 ? num_threads() : int(st.range(3)));
  for (auto _ : st) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(k), 1.f, a.data_ptr<float>(), int(k),
                b.data_ptr<float>(), int(n), 0.f, c.data_ptr<float>(), int(n));
    benchmark::ClobberMemory();
  }
  openblas_set_num_threads(1);
  set_gflops(st, 2.0 * double(m) * double(n) * double(k));
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  for (auto s : std::vector<std::vector<int64_t>>{{512, 512, 512},
                                                  {1024, 1024, 1024},
                                                  {2048, 2048, 2048},
                                                  {4096, 1024, 1024},
                                                  {8192, 512, 128},
                                                  {2048, 128, 512}})
    b->Args(s);
  b->ArgNames({"m", "k", "n"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

void cblas_shapes(benchmark::internal::Benchmark* b) {  // 4th arg: OpenBLAS threads (0 = hmoe's count)
  for (int64_t threads : {0, 1})
    for (auto s : std::vector<std::vector<int64_t>>{{512, 512, 512},
                                                    {1024, 1024, 1024},
                                                    {2048, 2048, 2048},
                                                    {4096, 1024, 1024},
                                                    {8192, 512, 128},
                                                    {2048, 128, 512}})
      b->Args({s[0], s[1], s[2], threads});
  b->ArgNames({"m", "k", "n", "blas_threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// hmoe's packed kernel alone on the calling thread (one core), per ISA (0 portable,
// 1 avx2, 2 avx512; skipped where the CPU lacks it), transposes from the 4th/5th args.
void BM_sgemm_kernel(benchmark::State& st) {
  const auto isa = ops::cpu::GemmIsa(st.range(0));
  const int64_t m = st.range(1), k = st.range(2), n = st.range(3);
  const bool ta = st.range(4) != 0, tb = st.range(5) != 0;
  if (!ops::cpu::gemm_isa_supported(isa)) return st.SkipWithError("ISA not supported by this CPU");
  const Tensor a = rn({m, k}, 1), b = rn({k, n}, 2), c = zeros({m, n});
  const ops::cpu::GemmA ga{a.data_ptr<float>(), ta ? m : k, ta};
  const ops::cpu::GemmB gb{b.data_ptr<float>(), tb ? k : n, tb};
  for (auto _ : st) {
    ops::cpu::sgemm(m, n, k, 1.f, ga, gb, 0.f, c.data_ptr<float>(), n, isa);
    benchmark::ClobberMemory();
  }
  st.SetLabel(ops::cpu::gemm_isa_name(isa));
  set_gflops(st, 2.0 * double(m) * double(n) * double(k));
}

void kernel_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t isa : {2, 1})
    for (auto s : std::vector<std::vector<int64_t>>{{256, 256, 1024, 0, 0},
                                                    {256, 1024, 256, 0, 0},
                                                    {256, 1024, 256, 0, 1},
                                                    {256, 256, 1024, 1, 0},
                                                    {512, 256, 1024, 0, 0},  // an expert's up-projection
                                                    {256, 512, 1024, 1, 0},  // its dW (x^T dy)
                                                    {256, 512, 1024, 0, 0},
                                                    {1024, 1024, 1024, 0, 0},
                                                    {64, 512, 512, 0, 0},
                                                    // a hypernetwork head (P = 28 patterns, W [8192, 128])
                                                    // as tiled on 2 threads: forward, dX, dW
                                                    {28, 128, 2048, 0, 1},
                                                    {28, 8192, 64, 0, 0},
                                                    {2048, 28, 128, 1, 0}})
      b->Args({isa, s[0], s[1], s[2], s[3], s[4]});
  b->Args({0, 256, 256, 256, 0, 0});
  b->ArgNames({"isa", "m", "k", "n", "ta", "tb"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// A few rows against a wide B (an expert's products at prefill, ~m tokens per expert), best
// ISA, one core: the small-m loop reading B in place (packed 0) against the packed driver
// (packed 1, GemmBlocking::small_off). Beyond sgemm's small-m limit both run the packed one.
void BM_sgemm_small_m(benchmark::State& st) {
  const int64_t m = st.range(0), k = st.range(1), n = st.range(2);
  const Tensor a = rn({m, k}, 1), b = rn({k, n}, 2), c = zeros({m, n});
  ops::cpu::GemmBlocking bl;
  bl.small_off = st.range(3) != 0;
  for (auto _ : st) {
    ops::cpu::sgemm(m, n, k, 1.f, {a.data_ptr<float>(), k}, {b.data_ptr<float>(), n}, 0.f, c.data_ptr<float>(), n,
                    ops::cpu::gemm_best_isa(), bl);
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * double(m) * double(n) * double(k));
}

// Cache blocking of the best ISA at 1024^3 on one core (mc, kc, nc); results do not depend on it.
void BM_sgemm_kernel_blocking(benchmark::State& st) {
  const int64_t s = 1024;
  const Tensor a = rn({s, s}, 1), b = rn({s, s}, 2), c = zeros({s, s});
  const ops::cpu::GemmBlocking bl{st.range(0), st.range(1), st.range(2)};
  for (auto _ : st) {
    ops::cpu::sgemm(s, s, s, 1.f, {a.data_ptr<float>(), s}, {b.data_ptr<float>(), s}, 0.f, c.data_ptr<float>(), s,
                    ops::cpu::gemm_best_isa(), bl);
    benchmark::ClobberMemory();
  }
  set_gflops(st, 2.0 * double(s) * double(s) * double(s));
}

// The core's f32 FMA peak: 12 independent zmm (AVX-512) FMA chains, 32 flops each.
#if defined(__x86_64__)
__attribute__((target("avx512f"))) void fma_block(int64_t iters) {
  for (int64_t i = 0; i < iters; ++i)
    asm volatile(
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm2\n vfmadd231ps %%zmm0, %%zmm1, %%zmm3\n"
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm4\n vfmadd231ps %%zmm0, %%zmm1, %%zmm5\n"
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm6\n vfmadd231ps %%zmm0, %%zmm1, %%zmm7\n"
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm8\n vfmadd231ps %%zmm0, %%zmm1, %%zmm9\n"
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm10\n vfmadd231ps %%zmm0, %%zmm1, %%zmm11\n"
        "vfmadd231ps %%zmm0, %%zmm1, %%zmm12\n vfmadd231ps %%zmm0, %%zmm1, %%zmm13\n" ::
            : "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13");
}
void BM_fma_peak_avx512(benchmark::State& st) {
  if (ops::cpu::gemm_best_isa() != ops::cpu::GemmIsa::avx512) return st.SkipWithError("no AVX-512");
  constexpr int64_t kIters = 1 << 20;
  for (auto _ : st) fma_block(kIters);
  set_gflops(st, double(kIters) * 12 * 32);
}
BENCHMARK(BM_fma_peak_avx512)->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

// Causal attention at B=4, H=4, T=256, Dh=32: useful flops 2 * B*H * T(T+1) * Dh
// forward (QK^T and PV over the lower triangle); backward does 2.5x that.
constexpr int64_t kB = 4, kH = 4, kT = 256, kD = 32;
double attn_fwd_flops() { return 2.0 * kB * kH * double(kT) * double(kT + 1) * kD; }

Tensor composite_attention(const Tensor& q, const Tensor& k, const Tensor& v) {
  const Tensor s = matmul(q, k.transpose(-1, -2)) * (1.0 / std::sqrt(double(q.size(3))));
  const Tensor future = gt(arange(q.size(2)).unsqueeze(0), arange(q.size(2)).unsqueeze(1));
  return matmul(softmax(masked_fill(s, future, -INFINITY), -1), v);
}

template <bool kFused, bool kBackward>
void BM_attention(benchmark::State& st) {
  const Shape s{kB, kH, kT, kD};
  const Tensor q = rn(s, 1, kBackward), k = rn(s, 2, kBackward), v = rn(s, 3, kBackward), w = rn(s, 4);
  for (auto _ : st) {
    Tensor o = kFused ? causal_attention(q, k, v) : composite_attention(q, k, v);
    if constexpr (kBackward) sum(o * w).backward();
    benchmark::DoNotOptimize(o);
  }
  set_gflops(st, attn_fwd_flops() * (kBackward ? 3.5 : 1.0));
}

}  // namespace

BENCHMARK(BM_hmoe_gemm)->Apply(gemm_shapes);
BENCHMARK(BM_hmoe_matmul)->Apply(gemm_shapes);
BENCHMARK(BM_cblas_sgemm)->Apply(cblas_shapes);
BENCHMARK(BM_sgemm_kernel)->Apply(kernel_shapes);
BENCHMARK(BM_sgemm_small_m)
    ->ArgNames({"m", "k", "n", "packed"})
    ->ArgsProduct({{14, 42, 84, 112, 168}, {256, 1024}, {1024}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_sgemm_kernel_blocking)
    ->ArgNames({"mc", "kc", "nc"})
    ->Args({84, 384, 1024})
    ->Args({168, 128, 1024})
    ->Args({168, 256, 1024})
    ->Args({168, 384, 1024})
    ->Args({168, 512, 1024})
    ->Args({336, 384, 1024})
    ->Args({672, 384, 1024})
    ->Args({168, 256, 512})
    ->Args({168, 384, 512})
    ->Args({168, 512, 512})
    ->Args({168, 256, 256})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention<true, false>)->Name("BM_attention_fwd/fused")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention<false, false>)->Name("BM_attention_fwd/composite")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention<true, true>)->Name("BM_attention_fwd_bwd/fused")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention<false, true>)
    ->Name("BM_attention_fwd_bwd/composite")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_MAIN();
