// A roofline lower bound on a kernel's time on an A100 and an H100 from counted work
// (FLOPs, distinct DRAM bytes, shared-memory wavefronts) and the published peaks, and
// the fraction of its roofline a kernel reaches: the ideal time of the work it must do
// (useful FLOPs, minimum bytes) over that bound.
#pragma once

#include <string>

#include "engine/cuda/occupancy.h"

namespace hmoe::cuda {

/// Published peaks of one GPU (NVIDIA datasheets, SXM parts).
struct GpuPeaks {
  const char* name;    ///< "A100-SXM4-80GB", "H100-SXM5"
  double dram_gbs;     ///< DRAM bandwidth, GB/s
  double bf16_tflops;  ///< dense bf16 tensor-core throughput, TFLOP/s
  double f32_tflops;   ///< fp32 CUDA-core throughput, TFLOP/s
  int sms;             ///< streaming multiprocessors
  double ghz;          ///< boost clock
  const SmLimits* sm;  ///< its occupancy limits
};
/// The A100 SXM4 80 GB: 2039 GB/s, 312 bf16 / 19.5 fp32 TFLOP/s, 108 SMs at 1.41 GHz.
inline constexpr GpuPeaks kA100{"A100-SXM4-80GB", 2039, 312, 19.5, 108, 1.41, &kSm80};
/// The H100 SXM5: 3352 GB/s, 989.4 bf16 / 66.9 fp32 TFLOP/s, 132 SMs at 1.98 GHz.
inline constexpr GpuPeaks kH100{"H100-SXM5", 3352, 989.4, 66.9, 132, 1.98, &kSm90};

/// The work one run of a kernel (or of a bench's kernels) does.
struct KernelWork {
  double flops = 0;              ///< useful floating-point operations
  bool f32_peak = false;         ///< FLOPs on CUDA cores (fp32 peak) instead of tensor cores
  double dram_bytes = 0;         ///< bytes it moves from / to DRAM (counted: distinct sectors x 32)
  double shared_wavefronts = 0;  ///< shared-memory wavefronts (one per SM per clock)
  double min_bytes = 0;          ///< bytes it must move at least (each input read, each output written once)
};

/// Times in microseconds: each term of the bound, the bound, and the ideal.
struct Roofline {
  double flops_us = 0;   ///< FLOPs at the tensor-core (or fp32) peak
  double dram_us = 0;    ///< dram_bytes at DRAM bandwidth
  double shared_us = 0;  ///< wavefronts at one per SM per clock
  double bound_us = 0;   ///< the predicted lower bound: the largest of the three
  std::string limiter;   ///< the term that sets it: "tensor-core FLOPs", "fp32 FLOPs", "DRAM", "shared memory"
  double ideal_us = 0;   ///< the larger of flops_us and min_bytes at DRAM bandwidth
  /// ideal_us / bound_us: 1 when the kernel moves no more than the minimum bytes and
  /// nothing but FLOPs or those bytes bound it; 0 when bound_us is 0.
  double fraction = 0;
};

/// The roofline of work on gpu.
Roofline roofline(const GpuPeaks& gpu, const KernelWork& work);

}  // namespace hmoe::cuda
