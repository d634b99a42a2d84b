// Kernel bodies of the cuda attention family, tensor-core part: causal attention
// forward, dK/dV and dQ for bf16/f16 inputs with WMMA 16x16x16 products (f32
// accumulate). A fragment's element-to-lane mapping is unspecified (the emulator
// scrambles it), so every element-wise step (masking, softmax, rescaling) goes through
// shared memory with store_matrix_sync/load_matrix_sync, never through fragment.x.
#pragma once

#include "ops/cuda/attention.cuh"

namespace hmoe::ops::cuda::attn {

namespace wmma = nvcuda::wmma;

constexpr size_t align128(size_t x) { return (x + 127) / 128 * 128; }

// Shared-memory layouts (byte offsets, each region 128-byte aligned so every 16x16
// tile pointer is 32-byte aligned). Tiles are 64 rows; T tiles have row stride DM + 8
// elements (16-byte multiple), f32 score tiles 64 + 4, T probability tiles 64 + 8.
template <int DM>
struct WmmaLayout {
  static constexpr int B = 64, LDT = DM + 8, LDS = B + 4, LDP = B + 8, LDO = DM + 4;
  static constexpr size_t t_tile = align128(size_t(B) * LDT * 2);  // bf16/f16 [64][LDT]
  static constexpr size_t s_tile = align128(size_t(B) * LDS * 4);  // f32 [64][LDS]
  static constexpr size_t p_tile = align128(size_t(B) * LDP * 2);  // bf16/f16 [64][LDP]
  static constexpr size_t o_tile = align128(size_t(B) * LDO * 4);  // f32 [64][LDO]
  static constexpr size_t row_vec = align128(size_t(B) * 4);       // f32 [64]
  // forward: Q K V | S | P | O | 1/l
  static constexpr size_t fwd = 3 * t_tile + s_tile + p_tile + o_tile + row_vec;
  // backward (both kernels): four T tiles | two score tiles | one or two P tiles | lse, D
  static constexpr size_t dkdv = 4 * t_tile + 2 * s_tile + 2 * p_tile + 2 * row_vec;
  static constexpr size_t dq = 4 * t_tile + 2 * s_tile + p_tile + 2 * row_vec;
  // The final f32 accumulators (two [64][LDO] tiles) reuse the four T tiles.
  static_assert(2 * o_tile <= 4 * t_tile, "accumulator scratch must fit in the operand tiles");
};

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// acc += A[16 x 16 KD] * B^T where A and B are row-major [16][16 KD] tiles of stride ld
// (B read as a col-major matrix_b: the product of two row blocks over the head dim).
template <typename T, int KD>
__device__ __forceinline__ void mma_abt(FragC& acc, const T* a, const T* b, int ld) {
#pragma unroll
  for (int kd = 0; kd < KD; ++kd) {
    FragA<T> fa;
    FragBCol<T> fb;
    wmma::load_matrix_sync(fa, a + 16 * kd, ld);
    wmma::load_matrix_sync(fb, b + 16 * kd, ld);
    wmma::mma_sync(acc, fa, fb, acc);
  }
}

// Causal attention forward, bf16/f16 with WMMA. Launch: grid (B * H, ceil(T / 64)),
// block 128 (4 warps), WmmaLayout<DM>::fwd bytes. Warp w owns query rows
// 16w..16w+15 of the block's tile for every step, so after each K/V tile is loaded the
// warp needs only __syncwarp: S = Q K^T (col blocks past its diagonal skipped) to
// shared f32, online softmax by lane pairs (two lanes per row, running max and partial
// sum in registers, O's rows rescaled in shared), then O += P V with the accumulator
// tiles loaded from and stored back to shared f32.
template <typename T, int DM>
__global__ void __launch_bounds__(128, 1)
    attn_fwd_wmma(Operand<T> q, Operand<T> k, Operand<T> v, int H, int Tn, int Dh, float scale, T* out, float* lse) {
  using L = WmmaLayout<DM>;
  constexpr int B = L::B, NT = 128, KD = DM / 16, NO = DM / 16, LDT = L::LDT, LDS = L::LDS, LDP = L::LDP,
                LDO = L::LDO;
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  T* Qs = reinterpret_cast<T*>(smem);
  T* Ks = reinterpret_cast<T*>(smem + L::t_tile);
  T* Vs = reinterpret_cast<T*>(smem + 2 * L::t_tile);
  float* Ss = reinterpret_cast<float*>(smem + 3 * L::t_tile);
  T* Ps = reinterpret_cast<T*>(smem + 3 * L::t_tile + L::s_tile);
  float* Os = reinterpret_cast<float*>(smem + 3 * L::t_tile + L::s_tile + L::p_tile);
  float* Rinv = reinterpret_cast<float*>(smem + 3 * L::t_tile + L::s_tile + L::p_tile + L::o_tile);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int i0 = int(gridDim.y - 1 - blockIdx.y) * B;
  const T* kh = k.p + b * k.sb + h * k.sh;
  const T* vh = v.p + b * v.sb + h * v.sh;
  load_tile<B, DM, LDT, NT>(Qs, q.p + b * q.sb + h * q.sh, q.st, q.vec, i0, Tn, Dh);
  for (int idx = int(threadIdx.x); idx < B * LDO; idx += NT) Os[idx] = 0.0f;

  const int rloc = 16 * warp + lane / 2, half = lane % 2, row = i0 + rloc;
  float m = -INFINITY, l = 0.0f;  // replicated on the row's two lanes; l is this lane's share
  const int last_row = min(i0 + B, Tn) - 1;
  __syncthreads();
  // The warp's Q row block stays in registers for every key tile.
  FragA<T> qf[KD];
#pragma unroll
  for (int kd = 0; kd < KD; ++kd) wmma::load_matrix_sync(qf[kd], Qs + 16 * warp * LDT + 16 * kd, LDT);
  for (int j0 = 0; j0 <= last_row; j0 += B) {
    load_tile<B, DM, LDT, NT>(Ks, kh, k.st, k.vec, j0, Tn, Dh);
    load_tile<B, DM, LDT, NT>(Vs, vh, v.st, v.vec, j0, Tn, Dh);
    __syncthreads();
    // Key blocks holding a key <= the warp's last row; later ones are fully masked.
    const int ncb = min(B / 16, (i0 + 16 * warp + 15 - j0) / 16 + 1);
    for (int n = 0; n < ncb; ++n) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kd = 0; kd < KD; ++kd) {
        FragBCol<T> fb;
        wmma::load_matrix_sync(fb, Ks + 16 * n * LDT + 16 * kd, LDT);
        wmma::mma_sync(acc, qf[kd], fb, acc);
      }
      wmma::store_matrix_sync(Ss + 16 * warp * LDS + 16 * n, acc, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    const float* srow = Ss + rloc * LDS;
    float mx = m;
    for (int c = half; c < 16 * ncb; c += 2)
      if (j0 + c <= row) mx = fmaxf(mx, srow[c] * scale);
    mx = warp_allreduce(mx, [](float a, float b) { return fmaxf(a, b); }, 2);  // the row's two lanes
    const float alpha = __expf(m - mx);  // 0 on the first tile (m = -inf; key 0 is always valid)
    m = mx;
    float psum = 0.0f;
    for (int c = half; c < 16 * ncb; c += 2) {
      const float p = j0 + c <= row ? __expf(srow[c] * scale - mx) : 0.0f;
      psum += p;
      Ps[rloc * LDP + c] = convert_hw<T>(p);
    }
    l = l * alpha + psum;
    for (int c = half; c < DM; c += 2) Os[rloc * LDO + c] *= alpha;
    __syncwarp();
    for (int n = 0; n < NO; ++n) {
      FragC acc;
      float* o = Os + 16 * warp * LDO + 16 * n;
      wmma::load_matrix_sync(acc, o, LDO, wmma::mem_row_major);
      for (int kk = 0; kk < ncb; ++kk) {
        FragA<T> fa;
        FragBRow<T> fb;
        wmma::load_matrix_sync(fa, Ps + 16 * warp * LDP + 16 * kk, LDP);
        wmma::load_matrix_sync(fb, Vs + 16 * kk * LDT + 16 * n, LDT);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(o, acc, LDO, wmma::mem_row_major);
    }
    __syncthreads();  // K, V are overwritten by the next tile
  }
  const float sum = warp_allreduce(l, Plus{}, 2);
  if (half == 0) {
    Rinv[rloc] = 1.0f / sum;
    if (row < Tn) lse[int64_t(bh) * Tn + row] = m + logf(sum);
  }
  __syncwarp();
  // The warp writes its 16 rows, consecutive lanes on consecutive columns.
  for (int idx = lane; idx < 16 * DM; idx += 32) {
    const int r = 16 * warp + idx / DM, c = idx % DM;
    if (i0 + r < Tn && c < Dh) out[(int64_t(bh) * Tn + i0 + r) * Dh + c] = convert_hw<T>(Os[r * LDO + c] * Rinv[r]);
  }
}

// dK and dV, bf16/f16 with WMMA. Launch: grid (B * H, ceil(T / 64)), block 256
// (8 warps), WmmaLayout<DM>::dkdv bytes. A block owns 64 keys and loops over the query
// tiles from its diagonal on, in order (deterministic, no atomics). Warp w: key row
// block rb = w % 4 and half ch = w / 4: it forms S^T = K Q^T and dP^T = V dO^T for
// query blocks 2ch, 2ch+1 (skipping fully masked ones), turns them into P^T and
// dS^T = P^T (dP^T - D) in shared, and after a block barrier accumulates
// dV += P^T dO and dK += dS^T Q for its half of the head dim in register fragments.
template <typename T, int DM>
__global__ void __launch_bounds__(256, 1)
    attn_dkdv_wmma(Operand<T> q, Operand<T> k, Operand<T> v, Operand<T> go, const float* lse, const float* drow,
                   int H, int Tn, int Dh, float scale, T* dk, T* dv) {
  using L = WmmaLayout<DM>;
  constexpr int B = L::B, NT = 256, KD = DM / 16, NCB = DM / 32 > 0 ? DM / 32 : 1, LDT = L::LDT, LDS = L::LDS,
                LDP = L::LDP, LDO = L::LDO;
  static_assert(DM % 32 == 0, "head-dim buckets are multiples of 32");
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  T* Ks = reinterpret_cast<T*>(smem);
  T* Vs = reinterpret_cast<T*>(smem + L::t_tile);
  T* Qs = reinterpret_cast<T*>(smem + 2 * L::t_tile);
  T* Gs = reinterpret_cast<T*>(smem + 3 * L::t_tile);
  float* St = reinterpret_cast<float*>(smem + 4 * L::t_tile);
  float* Dpt = reinterpret_cast<float*>(smem + 4 * L::t_tile + L::s_tile);
  T* Pt = reinterpret_cast<T*>(smem + 4 * L::t_tile + 2 * L::s_tile);
  T* Dst = reinterpret_cast<T*>(smem + 4 * L::t_tile + 2 * L::s_tile + L::p_tile);
  float* Ls = reinterpret_cast<float*>(smem + 4 * L::t_tile + 2 * L::s_tile + 2 * L::p_tile);
  float* Ds = Ls + B;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, rb = warp % 4, ch = warp / 4;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int j0 = int(blockIdx.y) * B;
  load_tile<B, DM, LDT, NT>(Ks, k.p + b * k.sb + h * k.sh, k.st, k.vec, j0, Tn, Dh);
  load_tile<B, DM, LDT, NT>(Vs, v.p + b * v.sb + h * v.sh, v.st, v.vec, j0, Tn, Dh);
  const T* qh = q.p + b * q.sb + h * q.sh;
  const T* gh = go.p + b * go.sb + h * go.sh;
  FragC adk[NCB], adv[NCB];
#pragma unroll
  for (int c = 0; c < NCB; ++c) {
    wmma::fill_fragment(adk[c], 0.0f);
    wmma::fill_fragment(adv[c], 0.0f);
  }
  for (int i0 = j0; i0 < Tn; i0 += B) {
    load_tile<B, DM, LDT, NT>(Qs, qh, q.st, q.vec, i0, Tn, Dh);
    load_tile<B, DM, LDT, NT>(Gs, gh, go.st, go.vec, i0, Tn, Dh);
    for (int r = int(threadIdx.x); r < B; r += NT) {
      Ls[r] = i0 + r < Tn ? lse[int64_t(bh) * Tn + i0 + r] : 0.0f;
      Ds[r] = i0 + r < Tn ? drow[int64_t(bh) * Tn + i0 + r] : 0.0f;
    }
    __syncthreads();
    // First query block with a query >= the first key of block rb (earlier ones are masked).
    const int x = j0 + 16 * rb - i0 - 15, qb_lo = x <= 0 ? 0 : (x + 15) / 16;
    for (int qb = 2 * ch; qb < 2 * ch + 2; ++qb) {
      if (qb < qb_lo) continue;
      FragC s, dp;
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
      mma_abt<T, KD>(s, Ks + 16 * rb * LDT, Qs + 16 * qb * LDT, LDT);
      mma_abt<T, KD>(dp, Vs + 16 * rb * LDT, Gs + 16 * qb * LDT, LDT);
      wmma::store_matrix_sync(St + 16 * rb * LDS + 16 * qb, s, LDS, wmma::mem_row_major);
      wmma::store_matrix_sync(Dpt + 16 * rb * LDS + 16 * qb, dp, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    for (int idx = lane; idx < 16 * 32; idx += 32) {
      const int r = 16 * rb + idx / 32, c = 32 * ch + idx % 32, key = j0 + r, row = i0 + c;
      const bool valid = key <= row && row < Tn;  // implies c / 16 >= qb_lo: S^T was stored
      const float p = valid ? __expf(St[r * LDS + c] * scale - Ls[c]) : 0.0f;
      const float ds = valid ? p * (Dpt[r * LDS + c] - Ds[c]) : 0.0f;
      Pt[r * LDP + c] = convert_hw<T>(p);
      Dst[r * LDP + c] = convert_hw<T>(ds);
    }
    __syncthreads();  // P^T, dS^T rows come from both halves
#pragma unroll
    for (int c = 0; c < NCB; ++c) {
      const int n = ch * NCB + c;
      for (int qb = qb_lo; qb < B / 16; ++qb) {
        FragA<T> fa;
        FragBRow<T> fb;
        wmma::load_matrix_sync(fa, Pt + 16 * rb * LDP + 16 * qb, LDP);
        wmma::load_matrix_sync(fb, Gs + 16 * qb * LDT + 16 * n, LDT);
        wmma::mma_sync(adv[c], fa, fb, adv[c]);
        wmma::load_matrix_sync(fa, Dst + 16 * rb * LDP + 16 * qb, LDP);
        wmma::load_matrix_sync(fb, Qs + 16 * qb * LDT + 16 * n, LDT);
        wmma::mma_sync(adk[c], fa, fb, adk[c]);
      }
    }
    __syncthreads();  // Q, dO, P^T, dS^T are overwritten by the next tile
  }
  // Accumulators to shared f32 (over the operand tiles, no longer read), then out.
  float* dKs = reinterpret_cast<float*>(smem);
  float* dVs = reinterpret_cast<float*>(smem + L::o_tile);
#pragma unroll
  for (int c = 0; c < NCB; ++c) {
    const int n = ch * NCB + c;
    wmma::store_matrix_sync(dKs + 16 * rb * LDO + 16 * n, adk[c], LDO, wmma::mem_row_major);
    wmma::store_matrix_sync(dVs + 16 * rb * LDO + 16 * n, adv[c], LDO, wmma::mem_row_major);
  }
  __syncthreads();
  for (int idx = int(threadIdx.x); idx < B * DM; idx += NT) {
    const int r = idx / DM, c = idx % DM;
    if (j0 + r < Tn && c < Dh) {
      const int64_t o = (int64_t(bh) * Tn + j0 + r) * Dh + c;
      dk[o] = convert_hw<T>(dKs[r * LDO + c] * scale);
      dv[o] = convert_hw<T>(dVs[r * LDO + c]);
    }
  }
}

// dQ, bf16/f16 with WMMA. Launch: grid (B * H, ceil(T / 64)), block 256 (8 warps),
// WmmaLayout<DM>::dq bytes. A block owns 64 query rows (largest causal tiles first)
// and loops over key tiles up to its diagonal in order. Warp w: query row block
// rb = w % 4, half ch = w / 4: S = Q K^T and dP = dO V^T for key blocks 2ch, 2ch+1,
// dS = P (dP - D) in shared, then dQ += dS K for its half of the head dim.
template <typename T, int DM>
__global__ void __launch_bounds__(256, 1)
    attn_dq_wmma(Operand<T> q, Operand<T> k, Operand<T> v, Operand<T> go, const float* lse, const float* drow,
                 int H, int Tn, int Dh, float scale, T* dq) {
  using L = WmmaLayout<DM>;
  constexpr int B = L::B, NT = 256, KD = DM / 16, NCB = DM / 32 > 0 ? DM / 32 : 1, LDT = L::LDT, LDS = L::LDS,
                LDP = L::LDP, LDO = L::LDO;
  static_assert(DM % 32 == 0, "head-dim buckets are multiples of 32");
  HMOE_DYNAMIC_SHARED(unsigned char, smem);
  T* Qs = reinterpret_cast<T*>(smem);
  T* Gs = reinterpret_cast<T*>(smem + L::t_tile);
  T* Ks = reinterpret_cast<T*>(smem + 2 * L::t_tile);
  T* Vs = reinterpret_cast<T*>(smem + 3 * L::t_tile);
  float* Ss = reinterpret_cast<float*>(smem + 4 * L::t_tile);
  float* Dps = reinterpret_cast<float*>(smem + 4 * L::t_tile + L::s_tile);
  T* Dss = reinterpret_cast<T*>(smem + 4 * L::t_tile + 2 * L::s_tile);
  float* Ls = reinterpret_cast<float*>(smem + 4 * L::t_tile + 2 * L::s_tile + L::p_tile);
  float* Ds = Ls + B;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, rb = warp % 4, ch = warp / 4;
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H;
  const int i0 = int(gridDim.y - 1 - blockIdx.y) * B;
  load_tile<B, DM, LDT, NT>(Qs, q.p + b * q.sb + h * q.sh, q.st, q.vec, i0, Tn, Dh);
  load_tile<B, DM, LDT, NT>(Gs, go.p + b * go.sb + h * go.sh, go.st, go.vec, i0, Tn, Dh);
  for (int r = int(threadIdx.x); r < B; r += NT) {
    Ls[r] = i0 + r < Tn ? lse[int64_t(bh) * Tn + i0 + r] : 0.0f;
    Ds[r] = i0 + r < Tn ? drow[int64_t(bh) * Tn + i0 + r] : 0.0f;
  }
  const T* kh = k.p + b * k.sb + h * k.sh;
  const T* vh = v.p + b * v.sb + h * v.sh;
  FragC adq[NCB];
#pragma unroll
  for (int c = 0; c < NCB; ++c) wmma::fill_fragment(adq[c], 0.0f);
  const int last_row = min(i0 + B, Tn) - 1;
  for (int j0 = 0; j0 <= last_row; j0 += B) {
    load_tile<B, DM, LDT, NT>(Ks, kh, k.st, k.vec, j0, Tn, Dh);
    load_tile<B, DM, LDT, NT>(Vs, vh, v.st, v.vec, j0, Tn, Dh);
    __syncthreads();
    // Key blocks holding a key <= the row block's last row.
    const int nkb = min(B / 16, (i0 + 16 * rb + 15 - j0) / 16 + 1);
    for (int kb = 2 * ch; kb < 2 * ch + 2; ++kb) {
      if (kb >= nkb) continue;
      FragC s, dp;
      wmma::fill_fragment(s, 0.0f);
      wmma::fill_fragment(dp, 0.0f);
      mma_abt<T, KD>(s, Qs + 16 * rb * LDT, Ks + 16 * kb * LDT, LDT);
      mma_abt<T, KD>(dp, Gs + 16 * rb * LDT, Vs + 16 * kb * LDT, LDT);
      wmma::store_matrix_sync(Ss + 16 * rb * LDS + 16 * kb, s, LDS, wmma::mem_row_major);
      wmma::store_matrix_sync(Dps + 16 * rb * LDS + 16 * kb, dp, LDS, wmma::mem_row_major);
    }
    __syncwarp();
    for (int idx = lane; idx < 16 * 32; idx += 32) {
      const int r = 16 * rb + idx / 32, c = 32 * ch + idx % 32, row = i0 + r, key = j0 + c;
      const bool valid = key <= row && row < Tn;  // implies c / 16 < nkb: S was stored
      const float p = valid ? __expf(Ss[r * LDS + c] * scale - Ls[r]) : 0.0f;
      Dss[r * LDP + c] = convert_hw<T>(valid ? p * (Dps[r * LDS + c] - Ds[r]) : 0.0f);
    }
    __syncthreads();  // dS rows come from both halves
#pragma unroll
    for (int c = 0; c < NCB; ++c) {
      const int n = ch * NCB + c;
      for (int kb = 0; kb < nkb; ++kb) {
        FragA<T> fa;
        FragBRow<T> fb;
        wmma::load_matrix_sync(fa, Dss + 16 * rb * LDP + 16 * kb, LDP);
        wmma::load_matrix_sync(fb, Ks + 16 * kb * LDT + 16 * n, LDT);
        wmma::mma_sync(adq[c], fa, fb, adq[c]);
      }
    }
    __syncthreads();  // K, V, dS are overwritten by the next tile
  }
  float* dQs = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int c = 0; c < NCB; ++c)
    wmma::store_matrix_sync(dQs + 16 * rb * LDO + 16 * (ch * NCB + c), adq[c], LDO, wmma::mem_row_major);
  __syncthreads();
  for (int idx = int(threadIdx.x); idx < B * DM; idx += NT) {
    const int r = idx / DM, c = idx % DM;
    if (i0 + r < Tn && c < Dh) dq[(int64_t(bh) * Tn + i0 + r) * Dh + c] = convert_hw<T>(dQs[r * LDO + c] * scale);
  }
}

}  // namespace hmoe::ops::cuda::attn
