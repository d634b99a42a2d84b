// Launch entry point and settings: configuration checks, schedule resolution from
// config / scoped override / environment, and the OS worker threads of a launch.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "engine/emu/runtime.h"
#include "engine/emu/check.h"
#include "engine/emu/counters_internal.h"

namespace hmoe::emu {
namespace {

struct Settings {
  Schedule schedule;
  unsigned workers = 0;
  bool strict = true;
  size_t stack = 128 * 1024;
};

std::mutex g_settings_mu;

Settings from_env() {
  Settings s;
  if (const char* v = std::getenv("HMOE_EMU_SCHEDULE"); v && *v) s.schedule.mode = parse_schedule_mode(v);
  if (const char* v = std::getenv("HMOE_EMU_SEED"); v && *v) s.schedule.seed = std::strtoull(v, nullptr, 0);
  if (const char* v = std::getenv("HMOE_EMU_WORKERS"); v && *v) s.workers = unsigned(std::strtoul(v, nullptr, 10));
  if (const char* v = std::getenv("HMOE_EMU_STRICT"); v && *v) s.strict = std::string_view(v) != "0";
  if (const char* v = std::getenv("HMOE_EMU_STACK_KB"); v && *v)
    s.stack = std::clamp<size_t>(std::strtoull(v, nullptr, 10), 64, 1024) * 1024;
  return s;
}

Settings& settings() {
  static Settings s = from_env();
  return s;
}

thread_local std::optional<Schedule> t_scoped;

// A bijection on [0, n) from the seed (a 4-round Feistel network on the next even
// power of two, cycle-walking values past n), so that a random block order needs no
// table even for a 2^31-block grid.
uint64_t permute(uint64_t i, uint64_t n, uint64_t seed) {
  unsigned bits = 2;
  while ((uint64_t(1) << bits) < n) bits += 2;
  const unsigned half = bits / 2;
  const uint64_t mask = (uint64_t(1) << half) - 1;
  do {
    uint64_t l = i >> half, r = i & mask;
    for (uint64_t round = 0; round < 4; ++round) {
      uint64_t st = seed ^ (round * 0x9e3779b97f4a7c15ull) ^ (r * 0xbf58476d1ce4e5b9ull);
      const uint64_t f = detail::splitmix64(st) & mask;
      const uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    i = (l << half) | r;
  } while (i >= n);
  return i;
}

std::string dims(dim3 d) {
  std::ostringstream os;
  os << '(' << d.x << ',' << d.y << ',' << d.z << ')';
  return os.str();
}

void validate(const LaunchConfig& c) {
  const char* n = c.name ? c.name : "kernel";
  const uint64_t threads = uint64_t(c.block.x) * c.block.y * c.block.z;
  HMOE_EMU_CHECK(c.grid.x >= 1 && c.grid.y >= 1 && c.grid.z >= 1, "hmoe::emu: launch of kernel '", n, "': grid ",
             dims(c.grid), " is empty (invalid configuration argument)");
  HMOE_EMU_CHECK(c.block.x >= 1 && c.block.y >= 1 && c.block.z >= 1, "hmoe::emu: launch of kernel '", n, "': block ",
             dims(c.block), " is empty (invalid configuration argument)");
  HMOE_EMU_CHECK(c.block.x <= kMaxBlockDim[0] && c.block.y <= kMaxBlockDim[1] && c.block.z <= kMaxBlockDim[2],
             "hmoe::emu: launch of kernel '", n, "': block ", dims(c.block), " exceeds the per-dimension limit (",
             kMaxBlockDim[0], ',', kMaxBlockDim[1], ',', kMaxBlockDim[2], ')');
  HMOE_EMU_CHECK(threads <= kMaxThreadsPerBlock, "hmoe::emu: launch of kernel '", n, "': block ", dims(c.block), " has ",
             threads, " threads, more than ", kMaxThreadsPerBlock);
  HMOE_EMU_CHECK(c.grid.x <= kMaxGridDim[0] && c.grid.y <= kMaxGridDim[1] && c.grid.z <= kMaxGridDim[2],
             "hmoe::emu: launch of kernel '", n, "': grid ", dims(c.grid), " exceeds the limit (", kMaxGridDim[0], ',',
             kMaxGridDim[1], ',', kMaxGridDim[2], ')');
  HMOE_EMU_CHECK(c.dynamic_smem <= kMaxDynamicSmem, "hmoe::emu: launch of kernel '", n, "': ", c.dynamic_smem,
             " bytes of dynamic shared memory exceed the ", kMaxDynamicSmem, "-byte limit (sm_90)");
}

}  // namespace

std::string_view to_string(ScheduleMode m) {
  switch (m) {
    case ScheduleMode::in_order: return "inorder";
    case ScheduleMode::reverse: return "reverse";
    case ScheduleMode::interleave: return "interleave";
    case ScheduleMode::random: return "random";
  }
  return "?";
}

ScheduleMode parse_schedule_mode(std::string_view s) {
  if (s == "inorder" || s == "in_order") return ScheduleMode::in_order;
  if (s == "reverse") return ScheduleMode::reverse;
  if (s == "interleave") return ScheduleMode::interleave;
  if (s == "random") return ScheduleMode::random;
  HMOE_EMU_FAIL("hmoe::emu: unknown schedule '", s, "' (expected inorder, reverse, interleave or random)");
}

std::string to_string(const Schedule& s) {
  return std::string(to_string(s.mode)) + " seed=" + std::to_string(s.seed);
}

Schedule default_schedule() {
  std::lock_guard lock(g_settings_mu);
  return settings().schedule;
}
void set_default_schedule(Schedule s) {
  std::lock_guard lock(g_settings_mu);
  settings().schedule = s;
}
unsigned worker_count() {
  std::lock_guard lock(g_settings_mu);
  const unsigned w = settings().workers;
  return w != 0 ? w : std::max(1u, std::thread::hardware_concurrency());
}
void set_worker_count(unsigned n) {
  std::lock_guard lock(g_settings_mu);
  settings().workers = n;
}
bool strict_mode() {
  std::lock_guard lock(g_settings_mu);
  return settings().strict;
}
void set_strict_mode(bool on) {
  std::lock_guard lock(g_settings_mu);
  settings().strict = on;
}
size_t stack_size() {
  std::lock_guard lock(g_settings_mu);
  return settings().stack;
}
void set_stack_size(size_t bytes) {
  HMOE_EMU_CHECK(bytes >= 64 * 1024 && bytes <= 1024 * 1024, "hmoe::emu: fiber stack size must be 64 KiB to 1 MiB, got ",
             bytes);
  std::lock_guard lock(g_settings_mu);
  settings().stack = bytes;
}

ScopedSchedule::ScopedSchedule(Schedule s) : previous_(t_scoped) { t_scoped = s; }
ScopedSchedule::~ScopedSchedule() { t_scoped = previous_; }

namespace detail {

Worker::Worker(size_t stack_bytes)
    : stacks(stack_bytes), threads(std::make_unique<ThreadState[]>(kMaxThreadsPerBlock)), warps(32) {}

namespace {

// The launching thread keeps its workers (stacks, arena, fiber contexts) from launch to
// launch: slot 0 is its own, slot i the i-th helper thread's. A worker makes its fibers'
// contexts once per thread slot, and under TSan each is a whole TSan thread state (making
// them per launch was the larger part of a TSan test's time). Thread-local, so nothing is
// shared between launching threads; destroyed at thread exit, before the stack pool.
Worker& launch_worker(unsigned slot, size_t stack_bytes) {
  thread_local std::vector<std::unique_ptr<Worker>> workers;
  if (workers.size() <= slot) workers.resize(slot + 1);
  std::unique_ptr<Worker>& w = workers[slot];
  if (!w || w->stacks.stack_size() < stack_bytes) w = std::make_unique<Worker>(stack_bytes);
  return *w;
}

void work(Worker& w, LaunchState& l, [[maybe_unused]] WorkerCounters* counters) {
#if defined(HMOE_EMU_COUNTERS)
  t_counters = counters;  // counts the blocks this OS thread runs
  struct Off {
    ~Off() { t_counters = nullptr; }
  } off;
#endif
  const bool shuffled = l.schedule.mode == ScheduleMode::random;
  while (!l.abort.load(std::memory_order_relaxed)) {
    const uint64_t i = l.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= l.num_blocks) break;
    uint64_t block = i;
    if (shuffled) block = permute(i, l.num_blocks, l.schedule.seed);
    else if (l.schedule.mode == ScheduleMode::reverse) block = l.num_blocks - 1 - i;
    std::optional<std::string> err;
    try {
      err = run_block(w, l, block);
    } catch (const std::exception& e) {  // the emulator's own failures (e.g. out of memory)
      err = std::string("hmoe::emu: kernel '") + l.name + "': " + e.what();
    }
    if (err) {
      std::lock_guard lock(l.mu);
      if (l.error.empty()) l.error = std::move(*err);
      l.abort.store(true);
    }
  }
}

}  // namespace

void launch_erased(const LaunchConfig& cfg, KernelRef kernel) {
  validate(cfg);
  HMOE_EMU_CHECK(t_thread == nullptr, "hmoe::emu: kernel '", cfg.name, "' launched from inside a kernel (dynamic "
             "parallelism is not emulated)");
  LaunchState l;
  l.name = cfg.name ? cfg.name : "kernel";
  l.kernel = kernel;
  l.grid = cfg.grid;
  l.block = cfg.block;
  l.dynamic_smem = cfg.dynamic_smem;
  l.schedule = cfg.schedule ? *cfg.schedule : (t_scoped ? *t_scoped : default_schedule());
  l.strict = cfg.strict ? *cfg.strict : strict_mode();
  l.num_blocks = uint64_t(cfg.grid.x) * cfg.grid.y * cfg.grid.z;
  const size_t stack = stack_size();
  const unsigned workers = unsigned(std::min<uint64_t>(cfg.workers ? cfg.workers : worker_count(), l.num_blocks));

  // Null unless counting is on (which needs a build with HMOE_EMU_COUNTERS).
  const std::unique_ptr<LaunchCounters> counters = counters_begin_launch(workers);
  tsan_release(&l.tsan_start);
  {
    // Made here, on the launching thread, so its helpers borrow them.
    std::vector<Worker*> slots;
    for (unsigned i = 0; i < workers; ++i) slots.push_back(&launch_worker(i, stack));
    std::vector<std::jthread> helpers;
    for (unsigned i = 1; i < workers; ++i) {
      helpers.emplace_back([&l, w = slots[i], c = counters_worker(counters.get(), i)] {
        try {
          work(*w, l, c);
        } catch (const std::exception& e) {
          std::lock_guard lock(l.mu);
          if (l.error.empty()) l.error = std::string("hmoe::emu: worker failed: ") + e.what();
          l.abort.store(true);
        }
      });
    }
    work(*slots[0], l, counters_worker(counters.get(), 0));
  }  // joins the helpers
  tsan_acquire(&l.tsan_done);
  if (counters) counters_end_launch(counters.get(), l);
  if (!l.error.empty()) throw Error(l.error);
}

}  // namespace detail
}  // namespace hmoe::emu
