// The packed f32 GEMM: packing of A (gather, transpose, alpha) and B (transpose) into
// zero-padded panels, the AVX-512 (14x32), AVX2 (6x16) and portable (4x16) FMA
// micro-kernels, the GotoBLAS loop nest around them, and the skinny loop (m or n up to
// one micro-kernel's rows) that streams the long operand instead of packing it.
#include "ops/cpu/gemm_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#include "engine/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HMOE_GEMM_X86 1
#endif

namespace hmoe::ops::cpu {
namespace {

// How a micro-kernel starts its accumulators: zero (C not read), from C, or from beta * C.
enum class Init { zero, load, scale };

// acc[MR x NR] (from Init) += sum over p of a[p*MR + i] * b[p*ldb + j] as one fma chain per
// element in p order, then stored to c (leading dimension ldc). a: a packed panel; b: a
// packed panel (ldb = NR) or NR columns of B read in place (ldb = B's row stride).
using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc, float beta,
                             Init init);

// ---- micro-kernels ------------------------------------------------------------------

// Portable: std::fma keeps the exact chain of the vector kernels (fused, p in order).
constexpr int kPortMR = 4, kPortNR = 16;
// Each kernel computes the first R rows of its MR-row panel (R = MR, or 1 for a one-row
// product such as a decode step, which would otherwise do MR rows of arithmetic for one).
template <int R>
void ukr_portable(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc, float beta,
                  Init init) {
  float acc[R][kPortNR];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < kPortNR; ++j)
      acc[i][j] = init == Init::zero ? 0.f : init == Init::load ? c[i * ldc + j] : beta * c[i * ldc + j];
  for (int64_t p = 0; p < kc; ++p, a += kPortMR, b += ldb)
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < kPortNR; ++j) acc[i][j] = std::fma(a[i], b[j], acc[i][j]);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < kPortNR; ++j) c[i * ldc + j] = acc[i][j];
}

#ifdef HMOE_GEMM_X86
// Compiled for their ISA whatever the build flags (HMOE_NATIVE off), picked at run time.
#define HMOE_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define HMOE_TARGET_AVX2 __attribute__((target("avx2,fma")))

// 14 rows x 2 zmm columns: 28 accumulators + 2 B vectors + 1 broadcast of 32 registers.
constexpr int kAvx512MR = 14, kAvx512NR = 32;
template <int R>
HMOE_TARGET_AVX512 void ukr_avx512(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                                   float beta, Init init) {
  __m512 c0[R], c1[R];
  if (init == Init::zero) {
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  } else {
    const __m512 bv = _mm512_set1_ps(init == Init::load ? 1.f : beta);  // x * 1 is exact
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      c0[i] = _mm512_mul_ps(bv, _mm512_loadu_ps(c + i * ldc));
      c1[i] = _mm512_mul_ps(bv, _mm512_loadu_ps(c + i * ldc + 16));
    }
  }
  for (int64_t p = 0; p < kc; ++p, a += kAvx512MR, b += ldb) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < R; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
    }
  }
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    _mm512_storeu_ps(c + i * ldc, c0[i]);
    _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
  }
}

// 6 rows x 2 ymm columns: 12 accumulators + 2 B vectors + 1 broadcast of 16 registers.
constexpr int kAvx2MR = 6, kAvx2NR = 16;
template <int R>
HMOE_TARGET_AVX2 void ukr_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc,
                               float beta, Init init) {
  __m256 c0[R], c1[R];
  if (init == Init::zero) {
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  } else {
    const __m256 bv = _mm256_set1_ps(init == Init::load ? 1.f : beta);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      c0[i] = _mm256_mul_ps(bv, _mm256_loadu_ps(c + i * ldc));
      c1[i] = _mm256_mul_ps(bv, _mm256_loadu_ps(c + i * ldc + 8));
    }
  }
  for (int64_t p = 0; p < kc; ++p, a += kAvx2MR, b += ldb) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i);
      c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(c + i * ldc, c0[i]);
    _mm256_storeu_ps(c + i * ldc + 8, c1[i]);
  }
}
#endif  // HMOE_GEMM_X86

// ---- packing ----------------------------------------------------------------------------

// 64-byte aligned scratch that only grows; one per thread (the pack buffers).
class AlignedScratch {
 public:
  float* get(size_t n) {
    if (n > cap_) {
      const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      ptr_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!ptr_) throw std::bad_alloc();
      cap_ = bytes / sizeof(float);
    }
    return ptr_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> ptr_;
  size_t cap_ = 0;
};

#ifdef HMOE_GEMM_X86
// The two packs that transpose (A stored by rows of i, B stored by rows of j), done 16x16
// at a time in zmm registers: the scalar loops cost ~10% of a 256-row GEMM.

// r[i][e] -> r[e][i]: swap the off-diagonal blocks of size 8, 4, 2, 1 in turn.
HMOE_TARGET_AVX512 __attribute__((always_inline)) inline void transpose16(__m512 r[16]) {
#pragma GCC unroll 4
  for (int b = 8; b >= 1; b /= 2) {
    alignas(64) int32_t lo[16], hi[16];
    for (int e = 0; e < 16; ++e) {
      lo[e] = (e & b) ? 16 + e - b : e;
      hi[e] = (e & b) ? 16 + e : e + b;
    }
    const __m512i il = _mm512_load_si512(lo), ih = _mm512_load_si512(hi);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i & b) continue;
      const __m512 x = r[i], y = r[i + b];
      r[i] = _mm512_permutex2var_ps(x, il, y);
      r[i + b] = _mm512_permutex2var_ps(x, ih, y);
    }
  }
}

// Rows src[0..nrows) (nullptr: zeros) at columns [p, p + len), len <= 16, transposed:
// dst[q * ds + i] = scale * src[i][p + q] for i < 16 lanes selected by keep.
HMOE_TARGET_AVX512 __attribute__((always_inline)) inline void transpose_block(const float* const* src, int nrows,
                                                                              int64_t p, int len, float scale,
                                                                              float* dst, int64_t ds, __mmask16 keep) {
  const __mmask16 in = __mmask16((1u << len) - 1);
  __m512 r[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = i < nrows && src[i] ? _mm512_maskz_loadu_ps(in, src[i] + p) : _mm512_setzero_ps();
  if (scale != 1.f) {
    const __m512 sv = _mm512_set1_ps(scale);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_mul_ps(r[i], sv);
  }
  transpose16(r);
  for (int q = 0; q < len; ++q) _mm512_mask_storeu_ps(dst + q * ds, keep, r[q]);
}

HMOE_TARGET_AVX512 void pack_a_rows_avx512(const float* const* src, int64_t kb, float alpha, float* dst) {
  constexpr int mr = kAvx512MR;
  for (int64_t p = 0; p < kb; p += 16)
    transpose_block(src, mr, p, int(std::min<int64_t>(16, kb - p)), alpha, dst + p * mr, mr, (1u << mr) - 1);
}

// A transposed A (stored row r holds A(i0 .., p) for p = its phys row) into panels of
// mr <= 16 rows: each stored row is read once, contiguously, and its mb values go to
// every panel at once (one masked load and store per panel). Panel by panel instead,
// a gathered row was fetched once per panel (12 times for mc = 168) from scattered
// lines, and a plain copy loop paid a libc call per p.
HMOE_TARGET_AVX512 void pack_a_cols_avx512(const GemmA& A, int64_t i0, int64_t mb, int64_t p0, int64_t kb, float alpha,
                                           int mr, float* dst) {
  const __mmask16 out = __mmask16((1u << mr) - 1);
  const __m512 av = _mm512_set1_ps(alpha);
  const int64_t panel = int64_t(mr) * kb;
  for (int64_t p = 0; p < kb; ++p) {
    const int64_t r = A.rows ? A.rows[p0 + p] : p0 + p;
    const float* src = r < 0 ? nullptr : A.data + r * A.ld + i0;
    float* d = dst + p * mr;
    for (int64_t ir = 0; ir < mb; ir += mr, d += panel) {
      const __mmask16 in = __mmask16((1u << std::min<int64_t>(mr, mb - ir)) - 1);
      __m512 v = src ? _mm512_maskz_loadu_ps(in, src + ir) : _mm512_setzero_ps();
      if (alpha != 1.f) v = _mm512_mul_ps(v, av);
      _mm512_mask_storeu_ps(d, out, v);
    }
  }
}

HMOE_TARGET_AVX512 void pack_b_cols_avx512(const float* const* src, int64_t kb, float* dst) {
  constexpr int nr = kAvx512NR;
  for (int64_t p = 0; p < kb; p += 16) {
    const int len = int(std::min<int64_t>(16, kb - p));
    transpose_block(src, 16, p, len, 1.f, dst + p * nr, nr, 0xFFFF);
    transpose_block(src + 16, 16, p, len, 1.f, dst + p * nr + 16, nr, 0xFFFF);
  }
}
#endif

// A[i0 .. i0+mb) x [p0 .. p0+kb) times alpha into panels of MR rows: panel q holds
// element (i, p) at q*MR*kb + p*MR + i; rows past mb are zero.
template <int mr, bool avx512>
void pack_a(const GemmA& A, int64_t i0, int64_t mb, int64_t p0, int64_t kb, float alpha, float* dst) {
#ifdef HMOE_GEMM_X86
  if constexpr (mr <= 16) {
    if (avx512 && A.trans) return pack_a_cols_avx512(A, i0, mb, p0, kb, alpha, mr, dst);
  }
#endif
  auto phys = [&](int64_t r) { return A.rows ? A.rows[r] : r; };
  for (int64_t ir = 0; ir < mb; ir += mr, dst += mr * kb) {
    const int mv = int(std::min<int64_t>(mr, mb - ir));
    if (!A.trans) {
      // mr source rows, each read contiguously along p.
      const float* src[mr];
      for (int i = 0; i < mr; ++i) {
        const int64_t r = i < mv ? phys(i0 + ir + i) : -1;
        src[i] = r < 0 ? nullptr : A.data + r * A.ld + p0;
      }
#ifdef HMOE_GEMM_X86
      if constexpr (mr == kAvx512MR) {
        if (avx512) {
          pack_a_rows_avx512(src, kb, alpha, dst);
          continue;
        }
      }
#endif
      for (int i = 0; i < mr; ++i) {
        float* d = dst + i;
        if (!src[i]) {
          for (int64_t p = 0; p < kb; ++p) d[p * mr] = 0.f;
        } else if (alpha == 1.f) {
          for (int64_t p = 0; p < kb; ++p) d[p * mr] = src[i][p];
        } else {
          for (int64_t p = 0; p < kb; ++p) d[p * mr] = alpha * src[i][p];
        }
      }
    } else {
      // Row p of the stored matrix holds A(i0+ir .. , p) contiguously.
      for (int64_t p = 0; p < kb; ++p) {
        float* d = dst + p * mr;
        const int64_t r = phys(p0 + p);
        if (r < 0) {
          std::fill(d, d + mr, 0.f);
          continue;
        }
        const float* s = A.data + r * A.ld + i0 + ir;
        if (alpha == 1.f)
          std::memcpy(d, s, size_t(mv) * sizeof(float));
        else
          for (int i = 0; i < mv; ++i) d[i] = alpha * s[i];
        std::fill(d + mv, d + mr, 0.f);
      }
    }
  }
}

// B[p0 .. p0+kb) x [j0 .. j0+nb) into panels of NR columns: panel q holds element (p, j)
// at q*NR*kb + p*NR + j; columns past nb are zero.
template <int nr, bool avx512>
void pack_b(const GemmB& B, int64_t p0, int64_t kb, int64_t j0, int64_t nb, float* dst) {
  for (int64_t jr = 0; jr < nb; jr += nr, dst += nr * kb) {
    const int nv = int(std::min<int64_t>(nr, nb - jr));
    if (!B.trans) {
      const float* s = B.data + p0 * B.ld + j0 + jr;
      if (nv == nr) {  // a fixed-size copy: inlined as vector moves
        for (int64_t p = 0; p < kb; ++p, s += B.ld) std::memcpy(dst + p * nr, s, nr * sizeof(float));
        continue;
      }
      for (int64_t p = 0; p < kb; ++p, s += B.ld) {
        float* d = dst + p * nr;
        std::memcpy(d, s, size_t(nv) * sizeof(float));
        std::fill(d + nv, d + nr, 0.f);
      }
    } else {
      // Column j of op(B) is stored row j0+jr+j: read each along p in short runs so the
      // written block (run x nr) stays in L1.
#ifdef HMOE_GEMM_X86
      if constexpr (nr == kAvx512NR) {
        if (avx512) {
          const float* src[nr];
          for (int j = 0; j < nr; ++j) src[j] = j < nv ? B.data + (j0 + jr + j) * B.ld + p0 : nullptr;
          pack_b_cols_avx512(src, kb, dst);
          continue;
        }
      }
#endif
      constexpr int64_t kRun = 64;
      for (int64_t pb = 0; pb < kb; pb += kRun) {
        const int64_t pe = std::min(kb, pb + kRun);
        for (int j = 0; j < nv; ++j) {
          const float* s = B.data + (j0 + jr + j) * B.ld + p0;
          for (int64_t p = pb; p < pe; ++p) dst[p * nr + j] = s[p];
        }
        for (int64_t p = pb; p < pe; ++p) std::fill(dst + p * nr + nv, dst + (p + 1) * nr, 0.f);
      }
    }
  }
}

struct PackBuffers {
  AlignedScratch a, b, t;  // t: the transposed C of the small-n path
};
thread_local PackBuffers tl_pack;

// The GotoBLAS loop nest: B block (kc x nc) packed once per (jc, pc) and kept in L2, A
// block (mc x kc) per (jc, pc, ic); an A micro-panel (mr x kc, the broadcast operand)
// stays in L1 while the B micro-panels stream past it from L2.
template <int mr, int nr, MicroKernel kernel, bool avx512_packs>
void gemm_driver(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta, float* c,
                 int64_t ldc, int64_t mc, int64_t kc, int64_t nc, const GemmEpilogue& epi) {
  const int64_t mc_eff = std::min(mc, (m + mr - 1) / mr * mr), nc_eff = std::min(nc, (n + nr - 1) / nr * nr);
  const int64_t kc_eff = std::min(kc, k);
  float* pa = tl_pack.a.get(size_t(mc_eff * kc_eff));
  float* pb = tl_pack.b.get(size_t(nc_eff * kc_eff));
  alignas(64) float edge[mr * nr];  // an edge tile, computed whole and copied back in part
  alignas(64) float aux_tile[mr * nr];  // the epilogue's aux for that tile

  for (int64_t jc = 0; jc < n; jc += nc) {
    const int64_t nb = std::min(nc, n - jc);
    for (int64_t pc = 0; pc < k; pc += kc) {
      const int64_t kb = std::min(kc, k - pc);
      pack_b<nr, avx512_packs>(b, pc, kb, jc, nb, pb);
      // The first k block starts from beta C (or zero), later ones from the partial sum.
      const Init init = pc > 0 ? Init::load : beta == 0.f ? Init::zero : beta == 1.f ? Init::load : Init::scale;
      // The epilogue goes through the edge tile on the last k block.
      const bool epilogue = epi.fn && pc + kb == k;
      for (int64_t ic = 0; ic < m; ic += mc) {
        const int64_t mb = std::min(mc, m - ic);
        pack_a<mr, avx512_packs>(a, ic, mb, pc, kb, alpha, pa);
        if (a.map) a.map(pa, pa, (mb + mr - 1) / mr * mr * kb);  // padding rows stay 0
        for (int64_t ir = 0; ir < mb; ir += mr) {
          const int mv = int(std::min<int64_t>(mr, mb - ir));
          const float* ap = pa + ir * kb;
          for (int64_t jr = 0; jr < nb; jr += nr) {
            const int nv = int(std::min<int64_t>(nr, nb - jr));
            const float* bp = pb + jr * kb;
            float* cp = c + (ic + ir) * ldc + jc + jr;
            if (mv == mr && nv == nr && !epilogue) {
              kernel(kb, ap, bp, nr, cp, ldc, beta, init);
              continue;
            }
            if (init != Init::zero)
              for (int i = 0; i < mr; ++i)
                for (int j = 0; j < nr; ++j) edge[i * nr + j] = i < mv && j < nv ? cp[i * ldc + j] : 0.f;
            kernel(kb, ap, bp, nr, edge, nr, beta, init);
            if (epilogue) {  // on the whole tile at once: one call, full vectors
              const float* aux = epi.aux + (ic + ir) * epi.ld + jc + jr;
              if (mv < mr || nv < nr) std::fill(aux_tile, aux_tile + mr * nr, 0.f);
              for (int i = 0; i < mv; ++i) std::memcpy(aux_tile + i * nr, aux + i * epi.ld, size_t(nv) * sizeof(float));
              epi.fn(aux_tile, edge, edge, mr * nr);
            }
            for (int i = 0; i < mv; ++i) std::memcpy(cp + i * ldc, edge + i * nr, size_t(nv) * sizeof(float));
          }
        }
      }
    }
  }
}

// The small-m loop (m <= kSmallSlabs * MR: a few A panels): B is not packed as a whole.
// Each B element is used m times only, so the packed driver's copy of B (a read and a
// write of all of it, then a read of the copy) would cost more than the arithmetic; here a
// row-major B is read in place, NR columns at a time, by every A panel in turn while those
// columns are still in cache, and a transposed B (or an edge block) is packed one
// micro-panel of kSmallKc rows at a time into an L1-resident buffer. Same micro-kernel, so
// every element is the same fma chain as in the packed driver.
constexpr int64_t kSmallKc = 128;
// Up to 8 panels (112 rows at AVX-512's MR): an expert's rows at prefill or a HyperMoE
// pattern's. bench_gemm BM_sgemm_small_m (one Zen 4 core, n = 1024): in place 108-110
// GFLOP/s at m = 14..56 against the packed driver's 70-99 (it copies all of B for few rows),
// about even from m ~ 140 (k = 256..1024), the packed one ahead from m ~ 280.
constexpr int64_t kSmallSlabs = 8;

template <int mr, int nr, MicroKernel kernel, MicroKernel one_row, bool avx512_packs>
void small_m_driver(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta, float* c,
                    int64_t ldc) {
  const int64_t slabs = (m + mr - 1) / mr;
  float* pa = tl_pack.a.get(size_t(slabs * mr * k));
  pack_a<mr, avx512_packs>(a, 0, m, 0, k, alpha, pa);  // panel s at pa + s * mr * k; rows past m are zero
  if (a.map) a.map(pa, pa, slabs * mr * k);
  float* pb = tl_pack.b.get(size_t(nr * kSmallKc));
  alignas(64) float edge[mr * nr];
  for (int64_t jr = 0; jr < n; jr += nr) {
    const int nv = int(std::min<int64_t>(nr, n - jr));
    const bool in_place = !b.trans && nv == nr;
    const int64_t kstep = in_place ? k : kSmallKc;  // in place: the whole chain in one call, no reload of C
    for (int64_t pc = 0; pc < k; pc += kstep) {
      const int64_t kb = std::min(kstep, k - pc);
      const Init init = pc > 0 ? Init::load : beta == 0.f ? Init::zero : beta == 1.f ? Init::load : Init::scale;
      const float* bp = b.data + pc * b.ld + jr;
      int64_t ldb = b.ld;
      if (!in_place) {
        pack_b<nr, avx512_packs>(b, pc, kb, jr, nv, pb);
        bp = pb;
        ldb = nr;
      }
      for (int64_t s = 0; s < slabs; ++s) {
        const int64_t mv = std::min<int64_t>(mr, m - s * mr);
        float* cp = c + s * mr * ldc + jr;
        if (init != Init::zero)
          for (int i = 0; i < mr; ++i)
            for (int j = 0; j < nr; ++j) edge[i * nr + j] = i < mv && j < nv ? cp[i * ldc + j] : 0.f;
        (m == 1 ? one_row : kernel)(kb, pa + s * mr * k + pc * mr, bp, ldb, edge, nr, beta, init);
        for (int64_t i = 0; i < mv; ++i) std::memcpy(cp + i * ldc, edge + i * nr, size_t(nv) * sizeof(float));
      }
    }
  }
}

using Driver = void (*)(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta,
                        float* c, int64_t ldc, int64_t mc, int64_t kc, int64_t nc, const GemmEpilogue& epi);
using SmallDriver = void (*)(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta,
                             float* c, int64_t ldc);

struct KernelInfo {
  int mr, nr;
  Driver run;
  SmallDriver small_m;
  GemmBlocking blocking;  // defaults
};

// Blocking defaults (bench/bench_gemm BM_sgemm_kernel_blocking and a sweep of shapes on a
// 48 KiB L1 / 2 MiB L2 core, one thread): the A micro-panel (21 KiB at 14 x 384) in L1,
// the B block (384 x 1024, 1.5 MiB) in L2. B micro-panels held in L1 with A streaming
// instead measured 3-7% slower; mc from 84 to 1024 measured the same, and kc from 256 to
// 512 too once k is split evenly (sgemm), so a k of up to 384 is one block.
const KernelInfo& kernel_info(GemmIsa isa) {
  static const KernelInfo portable{
      kPortMR, kPortNR, &gemm_driver<kPortMR, kPortNR, &ukr_portable<kPortMR>, false>,
      &small_m_driver<kPortMR, kPortNR, &ukr_portable<kPortMR>, &ukr_portable<1>, false>, {128, 384, 1024}};
#ifdef HMOE_GEMM_X86
  static const KernelInfo avx2{kAvx2MR, kAvx2NR, &gemm_driver<kAvx2MR, kAvx2NR, &ukr_avx2<kAvx2MR>, false>,
                               &small_m_driver<kAvx2MR, kAvx2NR, &ukr_avx2<kAvx2MR>, &ukr_avx2<1>, false>, {144, 384, 1024}};
  static const KernelInfo avx512{kAvx512MR, kAvx512NR, &gemm_driver<kAvx512MR, kAvx512NR, &ukr_avx512<kAvx512MR>, true>,
                                 &small_m_driver<kAvx512MR, kAvx512NR, &ukr_avx512<kAvx512MR>, &ukr_avx512<1>, true>, {168, 384, 1024}};
  if (isa == GemmIsa::avx512) return avx512;
  if (isa == GemmIsa::avx2) return avx2;
#endif
  (void)isa;
  return portable;
}

}  // namespace

GemmIsa gemm_best_isa() {
  static const GemmIsa best = [] {
#ifdef HMOE_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GemmIsa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmIsa::avx2;
#endif
    return GemmIsa::portable;
  }();
  return best;
}

bool gemm_isa_supported(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::portable:
      return true;
    case GemmIsa::avx2:
      return gemm_best_isa() != GemmIsa::portable;
    case GemmIsa::avx512:
      return gemm_best_isa() == GemmIsa::avx512;
  }
  return false;
}

bool gemm_kernel_preferred() { return gemm_best_isa() != GemmIsa::portable; }

const char* gemm_isa_name(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::portable:
      return "portable";
    case GemmIsa::avx2:
      return "avx2";
    case GemmIsa::avx512:
      return "avx512";
  }
  return "?";
}

void sgemm(int64_t m, int64_t n, int64_t k, float alpha, const GemmA& a, const GemmB& b, float beta, float* c,
           int64_t ldc, GemmIsa isa, const GemmBlocking& blocking, const GemmEpilogue& epilogue) {
  HMOE_CHECK(!a.map || alpha == 1.f, "sgemm: a map on A needs alpha = 1, got ", alpha);
  HMOE_CHECK(!epilogue.fn || (beta == 0.f && epilogue.aux), "sgemm: an epilogue needs beta = 0 and its aux matrix");
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // the empty product: C = beta C (beta 0 clears NaN)
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        float v = beta == 0.f ? 0.f : beta * c[i * ldc + j];
        if (epilogue.fn) epilogue.fn(epilogue.aux + i * epilogue.ld + j, &v, &v, 1);
        c[i * ldc + j] = v;
      }
    return;
  }
  if (!gemm_isa_supported(isa)) isa = gemm_best_isa();
  const KernelInfo& kr = kernel_info(isa);
  if (!blocking.small_off && !epilogue.fn) {
    if (m <= kr.mr || (m <= kSmallSlabs * kr.mr && !b.trans)) return kr.small_m(m, n, k, alpha, a, b, beta, c, ldc);
    // Few columns: C^T = op(B)^T op(A)^T on the small-m loop, into a scratch C^T. With
    // alpha = 1 each element's chain fma(B(p, j), A(i, p), acc) equals fma(A(i, p), B(p, j),
    // acc) bit for bit; a gather or map on A has no counterpart on B, so they stay here.
    if (n <= kr.mr && alpha == 1.f && !a.rows && !a.map) {
      float* t = tl_pack.t.get(size_t(n * m));
      if (beta != 0.f)
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) t[j * m + i] = c[i * ldc + j];
      kr.small_m(n, m, k, 1.f, GemmA{b.data, b.ld, !b.trans}, GemmB{a.data, a.ld, !a.trans}, beta, t, m);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = t[j * m + i];
      return;
    }
  }
  auto pick = [](int64_t v, int64_t def, int64_t mult) {
    return std::max<int64_t>(mult, (v > 0 ? v : def) / mult * mult);
  };
  const int64_t mc = pick(blocking.mc, kr.blocking.mc, kr.mr), nc = pick(blocking.nc, kr.blocking.nc, kr.nr);
  const int64_t kc_max = pick(blocking.kc, kr.blocking.kc, 1);
  if (epilogue.fn) {
    // One k block, so C is written once, after the whole chain (C may hold the epilogue's
    // aux); the B block keeps about its usual size by narrowing when k is long.
    const int64_t nc1 = std::min(nc, std::max<int64_t>(kr.nr, kc_max * nc / k / kr.nr * kr.nr));
    return kr.run(m, n, k, alpha, a, b, beta, c, ldc, mc, k, nc1, epilogue);
  }
  // k in equal blocks of at most kc: no short tail block paying the C reload for little work.
  const int64_t kblocks = (k + kc_max - 1) / kc_max;
  kr.run(m, n, k, alpha, a, b, beta, c, ldc, mc, (k + kblocks - 1) / kblocks, nc, epilogue);
}

}  // namespace hmoe::ops::cpu
