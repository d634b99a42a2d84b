// Memory-access counters of the emulator (build option HMOE_EMU_COUNTERS): every global
// and shared load / store of every lane, grouped per warp instruction and counted as the
// hardware does (32-byte sectors per request, shared-memory wavefronts over 32 banks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hmoe::emu::counters {

// True when the emulator and the kernel sources were built with HMOE_EMU_COUNTERS=ON
// (clang's SanitizerCoverage load/store callbacks); the functions below then count.
bool available();

// Counting is off by default. While on, every launch records its kernels' accesses
// (much slower than a plain launch). set_enabled(true) throws when !available().
void set_enabled(bool on);
bool enabled();
void reset();  // forgets every kernel's counts

// Device memory: only accesses inside a registered range count as global (the emulated
// device allocator registers its blocks; tests register their host buffers). Accesses
// to anything else (the lane's own stack, the emulator's state) are not counted.
void add_global_range(const void* p, size_t bytes);
void remove_global_range(const void* p);
class ScopedGlobalRange {
 public:
  ScopedGlobalRange(const void* p, size_t bytes) : p_(p) { add_global_range(p, bytes); }
  ~ScopedGlobalRange() { remove_global_range(p_); }
  ScopedGlobalRange(const ScopedGlobalRange&) = delete;
  ScopedGlobalRange& operator=(const ScopedGlobalRange&) = delete;

 private:
  const void* p_;
};

// The counts of one instruction site (one load or store in the kernel's machine code),
// summed over every launch of one kernel name.
struct SiteCounts {
  uintptr_t pc = 0;      // the instrumented access's return address in this process
  std::string location;  // function and file:line (symbolized), or module+offset
  bool shared = false;   // shared memory; else global
  bool store = false;
  unsigned width = 0;       // bytes per lane access (the widest seen)
  uint64_t requests = 0;    // warp-level instructions executed
  uint64_t accesses = 0;    // lane accesses
  uint64_t bytes = 0;       // bytes the lanes asked for
  uint64_t sectors = 0;     // global: 32-byte sectors the requests touched
  uint64_t wavefronts = 0;  // shared: wavefronts (passes over the 32 banks)
  uint64_t ideal = 0;       // shared: wavefronts had there been no bank conflict
};

// Counts per kernel function and launch name (several kernels may be launched under
// one name, e.g. HMOE_LAUNCH_CHECKED(k, ...)).
struct KernelCounts {
  std::string name;  // the launch's name
  const void* function = nullptr;
  std::string function_name;  // symbolized (demangled) by snapshot(true)
  uint64_t launches = 0;
  unsigned block_threads = 0;     // the last launch's block size
  size_t dynamic_smem = 0;        // ... its dynamic shared memory
  size_t static_smem = 0;         // the most static shared memory a block of it used
  uint64_t unique_sectors = 0;    // distinct 32-byte global sectors, summed over launches
  std::vector<SiteCounts> sites;  // global first, then shared; in address order
};

// Every kernel counted since the last reset, in first-launch order; locations are
// symbolized (llvm-symbolizer, or $HMOE_SYMBOLIZER) when symbolize is true.
std::vector<KernelCounts> snapshot(bool symbolize = true);

// Per kernel: global sectors per request and efficiency (requested bytes / sector
// bytes) for loads and stores, shared wavefronts per request and bank conflicts, then
// per site. kernel_filter: only kernels whose name contains it.
std::string report(const std::vector<KernelCounts>& kernels, const std::string& kernel_filter = "");

// Totals over a kernel's sites of one kind.
struct Totals {
  uint64_t requests = 0, bytes = 0, sectors = 0, wavefronts = 0, ideal = 0;
  double sectors_per_request() const { return requests ? double(sectors) / double(requests) : 0; }
  double efficiency() const { return sectors ? double(bytes) / (32.0 * double(sectors)) : 0; }
  double wavefronts_per_request() const { return requests ? double(wavefronts) / double(requests) : 0; }
  uint64_t conflicts() const { return wavefronts - ideal; }  // extra wavefronts from bank conflicts
};
Totals totals(const KernelCounts& k, bool shared, bool store);

// The hardware rules, exposed for tests. addrs[lane] for each lane set in lanes (a
// 32-bit mask), width: bytes per lane access.
//   Global: the distinct 32-byte sectors the lanes' bytes fall in.
//   Shared: the warp is split into phases of 32 / max(1, width / 4) lanes (whole warp for
//   accesses up to 4 bytes, half warps for 8, quarter warps for 16); in each phase the
//   wavefronts are the most distinct 4-byte words any one bank must deliver (lanes
//   reading the same word share it: broadcast). ideal_out: the phases with a lane.
uint64_t global_sectors(const uint64_t* addrs, uint32_t lanes, unsigned width);
uint64_t shared_wavefronts(const uint64_t* addrs, uint32_t lanes, unsigned width, uint64_t* ideal_out);

}  // namespace hmoe::emu::counters
