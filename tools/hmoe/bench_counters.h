// `hmoe bench kernels --emu-counters`: one bench run under the emulator's access
// counters, reported per kernel with occupancy and per bench with a roofline bound.
#pragma once

#include <functional>
#include <string>

#include "tools/hmoe/selftest.h"

namespace hmoe::tools {

/// Runs run() once with the counters on and prints, for each kernel it launched, the
/// counters' report and the theoretical occupancy on sm_80 / sm_90 (registers from
/// o.ptxas), then per GPU (A100, H100) the roofline of engine/cuda/roofline.h: the
/// time it needs at least (the largest of flops at the tensor-core or, f32_peak,
/// CUDA-core peak, the distinct global sectors at DRAM bandwidth, and the shared-memory
/// wavefronts at one per SM per clock), and the fraction of the roofline, the ideal time
/// (flops at peak or min_bytes at DRAM bandwidth, the larger) over that bound.
void print_access_counters(const BenchOptions& o, const std::string& bench, double min_bytes, double flops,
                           bool f32_peak, const std::function<void()>& run);

}  // namespace hmoe::tools
