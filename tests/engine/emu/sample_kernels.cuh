// Sample kernels written once against engine/cuda/device_code.h: compiled by nvcc in
// nvcc_sample.cu (tests the real build's side of the header) and run under the
// emulator in test_emu_sample.cpp.
#pragma once

#include "engine/cuda/device_code.h"

namespace hmoe_sample {

// Per block: sum of in[] via a shared-memory tree and warp shuffles; the block sums
// are added into *total with an atomic; a histogram of in[] % 8 via shared atomics.
__global__ void __launch_bounds__(256) reduce_and_histogram(const float* __restrict__ in, int n,
                                                            float* __restrict__ total, unsigned* __restrict__ hist) {
  HMOE_SHARED_ALIGNED(16, float, warp_sums, [32]);
  HMOE_SHARED(unsigned, local_hist, [8]);
  HMOE_SHARED(int, num_warps, );
  const int tid = int(threadIdx.x);
  if (tid < 8) local_hist[tid] = 0;
  if (tid == 0) num_warps = int(blockDim.x) / 32;
  __syncthreads();
  float v = 0.0f;
  for (int i = int(blockIdx.x * blockDim.x) + tid; i < n; i += int(gridDim.x * blockDim.x)) {
    v += __ldg(in + i);
    atomicAdd(&local_hist[int(in[i]) % 8], 1u);
  }
  for (int off = 16; off > 0; off /= 2) v += __shfl_down_sync(0xffffffffu, v, off);
  if (tid % 32 == 0) warp_sums[tid / 32] = v;
  __syncthreads();
  if (tid < 32) {
    float s = tid < num_warps ? warp_sums[tid] : 0.0f;
    for (int m = 16; m > 0; m /= 2) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (tid == 0) atomicAdd(total, s);
  }
  if (tid < 8) atomicAdd(&hist[tid], local_hist[tid]);
}

// One warp: C(16x16, f32) = A(16x16 bf16, row-major) * B(16x16 bf16, col-major), staged
// through dynamic shared memory.
__global__ void wmma_tile(const __nv_bfloat16* a, const __nv_bfloat16* b, float* c) {
  using namespace nvcuda;
  HMOE_DYNAMIC_SHARED(__nv_bfloat16, stage);
  for (int i = int(threadIdx.x); i < 512; i += 32) stage[i] = i < 256 ? a[i] : b[i - 256];
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(fa, stage, 16);
  wmma::load_matrix_sync(fb, stage + 256, 16);
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16, wmma::mem_row_major);
}

// Converts to bf16 with round-to-nearest-even and counts elements above 1 per warp.
__global__ void convert_and_vote(const float* in, __nv_bfloat16* out, int* count, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  const float x = i < n ? in[i] : 0.0f;
  if (i < n) out[i] = __float2bfloat16(x);
  const unsigned above = __ballot_sync(0xffffffffu, x > 1.0f);
  if (threadIdx.x % 32 == 0) atomicAdd(count, __popc(above));
}

}  // namespace hmoe_sample
