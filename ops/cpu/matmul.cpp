// CPU GEMM: a fixed grid of C tiles run over our thread pool, each tile one call of
// hmoe's packed f32 kernel (ops/cpu/gemm_kernel.h) or, for f64, single-threaded OpenBLAS;
// results never depend on the thread count. bf16/f16 are computed in f32.
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/thread_pool.h"
#include "ops/cpu/gemm_kernel.h"
#include "ops/dispatch.h"
#include "ops/matmul.h"
#include "ops/matmul_kernels.h"

namespace hmoe::ops::cpu {


namespace {

// The tile grid depends on (m, n, k) only. OpenBLAS's own threading is not used: its
// results change with its thread count (measured: 513x1027x513 sgemm differs in the
// last bits between 1 and 2 threads), and single-threaded calls are safe to make from
// pool threads (attention calls cblas inside parallel_for). (hmoe's f32 kernel gives
// the same bits for any tiling; the fixed grid keeps f64 deterministic too.)
constexpr double kMinTileWork = 8e6;   // ~0.1 ms on one core: dwarfs the task overhead
constexpr int64_t kMinTileSide = 256;  // smaller tiles re-pack A and B too often
constexpr int64_t kMaxTiles = 16;

// A tile's work in FLOP-equivalents: its FLOPs plus 16 per element of A, B and C it
// touches, so memory-bound skinny products (a router's [T, d] x [d, 8]) still split.
double tile_work(int64_t tm, int64_t tn, int64_t k) {
  const double m = double(tm), n = double(tn), kk = double(k);
  return 2.0 * m * n * kk + 16.0 * (m * kk + kk * n + m * n);
}

struct Grid {
  int64_t tm, tn, nm, nn;
};

Grid plan_grid(int64_t m, int64_t n, int64_t k, int64_t max_tiles) {
  int64_t tm = std::max<int64_t>(m, 1), tn = std::max<int64_t>(n, 1);
  auto count = [&](int64_t a, int64_t b) { return ((m + a - 1) / a) * ((n + b - 1) / b); };
  auto half = [](int64_t s) { return (((s + 1) / 2) + 31) / 32 * 32; };  // multiples of 32 keep SIMD tails out
  // Against a small operand (fewer than kMinTileSide rows of A, columns of B) each tile
  // re-packs (or, when skinny, streams) little of it, so narrow tiles beat leaving threads
  // idle (a hypernetwork head's dX, [28, 8192] x [8192, 128], was one tile on one thread).
  const int64_t min_m = n < kMinTileSide ? 64 : kMinTileSide, min_n = m < kMinTileSide ? 64 : kMinTileSide;
  while (count(tm, tn) < max_tiles) {
    const int64_t hm = half(tm), hn = half(tn);
    const bool ok_m = hm >= min_m && hm < tm && tile_work(hm, tn, k) >= kMinTileWork;
    const bool ok_n = hn >= min_n && hn < tn && tile_work(tm, hn, k) >= kMinTileWork;
    if (ok_m && (tm >= tn || !ok_n)) tm = hm;
    else if (ok_n) tn = hn;
    else break;
  }
  return {tm, tn, (m + tm - 1) / tm, (n + tn - 1) / tn};
}

template <typename T>
void blas_call(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
               int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto ota = ta ? CblasTrans : CblasNoTrans, otb = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>) {
    if (gemm_kernel_preferred()) return sgemm(m, n, k, alpha, GemmA{a, lda, ta}, GemmB{b, ldb, tb}, beta, c, ldc);
    cblas_sgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, ota, otb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  }
}

// C = beta * C over the m x n matrices (the k = 0 product; BLAS would skip it).
template <typename T>
void scale_c(const GemmArgs& g, T* c) {
  for (int64_t i = 0; i < g.batch; ++i)
    for (int64_t r = 0; r < g.m; ++r) {
      T* row = c + i * g.stride_c + r * g.ldc;
      for (int64_t j = 0; j < g.n; ++j) row[j] = g.beta == 0 ? T(0) : T(g.beta) * row[j];  // beta 0 clears NaN
    }
}

template <typename T>
void gemm_typed(const GemmArgs& g, const T* a, const T* b, T* c) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.k == 0) return scale_c(g, c);
  // hmoe's f32 kernel gives the same bits for any tiling, so its grid follows the pool:
  // two tiles per thread balance the load, more would only re-pack A and B panels. The
  // f64 path (OpenBLAS) keeps a grid fixed by the shape alone.
  const bool own_kernel = std::is_same_v<T, float> && gemm_kernel_preferred();
  const int64_t max_tiles = own_kernel ? std::clamp<int64_t>(2 * num_threads(), 1, kMaxTiles) : kMaxTiles;
  const Grid grid = plan_grid(g.m, g.n, g.k, max_tiles);
  const int64_t tiles = grid.nm * grid.nn;
  // Many small matrices: several per task (scheduling only; each is computed alone).
  const int64_t grain = std::max<int64_t>(1, int64_t(kMinTileWork / std::max(tile_work(grid.tm, grid.tn, g.k), 1.0)));
  parallel_for(g.batch * tiles, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t bi = t / tiles, ti = t % tiles;
      const int64_t r0 = (ti / grid.nn) * grid.tm, c0 = (ti % grid.nn) * grid.tn;
      const int64_t mm = std::min(grid.tm, g.m - r0), nn = std::min(grid.tn, g.n - c0);
      const T* ap = a + bi * g.stride_a + (g.trans_a ? r0 : r0 * g.lda);
      const T* bp = b + bi * g.stride_b + (g.trans_b ? c0 * g.ldb : c0);
      T* cp = c + bi * g.stride_c + r0 * g.ldc + c0;
      blas_call<T>(g.trans_a, g.trans_b, mm, nn, g.k, T(g.alpha), ap, g.lda, bp, g.ldb, T(g.beta), cp, g.ldc);
    }
  });
}

// Elements a strided operand spans from its first element (0 when nothing is read).
int64_t span(int64_t batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
  if (batch == 0 || rows == 0 || cols == 0) return 0;
  return (batch - 1) * stride + (rows - 1) * ld + cols;
}

template <typename H>
std::vector<float> widen(const H* p, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[size_t(i)] = float(p[i]);
  });
  return out;
}

// Half inputs: one conversion to f32, the GEMM in f32, one rounding back of the
// m x n results (gaps between rows of C are left untouched).
template <typename H>
void gemm_half(const GemmArgs& g, const H* a, const H* b, H* c) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  const int64_t ra = g.trans_a ? g.k : g.m, ca = g.trans_a ? g.m : g.k;
  const int64_t rb = g.trans_b ? g.n : g.k, cb = g.trans_b ? g.k : g.n;
  const std::vector<float> af = widen(a, span(g.batch, g.stride_a, ra, g.lda, ca));
  const std::vector<float> bf = widen(b, span(g.batch, g.stride_b, rb, g.ldb, cb));
  const int64_t nc = span(g.batch, g.stride_c, g.m, g.ldc, g.n);
  std::vector<float> cf = g.beta == 0 ? std::vector<float>(static_cast<size_t>(nc)) : widen(c, nc);
  gemm_typed<float>(g, af.data(), bf.data(), cf.data());
  parallel_for(g.batch * g.m, std::max<int64_t>(1, 65536 / std::max<int64_t>(g.n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t off = (r / g.m) * g.stride_c + (r % g.m) * g.ldc;
      for (int64_t j = 0; j < g.n; ++j) c[off + j] = H(cf[size_t(off + j)]);
    }
  });
}

void gemm_cpu(const GemmArgs& g, const Tensor& a, const Tensor& b, const Tensor& c) {
  switch (a.dtype()) {
    case DType::f32: return gemm_typed(g, a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>());
    case DType::f64: return gemm_typed(g, a.data_ptr<double>(), b.data_ptr<double>(), c.data_ptr<double>());
    case DType::bf16: return gemm_half(g, a.data_ptr<bf16>(), b.data_ptr<bf16>(), c.data_ptr<bf16>());
    case DType::f16: return gemm_half(g, a.data_ptr<f16>(), b.data_ptr<f16>(), c.data_ptr<f16>());
    default: detail::unsupported_dtype("gemm", a.dtype());
  }
}

// OpenBLAS 0.3.21 does not know recent Intel cores (e.g. model 207) and falls back to
// its SSE3 "Prescott" kernels, ~5x slower here; the core can only be forced from the
// environment before the library loads, so say how. f32 matmul no longer goes through
// OpenBLAS; f64 GEMM and the attention kernel still do.
void warn_generic_openblas_core() {
  const char* core = openblas_get_corename();
  if (core == nullptr || std::strcmp(core, "Prescott") != 0) return;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx2")) return;
  std::fprintf(stderr,
               "hmoe: OpenBLAS did not recognise this CPU and uses its generic Prescott kernels (f64 GEMM, "
               "attention); set OPENBLAS_CORETYPE=%s in the environment for several times faster BLAS.\n",
               __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell");
}

}  // namespace

void register_matmul_cpu() {
  openblas_set_num_threads(1);  // we parallelise over tiles ourselves (see plan_grid)
  warn_generic_openblas_core();
  gemm_stub.set(DeviceType::cpu, &gemm_cpu);
}

}  // namespace hmoe::ops::cpu
