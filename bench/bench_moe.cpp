// MoE and HyperMoE layer forward + backward on the CPU: tokens/s of one FFN layer at
// T = 2048 tokens, d = 256, d_ff = 1024, N = 8 experts, k = 1 and 2; the grouped GEMM
// alone in GFLOP/s against one dense GEMM of the same FLOPs.
#include <benchmark/benchmark.h>

#include "hmoe.h"
#include "models/hypermoe/ffn.h"
#include "ops/moe/grouped_gemm.h"

using namespace hmoe;

namespace {
train::ModelConfig cfg(int64_t k) {
  train::ModelConfig c;
  c.d_model = 256;
  c.d_ff = 1024;
  c.n_experts = 8;
  c.top_k = k;
  c.adapter_rank = 32;
  return c;
}

template <typename Layer>
void run_layer(benchmark::State& st, Layer& layer) {
  const int64_t T = 2048;
  Generator g(1), noise(2);
  Tensor x = normal({T, 256}, g).set_requires_grad(true);
  Tensor w = normal({T, 256}, g);
  for (auto _ : st) {
    model::FfnStats stats;
    Tensor y = layer.forward(x, stats, noise);
    sum(y * w).backward();
    layer.zero_grad();
    x.zero_grad();
  }
  st.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_moe_layer(benchmark::State& st) {
  Generator g(3);
  model::MoEFFN layer(cfg(st.range(0)), g);
  run_layer(st, layer);
}

void BM_hypermoe_layer(benchmark::State& st) {
  Generator g(3);
  auto c = cfg(st.range(0));
  auto hyper = std::make_shared<model::HyperNetwork>(c, 1, g);
  model::HyperMoEFFN layer(c, 0, hyper, g);
  run_layer(st, layer);
}

void BM_grouped_gemm(benchmark::State& st) {
  const int64_t M = 4096, K = 256, N = 1024, G = 8;
  Generator g(4);
  Tensor x = normal({M, K}, g), w = normal({G, K, N}, g);
  Tensor off = arange(0.0, double(M + 1), double(M / G));
  for (auto _ : st) benchmark::DoNotOptimize(moe::grouped_gemm(x, w, off));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * K * N / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_dense_same_flops(benchmark::State& st) {
  Generator g(4);
  Tensor x = normal({4096, 256}, g), w = normal({256, 1024}, g);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(x, w));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * 4096 * 256 * 1024 / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(BM_moe_layer)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_hypermoe_layer)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_grouped_gemm)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dense_same_flops)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
