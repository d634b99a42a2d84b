// MoE benchmarks on the CPU: the grouped GEMM (forward, dX, dW) at MoE-layer shapes
// (T = 4096 tokens, d = 512, d_ff = 2048, N = 8 experts, k = 2) in GFLOP/s against one
// dense OpenBLAS cblas_sgemm and hmoe's dense matmul of the same FLOPs, the CPU kernel
// choices that were measured (tile sizes, hmoe's packed kernel vs OpenBLAS per tile, at
// these shapes and at the model layer's, per-group BLAS with OpenBLAS's own threads, a
// hand-blocked loop kernel), the MoE FFN built from the ops (fwd + bwd), and the model
// layers (MoEFFN / HyperMoEFFN) with their tokens/s and peak memory.
// f32 GEMMs run on hmoe's own kernel; only the OpenBLAS rows depend on OpenBLAS's core
// (OPENBLAS_CORETYPE=SkylakeX where 0.3.21 does not recognise the CPU).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/profiler.h"
#include "hmoe.h"
#include "models/hypermoe/ffn.h"
#include "ops/moe/cpu/grouped_gemm_cpu.h"
#include "ops/moe/grouped_ffn.h"
#include "ops/moe/grouped_gemm.h"
#include "ops/moe/router.h"
#include "ops/moe/token_dispatch.h"

using namespace hmoe;

namespace {

constexpr int64_t kT = 4096, kD = 512, kF = 2048, kN = 8, kK = 2, kM = kT * kK;

// A plan from a real (random-logit) top-2 routing, so group sizes are uneven.
const moe::Plan& layer_plan() {
  static const moe::Plan plan = [] {
    Generator g(7);
    auto r = moe::route_topk(normal({kT, kN}, g), kK);
    return moe::make_plan(r.expert_ids, kN);
  }();
  return plan;
}
Tensor token_index() { return (layer_plan().perm / full({}, double(kK), {DType::i64})).contiguous(); }

void set_gflops(benchmark::State& st, double flops) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
const double kGemmFlops = 2.0 * double(kM) * double(kD) * double(kF);

// --- a reference: one dense sgemm of the same FLOPs, OpenBLAS threaded over all cores --
void BM_dense_sgemm_peak(benchmark::State& st) {
  ensure_backends_registered();
  Generator g(1);
  Tensor a = normal({kM, kD}, g), b = normal({kD, kF}, g), c = empty({kM, kF});
  openblas_set_num_threads(num_threads());
  for (auto _ : st)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(kM), int(kF), int(kD), 1.f, a.data_ptr<float>(),
                int(kD), b.data_ptr<float>(), int(kF), 0.f, c.data_ptr<float>(), int(kF));
  openblas_set_num_threads(1);
  set_gflops(st, kGemmFlops);
}

// hmoe's own dense matmul (deterministic tile grid) of the same shape.
void BM_dense_matmul_hmoe(benchmark::State& st) {
  Generator g(1);
  Tensor a = normal({kM, kD}, g), b = normal({kD, kF}, g);
  for (auto _ : st) benchmark::DoNotOptimize(matmul(a, b));
  set_gflops(st, kGemmFlops);
}

// --- the grouped GEMM as registered (x [T, d] gathered by token index, W1 [N, d, f]) --
void BM_grouped_gemm(benchmark::State& st) {
  const bool gather = st.range(0) != 0;
  Generator g(2);
  Tensor x = normal({gather ? kT : kM, kD}, g), w = normal({kN, kD, kF}, g);
  Tensor idx = gather ? token_index() : Tensor();
  for (auto _ : st) benchmark::DoNotOptimize(moe::grouped_gemm(x, w, layer_plan().offsets, idx));
  set_gflops(st, kGemmFlops);
  st.SetLabel(gather ? "gather fused" : "contiguous rows");
}

// Forward + backward of one grouped GEMM (dX through the gather, dW): 3x the FLOPs.
void BM_grouped_gemm_fwd_bwd(benchmark::State& st) {
  Generator g(3);
  Tensor x = normal({kT, kD}, g).set_requires_grad(true), w = normal({kN, kD, kF}, g).set_requires_grad(true);
  Tensor idx = token_index();
  for (auto _ : st) {
    sum(moe::grouped_gemm(x, w, layer_plan().offsets, idx)).backward();
    x.zero_grad();
    w.zero_grad();
  }
  set_gflops(st, 3 * kGemmFlops);
}

// --- the measured alternatives ----------------------------------------------------------
// Tile rows (max_m) of the registered kernel's fixed grid.
void BM_choice_tile_rows(benchmark::State& st) {
  Generator g(2);
  Tensor x = normal({kT, kD}, g), w = normal({kN, kD, kF}, g), out = empty({kM, kF});
  Tensor idx = token_index();
  ops::cpu::GroupedTiling tl;
  tl.max_m = st.range(0);
  tl.max_n = st.range(1);
  tl.f32_openblas = st.range(2) != 0;
  moe::GroupedGemmArgs a{kN, kM, kD, kF, kT, false};
  for (auto _ : st) ops::cpu::grouped_gemm_cpu_tiled(a, x, w, layer_plan().offsets, idx, {}, {}, out, tl);
  set_gflops(st, kGemmFlops);
  st.SetLabel(tl.f32_openblas ? "openblas" : "hmoe kernel");
}

// dW tiles (rows of K x columns of N per BLAS call; each reduces over a whole group).
void BM_choice_dw_tiles(benchmark::State& st) {
  Generator g(2);
  Tensor x = normal({kT, kD}, g), dy = normal({kM, kF}, g), dw = empty({kN, kD, kF});
  Tensor idx = token_index();
  ops::cpu::GroupedTiling tl;
  tl.dw_max_k = st.range(0);
  tl.dw_max_n = st.range(1);
  tl.f32_openblas = st.range(2) != 0;
  moe::GroupedGemmArgs a{kN, kM, kD, kF, kT, false};
  for (auto _ : st) ops::cpu::grouped_gemm_dw_cpu_tiled(a, x, idx, dy, layer_plan().offsets, dw, {}, tl);
  set_gflops(st, kGemmFlops);
  st.SetLabel(tl.f32_openblas ? "openblas" : "hmoe kernel");
}

// The four grouped GEMMs of the model layer benchmarked below (T = 2048, d = 256,
// d_ff = 1024, N = 8, top-k 1 or 2), each on the registered tiles or others, with hmoe's
// kernel or OpenBLAS. kind: 0 up-projection forward (gather fused), 1 down-projection
// forward, 2 dX of the up-projection (dy W^T), 3 dW of the up-projection (x^T dy, gather
// fused), 4 dW of the down-projection (a^T dy).
void BM_choice_layer_gemm(benchmark::State& st) {
  constexpr int64_t T = 2048, D = 256, F = 1024, N = 8;
  const int64_t kind = st.range(0), k = st.range(1), M = T * k;
  Generator g(5);
  auto r = moe::route_topk(normal({T, N}, g), k);
  const moe::Plan plan = moe::make_plan(r.expert_ids, N);
  const Tensor idx = (plan.perm / full({}, double(k), {DType::i64})).contiguous();
  ops::cpu::GroupedTiling tl;
  if (st.range(2) > 0) (kind >= 3 ? tl.dw_max_k : tl.max_m) = st.range(2);
  if (st.range(3) > 0) (kind >= 3 ? tl.dw_max_n : tl.max_n) = st.range(3);
  tl.f32_openblas = st.range(4) != 0;
  const Tensor x = normal({T, D}, g), w1 = normal({N, D, F}, g), w2 = normal({N, F, D}, g);
  const Tensor h = normal({M, F}, g), dy = normal({M, F}, g), dy2 = normal({M, D}, g);
  Tensor out;
  for (auto _ : st) {
    if (kind == 0) {
      out = empty({M, F});
      ops::cpu::grouped_gemm_cpu_tiled({N, M, D, F, T, false}, x, w1, plan.offsets, idx, {}, {}, out, tl);
    } else if (kind == 1) {
      out = empty({M, D});
      ops::cpu::grouped_gemm_cpu_tiled({N, M, F, D, M, false}, h, w2, plan.offsets, {}, {}, {}, out, tl);
    } else if (kind == 2) {
      out = empty({M, D});
      ops::cpu::grouped_gemm_cpu_tiled({N, M, F, D, M, true}, dy, w1, plan.offsets, {}, {}, {}, out, tl);
    } else if (kind == 3) {
      out = empty({N, D, F});
      ops::cpu::grouped_gemm_dw_cpu_tiled({N, M, D, F, T, false}, x, idx, dy, plan.offsets, out, {}, tl);
    } else {
      out = empty({N, F, D});
      ops::cpu::grouped_gemm_dw_cpu_tiled({N, M, F, D, M, false}, h, {}, dy2, plan.offsets, out, {}, tl);
    }
    benchmark::DoNotOptimize(out);
  }
  set_gflops(st, 2.0 * double(M) * double(D) * double(F));
  st.SetLabel(tl.f32_openblas ? "openblas" : "hmoe kernel");
}
void layer_gemm_args(benchmark::internal::Benchmark* b) {
  for (int64_t kind : {0, 1, 2, 3, 4})
    for (int64_t k : {1, 2}) {
      b->Args({kind, k, 0, 0, 1});  // registered tiles, OpenBLAS
      b->Args({kind, k, 0, 0, 0});  // registered tiles, hmoe's kernel
      if (kind >= 3) {
        b->Args({kind, k, 128, 512, 0});
        b->Args({kind, k, 256, 256, 0});
      } else {
        b->Args({kind, k, 128, 0, 0});
        b->Args({kind, k, 0, 256, 0});
      }
    }
  b->ArgNames({"kind", "k", "tile_m", "tile_n", "openblas"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// One cblas call per group, OpenBLAS threading inside each call (not deterministic
// across thread counts: measured for comparison only). Rows pre-gathered (not timed).
void BM_choice_blas_threaded_per_group(benchmark::State& st) {
  ensure_backends_registered();
  Generator g(2);
  Tensor xs = normal({kM, kD}, g), w = normal({kN, kD, kF}, g), out = empty({kM, kF});
  const int64_t* off = layer_plan().offsets.data_ptr<int64_t>();
  openblas_set_num_threads(num_threads());
  for (auto _ : st)
    for (int64_t e = 0; e < kN; ++e) {
      const int64_t m = off[e + 1] - off[e];
      if (m == 0) continue;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(kF), int(kD), 1.f,
                  xs.data_ptr<float>() + off[e] * kD, int(kD), w.data_ptr<float>() + e * kD * kF, int(kF), 0.f,
                  out.data_ptr<float>() + off[e] * kF, int(kF));
    }
  openblas_set_num_threads(1);
  set_gflops(st, kGemmFlops);
}

// One single-threaded cblas call per group, groups spread over the pool.
void BM_choice_blas_parallel_groups(benchmark::State& st) {
  ensure_backends_registered();
  Generator g(2);
  Tensor xs = normal({kM, kD}, g), w = normal({kN, kD, kF}, g), out = empty({kM, kF});
  const int64_t* off = layer_plan().offsets.data_ptr<int64_t>();
  for (auto _ : st)
    parallel_for(kN, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t e = lo; e < hi; ++e) {
        const int64_t m = off[e + 1] - off[e];
        if (m == 0) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(kF), int(kD), 1.f,
                    xs.data_ptr<float>() + off[e] * kD, int(kD), w.data_ptr<float>() + e * kD * kF, int(kF), 0.f,
                    out.data_ptr<float>() + off[e] * kF, int(kF));
      }
    });
  set_gflops(st, kGemmFlops);
}

// A hand-blocked threaded kernel (register tile of 4 rows x 64 columns, k-blocked,
// auto-vectorised), gather fused: the "write our own" option.
void blocked_group(const float* x, const int64_t* idx, const float* w, float* out, int64_t r0, int64_t r1) {
  constexpr int64_t RB = 4, CB = 64, KB = 128;
  for (int64_t r = r0; r < r1; r += RB)
    for (int64_t c0 = 0; c0 < kF; c0 += CB) {
      float acc[RB][CB] = {};
      const int64_t rn = std::min(RB, r1 - r);
      for (int64_t k0 = 0; k0 < kD; k0 += KB)
        for (int64_t i = 0; i < rn; ++i) {
          const float* xr = x + idx[r + i] * kD;
          for (int64_t kk = k0; kk < k0 + KB; ++kk) {
            const float a = xr[kk];
            const float* wr = w + kk * kF + c0;
            for (int64_t j = 0; j < CB; ++j) acc[i][j] += a * wr[j];
          }
        }
      for (int64_t i = 0; i < rn; ++i) std::copy(acc[i], acc[i] + CB, out + (r + i) * kF + c0);
    }
}
void BM_choice_hand_blocked(benchmark::State& st) {
  Generator g(2);
  Tensor x = normal({kT, kD}, g), w = normal({kN, kD, kF}, g), out = empty({kM, kF});
  Tensor idx = token_index();
  const int64_t* off = layer_plan().offsets.data_ptr<int64_t>();
  const int64_t* ix = idx.data_ptr<int64_t>();
  for (auto _ : st)
    parallel_for(kM / 64, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        const int64_t r0 = b * 64, r1 = r0 + 64;
        for (int64_t e = 0; e < kN; ++e) {  // rows of a block may straddle groups
          const int64_t s = std::max(r0, off[e]), t = std::min(r1, off[e + 1]);
          if (s < t) blocked_group(x.data_ptr<float>(), ix, w.data_ptr<float>() + e * kD * kF, out.data_ptr<float>(), s, t);
        }
      }
    });
  set_gflops(st, kGemmFlops);
}

// --- an MoE FFN from the ops: route, plan, GEMM (gather fused) + bias, GELU, GEMM,
// combine; forward + backward. 6 GEMM passes of kGemmFlops each. -------------------------
void BM_moe_ffn_ops(benchmark::State& st) {
  Generator g(4);
  Tensor x = normal({kT, kD}, g).set_requires_grad(true);
  Tensor wr = normal({kD, kN}, g, 0, 0.02).set_requires_grad(true);
  Tensor w1 = normal({kN, kD, kF}, g, 0, 0.02).set_requires_grad(true), b1 = zeros({kN, kF}).set_requires_grad(true);
  Tensor w2 = normal({kN, kF, kD}, g, 0, 0.02).set_requires_grad(true);
  for (auto _ : st) {
    auto r = moe::route_topk(matmul(x, wr), kK);
    auto plan = moe::make_plan(r.expert_ids, kN);
    Tensor tok = (plan.perm / full({}, double(kK), {DType::i64})).contiguous();
    Tensor h = gelu(moe::grouped_gemm(x, w1, plan.offsets, tok, Tensor(), b1));
    Tensor y = moe::combine(moe::grouped_gemm(h, w2, plan.offsets), r.gates, plan);
    sum(y).backward();
    for (Tensor* t : {&x, &wr, &w1, &b1, &w2}) t->zero_grad();
  }
  st.counters["tokens/s"] = benchmark::Counter(double(kT), benchmark::Counter::kIsIterationInvariantRate);
  set_gflops(st, 6 * kGemmFlops);
}

// --- the experts' FFN at the model layer's shapes (T = 2048, d = 256, d_ff = 1024, N = 8,
// top-k 1 or 2), forward + backward: the fused grouped_ffn (gather fused, only the
// pre-activation kept, the activation recomputed; range(1) = chunk rows, 0 = default;
// range(2) = 2: the pre-activation itself recomputed) against the composite it replaced
// (permuted copy, grouped_gemm, gelu, grouped_gemm). The CPU pool's peak over the step
// (its blocks of 1 MiB and more) is reported beside the time.
// Measured (2-core Zen 4 VM, 9 interleaved repetitions, min / median ms): k = 1 composite
// 37.5 / 40.3, fused 38.5 / 40.3, the fused op on a permuted copy 37.4 / 39.7; k = 2
// 72.7 / 76.4, 73.2 / 76.6, 73.2 / 76.3: the same speed (on the CPU a gathered A-load and
// a contiguous copy pack alike). Peaks: k = 1 36 MiB each, k = 2 64 -> 56 MiB. Given chunk
// rows run in order (the groups are tasks by default): 512-row chunks cut k = 1 to 30 MiB
// but ran ~40% slower, before calls with few tiles split them. Recomputing at k = 2 (5
// alternations): 40 -> 28 MiB, 71 -> 82-89 ms as tasks, 88-131 ms in ordered chunks of a
// quarter of the rows.
void BM_expert_ffn(benchmark::State& st) {
  constexpr int64_t T = 2048, D = 256, F = 1024, N = 8;
  const int64_t k = st.range(0), chunk = st.range(1);
  const bool fused = st.range(2) != 0, recompute = st.range(2) == 2;
  Generator g(5);
  auto r = moe::route_topk(normal({T, N}, g), k);
  const moe::Plan plan = moe::make_plan(r.expert_ids, N);
  const Tensor tok = moe::slot_tokens(plan);
  Tensor x = normal({T, D}, g).set_requires_grad(true);
  Tensor w1 = normal({N, D, F}, g, 0, 0.02).set_requires_grad(true), b1 = zeros({N, F}).set_requires_grad(true);
  Tensor w2 = normal({N, F, D}, g, 0, 0.02).set_requires_grad(true), b2 = zeros({N, D}).set_requires_grad(true);
  const Tensor dy = normal({T * k, D}, g);
  double peak = 0;
  for (auto _ : st) {
    cpu_cache_reset_peak();
    const size_t before = cpu_cache_stats().allocated;
    Tensor ys = fused ? moe::grouped_ffn(x, w1, b1, w2, b2, plan.offsets, tok, UnaryOp::gelu_erf, chunk, recompute)
                      : moe::grouped_gemm(gelu(moe::grouped_gemm(moe::permute_rows(x, plan), w1, plan.offsets,
                                                                 Tensor(), Tensor(), b1)),
                                          w2, plan.offsets, Tensor(), Tensor(), b2);
    ys.backward(dy);
    peak = std::max(peak, double(cpu_cache_stats().peak_allocated - before) / (1 << 20));
    for (Tensor* t : {&x, &w1, &b1, &w2, &b2}) t->zero_grad();
  }
  st.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_MiB"] = peak;  // the pool's (blocks >= 1 MiB) peak over a step, above its start
  st.SetLabel(recompute ? "grouped_ffn, h recomputed" : fused ? "grouped_ffn" : "composite");
}

// --- the model layers (models/hypermoe/ffn.h) at T = 2048, d = 256, d_ff = 1024 -------
// The model of bench/moe_torch_baselines.py: plain softmax top-k routing (gates
// renormalised for k > 1), no router noise and no auxiliary loss, which the PyTorch
// baselines do not compute either (the trainer's default noisy top-k adds a noise
// projection, a normal draw and the cv-squared loss: ~2% of the step). The router
// then needs the baselines' N(0, 0.02) weights (use_baseline_router): hmoe zero-
// initialises it, as the reference does, and without noise every token would tie
// onto expert 0.
model::ModelConfig layer_cfg(int64_t k, bool recompute) {
  model::ModelConfig c;
  c.expert_recompute = recompute;
  c.d_model = 256;
  c.d_ff = 1024;
  c.n_experts = 8;
  c.top_k = k;
  c.adapter_rank = 32;
  c.noisy = false;
  c.aux_cv_coef = 0.0;
  return c;
}

void use_baseline_router(nn::Module& layer, Generator& g) {
  NoGradGuard ng;
  for (auto& [name, t] : layer.named_parameters())
    if (name == "router.weight") t.copy_(normal(t.shape(), g, 0.0, 0.02));
}

// A line of /proc/self/status in KiB (VmRSS, VmHWM); 0 where there is none.
int64_t proc_status_kib(const std::string& key) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  return 0;
}

// Peak memory of the steps beyond what the process holds before them (parameters,
// inputs): the resident high-water mark above the resident size at the first layer
// benchmark's start (the mark reset there: "5" to clear_refs). Run one layer benchmark
// per process (--benchmark_filter) for a clean figure; later runs in the same process
// can only raise it. Same method as bench/moe_torch_baselines.py uses for PyTorch.
struct PeakMemory {
  int64_t base_kib = 0;
  PeakMemory() {
    static const int64_t first_base = [] {
      std::ofstream("/proc/self/clear_refs") << "5";
      return proc_status_kib("VmRSS");
    }();
    base_kib = first_base;
  }
  double mib() const { return double(proc_status_kib("VmHWM") - base_kib) / 1024.0; }
};

// A HyperMoE layer's zero_grad clears its hypernetwork's gradients too (a submodule).
template <typename Layer>
void run_layer(benchmark::State& st, Layer& layer) {
  const int64_t T = 2048;
  Generator g(1), noise(2);
  Tensor x = normal({T, 256}, g).set_requires_grad(true);
  Tensor w = normal({T, 256}, g);
  auto step = [&] {
    model::FfnStats stats;
    Tensor y = layer.forward(x, stats, noise);
    // The product dies before the backward, as PyTorch's (y * w).sum().backward() frees
    // it once sum() returns (a C++ temporary in one expression would live through it).
    Tensor loss = sum(y * w);
    loss.backward();
    layer.zero_grad();
    x.zero_grad();
  };
  const PeakMemory peak;
  for (auto _ : st) step();
  st.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["peak_MiB"] = peak.mib();
  // One more step, profiled: the FLOPs of its kernels (their cost models) are the step's
  // work; with HMOE_BENCH_PROFILE set, its per-op time and memory go to stderr.
  Profiler prof;
  step();
  const double gflop = prof.total_work().flops * 1e-9;
  st.counters["GFLOP"] = gflop;
  st.counters["GFLOP/s"] = benchmark::Counter(gflop, benchmark::Counter::kIsIterationInvariantRate);
  if (std::getenv("HMOE_BENCH_PROFILE"))
    std::fprintf(stderr, "%scpu pool: %s\n", prof.summary().c_str(), cpu_cache_stats().str().c_str());
  if (const char* path = std::getenv("HMOE_BENCH_TRACE")) std::ofstream(path) << prof.chrome_trace();
}

void BM_moe_layer(benchmark::State& st) {
  Generator g(3);
  model::MoEFFN layer(layer_cfg(st.range(0), st.range(1) != 0), g);
  use_baseline_router(layer, g);
  run_layer(st, layer);
}

void BM_hypermoe_layer(benchmark::State& st) {
  Generator g(3);
  auto c = layer_cfg(st.range(0), st.range(1) != 0);
  auto hyper = std::make_shared<model::HyperNetwork>(c, 1, g);
  model::HyperMoEFFN layer(c, 0, hyper, g);
  use_baseline_router(layer, g);
  run_layer(st, layer);
}

}  // namespace

BENCHMARK(BM_dense_sgemm_peak)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dense_matmul_hmoe)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_grouped_gemm)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_grouped_gemm_fwd_bwd)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_choice_tile_rows)
    ->Args({1024, 2048, 1})
    ->Args({64, 512, 0})->Args({128, 512, 0})->Args({256, 512, 0})->Args({512, 512, 0})->Args({512, 1024, 0})
    ->Args({1024, 1024, 0})->Args({256, 2048, 0})->Args({1024, 2048, 0})->Args({4096, 4096, 0})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_choice_dw_tiles)
    ->Args({512, 1024, 1})
    ->Args({128, 512, 0})->Args({256, 512, 0})->Args({512, 1024, 0})->Args({512, 2048, 0})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_choice_layer_gemm)->Apply(layer_gemm_args);
BENCHMARK(BM_choice_blas_threaded_per_group)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_choice_blas_parallel_groups)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_choice_hand_blocked)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_moe_ffn_ops)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_expert_ffn)
    ->Args({1, 0, 0})->Args({1, 0, 1})->Args({1, 512, 1})->Args({2, 0, 0})->Args({2, 0, 1})->Args({2, 1024, 1})
    ->Args({1, 0, 2})->Args({2, 0, 2})->Args({2, 2048, 2})->Args({2, 512, 2})
    ->ArgNames({"k", "chunk", "fused"})->Unit(benchmark::kMillisecond)->UseRealTime();
// range(0) = top-k, range(1) = 1: the experts' pre-activation recomputed (expert_recompute).
BENCHMARK(BM_moe_layer)->ArgsProduct({{1, 2}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_hypermoe_layer)->ArgsProduct({{1, 2}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
