// `hmoe bench kernels`: each CUDA-backed op timed with CUDA events (warm-up, then the
// median of many runs, inputs rotated through enough buffers to exceed the L2 cache),
// reported as GB/s (minimum bytes moved) and TFLOP/s against peaks measured on the
// device itself: a device-to-device copy for bandwidth, a large bf16 GEMM through the
// BLAS layer for tensor-core throughput and an f32 one (no TF32) for CUDA-core
// throughput. The grouped GEMM (bf16 on tensor cores, f32 on CUDA cores) runs beside
// its peer, a loop of one BLAS GEMM per group, and the ratio is printed; at the MoE
// shapes of the model presets and a Mixtral-like layer, it runs beside cuBLAS's grouped
// GEMM and one dense cuBLAS GEMM of the same FLOPs.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/cuda/blas.h"
#include "engine/cuda/runtime.h"
#include "hmoe.h"
#include "models/train/config.h"
#include "ops/moe/moe_kernels.h"
#include "tools/hmoe/bench_counters.h"
#include "tools/hmoe/bench_dispatch.h"
#include "tools/hmoe/selftest.h"

#if defined(HMOE_GPU_CUDA) || defined(HMOE_GPU_EMU)
namespace hmoe::tools {
namespace {

struct KernelBench {
  std::string name;
  double bytes = 0, flops = 0;   // per call: minimum bytes moved, useful flops
  std::function<void(int)> run;  // runs once on input set i
  bool f32_peak = false;         // FLOP/s against the f32 (CUDA-core) peak instead of bf16's
  std::vector<std::string> peers;  // benches run before this one: print this one's speed-up over each
  std::string skip;                // not run, for this reason (printed in its row)
};

// Median milliseconds of o.reps calls (after o.warmup), each on the next input set.
double time_ms(const BenchOptions& o, int sets, const std::function<void(int)>& fn) {
  cuda::Stream& s = cuda::current_stream(0);
  for (int i = 0; i < o.warmup; ++i) fn(i % sets);
  std::vector<float> ms;
  for (int i = 0; i < o.reps; ++i) {
    cuda::Event a(0), b(0);
    a.record(s);
    fn(i % sets);
    b.record(s);
    b.synchronize();
    ms.push_back(a.elapsed_ms(b));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Tensor rnd(const Shape& sh, uint64_t seed, DType dt) {
  Generator g(seed);
  return uniform(sh, g, -1, 1, {dt, Device::cuda(0)});
}

// C [m, n] = A [m, k] B [k, n], all row-major and contiguous.
cuda::blas::Gemm row_major_gemm(DType dt, int64_t m, int64_t n, int64_t k) {
  return {.dtype = dt, .m = m, .n = n, .k = k, .lda = k, .ldb = n, .ldc = n};
}

struct Peaks {
  double gbs = 0, bf16_tflops = 0, f32_tflops = 0;
};

// TFLOP/s of one square GEMM of size n through the BLAS layer.
double gemm_tflops(const BenchOptions& o, DType dt, int64_t n, uint64_t seed) {
  Tensor a = rnd({n, n}, seed, dt), b = rnd({n, n}, seed + 1, dt), c = rnd({n, n}, seed + 2, dt);
  const cuda::blas::Gemm g = row_major_gemm(dt, n, n, n);
  const double ms = time_ms(o, 1, [&](int) {
    cuda::blas::gemm(g, a.data_ptr<void>(), b.data_ptr<void>(), c.data_ptr<void>(), cuda::current_stream(0));
  });
  return 2.0 * double(n) * double(n) * double(n) / (ms * 1e9);
}

// The device's copy bandwidth and GEMM throughput (bf16 on tensor cores, f32 on CUDA
// cores without TF32), measured here and printed.
Peaks measure_peaks(const BenchOptions& o, bool emu) {
  Peaks p;
  const size_t copy_bytes = emu ? (8u << 20) : (1u << 30);
  {
    const Tensor src = rnd({int64_t(copy_bytes / 4)}, 1, DType::f32),
                 dst = rnd({int64_t(copy_bytes / 4)}, 2, DType::f32);
    const double copy_ms = time_ms(o, 1, [&](int) {
      cuda::memcpy_async(dst.data_ptr<void>(), src.data_ptr<void>(), copy_bytes, cuda::CopyKind::device_to_device,
                         cuda::current_stream(0));
    });
    p.gbs = 2.0 * double(copy_bytes) / (copy_ms * 1e6);
  }
  const int64_t gn = emu ? 256 : 8192, fn = emu ? 128 : 4096;
  p.bf16_tflops = gemm_tflops(o, DType::bf16, gn, 3);
  p.f32_tflops = gemm_tflops(o, DType::f32, fn, 6);
  std::printf(
      "measured peaks: %.0f GB/s (device-to-device copy of %zu MiB), %.1f TFLOP/s (bf16 GEMM %lld^3), %.1f TFLOP/s "
      "(f32 GEMM %lld^3)\n",
      p.gbs, copy_bytes >> 20, p.bf16_tflops, static_cast<long long>(gn), p.f32_tflops, static_cast<long long>(fn));
  return p;
}

// Row-wise ops (elementwise, reductions, norms, losses) on [16384 / scale, 4096] inputs,
// rotated through enough sets to exceed twice the L2 cache.
void add_row_benches(std::vector<KernelBench>& benches, size_t l2, int64_t scale) {
  auto add_rows = [&](const std::string& name, int64_t rows, int64_t cols, DType dt, double bytes_per_elem,
                      double flops_per_elem, std::function<void(const Tensor&)> op) {
    rows /= scale;
    const double bytes = double(rows * cols) * bytes_per_elem;
    const int sets = std::clamp(int(2.0 * double(l2) / std::max(bytes, 1.0)) + 1, 1, 16);
    auto xs = std::make_shared<std::vector<Tensor>>();
    for (int i = 0; i < sets; ++i) xs->push_back(rnd({rows, cols}, 10 + uint64_t(i), dt));
    benches.push_back({name + "/" + std::string(dtype_name(dt)), bytes, flops_per_elem * double(rows * cols),
                       [xs, op](int i) { op((*xs)[size_t(i) % xs->size()]); }});
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    const double e = double(dtype_size(dt));
    add_rows("gelu", 16384, 4096, dt, 2 * e, 0, [](const Tensor& x) { gelu(x); });
    add_rows("add", 16384, 4096, dt, 2 * e, 1, [](const Tensor& x) { add(x, x); });  // x read once (both operands)
    add_rows("sum_rows", 16384, 4096, dt, e, 1, [](const Tensor& x) { sum(x, {1}); });
    add_rows("softmax", 16384, 4096, dt, 2 * e, 0, [](const Tensor& x) { softmax(x, -1); });
    Tensor w = rnd({4096}, 7, dt), b = rnd({4096}, 8, dt);
    add_rows("layer_norm", 16384, 4096, dt, 2 * e, 0, [w, b](const Tensor& x) { layer_norm(x, w, b); });
    Tensor tgt = zeros({16384 / scale}, {DType::i64, Device::cuda(0)});
    add_rows("cross_entropy", 16384, 4096, dt, e, 0, [tgt](const Tensor& x) { cross_entropy(x, tgt); });
  }
}

void add_matmul_benches(std::vector<KernelBench>& benches, bool emu) {
  {
    const int64_t n = emu ? 128 : 4096;
    auto a = rnd({n, n}, 20, DType::bf16), b = rnd({n, n}, 21, DType::bf16);
    benches.push_back({"matmul/bf16", 3.0 * double(n * n) * 2, 2.0 * double(n) * double(n) * double(n),
                       [a, b](int) { matmul(a, b); }});
  }
  const int64_t B = 4, H = 16, T = emu ? 64 : 2048, D = 64;
  auto q = rnd({B, H, T, D}, 30, DType::bf16), k = rnd({B, H, T, D}, 31, DType::bf16),
       v = rnd({B, H, T, D}, 32, DType::bf16);
  // Causal: half of the 4 B H T^2 D flops of the two products.
  benches.push_back({"causal_attention/bf16", 4.0 * double(B * H * T * D) * 2,
                     2.0 * double(B * H) * double(T) * double(T) * double(D),
                     [q, k, v](int) { causal_attention(q, k, v); }});
}

// Offsets of M rows over G groups of skewed sizes (group 1 gets no row when G > 2).
std::vector<int64_t> skewed_offsets(int64_t G, int64_t M) {
  auto weight = [G](int64_t g) { return g == 1 && G > 2 ? 0 : 1 + (g * 7) % 5; };
  std::vector<int64_t> off{0};
  int64_t weight_sum = 0;
  for (int64_t g = 0; g < G; ++g) weight_sum += weight(g);
  for (int64_t g = 0, acc = 0; g < G; ++g) {
    acc += weight(g);
    off.push_back(g + 1 == G ? M : M * acc / weight_sum);
  }
  return off;
}

// Groups with at least one row: only their weights need to be read.
int64_t nonempty_groups(const std::vector<int64_t>& off) {
  int64_t n = 0;
  for (size_t g = 0; g + 1 < off.size(); ++g) n += off[g + 1] > off[g];
  return n;
}

// The MoE expert GEMM: G experts, skewed group sizes (one expert gets no token),
// W [G, K, N]; minimum bytes = x read once, every used W_g read once, out written once. Each
// dtype runs after its peer, a loop of one BLAS GEMM per group.
void add_grouped_gemm_benches(std::vector<KernelBench>& benches, bool emu) {
  const int64_t G = emu ? 4 : 64, M = emu ? 512 : 32768, K = emu ? 128 : 2048, N = emu ? 128 : 1536;
  const std::vector<int64_t> off = skewed_offsets(G, M);
  const Tensor offs = from_vector(off, {G + 1});
  for (DType dt : {DType::bf16, DType::f32}) {
    const double e = double(dtype_size(dt));
    Tensor x = rnd({M, K}, 40, dt), w = rnd({G, K, N}, 41, dt);
    Tensor out = Tensor::empty({M, N}, {dt, Device::cuda(0)});
    const double flops = 2.0 * double(M) * double(N) * double(K);
    const double bytes = (double(M * K) + double(nonempty_groups(off) * K * N) + double(M * N)) * e;
    const std::string name = "grouped_gemm/" + std::string(dtype_name(dt));
    const moe::GroupedGemmArgs args{G, M, K, N, M, false};
    benches.push_back({name + " cublas-loop", bytes, flops,
                       [x, w, out, off, K, N, dt](int) {
                         auto* xp = static_cast<const char*>(x.data_ptr<void>());
                         auto* wp = static_cast<const char*>(w.data_ptr<void>());
                         auto* op = static_cast<char*>(out.data_ptr<void>());
                         const int64_t es = int64_t(dtype_size(dt)), groups = int64_t(off.size()) - 1;
                         for (int64_t g = 0; g < groups; ++g) {
                           const int64_t m = off[size_t(g) + 1] - off[size_t(g)];
                           if (m == 0) continue;  // cuBLAS rejects m = 0
                           cuda::blas::gemm(row_major_gemm(dt, m, N, K), xp + off[size_t(g)] * K * es,
                                            wp + g * K * N * es, op + off[size_t(g)] * N * es, cuda::current_stream(0));
                         }
                       },
                       dt == DType::f32});
    benches.push_back({name,
                       bytes,
                       flops,
                       [x, w, out, offs, args](int) {
                         moe::grouped_gemm_stub.get(Device::cuda(0))(args, x, w, offs, Tensor(), Tensor(), Tensor(),
                                                                     out);
                       },
                       dt == DType::f32,
                       {name + " cublas-loop"}});
  }
}

// One MoE layer's expert up-projection, x [T k, d] (rows grouped by expert) times
// W1 [N, d, d_ff], in bf16: hmoe's grouped GEMM, cuBLAS's grouped GEMM (through the
// op's cublas backend: cublasGemmGroupedBatchedEx after uploading the per-expert
// pointers, as any caller must), and one dense cuBLAS GEMM [T k, d] x [d, d_ff] of the
// same FLOPs (the bound a grouped GEMM approaches). Tokens: train.batch_size's default
// sequences of the preset's block size. Under the emulator only the tiny preset runs,
// with an eighth of its tokens; the rest print a line saying they were skipped.
void add_moe_shape_benches(std::vector<KernelBench>& benches, bool emu) {
  struct Shape3 {
    std::string name;
    int64_t d, ff, experts, top_k, tokens;
  };
  std::vector<Shape3> shapes;
  const int64_t batch = train::OptimConfig{}.batch_size;
  for (const char* p : {"tiny", "small", "base"}) {
    const model::ModelConfig c = model::preset(p);
    shapes.push_back({p, c.d_model, c.d_ff, c.n_experts, c.top_k, batch * c.block_size});
  }
  shapes.push_back({"mixtral", 4096, 14336, 8, 2, 4096});
  const DType dt = DType::bf16;
  for (const Shape3& sh : shapes) {
    const bool run = !emu || sh.name == "tiny";
    const int64_t tokens = emu && run ? sh.tokens / 8 : sh.tokens, M = tokens * sh.top_k, G = sh.experts;
    const std::string name = "moe/" + sh.name;
    std::printf("%s: x [%lld tokens x k %lld = %lld rows, d %lld] times W1 [N %lld, d, d_ff %lld]%s\n", name.c_str(),
                static_cast<long long>(tokens), static_cast<long long>(sh.top_k), static_cast<long long>(M),
                static_cast<long long>(sh.d), static_cast<long long>(G), static_cast<long long>(sh.ff),
                emu && run ? " (emulated: an eighth of the batch's tokens)" : "");
    if (!run) {
      benches.push_back({name, 0, 0, {}, false, {}, "skipped: the emulated device would take hours (run on a GPU)"});
      continue;
    }
    const std::vector<int64_t> off = skewed_offsets(G, M);
    const Tensor offs = from_vector(off, {G + 1});
    const Tensor x = rnd({M, sh.d}, 50, dt), w = rnd({G, sh.d, sh.ff}, 51, dt), wd = rnd({sh.d, sh.ff}, 52, dt);
    const Tensor out = Tensor::empty({M, sh.ff}, {dt, Device::cuda(0)});
    const double flops = 2.0 * double(M) * double(sh.d) * double(sh.ff), e = double(dtype_size(dt));
    const double in_out = (double(M * sh.d) + double(M * sh.ff)) * e;
    benches.push_back({name + " cublas-dense", in_out + double(sh.d * sh.ff) * e, flops, [x, wd, out, M, sh](int) {
                         cuda::blas::gemm(row_major_gemm(dt, M, sh.ff, sh.d), x.data_ptr<void>(), wd.data_ptr<void>(),
                                          out.data_ptr<void>(), cuda::current_stream(0));
                       }});
    auto grouped = [&](moe::GroupedGemmBackend be) {
      moe::GroupedGemmArgs args{G, M, sh.d, sh.ff, M, false};
      args.backend = be;
      return [x, w, out, offs, args](int) {
        moe::grouped_gemm_stub.get(Device::cuda(0))(args, x, w, offs, Tensor(), Tensor(), Tensor(), out);
      };
    };
    const double bytes = in_out + double(nonempty_groups(off) * sh.d * sh.ff) * e;
    benches.push_back({name + " cublas-grouped", bytes, flops, grouped(moe::GroupedGemmBackend::cublas)});
    benches.push_back({name + " hmoe",
                       bytes,
                       flops,
                       grouped(moe::GroupedGemmBackend::hmoe),
                       false,
                       {name + " cublas-grouped", name + " cublas-dense"}});
  }
}

// The grouped GEMM's backward kernels at the forward's shapes: dX (gx = dy W_g^T, the
// forward kernel with trans_w) and dW (dw_g = x_g^T dy_g, the variable-K kernel).
void add_grouped_gemm_backward_benches(std::vector<KernelBench>& benches, bool emu) {
  const int64_t G = emu ? 4 : 64, M = emu ? 512 : 32768, K = emu ? 128 : 2048, N = emu ? 128 : 1536;
  std::vector<int64_t> off{0};
  for (int64_t g = 0; g < G; ++g) off.push_back(M * (g + 1) / G);
  const Tensor offs = from_vector(off, {G + 1});
  for (DType dt : {DType::bf16, DType::f32}) {
    const double e = double(dtype_size(dt)), flops = 2.0 * double(M) * double(N) * double(K);
    const double bytes = (double(M * K) + double(G * K * N) + double(M * N)) * e;
    Tensor x = rnd({M, K}, 42, dt), w = rnd({G, K, N}, 43, dt), dy = rnd({M, N}, 44, dt);
    Tensor gx = Tensor::empty({M, K}, {dt, Device::cuda(0)}), dw = Tensor::empty({G, K, N}, {dt, Device::cuda(0)});
    benches.push_back({"grouped_gemm_dx/" + std::string(dtype_name(dt)), bytes, flops,
                       [dy, w, gx, offs, args = moe::GroupedGemmArgs{G, M, N, K, M, true}](int) {
                         moe::grouped_gemm_stub.get(Device::cuda(0))(args, dy, w, offs, Tensor(), Tensor(), Tensor(),
                                                                     gx);
                       },
                       dt == DType::f32});
    benches.push_back({"grouped_gemm_dw/" + std::string(dtype_name(dt)), bytes, flops,
                       [x, dy, dw, offs, args = moe::GroupedGemmArgs{G, M, K, N, M, false}](int) {
                         moe::grouped_gemm_dw_stub.get(Device::cuda(0))(args, x, Tensor(), dy, offs, dw, Tensor());
                       },
                       dt == DType::f32});
  }
}

}  // namespace

int run_bench_kernels(const BenchOptions& o) {
  const cuda::DeviceProperties& p = cuda::properties(0);
  const bool emu = cuda::is_emulated();
  std::printf("hmoe bench kernels on %s%s\n", p.str().c_str(), emu ? " (emulated: timings are not GPU timings)" : "");
  HMOE_CHECK(!o.emu_counters || emu, "hmoe bench kernels --emu-counters: needs the emulated build (HMOE_GPU=emu "
             "with HMOE_EMU_COUNTERS=ON); this one runs on a GPU");
  const Peaks peak = o.emu_counters ? Peaks{} : measure_peaks(o, emu);
  std::vector<KernelBench> benches;
  // The emulator runs everything ~1e4x slower: a sixteenth of the rows there.
  add_row_benches(benches, std::max<size_t>(p.l2_cache, 1 << 20), emu ? 16 : 1);
  add_matmul_benches(benches, emu);
  add_grouped_gemm_benches(benches, emu);
  add_grouped_gemm_backward_benches(benches, emu);
  add_moe_shape_benches(benches, emu);
  for (DispatchBench& b : dispatch_benches(emu, std::max<size_t>(p.l2_cache, 1 << 20)))
    benches.push_back({b.name, b.bytes, b.flops, std::move(b.run), true});

  if (o.emu_counters) {
    for (const KernelBench& kb : benches)
      if ((o.filter.empty() || kb.name.find(o.filter) != std::string::npos) && kb.skip.empty() &&
          kb.name.find("cublas") == std::string::npos)
        print_access_counters(o, kb.name, kb.bytes, kb.flops, kb.f32_peak, [&kb] { kb.run(0); });
    return 0;
  }
  std::printf("%-30s %10s %10s %8s %10s %8s\n", "kernel", "median ms", "GB/s", "% peak", "TFLOP/s", "% peak");
  std::map<std::string, double> times;
  for (const KernelBench& kb : benches) {
    if (!o.filter.empty() && kb.name.find(o.filter) == std::string::npos) continue;
    if (!kb.skip.empty()) {
      std::printf("%-30s %s\n", kb.name.c_str(), kb.skip.c_str());
      continue;
    }
    const double ms = time_ms(o, 16, kb.run);
    times[kb.name] = ms;
    const double gbs = kb.bytes / (ms * 1e6), tf = kb.flops / (ms * 1e9);
    std::printf("%-30s %10.4f %10.1f %7.1f%% %10.2f %7.1f%%%s\n", kb.name.c_str(), ms, gbs, 100 * gbs / peak.gbs, tf,
                100 * tf / (kb.f32_peak ? peak.f32_tflops : peak.bf16_tflops), kb.f32_peak ? " (of f32 peak)" : "");
    for (const std::string& peer : kb.peers)
      if (times.count(peer))
        std::printf("%-30s %10.2fx the speed of %s (same inputs, same run%s)\n", "", times[peer] / ms, peer.c_str(),
                    emu ? "; emulated" : "");
  }
  return 0;
}

}  // namespace hmoe::tools
#endif
