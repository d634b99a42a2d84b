// The access counters' state inside the emulator: one LaunchCounters per counted
// launch, one WorkerCounters per OS worker, and the hooks launch and run_block call.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/emu/counters.h"

namespace hmoe::emu::detail {

struct BlockState;

struct Range {
  uintptr_t begin, end;
};

// One warp request being gathered: the lanes' k-th executions of one site.
struct Pending {
  uint64_t addr[32];
  uint32_t lanes = 0;
  unsigned width = 0;
};
struct SiteQueue {
  uint32_t next[32] = {};  // each lane's count of executions of this site
  uint64_t base = 0;       // the execution number of q.front()
  std::deque<Pending> q;
};

struct WorkerCounters {
  const std::vector<Range>* ranges = nullptr;  // device memory, sorted
  uintptr_t arena_lo = 0, arena_hi = 0;        // the worker's shared-memory arena
  BlockState* block = nullptr;
  std::vector<std::unordered_map<uint64_t, SiteQueue>> warps;  // per warp: site key -> requests
  std::unordered_map<uint64_t, counters::SiteCounts> sites;
  std::unordered_set<uint64_t> sectors;              // distinct global sectors of this launch
  std::unordered_map<uintptr_t, std::string> names;  // modelled sites (WMMA tiles): key -> location
  size_t static_smem = 0;

  void record(uintptr_t addr, unsigned width, bool store, uintptr_t pc);
  void account(uint64_t key, const Pending& p);
  void flush();  // counts the requests still gathering (lanes that diverged or exited)
};

struct LaunchCounters {
  std::vector<Range> ranges;
  std::vector<WorkerCounters> workers;
};

// Set while the OS thread runs blocks of a counted launch; null otherwise.
extern thread_local constinit WorkerCounters* t_counters;

std::unique_ptr<LaunchCounters> counters_begin_launch(unsigned workers);  // null: not counting
WorkerCounters* counters_worker(LaunchCounters* l, unsigned slot);
void counters_begin_block(BlockState& b, const void* arena, size_t arena_bytes);
struct LaunchState;
void counters_end_block(size_t static_smem);
void counters_end_launch(LaunchCounters* l, const LaunchState& launch);  // adds to the registry

// Stops counting on this OS thread while alive: a warp collective's completion runs on
// the last lane's fiber and touches memory for every lane (WMMA tiles), which is not
// that lane's access.
class CountersPause {
 public:
  CountersPause();
  ~CountersPause();
  CountersPause(const CountersPause&) = delete;
  CountersPause& operator=(const CountersPause&) = delete;

 private:
  WorkerCounters* saved_;
};

}  // namespace hmoe::emu::detail

namespace hmoe::emu::counters {
std::vector<KernelCounts> raw_snapshot();  // unsymbolized copy of the registry
}
