// Theoretical occupancy of a kernel launch on sm_80 (A100) and sm_90 (H100) from its
// resources (ptxas's registers and static shared memory) and launch shape, by the rules
// of CUDA's occupancy calculator (cuda_occupancy.h), with the limiting factor named.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace hmoe::cuda {

// Per-SM limits of one architecture (CUDA C++ Programming Guide, "Technical
// Specifications per Compute Capability"; occupancy calculator constants).
struct SmLimits {
  const char* name;
  int max_warps;    // resident warps per SM
  int max_blocks;   // resident blocks per SM
  int regs_per_sm;  // 32-bit registers per SM (and per block)
  int reg_unit;     // registers are allocated per warp in units of this many
  int max_regs_per_thread;
  int sub_partitions;     // registers are split evenly between the SM's sub-partitions
  size_t smem_per_sm;     // the largest shared-memory carveout
  size_t smem_per_block;  // the most one block may use (opt-in), reserved part excluded
  size_t smem_unit;       // allocation granularity
  size_t smem_reserved;   // reserved per block by the system (CUDA >= 11)
};
inline constexpr SmLimits kSm80{"sm_80", 64, 32, 65536, 256, 255, 4, 164 * 1024, 163 * 1024, 128, 1024};
inline constexpr SmLimits kSm90{"sm_90", 64, 32, 65536, 256, 255, 4, 228 * 1024, 227 * 1024, 128, 1024};

struct KernelResources {
  int registers = 0;       // per thread (ptxas "Used N registers")
  size_t static_smem = 0;  // bytes (ptxas "N bytes smem")
};
struct LaunchShape {
  unsigned block_threads = 0;
  size_t dynamic_smem = 0;
};

struct Occupancy {
  // Blocks per SM each resource allows (a large number when it does not limit).
  int by_warps = 0, by_blocks = 0, by_registers = 0, by_smem = 0;
  int blocks = 0;       // resident blocks per SM: the smallest of the four
  int warps = 0;        // resident warps per SM
  double fraction = 0;  // warps / max_warps
  std::string limiter;  // the resources at that minimum ("registers", "shared memory + warps", ...)
  std::string invalid;  // non-empty: the launch fails (too many threads, registers or smem)
};

Occupancy occupancy(const KernelResources& r, const LaunchShape& l, const SmLimits& sm);

// One row of ptxas_kernels.tsv (tools/ptxas_gate.sh).
struct PtxasKernel {
  std::string kernel;  // demangled signature
  std::string arch;    // "sm_80", "sm_90"
  KernelResources resources;
};
// Reads ptxas_kernels.tsv; throws hmoe::Error naming the file and line when malformed.
std::vector<PtxasKernel> read_ptxas_table(const std::string& path);
// The row of arch whose kernel is function (a demangled name, with or without return
// type and parameters); nullptr when none matches.
const PtxasKernel* find_ptxas_kernel(const std::vector<PtxasKernel>& table, const std::string& function,
                                     const std::string& arch);

}  // namespace hmoe::cuda
