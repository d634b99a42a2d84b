// `hmoe selftest` and `hmoe bench kernels`: the CUDA backend checked against the CPU
// backend on the cuda device (real GPU, or the emulator in an HMOE_GPU=emu build), and
// its kernels timed with CUDA events; `hmoe selftest --dist`, the communicator and the
// expert-parallel layer on each rank's device under mpirun.
#pragma once

#include <cstdint>
#include <string>

#include "engine/tensor.h"

namespace hmoe::tools {

struct SelftestOptions {
  std::string filter;  // run cases whose name contains this (empty: all)
  uint64_t seed = 1;
  bool quick = false;  // smaller shapes (the emulated build's ctest uses it)
  std::string backend = "auto";  // --dist: the communicator's backend (dist::parse_backend)
};
// Prints a table (kernel, dtype, max relative error, bound, pass/fail); returns the
// number of failures (0: all passed). Exit code 77 in main when no device is present.
int run_selftest(const SelftestOptions& o);

// `hmoe selftest --dist`, on every rank of `mpirun -np W`: the communicator's collectives
// on this rank's cuda device and the CPU, and the expert-parallel MoE / HyperMoE layer on
// the device, each against a serial reference every rank computes itself (see
// selftest_dist.cpp). Rank 0 prints the table; returns the number of failed checks over
// all ranks (the same on every rank). An exception on a rank ends the job (exit code 1).
int run_selftest_dist(const SelftestOptions& o);

// ||a - b|| / ||b|| in f64 (||a - b|| where b is zero); +inf when a has NaN/Inf where b
// is finite, or another number of elements.
double rel_error(const Tensor& a, const Tensor& b);

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
