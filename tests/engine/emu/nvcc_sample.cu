// Compiled by nvcc only (ctest emu_nvcc_compile): proves engine/cuda/device_code.h,
// engine/cuda/cp_async.h, engine/cuda/mma_ptx.h and the sample kernels build for real,
// including the portable launch helper.
#include "tests/engine/emu/async_copy_kernels.cuh"
#include "tests/engine/emu/mma_kernels.cuh"
#include "tests/engine/emu/sample_kernels.cuh"

void hmoe_sample_launch_all(const float* in, int n, float* total, unsigned* hist, const __nv_bfloat16* a,
                            const __nv_bfloat16* b, float* c, __nv_bfloat16* out, int* count, cudaStream_t s) {
  HMOE_LAUNCH(hmoe_sample::reduce_and_histogram, dim3(4), dim3(256), 0, s, in, n, total, hist);
  HMOE_LAUNCH(hmoe_sample::wmma_tile, dim3(1), dim3(32), 1024, s, a, b, c);
  HMOE_LAUNCH(hmoe_sample::convert_and_vote, dim3((n + 127) / 128), dim3(128), 0, s, in, out, count, n);
  HMOE_LAUNCH(hmoe_async_sample::ring_reverse, dim3(1), dim3(hmoe_async_sample::kThreads),
              hmoe_async_sample::kStages * hmoe_async_sample::kChunk * sizeof(float), s, in, total, 1);
}

void hmoe_sample_launch_mma(const unsigned short* a, const unsigned short* b, const float* c, float* d, unsigned* r,
                            cudaStream_t s) {
  using namespace hmoe_mma_sample;
  HMOE_LAUNCH((ldmatrix_probe<1, false>), dim3(1), dim3(32), 0, s, a, r);
  HMOE_LAUNCH((ldmatrix_probe<2, true>), dim3(1), dim3(32), 0, s, a, r);
  HMOE_LAUNCH((ldmatrix_probe<4, true>), dim3(1), dim3(32), 0, s, a, r);
  HMOE_LAUNCH((mma_probe<__half>), dim3(1), dim3(32), 0, s, a, b, c, d);
  HMOE_LAUNCH((mma_ldmatrix_probe<__nv_bfloat16>), dim3(1), dim3(32), 0, s, a, b, d);
  HMOE_LAUNCH((tile_gemm64<TileLayout::swizzled, __nv_bfloat16>), dim3(1), dim3(kGemmThreads), kGemmSmem, s, a, b, d);
}
