// The grouped GEMM kernels' shared pieces: the tile scheduler (a flat tile index to
// (group, row block, column block) through the host-built group table) and the operand
// panel loader (the gather fused into the row loads, 16-byte vectors when aligned, zero
// fill past every edge; into registers or by cp.async straight to shared memory), and the
// grouped FFN's activation steps fused into them (read as act(x), dh = acc * act'(h)).
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/cuda/cp_async.h"
#include "engine/cuda/device_code.h"
#include "ops/cuda/kernel_utils.cuh"
#include "ops/cuda/strided.cuh"
#include "ops/cuda/unary_fn.cuh"

namespace hmoe::ops::cuda::moe_gemm {

// The schedule of one launch, in device memory (built on the host from the host-readable
// offsets, one small upload per call).
struct GroupTable {
  const int64_t* offsets;  // [G + 1] first row of each group
  // forward: [G + 1] prefix over groups of ceil(m_g / BM) (empty groups add nothing);
  // dW: [G] the groups by decreasing m_g (the longest reductions start first)
  const int64_t* blocks;
  int64_t groups;
  int64_t m_blocks;  // dW only: row blocks of every dW_g, ceil(k / BM)
  int64_t n_blocks;  // column blocks, ceil(n / BN)
  int64_t tiles;     // tiles of the launch
};

struct Tile {
  int64_t g, mb, nb;
};

// Forward: group g owns tiles [blocks[g] * n_blocks, blocks[g + 1] * n_blocks); inside
// it the row block varies fastest, so blocks that run together share W_g's column panel
// (it stays in L2) while they sweep the group's rows. Empty groups own no tile.
__device__ __forceinline__ Tile forward_tile(const GroupTable& s, int64_t t) {
  int64_t lo = 0, hi = s.groups;  // the last g with blocks[g] * n_blocks <= t: never an empty group
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) >> 1;
    if (s.blocks[mid] * s.n_blocks <= t)
      lo = mid;
    else
      hi = mid;
  }
  const int64_t first = s.blocks[lo], mbg = s.blocks[lo + 1] - first, local = t - first * s.n_blocks;
  return {lo, local % mbg, local / mbg};
}

// dW: every group has m_blocks * n_blocks tiles (an empty group's are written as zeros),
// taken group by group in the order of `blocks`.
__device__ __forceinline__ Tile dw_tile(const GroupTable& s, int64_t t) {
  const int64_t per = s.m_blocks * s.n_blocks, local = t % per;
  return {s.blocks[t / per], local % s.m_blocks, local / s.m_blocks};
}

// The grouped FFN's activation fused into a GEMM (GroupedGemmArgs::x_act / out_act_grad),
// a kernel argument: one uniform branch per panel or output element, not a kernel per
// activation.
enum class FusedAct : uint8_t { none, relu, gelu_erf, gelu_tanh, silu };

// fn.template operator()<K>() for the activation's UnaryOp (f != none).
template <typename Fn>
__device__ __forceinline__ auto with_fused_act(FusedAct f, Fn&& fn) {
  switch (f) {
    case FusedAct::relu:
      return fn.template operator()<UnaryOp::relu>();
    case FusedAct::gelu_erf:
      return fn.template operator()<UnaryOp::gelu_erf>();
    case FusedAct::gelu_tanh:
      return fn.template operator()<UnaryOp::gelu_tanh>();
    default:
      return fn.template operator()<UnaryOp::silu>();
  }
}

// act(x) of a stored value, rounded to T once: the unary kernel's bits.
template <typename T>
__device__ __forceinline__ T fused_act(FusedAct f, T x) {
  using C = device_compute_t<T>;
  return with_fused_act(f, [&]<UnaryOp K>() { return from_compute<T>(UnaryFn<K, T>{C(0), C(0)}(to_compute<T>(x))); });
}

// g * act'(h) of stored values, rounded to T once: the unary backward kernel's bits.
template <typename T>
__device__ __forceinline__ T fused_act_grad(FusedAct f, T h, T g) {
  using C = device_compute_t<T>;
  return with_fused_act(f, [&]<UnaryOp K>() {
    return from_compute<T>(UnaryGradFn<K, T>{C(0), C(0)}(to_compute<T>(h), to_compute<T>(g)));
  });
}

// A matrix operand as lines (rows of memory, contiguous along the other dimension):
// global line L reads memory row index[L] (a zero line for -1) or row L, elements
// [along0, along_end) of it; lines at or past line_end read as zeros. Counts are 32-bit
// (the host checks that rows, k and n fit) to keep the main loops' registers down;
// element offsets are formed in 64 bits. act: every element read is act(element).
template <typename T>
struct Lines {
  const T* base;
  const int64_t* index;  // the gather (null: none)
  int ld;                // elements between memory rows
  int line0, line_end;
  int along0, along_end;
  FusedAct act = FusedAct::none;

  __device__ __forceinline__ const T* row(int line) const {
    if (line >= line_end) return nullptr;
    const int64_t src = index != nullptr ? __ldg(index + line) : line;
    return src < 0 ? nullptr : base + src * ld;
  }
};

template <typename T>
__device__ __forceinline__ T zero_of() {
  return from_compute<T>(device_compute_t<T>(0));
}

// The swizzled panel layout of the ldmatrix kernels (grouped_gemm_mma_sync.cuh): lines
// of `chunks` 16-byte chunks, unpadded, chunk c of line l stored at chunk
// swizzle_chunk(l, c) of the same line. Eight consecutive lines at one chunk (an ldmatrix
// phase, or a phase of the interleaved stores) then fill the 8 distinct 16-byte bank
// slots of a 128-byte span: XOR with l % 8 for lines of 8 chunks or more; for shorter
// lines (8 / chunks of them per 128 bytes), with the line's index among those spans.
template <int CHUNKS>
__device__ __forceinline__ int swizzle_chunk(int line, int c) {
  static_assert(CHUNKS >= 2 && (CHUNKS & (CHUNKS - 1)) == 0, "swizzled lines hold a power of two of chunks");
  if constexpr (CHUNKS >= 8)
    return c ^ (line & 7);
  else
    return c ^ ((line / (8 / CHUNKS)) & (CHUNKS - 1));
}

// One LINES x ALONG panel of an operand, loaded by NT threads in accesses of V
// elements (V > 1: the host checked that rows start 16-byte aligned and that along_end
// is a multiple of V, so a chunk is either wholly inside or wholly past the edge).
// load() fetches into registers, store()/store_t() write them to shared memory as
// [line][along] or transposed [along][line]; copy_async() copies global -> shared
// directly (cp.async, 16-byte chunks). Slot s of thread t is t + NT * i, the same line
// and chunk every step, so when the panel's lines stay put over the reduction (FIXED)
// their row pointers (the gather) are read once per tile.
template <typename T, int LINES, int ALONG, int NT, int V, bool FIXED>
struct Panel {
  static_assert(ALONG % V == 0, "panel width must be a multiple of the access width");
  static constexpr int kChunks = ALONG / V;
  static constexpr int kSlots = LINES * kChunks;
  static constexpr int kIters = (kSlots + NT - 1) / NT;
  // Cached row pointers cost two registers each: only for a few slots a thread.
  static constexpr bool kCache = FIXED && kIters <= 4;
  // Lines of fewer than 8 chunks go eight lines side by side (slot s: line s % 8 of its
  // group of eight, chunk s / 8): the 8 lanes of a 16-byte store phase then write one
  // chunk of 8 lines, which the 16-byte line padding puts on distinct banks, where line
  // after line they would write 2 lines of 4 chunks and meet in 4 banks (2-way). A warp
  // still covers the same 8 whole lines: the same global sectors.
  static constexpr bool kInterleave = kChunks < 8 && LINES % 8 == 0;
  using P = Pack<T, V>;

  P r[kIters];
  const T* rows[kCache ? kIters : 1];

  __device__ __forceinline__ static int slot(int i) { return int(threadIdx.x) + NT * i; }
  __device__ __forceinline__ static int line_of(int s) {
    return kInterleave ? s / (8 * kChunks) * 8 + s % 8 : s / kChunks;
  }
  __device__ __forceinline__ static int chunk_of(int s) { return kInterleave ? s / 8 % kChunks : s % kChunks; }

  // Row pointers of this thread's slots for a panel whose lines start at s.line0 (FIXED).
  __device__ __forceinline__ void prepare(const Lines<T>& s) {
    if constexpr (kCache) {
#pragma unroll
      for (int i = 0; i < kIters; ++i)
        rows[i] = (kSlots % NT == 0 || slot(i) < kSlots) ? s.row(s.line0 + line_of(slot(i))) : nullptr;
    }
  }

  // The memory row of this thread's slot i in the panel whose lines start at dl (null:
  // past the last line or a -1 gather) and the element its chunk starts at.
  __device__ __forceinline__ const T* row_of(const Lines<T>& s, int i, int dl) const {
    if constexpr (kCache)
      return rows[i];
    else
      return s.row(s.line0 + dl + line_of(slot(i)));
  }
  __device__ __forceinline__ static int along_of(const Lines<T>& s, int i, int da) {
    return s.along0 + da + chunk_of(slot(i)) * V;
  }

  // Where this thread's slot i of the panel at (dl, da) starts in memory (null: past an
  // edge or a -1 gather, the chunk is zeros).
  __device__ __forceinline__ const T* source(const Lines<T>& s, int i, int dl, int da) const {
    const T* p = row_of(s, i, dl);
    const int a = along_of(s, i, da);
    return p != nullptr && a < s.along_end ? p + a : nullptr;
  }

  // The panel of lines [s.line0 + dl, + LINES) and elements [s.along0 + da, + ALONG).
  // (Not through source(): forming p + a before the test costs the f32 element-load
  // kernels 40 bytes of spills.)
  __device__ __forceinline__ void load(const Lines<T>& s, int dl, int da) {
    const T z = zero_of<T>();
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (kSlots % NT != 0 && slot(i) >= kSlots) break;
      const T* p = row_of(s, i, dl);
      const int a = along_of(s, i, da);
      if (p != nullptr && a < s.along_end) {
        if constexpr (V > 1) {
          r[i] = load_pack<T, V>(p + a);
        } else {
          r[i].v[0] = p[a];
        }
        if (s.act != FusedAct::none) {  // zero fill needs none: each activation sends 0 to 0
#pragma unroll
          for (int e = 0; e < V; ++e) r[i].v[e] = fused_act<T>(s.act, r[i].v[e]);
        }
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) r[i].v[e] = z;
      }
    }
  }

  // smem[line * ld + along] (ld * sizeof(T) a multiple of 16 when V > 1).
  __device__ __forceinline__ void store(T* smem, int ld) const {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int sl = slot(i);
      if (kSlots % NT != 0 && sl >= kSlots) break;
      store_pack<T, V>(smem + line_of(sl) * ld + chunk_of(sl) * V, r[i]);
    }
  }

  // Where slot sl's chunk lives in a stage: smem[line * ld + along], or with SWZ in
  // unpadded lines of ALONG elements, the chunk swizzled (swizzle_chunk; ld unused).
  template <bool SWZ>
  __device__ __forceinline__ static T* chunk_at(T* smem, int ld, int sl) {
    if constexpr (SWZ)
      return smem + line_of(sl) * ALONG + swizzle_chunk<kChunks>(line_of(sl), chunk_of(sl)) * V;
    else
      return smem + line_of(sl) * ld + chunk_of(sl) * V;
  }

  // load() then store() as one asynchronous copy (cp.async of each 16-byte chunk,
  // zero-filled past the edges): the data is in smem once this thread's wait covers the
  // group it is committed in. No fused activation: see act_in_place().
  template <bool SWZ = false>
  __device__ __forceinline__ void copy_async(const Lines<T>& s, int dl, int da, T* smem, int ld) const {
    static_assert(V * sizeof(T) == 16, "cp.async copies 16-byte chunks");
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int sl = slot(i);
      if (kSlots % NT != 0 && sl >= kSlots) break;
      const T* p = source(s, i, dl, da);
      ::hmoe::device::cp_async_16(chunk_at<SWZ>(smem, ld, sl), p != nullptr ? p : s.base, p != nullptr ? 16 : 0);
    }
  }

  // The chunks this thread copied into smem become act(element), once its wait covered
  // them (a zero-filled chunk stays zero: each activation sends 0 to 0).
  template <bool SWZ = false>
  __device__ __forceinline__ void act_in_place(T* smem, int ld, FusedAct act) const {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int sl = slot(i);
      if (kSlots % NT != 0 && sl >= kSlots) break;
      T* q = chunk_at<SWZ>(smem, ld, sl);
      P v = load_pack<T, V>(q);
#pragma unroll
      for (int e = 0; e < V; ++e) v.v[e] = fused_act<T>(act, v.v[e]);
      store_pack<T, V>(q, v);
    }
  }

  // smem[along * ld + line]: the SIMT kernels' k-major layout for lines that are rows of
  // the output (x rows in the forward, W^T rows with trans_w). Each store of a warp puts
  // one element of each of its 32 chunks (8 lines x 4 chunks); with 4-byte elements,
  // 4-element chunks and ld = 4 (mod 32) (the SIMT strides BM + 4, BN + 4), element e of
  // chunk c lands in bank 16 c + 4 e + line (mod 32), so chunks c and c + 2 met (2-way
  // conflicts). Chunks 2 and 3 of every four store their elements rotated by two, which
  // moves them 8 banks over: 32 distinct banks.
  __device__ __forceinline__ void store_t(T* smem, int ld) const {
    constexpr bool kRotate = sizeof(T) == 4 && V == 4;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int sl = slot(i);
      if (kSlots % NT != 0 && sl >= kSlots) break;
      const int line = line_of(sl), c = chunk_of(sl) * V;
      const bool rot = kRotate && (chunk_of(sl) & 2) != 0;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const int q = (e + 2) % V;  // a compile-time index: the select stays in registers
        smem[(c + (rot ? q : e)) * ld + line] = rot ? r[i].v[q] : r[i].v[e];
      }
    }
  }
};

// Where a tile's results go: rows [row0, row_end) of out (leading dimension ldo),
// columns [col0, col_end); y = scale[row] * (acc + bias[col]) (each optional; bias
// already offset to the group), rounded to T; with act_grad (no scale or bias) out
// holds h and becomes y * act'(h). vec: out rows start 16-byte aligned and col_end is a
// multiple of the vector width. 32-bit counts, as in Lines.
template <typename T, typename C>
struct Epilogue {
  T* out;
  int ldo;
  int row0, row_end;
  int col0, col_end;
  const C* scale;
  const C* bias;
  bool vec;
  FusedAct act_grad = FusedAct::none;
};

// Forward tile tl of BM x BN tiles: its group, rows [r0, r1) (r1 the group's end) and
// first column.
struct ForwardSpan {
  int64_t g, r0, r1, c0;
};
template <int BM, int BN>
__device__ __forceinline__ ForwardSpan forward_span(const GroupTable& tab, const Tile& tl) {
  return {tl.g, tab.offsets[tl.g] + tl.mb * BM, tab.offsets[tl.g + 1], tl.nb * BN};
}

// The operands of a forward tile: A = its x rows (through the gather, read as act(x));
// B = W_g's columns from c0: lines of W^T ([n][k]) with TRANS, else rows of W ([k][n]).
template <typename T>
struct ForwardOperands {
  Lines<T> a, b;
};
template <typename T, bool TRANS>
__device__ __forceinline__ ForwardOperands<T> forward_operands(const ForwardSpan& sp, const T* x, const int64_t* index,
                                                               const T* w, int64_t k, int64_t n, FusedAct act) {
  const T* wg = w + sp.g * k * n;
  ForwardOperands<T> op;
  op.a = Lines<T>{x, index, int(k), int(sp.r0), int(sp.r1), 0, int(k), act};
  if constexpr (TRANS)
    op.b = Lines<T>{wg, nullptr, int(k), int(sp.c0), int(n), 0, int(k)};
  else
    op.b = Lines<T>{wg, nullptr, int(n), 0, int(k), int(sp.c0), int(n)};
  return op;
}

// Where a forward tile's results go: its rows and columns from c0 of out, with the
// group's bias.
template <typename T>
__device__ __forceinline__ Epilogue<T, float> forward_epilogue(const ForwardSpan& sp, T* out, int64_t n,
                                                               const float* scale, const float* bias, bool vec_out,
                                                               FusedAct act_grad) {
  const float* bias_g = bias != nullptr ? bias + sp.g * n : nullptr;
  return {out, int(n), int(sp.r0), int(sp.r1), int(sp.c0), int(n), scale, bias_g, vec_out, act_grad};
}

}  // namespace hmoe::ops::cuda::moe_gemm
