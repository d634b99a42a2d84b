// `hmoe selftest` and `hmoe bench kernels`: the CUDA backend checked against the CPU
// backend on the cuda device (real GPU, or the emulator in an HMOE_GPU=emu build), and
// its kernels timed with CUDA events.
#pragma once

#include <cstdint>
#include <string>

namespace hmoe::tools {

struct SelftestOptions {
  std::string filter;  // run cases whose name contains this (empty: all)
  uint64_t seed = 1;
  bool quick = false;  // smaller shapes (the emulated build's ctest uses it)
};
// Prints a table (kernel, dtype, max relative error, bound, pass/fail); returns the
// number of failures (0: all passed). Exit code 77 in main when no device is present.
int run_selftest(const SelftestOptions& o);

struct BenchOptions {
  std::string filter;
  int warmup = 5, reps = 50;
  bool emu_counters = false;  // run each kernel once with the emulator's access counters
  std::string ptxas;          // ptxas_kernels.tsv of the real build, for occupancy
};
// Times each kernel (median of reps, CUDA events, inputs rotated through buffers larger
// than L2) and prints GB/s and TFLOP/s against the device's peak.
int run_bench_kernels(const BenchOptions& o);

}  // namespace hmoe::tools
