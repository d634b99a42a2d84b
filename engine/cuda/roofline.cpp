// The roofline lower bound and the fraction of it a kernel reaches (roofline.h).
#include "engine/cuda/roofline.h"

#include <algorithm>

namespace hmoe::cuda {

Roofline roofline(const GpuPeaks& gpu, const KernelWork& work) {
  Roofline r;
  r.flops_us = work.flops / ((work.f32_peak ? gpu.f32_tflops : gpu.bf16_tflops) * 1e6);  // 1 TFLOP/s = 1e6 FLOP/us
  r.dram_us = work.dram_bytes / (gpu.dram_gbs * 1e3);                                    // 1 GB/s = 1e3 B/us
  r.shared_us = work.shared_wavefronts / (gpu.sms * gpu.ghz * 1e3);                      // 1 GHz = 1e3 clocks/us
  r.bound_us = std::max({r.flops_us, r.dram_us, r.shared_us});
  r.limiter = r.bound_us == r.flops_us  ? (work.f32_peak ? "fp32 FLOPs" : "tensor-core FLOPs")
              : r.bound_us == r.dram_us ? "DRAM"
                                        : "shared memory";
  r.ideal_us = std::max(r.flops_us, work.min_bytes / (gpu.dram_gbs * 1e3));
  r.fraction = r.bound_us > 0 ? r.ideal_us / r.bound_us : 0;
  return r;
}

}  // namespace hmoe::cuda
