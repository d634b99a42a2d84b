// Bandwidth of the fused nn ops (softmax, log_softmax, layer_norm, rms_norm,
// cross_entropy; forward and forward+backward) and of row/column sums, beside memcpy
// and a streaming read on the same machine. Bytes counted are the minimum an op must
// move: each input read once, each output written once (small per-row stats ignored).
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "hmoe.h"

using namespace hmoe;

namespace {

Tensor rn(const Shape& s, uint64_t seed, DType dt = DType::f32, bool grad = false) {
  Generator g(seed);
  Tensor t = normal(s, g, 0, 1, {dt});
  if (grad) t.set_requires_grad(true);
  return t;
}

void set_bytes(benchmark::State& st, double bytes_per_iter) {
  st.SetBytesProcessed(int64_t(double(st.iterations()) * bytes_per_iter));
}

DType dtype_arg(int64_t a) { return a == 0 ? DType::f32 : DType::bf16; }

// ---- machine reference -------------------------------------------------------------

// memcpy of a 64 MiB buffer split over the thread pool (fixed chunks): read + write.
void BM_memcpy(benchmark::State& st) {
  const size_t n = size_t(64) << 20;
  std::vector<char> a(n, 1), b(n, 0);
  for (auto _ : st) {
    parallel_for(int64_t(n >> 20), 1, [&](int64_t lo, int64_t hi) {
      std::memcpy(b.data() + (lo << 20), a.data() + (lo << 20), size_t(hi - lo) << 20);
    });
    benchmark::ClobberMemory();
  }
  set_bytes(st, 2.0 * double(n));
}

// A streaming read (float sum, 16 lanes) of 64 MiB over the pool: read bandwidth.
void BM_read(benchmark::State& st) {
  const int64_t n = (int64_t(64) << 20) / 4;
  std::vector<float> a(size_t(n), 1.0f);
  std::vector<float> out(64, 0.0f);
  for (auto _ : st) {
    parallel_for(64, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        const float* p = a.data() + c * (n / 64);
        float part[16] = {};
        for (int64_t i = 0; i < n / 64; i += 16)
          for (int j = 0; j < 16; ++j) part[j] += p[i + j];
        float s = 0;
        for (float v : part) s += v;
        out[size_t(c)] = s;
      }
    });
    benchmark::DoNotOptimize(out.data());
  }
  set_bytes(st, 4.0 * double(n));
}

// ---- softmax ------------------------------------------------------------------------

void BM_softmax_fwd(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1);
  const DType dt = dtype_arg(st.range(2));
  const Tensor x = rn({rows, cols}, 1, dt);
  for (auto _ : st) benchmark::DoNotOptimize(softmax(x, -1));
  set_bytes(st, 2.0 * double(x.nbytes()));
}

void BM_log_softmax_fwd(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1);
  const Tensor x = rn({rows, cols}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(log_softmax(x, -1));
  set_bytes(st, 2.0 * double(x.nbytes()));
}

// Softmax over dim 0 (the strided column kernel).
void BM_softmax_dim0_fwd(benchmark::State& st) {
  const Tensor x = rn({st.range(0), st.range(1)}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(softmax(x, 0));
  set_bytes(st, 2.0 * double(x.nbytes()));
}

// Forward then backward: x read, y written; y and g read, gx written.
void BM_softmax_fwd_bwd(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1);
  Tensor x = rn({rows, cols}, 1, DType::f32, true);
  const Tensor g = rn({rows, cols}, 2);
  for (auto _ : st) {
    x.zero_grad();
    softmax(x, -1).backward(g);
    benchmark::DoNotOptimize(x.grad());
  }
  set_bytes(st, 5.0 * double(g.nbytes()));
}

// ---- normalisation --------------------------------------------------------------------

void BM_layer_norm_fwd(benchmark::State& st) {
  const int64_t rows = st.range(0), d = st.range(1);
  const DType dt = dtype_arg(st.range(2));
  const Tensor x = rn({rows, d}, 1, dt), w = rn({d}, 2, dt), b = rn({d}, 3, dt);
  for (auto _ : st) benchmark::DoNotOptimize(layer_norm(x, w, b));
  set_bytes(st, 2.0 * double(x.nbytes()));
}

// Forward and backward for x, weight and bias: x read, y written; g and x read, dx written.
void BM_layer_norm_fwd_bwd(benchmark::State& st) {
  const int64_t rows = st.range(0), d = st.range(1);
  Tensor x = rn({rows, d}, 1, DType::f32, true), w = rn({d}, 2, DType::f32, true), b = rn({d}, 3, DType::f32, true);
  const Tensor g = rn({rows, d}, 4);
  for (auto _ : st) {
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
    layer_norm(x, w, b).backward(g);
    benchmark::DoNotOptimize(x.grad());
  }
  set_bytes(st, 5.0 * double(x.nbytes()));
}

void BM_rms_norm_fwd(benchmark::State& st) {
  const int64_t rows = st.range(0), d = st.range(1);
  const DType dt = dtype_arg(st.range(2));
  const Tensor x = rn({rows, d}, 1, dt), w = rn({d}, 2, dt);
  for (auto _ : st) benchmark::DoNotOptimize(rms_norm(x, w));
  set_bytes(st, 2.0 * double(x.nbytes()));
}

void BM_rms_norm_fwd_bwd(benchmark::State& st) {
  const int64_t rows = st.range(0), d = st.range(1);
  Tensor x = rn({rows, d}, 1, DType::f32, true), w = rn({d}, 2, DType::f32, true);
  const Tensor g = rn({rows, d}, 4);
  for (auto _ : st) {
    x.zero_grad();
    w.zero_grad();
    rms_norm(x, w).backward(g);
    benchmark::DoNotOptimize(x.grad());
  }
  set_bytes(st, 5.0 * double(x.nbytes()));
}

// ---- cross entropy ----------------------------------------------------------------------

Tensor targets_for(int64_t n, int64_t c) {
  std::vector<int64_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[size_t(i)] = (i * 7919) % c;
  return from_vector(t, {n});
}

// Forward: the logits read once.
void BM_cross_entropy_fwd(benchmark::State& st) {
  const int64_t n = st.range(0), c = st.range(1);
  const Tensor l = rn({n, c}, 1), t = targets_for(n, c);
  for (auto _ : st) benchmark::DoNotOptimize(cross_entropy(l, t));
  set_bytes(st, double(l.nbytes()));
}

// Forward and backward: logits read twice (loss, then gradient), gradient written once.
void BM_cross_entropy_fwd_bwd(benchmark::State& st) {
  const int64_t n = st.range(0), c = st.range(1);
  Tensor l = rn({n, c}, 1, DType::f32, true);
  const Tensor t = targets_for(n, c);
  for (auto _ : st) {
    l.zero_grad();
    cross_entropy(l, t).backward();
    benchmark::DoNotOptimize(l.grad());
  }
  set_bytes(st, 3.0 * double(l.nbytes()));
}

// ---- sums ---------------------------------------------------------------------------------

void BM_sum_rows(benchmark::State& st) {  // reduce the last dim: one value per row
  const Tensor x = rn({st.range(0), st.range(1)}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(sum(x, {1}));
  set_bytes(st, double(x.nbytes()));
}

void BM_sum_cols(benchmark::State& st) {  // reduce the first dim: one value per column
  const Tensor x = rn({st.range(0), st.range(1)}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(sum(x, {0}));
  set_bytes(st, double(x.nbytes()));
}

void BM_sum_all(benchmark::State& st) {
  const Tensor x = rn({st.range(0), st.range(1)}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(sum(x));
  set_bytes(st, double(x.nbytes()));
}

void BM_max_rows(benchmark::State& st) {
  const Tensor x = rn({st.range(0), st.range(1)}, 1);
  for (auto _ : st) benchmark::DoNotOptimize(max(x, 1));
  set_bytes(st, double(x.nbytes()));  // minimal: one read (values and indices take two passes here)
}

}  // namespace

BENCHMARK(BM_memcpy)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_read)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_fwd)->Args({8192, 1024, 0})->Args({8192, 1024, 1})->Args({4096, 256, 0})->Args({512, 32000, 0})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_log_softmax_fwd)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_dim0_fwd)->Args({1024, 8192})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_softmax_fwd_bwd)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer_norm_fwd)->Args({8192, 1024, 0})->Args({8192, 1024, 1})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer_norm_fwd_bwd)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rms_norm_fwd)->Args({8192, 1024, 0})->Args({8192, 1024, 1})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rms_norm_fwd_bwd)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cross_entropy_fwd)->Args({4096, 256})->Args({512, 32000})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cross_entropy_fwd_bwd)->Args({4096, 256})->Args({512, 32000})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum_rows)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum_cols)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_sum_all)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_max_rows)->Args({8192, 1024})->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
