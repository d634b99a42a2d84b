// nvcuda::wmma for host compilation: fragments whose element-to-lane mapping is a
// seed-dependent scramble, and load/store/mma as full-warp rendezvous.
#pragma once

#include <cstdint>
#include <source_location>
#include <type_traits>

#include "engine/emu/half.h"
#include "engine/emu/warp.h"

namespace hmoe::emu::detail {
// The launch's scrambled mapping for a rows x cols fragment of kind `use` (0 = a,
// 1 = b, 2 = accumulator): map[r * cols + c] = lane * (rows * cols / 32) + slot.
const uint16_t* wmma_map(int use, int rows, int cols);
// Per-lane argument checks (alignment, ldm); throw hmoe::Error naming the call.
void wmma_check(const char* what, const void* ptr, unsigned ldm, unsigned elem_size, unsigned min_ldm,
                const std::source_location& loc);
#if defined(HMOE_EMU_COUNTERS)
// The access counters' model of a tile load or store (counters.cpp): this lane's share
// of the tile's 16-byte line chunks, in ldmatrix order (eight lines a phase).
void count_wmma_tile(const void* ptr, unsigned ldm, bool row_major, int rows, int cols, unsigned elem, bool store,
                     const std::source_location& loc);
#endif
}  // namespace hmoe::emu::detail

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <typename Use, int M, int N, int K> struct FragShape;
template <int M, int N, int K> struct FragShape<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K, use = 0;
};
template <int M, int N, int K> struct FragShape<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N, use = 1;
};
template <int M, int N, int K> struct FragShape<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N, use = 2;
};
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert((M == 16 && N == 16 && K == 16) || (M == 32 && N == 8 && K == 16) || (M == 8 && N == 32 && K == 16),
                "hmoe::emu wmma: supported shapes are 16x16x16, 32x8x16 and 8x32x16");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_same_v<T, float>
                                                 : (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>),
                "hmoe::emu wmma: matrix_a/b hold __half or __nv_bfloat16, accumulators hold float");
  static_assert(std::is_same_v<Use, accumulator> == std::is_same_v<Layout, void>,
                "hmoe::emu wmma: matrix_a/b need row_major or col_major; accumulators take no layout");

 public:
  using shape = detail::FragShape<Use, M, N, K>;
  using element_type = T;
  using storage_element_type = T;
  static constexpr int num_elements = shape::rows * shape::cols / 32;
  T x[num_elements];
};

namespace detail {
namespace emu = ::hmoe::emu::detail;

// Runs on the last lane's fiber: copies the tile between memory and every lane's x[].
template <typename Frag, bool Store>
void tile_transfer(const uint64_t* lanes, const uint64_t* shared, unsigned /*arrived*/) {
  using T = typename Frag::element_type;
  constexpr int rows = Frag::shape::rows, cols = Frag::shape::cols, ne = Frag::num_elements;
  T* mem = reinterpret_cast<T*>(shared[0]);
  const uint64_t ldm = shared[1];
  const bool row = shared[2] == 0;
  const uint16_t* map = emu::wmma_map(Frag::shape::use, rows, cols);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const unsigned pos = map[r * cols + c];
      T* slot = reinterpret_cast<T*>(lanes[pos / ne]) + pos % ne;
      T* m = mem + (row ? uint64_t(r) * ldm + c : uint64_t(c) * ldm + r);
      if constexpr (Store) *m = *slot;
      else *slot = *m;
    }
  }
}

template <typename Frag, bool Store>
void tile_call(const char* name, typename Frag::element_type* ptr, unsigned ldm, bool row_major, void* x,
               const std::source_location& loc) {
  using T = typename Frag::element_type;
  emu::wmma_check(name, ptr, ldm, sizeof(T), row_major ? Frag::shape::cols : Frag::shape::rows, loc);
  emu::WarpCall c;
  c.op = emu::WarpOp::custom;
  c.full_warp = true;
  c.mask = 0xffffffffu;
  c.value = reinterpret_cast<uint64_t>(x);
  c.shared[0] = reinterpret_cast<uint64_t>(ptr);
  c.shared[1] = ldm;
  c.shared[2] = row_major ? 0 : 1;
  c.name = name;
  c.complete = &tile_transfer<Frag, Store>;
  c.loc = loc;
#if defined(HMOE_EMU_COUNTERS)
  emu::count_wmma_tile(ptr, ldm, row_major, Frag::shape::rows, Frag::shape::cols, sizeof(T), Store, loc);
#endif
  emu::warp_collective(c);
}

struct MmaOperands {
  float* d;
  const void* a;
  const void* b;
  const float* c;
};

template <typename FA, typename FB, int M, int N, int K>
void mma_complete(const uint64_t* lanes, const uint64_t* /*shared*/, unsigned /*arrived*/) {
  using TA = typename FA::element_type;
  using TB = typename FB::element_type;
  constexpr int na = FA::num_elements, nb = FB::num_elements, nc = M * N / 32;
  const uint16_t* ma = emu::wmma_map(0, M, K);
  const uint16_t* mb = emu::wmma_map(1, K, N);
  const uint16_t* mc = emu::wmma_map(2, M, N);
  auto op = [&](unsigned lane) -> const MmaOperands& { return *reinterpret_cast<const MmaOperands*>(lanes[lane]); };
  float a[M][K], b[K][N], acc[M][N];
  for (int r = 0; r < M; ++r)
    for (int k = 0; k < K; ++k) {
      const unsigned p = ma[r * K + k];
      a[r][k] = float(static_cast<const TA*>(op(p / na).a)[p % na]);
    }
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) {
      const unsigned p = mb[k * N + n];
      b[k][n] = float(static_cast<const TB*>(op(p / nb).b)[p % nb]);
    }
  for (int r = 0; r < M; ++r)
    for (int n = 0; n < N; ++n) {
      const unsigned p = mc[r * N + n];
      acc[r][n] = op(p / nc).c[p % nc];
    }
  // All inputs are gathered before any output is written: d may alias c.
  for (int r = 0; r < M; ++r)
    for (int n = 0; n < N; ++n) {
      float s = acc[r][n];
      for (int k = 0; k < K; ++k) s += a[r][k] * b[k][n];
      const unsigned p = mc[r * N + n];
      op(p / nc).d[p % nc] = s;
    }
}
}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const T& v) {
  for (auto& e : f.x) e = v;
}
template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm,
                             std::source_location loc = std::source_location::current()) {
  static_assert(!std::is_same_v<Use, accumulator>, "accumulator loads take a layout_t argument");
  detail::tile_call<fragment<Use, M, N, K, T, L>, false>("wmma::load_matrix_sync", const_cast<T*>(p), ldm,
                                                         std::is_same_v<L, row_major>, f.x, loc);
}
template <int M, int N, int K, typename T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T>& f, const T* p, unsigned ldm, layout_t layout,
                             std::source_location loc = std::source_location::current()) {
  detail::tile_call<fragment<accumulator, M, N, K, T>, false>("wmma::load_matrix_sync", const_cast<T*>(p), ldm,
                                                              layout == mem_row_major, f.x, loc);
}
template <int M, int N, int K, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm, layout_t layout,
                              std::source_location loc = std::source_location::current()) {
  detail::tile_call<fragment<accumulator, M, N, K, T>, true>("wmma::store_matrix_sync", p, ldm,
                                                             layout == mem_row_major, const_cast<T*>(f.x), loc);
}
template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c,
                     bool /*satf*/ = false, std::source_location loc = std::source_location::current()) {
  namespace emu = ::hmoe::emu::detail;
  static_assert(std::is_same_v<TA, TB>, "wmma::mma_sync: matrix_a and matrix_b must hold the same type");
  detail::MmaOperands ops{d.x, a.x, b.x, c.x};
  emu::WarpCall call;
  call.op = emu::WarpOp::custom;
  call.full_warp = true;
  call.mask = 0xffffffffu;
  call.value = reinterpret_cast<uint64_t>(&ops);
  call.name = "wmma::mma_sync";
  call.complete = &detail::mma_complete<fragment<matrix_a, M, N, K, TA, LA>, fragment<matrix_b, M, N, K, TB, LB>, M, N, K>;
  call.loc = loc;
  emu::warp_collective(call);
}

}  // namespace nvcuda::wmma
