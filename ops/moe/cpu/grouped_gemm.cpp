// CPU kernels of the grouped GEMM: a fixed, shape-only grid of tiles over (group, row
// block, column block), each one single-threaded GEMM call on our thread pool (f32:
// hmoe's packed kernel, the gather read straight from x while packing A; f64: OpenBLAS
// on a gathered copy), bias / scale in the epilogue; the dW kernel (reduction over each
// group's rows in one call per tile), the scale gradient and the deterministic scatter
// of dX rows back through the gather index.
#include "ops/moe/cpu/grouped_gemm_cpu.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/thread_pool.h"
#include "ops/cpu/activation.h"
#include "ops/cpu/gemm_kernel.h"
#include "ops/moe/cpu/moe_cpu.h"

namespace hmoe::ops::cpu {
namespace {

using namespace moe_detail;
using moe::GroupedGemmArgs;

template <typename T>
void blas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
          int64_t ldc, T beta = T(0)) {
  const auto oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, oa, ob, int(m), int(n), int(k), 1.0f, a, int(lda), b, int(ldb), beta, c, int(ldc));
  else
    cblas_dgemm(CblasRowMajor, oa, ob, int(m), int(n), int(k), 1.0, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

// f32 runs on hmoe's packed kernel (the gather fused into its A pack); f64 on OpenBLAS.
template <typename T>
bool use_own_kernel(const GroupedTiling& tl) {
  if constexpr (std::is_same_v<T, float>) return gemm_kernel_preferred() && !tl.f32_openblas;
  else return false;
}

struct Tile {
  int64_t g, r0, rows, c0, cols;
  double cost;
};

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Splits [0, n) into blocks of at most `max_block`, evenly, in multiples of `align`.
int64_t even_block(int64_t n, int64_t max_block, int64_t align) {
  const int64_t parts = (n + max_block - 1) / max_block;
  return std::min(n, round_up((n + parts - 1) / parts, align));
}

// A call runs on one thread inside a parallel region (the grouped FFN's chunk tasks) or
// with a pool of one: nothing to share its tiles with, so none is split to make more.
bool threads_to_share() { return num_threads() > 1 && !in_parallel_region(); }

// A call with fewer tiles than tl.min_tiles, and threads to share them with, gets narrower
// (then shorter) ones: halves max_n, else max_m (when rows may split), down to their
// floors. False when the tiles stay as they are.
bool split_tiles_further(int64_t tiles, int64_t& max_n, int64_t& max_m, bool rows_split, const GroupedTiling& tl) {
  if (tiles >= tl.min_tiles || !threads_to_share()) return false;
  if (max_n > tl.min_n) {
    max_n /= 2;
    return true;
  }
  if (rows_split && max_m > tl.min_m) {
    max_m /= 2;
    return true;
  }
  return false;
}

// Biggest tiles first: the pool hands out tasks in order, so the tail stays short.
void order_tiles(std::vector<Tile>& tiles) {
  std::stable_sort(tiles.begin(), tiles.end(), [](const Tile& a, const Tile& b) { return a.cost > b.cost; });
}

std::vector<Tile> forward_tiles(const GroupedGemmArgs& a, const int64_t* off, GroupedTiling tl) {
  std::vector<Tile> tiles;
  for (;;) {
    tiles.clear();
    for (int64_t g = 0; g < a.groups; ++g) {
      const int64_t m = off[g + 1] - off[g];
      if (m == 0 || a.n == 0) continue;
      const int64_t bm = even_block(m, tl.max_m, 8);
      int64_t bn = a.n;
      while (bn > tl.max_n && 2.0 * double(bm) * double(bn) * double(a.k) > tl.split_flops)
        bn = round_up((bn + 1) / 2, 64);
      for (int64_t r0 = 0; r0 < m; r0 += bm)
        for (int64_t c0 = 0; c0 < a.n; c0 += bn) {
          const int64_t rows = std::min(bm, m - r0), cols = std::min(bn, a.n - c0);
          tiles.push_back({g, r0, rows, c0, cols, double(rows) * double(cols) * double(std::max<int64_t>(a.k, 1))});
        }
    }
    // Too few tiles to share out (a call with one or two groups): narrower, then shorter ones.
    if (!split_tiles_further(int64_t(tiles.size()), tl.max_n, tl.max_m, true, tl)) break;
  }
  order_tiles(tiles);
  return tiles;
}

// The activation fused into a GEMM (GroupedGemmArgs::x_act / out_act_grad), if any.
template <typename T>
ActivationRows<T> x_map(const GroupedGemmArgs& a) {
  return a.x_act ? activation_rows<T>(*a.x_act) : nullptr;
}

// Columns [col0, col0 + cols) of x's rows [row0, row0 + rows), through the gather index
// (-1: zero) and the fused activation, into a dense copy (x itself when neither applies):
// the operand of the BLAS path.
template <typename T>
const T* gathered_rows(const T* xp, const int64_t* ix, int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                       int64_t ld, ActivationRows<T> act, std::vector<T>& pack) {
  if (!ix && !act) return xp + row0 * ld + col0;
  pack.resize(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t src = ix ? ix[row0 + r] : row0 + r;
    T* dst = pack.data() + r * cols;
    if (src < 0) std::fill(dst, dst + cols, T(0));
    else std::memcpy(dst, xp + src * ld + col0, size_t(cols) * sizeof(T));
    if (act) act(dst, dst, cols);
  }
  return pack.data();
}

template <typename T>
void grouped_forward(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const int64_t* off,
                     const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out,
                     const GroupedTiling& tl) {
  const T* xp = x.data_ptr<T>();
  const T* wp = w.data_ptr<T>();
  const int64_t* ix = opt_ptr<int64_t>(index);
  const T* sc = opt_ptr<T>(scale);
  const T* bs = opt_ptr<T>(bias);
  T* op = out.data_ptr<T>();
  const int64_t K = a.k, N = a.n;
  const ActivationRows<T> act = x_map<T>(a);
  const ActivationGradRows<T> act_grad = a.out_act_grad ? activation_grad_rows<T>(*a.out_act_grad) : nullptr;
  HMOE_CHECK(!a.out_act_grad || (act_grad && !sc && !bs),
             "grouped_gemm: out_act_grad needs an FFN activation and no scale or bias");
  HMOE_CHECK(!a.x_act || act, "grouped_gemm: x_act must be relu, gelu_erf, gelu_tanh or silu");
  const std::vector<Tile> tiles = forward_tiles(a, off, tl);
  const bool own = use_own_kernel<T>(tl);
  parallel_for(int64_t(tiles.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> pack, acc;
    for (int64_t ti = lo; ti < hi; ++ti) {
      const Tile& t = tiles[size_t(ti)];
      const int64_t row0 = off[t.g] + t.r0;
      T* c = op + row0 * N + t.c0;
      if (own && K > 0) {  // the gather and x_act happen inside the A pack, dh in the epilogue
        if constexpr (std::is_same_v<T, float>) {
          const GemmA ga{ix ? xp : xp + row0 * K, K, false, ix ? ix + row0 : nullptr, act};
          const float* wg = wp + t.g * K * N;
          const GemmB gb = a.trans_w ? GemmB{wg + t.c0 * K, K, true} : GemmB{wg + t.c0, N, false};
          sgemm(t.rows, t.cols, K, 1.f, ga, gb, 0.f, c, N, gemm_best_isa(), {}, GemmEpilogue{act_grad, c, N});
        }
      } else {
        // The product into C, or for dh into a scratch tile that the epilogue reads with h.
        T* dst = c;
        int64_t ldd = N;
        if (act_grad) {
          acc.assign(size_t(t.rows * t.cols), T(0));
          dst = acc.data();
          ldd = t.cols;
        }
        if (K == 0) {
          for (int64_t r = 0; r < t.rows; ++r) std::fill(dst + r * ldd, dst + r * ldd + t.cols, T(0));
        } else {
          const T* ap = gathered_rows(xp, ix, row0, t.rows, 0, K, K, act, pack);
          const T* wg = wp + t.g * K * N;
          if (a.trans_w) blas<T>(false, true, t.rows, t.cols, K, ap, K, wg + t.c0 * K, K, dst, ldd);
          else blas<T>(false, false, t.rows, t.cols, K, ap, K, wg + t.c0, N, dst, ldd);
        }
        if (act_grad)  // out = acc * act'(h), h read from c itself
          for (int64_t r = 0; r < t.rows; ++r) act_grad(c + r * N, dst + r * ldd, c + r * N, t.cols);
      }
      if (bs || sc) {  // epilogue: y = scale * (acc + bias)
        const T* b = bs ? bs + t.g * N + t.c0 : nullptr;
        for (int64_t r = 0; r < t.rows; ++r) {
          T* row = c + r * N;
          if (b)
            for (int64_t j = 0; j < t.cols; ++j) row[j] += b[j];
          if (sc) {
            const T s = sc[row0 + r];
            for (int64_t j = 0; j < t.cols; ++j) row[j] *= s;
          }
        }
      }
    }
  });
}

template <typename T>
void grouped_dw(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy, const int64_t* off,
                const Tensor& dw, const Tensor& db, const GroupedTiling& tl) {
  const T* xp = x.data_ptr<T>();
  const int64_t* ix = opt_ptr<int64_t>(index);
  const T* gy = dy.data_ptr<T>();
  T* dwp = dw.defined() ? dw.data_ptr<T>() : nullptr;
  T* dbp = db.defined() ? db.data_ptr<T>() : nullptr;
  const int64_t K = a.k, N = a.n;
  // Tiles of dW_g over (k block, n block); each reduces over all m_g rows in one call.
  std::vector<Tile> tiles;  // here r0 / rows are the k block
  for (int64_t max_k = tl.dw_max_k, max_n = tl.dw_max_n;;) {
    const int64_t bk = dwp ? even_block(std::max<int64_t>(K, 1), max_k, 16) : std::max<int64_t>(K, 1);
    const int64_t bn = even_block(std::max<int64_t>(N, 1), max_n, 16);
    tiles.clear();
    for (int64_t g = 0; g < a.groups; ++g) {
      const int64_t m = off[g + 1] - off[g];
      for (int64_t k0 = 0; k0 < std::max<int64_t>(K, 1); k0 += bk)
        for (int64_t c0 = 0; c0 < N; c0 += bn) {
          const int64_t rows = std::min(bk, K - k0), cols = std::min(bn, N - c0);
          tiles.push_back({g, k0, std::max<int64_t>(rows, 0), c0, cols, double(m + 1) * double(rows) * double(cols)});
        }
    }
    if (!split_tiles_further(int64_t(tiles.size()), max_n, max_k, dwp != nullptr, tl)) break;
  }
  order_tiles(tiles);
  const bool own = use_own_kernel<T>(tl);
  const ActivationRows<T> act = x_map<T>(a);
  HMOE_CHECK(!a.x_act || act, "grouped_gemm backward: x_act must be relu, gelu_erf, gelu_tanh or silu");
  parallel_for(int64_t(tiles.size()), 1, [&](int64_t lo, int64_t hi) {
    std::vector<T> pack;
    for (int64_t ti = lo; ti < hi; ++ti) {
      const Tile& t = tiles[size_t(ti)];
      const int64_t m = off[t.g + 1] - off[t.g], row0 = off[t.g];
      if (dwp && t.rows > 0) {
        T* c = dwp + t.g * K * N + t.r0 * N + t.c0;
        if (m == 0) {  // an empty group's gradient is zero (BLAS would not write it)
          if (!a.accumulate)
            for (int64_t r = 0; r < t.rows; ++r) std::fill(c + r * N, c + r * N + t.cols, T(0));
        } else if (own) {  // act(x)^T packed straight from the gathered rows
          if constexpr (std::is_same_v<T, float>) {
            const GemmA ga{ix ? xp + t.r0 : xp + row0 * K + t.r0, K, true, ix ? ix + row0 : nullptr, act};
            sgemm(t.rows, t.cols, m, 1.f, ga, GemmB{gy + row0 * N + t.c0, N, false}, a.accumulate ? 1.f : 0.f, c, N);
          }
        } else {
          const T* ap = gathered_rows(xp, ix, row0, m, t.r0, t.rows, K, act, pack);
          const int64_t lda = ix || act ? t.rows : K;  // a dense copy, or x in place
          blas<T>(true, false, t.rows, t.cols, m, ap, lda, gy + row0 * N + t.c0, N, c, N, T(a.accumulate ? 1 : 0));
        }
      }
      if (dbp && t.r0 == 0) {  // db once per (group, column block), rows in order
        T* b = dbp + t.g * N + t.c0;
        if (!a.accumulate) std::fill(b, b + t.cols, T(0));
        for (int64_t r = 0; r < m; ++r) {
          const T* row = gy + (row0 + r) * N + t.c0;
          for (int64_t j = 0; j < t.cols; ++j) b[j] += row[j];
        }
      }
    }
  });
}

void grouped_gemm_cpu(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                      const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out) {
  grouped_gemm_cpu_tiled(a, x, w, offsets, index, scale, bias, out, GroupedTiling{});
}

void grouped_gemm_dw_cpu(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                         const Tensor& offsets, const Tensor& dw, const Tensor& db) {
  grouped_gemm_dw_cpu_tiled(a, x, index, dy, offsets, dw, db, GroupedTiling{});
}

void grouped_row_dot_cpu(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& gx,
                         const Tensor& dy, const Tensor& bias, const Tensor& offsets, const Tensor& out) {
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t K = a.k, N = a.n;
  hmoe::detail::dispatch_real(x.dtype(), "grouped_gemm backward", [&]<typename T>() {
    const T* xp = x.data_ptr<T>();
    const int64_t* ix = opt_ptr<int64_t>(index);
    const T* g = gx.data_ptr<T>();
    const T* gy = dy.data_ptr<T>();
    const T* bs = opt_ptr<T>(bias);
    T* o = out.data_ptr<T>();
    parallel_for(a.rows, row_grain(K + N), [&](int64_t lo, int64_t hi) {
      int64_t grp = std::upper_bound(off, off + a.groups + 1, lo) - off - 1;
      for (int64_t r = lo; r < hi; ++r) {
        while (off[grp + 1] <= r) ++grp;
        const int64_t src = ix ? ix[r] : r;
        T acc = 0;
        if (src >= 0)
          for (int64_t c = 0; c < K; ++c) acc += xp[src * K + c] * g[r * K + c];
        if (bs)
          for (int64_t c = 0; c < N; ++c) acc += gy[r * N + c] * bs[grp * N + c];
        o[r] = acc;
      }
    });
  });
}

void scatter_rows_cpu(const Tensor& src, const Tensor& index, const Tensor& scale, const Tensor& out) {
  const int64_t R = src.size(0), K = src.size(1), D = out.size(0);
  const int64_t* ix = index.data_ptr<int64_t>();
  // CSR of the sources of every destination row, in increasing source order.
  std::vector<int64_t> start(static_cast<size_t>(D) + 1, 0), list;
  for (int64_t r = 0; r < R; ++r)
    if (ix[r] >= 0) ++start[size_t(ix[r]) + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  list.resize(size_t(start[size_t(D)]));
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t r = 0; r < R; ++r)
      if (ix[r] >= 0) list[size_t(next[size_t(ix[r])]++)] = r;
  }
  hmoe::detail::dispatch_real(src.dtype(), "grouped_gemm backward", [&]<typename T>() {
    const T* s = src.data_ptr<T>();
    const T* sc = opt_ptr<T>(scale);
    T* o = out.data_ptr<T>();
    parallel_for(D, row_grain(K), [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        T* dst = o + t * K;
        std::fill(dst, dst + K, T(0));
        for (int64_t p = start[size_t(t)]; p < start[size_t(t) + 1]; ++p) {
          const int64_t r = list[size_t(p)];
          const T f = sc ? sc[r] : T(1);
          for (int64_t c = 0; c < K; ++c) dst[c] += f * s[r * K + c];
        }
      }
    });
  });
}

}  // namespace

void grouped_gemm_cpu_tiled(const GroupedGemmArgs& a, const Tensor& x, const Tensor& w, const Tensor& offsets,
                            const Tensor& index, const Tensor& scale, const Tensor& bias, const Tensor& out,
                            const GroupedTiling& tiling) {
  hmoe::detail::dispatch_real(x.dtype(), "grouped_gemm", [&]<typename T>() {
    grouped_forward<T>(a, x, w, offsets.data_ptr<int64_t>(), index, scale, bias, out, tiling);
  });
}

void grouped_gemm_dw_cpu_tiled(const GroupedGemmArgs& a, const Tensor& x, const Tensor& index, const Tensor& dy,
                               const Tensor& offsets, const Tensor& dw, const Tensor& db, const GroupedTiling& tiling) {
  hmoe::detail::dispatch_real(dy.dtype(), "grouped_gemm backward", [&]<typename T>() {
    grouped_dw<T>(a, x, index, dy, offsets.data_ptr<int64_t>(), dw, db, tiling);
  });
}

void register_moe_gemm_cpu() {
  using namespace hmoe::moe;
  grouped_gemm_stub.set(DeviceType::cpu, &grouped_gemm_cpu);
  grouped_gemm_dw_stub.set(DeviceType::cpu, &grouped_gemm_dw_cpu);
  grouped_row_dot_stub.set(DeviceType::cpu, &grouped_row_dot_cpu);
  scatter_rows_stub.set(DeviceType::cpu, &scatter_rows_cpu);
}

}  // namespace hmoe::ops::cpu
