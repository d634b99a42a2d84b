// Access counters: the SanitizerCoverage load/store callbacks, the grouping of lane
// accesses into warp requests, the sector and bank rules, and the per-kernel registry.
#include "engine/emu/counters.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "engine/emu/check.h"
#include "engine/emu/counters_internal.h"
#include "engine/emu/runtime.h"
#include "engine/emu/wmma.h"

namespace hmoe::emu::counters {

uint64_t global_sectors(const uint64_t* addrs, uint32_t lanes, unsigned width) {
  uint64_t s[64];
  unsigned n = 0;
  for (unsigned lane = 0; lane < 32; ++lane) {
    if (!(lanes >> lane & 1u)) continue;
    const uint64_t first = addrs[lane] / 32, last = (addrs[lane] + width - 1) / 32;
    for (uint64_t x = first; x <= last && n < 64; ++x) s[n++] = x;
  }
  std::sort(s, s + n);
  return uint64_t(std::unique(s, s + n) - s);
}

uint64_t shared_wavefronts(const uint64_t* addrs, uint32_t lanes, unsigned width, uint64_t* ideal_out) {
  // 16 bytes a lane: 8 lanes a phase (128 bytes, the 32 banks once); 8 bytes: 16; else 32.
  const unsigned per_phase = 32 / std::max(1u, width / 4);
  uint64_t waves = 0, ideal = 0;
  for (unsigned p0 = 0; p0 < 32; p0 += per_phase) {
    uint64_t words[32 * 4];
    unsigned n = 0;
    for (unsigned lane = p0; lane < p0 + per_phase; ++lane) {
      if (!(lanes >> lane & 1u)) continue;
      for (uint64_t w = addrs[lane] / 4; w <= (addrs[lane] + width - 1) / 4 && n < 128; ++w) words[n++] = w;
    }
    if (n == 0) continue;
    std::sort(words, words + n);
    n = unsigned(std::unique(words, words + n) - words);  // same word: one read (broadcast)
    unsigned per_bank[32] = {};
    unsigned most = 0;
    for (unsigned i = 0; i < n; ++i) most = std::max(most, ++per_bank[words[i] % 32]);
    waves += most;
    ++ideal;
  }
  if (ideal_out) *ideal_out = ideal;
  return waves;
}

namespace {

// Site key: the access's return address, with the space and direction in the low bits
// (a call instruction is several bytes long, so return addresses never collide there).
uint64_t site_key(uintptr_t pc, bool shared, bool store) {
  return (uint64_t(pc) << 2) | (shared ? 2 : 0) | (store ? 1 : 0);
}

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, uintptr_t> ranges;  // begin -> end
  std::vector<KernelCounts> kernels;      // first-launch order
  std::unordered_map<std::string, size_t> index;
};

// The one process-wide table of counts, like the profiler's: launches on any thread add
// to it, report() reads it.
Registry& registry() {
  static Registry r;
  return r;
}
std::atomic<bool> g_enabled{false};

}  // namespace
}  // namespace hmoe::emu::counters

namespace hmoe::emu::detail {
using counters::g_enabled;
using counters::KernelCounts;
using counters::registry;
using counters::Registry;
using counters::site_key;
using counters::SiteCounts;

thread_local constinit WorkerCounters* t_counters = nullptr;

void WorkerCounters::account(uint64_t key, const Pending& p) {
  SiteCounts& s = sites[key];
  if (s.requests == 0)
    if (auto it = names.find(uintptr_t(key >> 2)); it != names.end()) s.location = it->second;
  s.pc = uintptr_t(key >> 2);
  s.shared = key & 2;
  s.store = key & 1;
  s.width = std::max(s.width, p.width);
  const unsigned n = unsigned(__builtin_popcount(p.lanes));
  ++s.requests;
  s.accesses += n;
  s.bytes += uint64_t(n) * p.width;
  if (s.shared) {
    uint64_t ideal = 0;
    s.wavefronts += counters::shared_wavefronts(p.addr, p.lanes, p.width, &ideal);
    s.ideal += ideal;
    return;
  }
  s.sectors += counters::global_sectors(p.addr, p.lanes, p.width);
  for (unsigned lane = 0; lane < 32; ++lane)
    if (p.lanes >> lane & 1u)
      for (uint64_t x = p.addr[lane] / 32; x <= (p.addr[lane] + p.width - 1) / 32; ++x) sectors.insert(x);
}

void WorkerCounters::flush() {
  for (auto& w : warps) {
    for (auto& [key, sq] : w)
      for (const Pending& p : sq.q)
        if (p.lanes) account(key, p);
    w.clear();
  }
}

void WorkerCounters::record(uintptr_t addr, unsigned width, bool store, uintptr_t pc) {
  bool shared = addr >= arena_lo && addr < arena_hi;
  if (!shared) {
    auto it =
        std::upper_bound(ranges->begin(), ranges->end(), addr, [](uintptr_t a, const Range& r) { return a < r.begin; });
    if (it == ranges->begin() || addr >= std::prev(it)->end) return;  // a stack or the emulator's own state
  }
  const auto& t = *static_cast<const ThreadState*>(t_thread);
  const uint64_t key = site_key(pc, shared, store);
  SiteQueue& sq = warps[t.warp][key];
  const uint64_t k = sq.next[t.lane]++;
  if (k < sq.base) {  // its request was already counted without it (a lane that was not live then)
    Pending p;
    p.addr[t.lane] = addr;
    p.lanes = 1u << t.lane;
    p.width = width;
    account(key, p);
    return;
  }
  while (sq.q.size() <= k - sq.base) sq.q.emplace_back();
  Pending& p = sq.q[size_t(k - sq.base)];
  p.addr[t.lane] = addr;
  p.lanes |= 1u << t.lane;
  p.width = std::max(p.width, width);
  // The request is complete once every live lane of the warp has made it.
  const uint32_t live = block->warps[t.warp].live;
  while (!sq.q.empty() && (sq.q.front().lanes & live) == live) {
    account(key, sq.q.front());
    sq.q.pop_front();
    ++sq.base;
  }
}

std::unique_ptr<LaunchCounters> counters_begin_launch(unsigned workers) {
  if (!g_enabled.load(std::memory_order_relaxed)) return nullptr;
  auto l = std::make_unique<LaunchCounters>();
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    for (const auto& [b, e] : r.ranges) l->ranges.push_back(Range{b, e});
  }
  l->workers.resize(workers);
  for (WorkerCounters& w : l->workers) w.ranges = &l->ranges;
  return l;
}

WorkerCounters* counters_worker(LaunchCounters* l, unsigned slot) { return l ? &l->workers[slot] : nullptr; }

void counters_begin_block(BlockState& b, const void* arena, size_t arena_bytes) {
  WorkerCounters& w = *t_counters;
  w.block = &b;
  w.arena_lo = uintptr_t(arena);
  w.arena_hi = w.arena_lo + arena_bytes;
  w.warps.assign(b.num_warps, {});
}

void counters_end_block(size_t static_smem) {
  t_counters->flush();
  t_counters->static_smem = std::max(t_counters->static_smem, static_smem);
}

namespace {
// Adds s's counts to d (a copy of s when d is still empty).
void merge_into(SiteCounts& d, const SiteCounts& s) {
  if (d.requests == 0) {
    d = s;
    return;
  }
  d.width = std::max(d.width, s.width);
  d.requests += s.requests;
  d.accesses += s.accesses;
  d.bytes += s.bytes;
  d.sectors += s.sectors;
  d.wavefronts += s.wavefronts;
  d.ideal += s.ideal;
}
}  // namespace

void counters_end_launch(LaunchCounters* l, const LaunchState& launch) {
  std::unordered_set<uint64_t> sectors;
  std::unordered_map<uint64_t, SiteCounts> sites;
  size_t static_smem = 0;
  for (WorkerCounters& w : l->workers) {
    static_smem = std::max(static_smem, w.static_smem);
    sectors.merge(w.sectors);
    for (const auto& [key, s] : w.sites) merge_into(sites[key], s);
  }
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  const std::string id = launch.name + '@' + std::to_string(uintptr_t(launch.kernel.function));
  auto [it, fresh] = r.index.try_emplace(id, r.kernels.size());
  if (fresh) {
    r.kernels.emplace_back();
    r.kernels.back().name = launch.name;
    r.kernels.back().function = launch.kernel.function;
  }
  KernelCounts& k = r.kernels[it->second];
  ++k.launches;
  k.block_threads = launch.block.x * launch.block.y * launch.block.z;
  k.dynamic_smem = launch.dynamic_smem;
  k.static_smem = std::max(k.static_smem, static_smem);
  k.unique_sectors += sectors.size();
  for (const auto& [key, s] : sites) {
    auto f = std::find_if(k.sites.begin(), k.sites.end(), [&](const SiteCounts& x) {
      return x.pc == s.pc && x.shared == s.shared && x.store == s.store;
    });
    if (f == k.sites.end())
      k.sites.push_back(s);
    else
      merge_into(*f, s);
  }
}

// Not a code address: bit 60 set (user-space code lies below 2^47), then the site's
// file and line.
uintptr_t modelled_site(const std::source_location& loc) {
  const uint64_t h = std::hash<std::string_view>{}(loc.file_name()) * 31 + loc.line();
  return uintptr_t((uint64_t(1) << 60) | (h & ((uint64_t(1) << 60) - 1)));
}

void count_wmma_tile(const void* ptr, unsigned ldm, bool row_major, int rows, int cols, unsigned elem, bool store,
                     const std::source_location& loc) {
  WorkerCounters* w = t_counters;
  if (w == nullptr || t_thread == nullptr) return;
  const unsigned lines = unsigned(row_major ? rows : cols), bytes = unsigned(row_major ? cols : rows) * elem;
  const unsigned per_line = std::max(1u, bytes / 16), width = std::min(16u, bytes);
  const uintptr_t site = modelled_site(loc);
  if (!w->names.count(site)) {
    std::string file = loc.file_name();
    for (const char* room : {"/engine/", "/ops/", "/tests/", "/models/"})
      if (size_t p = file.find(room); p != std::string::npos) {
        file = file.substr(p + 1);
        break;
      }
    w->names[site] = file + ":" + std::to_string(loc.line()) +
                     (store ? " wmma::store_matrix_sync (modelled)" : " wmma::load_matrix_sync (modelled)");
  }
  // Chunk i: 8 lines at one chunk column per phase of 8 lanes, as ldmatrix reads them.
  for (unsigned i = t_thread->lane; i < lines * per_line; i += 32) {
    const unsigned group = i / (8 * per_line), rest = i % (8 * per_line);
    const unsigned line = group * 8 + rest % 8, col = rest / 8;
    w->record(uintptr_t(ptr) + (uintptr_t(line) * ldm) * elem + col * 16, width, store, site);
  }
}

CountersPause::CountersPause() : saved_(t_counters) { t_counters = nullptr; }
CountersPause::~CountersPause() { t_counters = saved_; }

}  // namespace hmoe::emu::detail

namespace hmoe::emu::counters {

bool available() {
#if defined(HMOE_EMU_COUNTERS)
  return true;
#else
  return false;
#endif
}

void set_enabled(bool on) {
  HMOE_EMU_CHECK(!on || available(),
                 "hmoe::emu: access counters need a build with -DHMOE_EMU_COUNTERS=ON "
                 "(clang >= 15, -DHMOE_GPU=emu)");
  g_enabled.store(on);
}
bool enabled() { return g_enabled.load(); }

void reset() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.kernels.clear();
  r.index.clear();
}

void add_global_range(const void* p, size_t bytes) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.ranges[uintptr_t(p)] = uintptr_t(p) + bytes;
}
void remove_global_range(const void* p) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.ranges.erase(uintptr_t(p));
}

std::vector<KernelCounts> raw_snapshot() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.kernels;
}

Totals totals(const KernelCounts& k, bool shared, bool store) {
  Totals t;
  for (const SiteCounts& s : k.sites) {
    if (s.shared != shared || s.store != store) continue;
    t.requests += s.requests;
    t.bytes += s.bytes;
    t.sectors += s.sectors;
    t.wavefronts += s.wavefronts;
    t.ideal += s.ideal;
  }
  return t;
}

}  // namespace hmoe::emu::counters

#if defined(HMOE_EMU_COUNTERS)
// clang's -fsanitize-coverage=trace-loads,trace-stores calls these before every load and
// store of the instrumented kernel sources (the emulator itself is not instrumented).
// Only accesses by a CUDA thread of a counted launch are recorded.
namespace {
inline void on_access(const void* p, unsigned width, bool store, void* ret) {
  using namespace hmoe::emu::detail;
  if (t_counters == nullptr || t_thread == nullptr) return;
  t_counters->record(uintptr_t(p), width, store, uintptr_t(ret));
}
}  // namespace

#define HMOE_EMU_COV(n)                                                                                           \
  extern "C" void __sanitizer_cov_load##n(const void* p) { on_access(p, n, false, __builtin_return_address(0)); } \
  extern "C" void __sanitizer_cov_store##n(const void* p) { on_access(p, n, true, __builtin_return_address(0)); }
HMOE_EMU_COV(1)
HMOE_EMU_COV(2)
HMOE_EMU_COV(4)
HMOE_EMU_COV(8)
HMOE_EMU_COV(16)
#undef HMOE_EMU_COV
// -fsanitize-coverage needs a coverage kind for trace-loads/stores to take effect; the
// cheapest, one flag per function (func,inline-bool-flag), registers its table here.
extern "C" void __sanitizer_cov_bool_flag_init(bool*, bool*) {}
#endif
