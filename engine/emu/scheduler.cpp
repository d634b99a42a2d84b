// The block scheduler: runs a block's CUDA threads as fibers in the chosen order,
// implements __syncthreads, and reports barrier misuse and deadlock.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "engine/emu/runtime.h"
#include "engine/emu/check.h"
#include "engine/emu/counters_internal.h"

namespace hmoe::emu::detail {

thread_local constinit ThreadBuiltins* t_thread = nullptr;
thread_local constinit BlockBuiltins* t_block = nullptr;

void outside_kernel(const char* what) {
  HMOE_EMU_FAIL("hmoe::emu: ", what, " used outside a kernel launched by hmoe::emu::launch");
}

ThreadState& self() {
  if (t_thread == nullptr) outside_kernel("a device function");
  return *static_cast<ThreadState*>(t_thread);
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string hex_mask(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

std::string thread_pos(const BlockState& b, unsigned tid) {
  const uint3& i = b.threads[tid].thread_idx;
  std::ostringstream os;
  os << '(' << i.x << ',' << i.y << ',' << i.z << ')';
  return os.str();
}

namespace {

std::string where(const char* file, int line) {
  std::ostringstream os;
  os << (file ? file : "?") << ':' << line;
  return os.str();
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || std::strcmp(f1, f2) == 0);
}

std::string thread_state_text(const BlockState& b, const ThreadState& t) {
  switch (t.status) {
    case ThreadStatus::not_started: return "not started";
    case ThreadStatus::ready: return "runnable";
    case ThreadStatus::running: return "running";
    case ThreadStatus::exited: return "exited";
    case ThreadStatus::at_barrier: return std::string("waiting at ") + t.what + " " + where(t.file, t.line);
    case ThreadStatus::at_warp:
      return "waiting in " + warp_slot_text(b.warps[t.warp].slots[size_t(t.slot)]) + " (warp " +
             std::to_string(t.warp) + ")";
  }
  return "?";
}

// Bookkeeping when a thread leaves the kernel: its warp and a pending barrier may
// now be complete.
void thread_exited(BlockState& b, ThreadState& t) {
  t.status = ThreadStatus::exited;
  ++b.exited;
  b.warps[t.warp].live &= ~(1u << t.lane);
  if (b.aborting || b.error) return;
  warp_lane_exited(b, t);
  // A barrier may now be complete: everyone still alive is waiting at it.
  if (b.bar_waiting > 0 && b.bar_waiting == b.num_threads - b.exited) {
    if (b.strict) {
      set_error(b, "__syncthreads at " + where(b.bar_file, b.bar_line) + " is reached after thread " +
                       thread_pos(b, t.linear) + " exited (strict mode: every thread of the block must reach it)");
      return;
    }
    // Non-strict: CUDA completes the barrier with the threads that have not exited.
    if (std::string bad = b.arena->check(); !bad.empty()) {
      set_error(b, bad + " (detected at __syncthreads " + where(b.bar_file, b.bar_line) + ")");
      return;
    }
    for (unsigned i = 0; i < b.num_threads; ++i)
      if (b.threads[i].status == ThreadStatus::at_barrier) mark_ready(b, i);
    b.bar_result = b.bar_acc;
    b.bar_waiting = 0;
    ++b.bar_phase;
  }
}

void thread_entry(void* arg) {
  ThreadState& t = *static_cast<ThreadState*>(arg);
  BlockState& b = *t.block;
  LaunchState& l = *b.launch;
  tsan_acquire(&l.tsan_start);
  tsan_acquire(b.tsan_block_start);
  try {
    if (!b.aborting) l.kernel.invoke(l.kernel.closure);
  } catch (const AbortBlock&) {
  } catch (const std::exception& e) {
    set_error(b, "thread " + thread_pos(b, t.linear) + " threw: " + e.what());
  } catch (...) {
    set_error(b, "thread " + thread_pos(b, t.linear) + " threw an exception of unknown type");
  }
  thread_exited(b, t);
  // Last: everything this thread did (including an error message it allocated)
  // happens before the scheduler and the host look at it.
  tsan_release(&l.tsan_done);
  tsan_release(b.tsan_block_end);
}

int pick(BlockState& b) {
  const size_t words = b.ready.size();
  bool any = false;
  for (size_t i = 0; i < words && !any; ++i) any = b.ready[i] != 0;
  if (!any) {
    for (size_t i = 0; i < words; ++i) {
      b.ready[i] = b.yielded[i];
      b.yielded[i] = 0;
      any = any || b.ready[i] != 0;
    }
    if (!any) return -1;
  }
  size_t word = 0;
  if (b.mode == ScheduleMode::random) {
    unsigned total = 0;
    for (size_t i = 0; i < words; ++i) total += unsigned(std::popcount(b.ready[i]));
    unsigned k = unsigned(splitmix64(b.rng) % total);
    for (word = 0; word < words; ++word) {
      const unsigned c = unsigned(std::popcount(b.ready[word]));
      if (k < c) break;
      k -= c;
    }
    uint64_t bits = b.ready[word];
    for (unsigned j = 0; j < k; ++j) bits &= bits - 1;  // drop the k lowest set bits
    const unsigned p = unsigned(word * 64 + unsigned(std::countr_zero(bits)));
    b.ready[word] &= ~(uint64_t(1) << (p % 64));
    return int(b.order[p]);
  }
  while (b.ready[word] == 0) ++word;
  const unsigned p = unsigned(word * 64 + unsigned(std::countr_zero(b.ready[word])));
  b.ready[word] &= ~(uint64_t(1) << (p % 64));
  return int(b.order[p]);
}

void setup_order(BlockState& b) {
  const unsigned n = b.num_threads;
  b.order.resize(n);
  b.pos.resize(n);
  if (b.mode == ScheduleMode::interleave) {
    unsigned p = 0;
    for (unsigned lane = 0; lane < 32; ++lane)
      for (unsigned w = 0; w < b.num_warps; ++w)
        if (w * 32 + lane < n) b.order[p++] = w * 32 + lane;
  } else {
    for (unsigned i = 0; i < n; ++i) b.order[i] = b.mode == ScheduleMode::reverse ? n - 1 - i : i;
  }
  for (unsigned p = 0; p < n; ++p) b.pos[b.order[p]] = p;
  const size_t words = (n + 63) / 64;
  b.ready.assign(words, 0);
  b.yielded.assign(words, 0);
  for (unsigned p = 0; p < n; ++p) b.ready[p / 64] |= uint64_t(1) << (p % 64);
}

std::string format_failure(const BlockState& b, const std::string& detail) {
  const LaunchState& l = *b.launch;
  std::ostringstream os;
  os << "hmoe::emu: kernel '" << l.name << "' failed in block (" << b.block_idx.x << ',' << b.block_idx.y << ','
     << b.block_idx.z << ") of grid (" << l.grid.x << ',' << l.grid.y << ',' << l.grid.z << ") x block ("
     << l.block.x << ',' << l.block.y << ',' << l.block.z << ") [schedule " << to_string(l.schedule)
     << (b.strict ? ", strict" : "") << "; rerun with HMOE_EMU_SCHEDULE=" << to_string(l.schedule.mode)
     << " HMOE_EMU_SEED=" << l.schedule.seed << "]: " << detail;
  if (detail.find("\nthreads:") == std::string::npos) os << "\nthreads:\n" << describe_threads(b);
  return os.str();
}

}  // namespace

void mark_ready(BlockState& b, unsigned tid) {
  b.threads[tid].status = ThreadStatus::ready;
  const unsigned p = b.pos[tid];
  b.ready[p / 64] |= uint64_t(1) << (p % 64);
}

void set_error(BlockState& b, const std::string& detail) {
  // The thread table is taken now: once the block unwinds, every thread has exited.
  if (!b.error) b.error = detail + "\nthreads:\n" + describe_threads(b);
}

void fail(BlockState& b, const std::string& detail) {
  set_error(b, detail);
  throw AbortBlock{};
}

void wait_here(ThreadState& t) {
  t.fiber.suspend();
  if (t.block->aborting) throw AbortBlock{};
}

std::string describe_threads(const BlockState& b) {
  // Consecutive threads in the same state share one line, so a 1024-thread block
  // stays readable.
  std::ostringstream os;
  unsigned lines = 0;
  for (unsigned i = 0; i < b.num_threads;) {
    const std::string s = thread_state_text(b, b.threads[i]);
    unsigned j = i + 1;
    while (j < b.num_threads && thread_state_text(b, b.threads[j]) == s) ++j;
    if (++lines > 48) {
      os << "  ... (" << (b.num_threads - i) << " more threads)\n";
      break;
    }
    os << "  thread " << thread_pos(b, i);
    if (j - i > 1) os << " .. " << thread_pos(b, j - 1) << " (" << (j - i) << " threads)";
    os << ": " << s << '\n';
    i = j;
  }
  return os.str();
}

int barrier(const char* file, int line, BarrierKind kind, int predicate) {
  ThreadState& t = self();
  BlockState& b = *t.block;
  static const char* const kNames[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                                       "__syncthreads_or"};
  if (b.bar_waiting > 0) {
    if (b.strict && !same_site(b.bar_file, b.bar_line, file, line)) {
      t.status = ThreadStatus::at_barrier;  // so the table shows where it stands
      t.what = kNames[int(kind)];
      t.file = file;
      t.line = line;
      fail(b, "threads wait at different __syncthreads call sites (" + where(b.bar_file, b.bar_line) + " and " +
                  where(file, line) + "): a barrier in divergent code");
    }
    if (b.bar_kind != kind)
      fail(b, std::string("threads wait at different barrier kinds (") + kNames[int(b.bar_kind)] + " and " +
                  kNames[int(kind)] + ")");
  } else {
    b.bar_file = file;
    b.bar_line = line;
    b.bar_kind = kind;
    b.bar_acc = kind == BarrierKind::all ? 1 : 0;
  }
  switch (kind) {
    case BarrierKind::plain: break;
    case BarrierKind::count: b.bar_acc += predicate; break;
    case BarrierKind::all: b.bar_acc = b.bar_acc && predicate; break;
    case BarrierKind::any: b.bar_acc = b.bar_acc || predicate; break;
  }
  t.status = ThreadStatus::at_barrier;
  t.what = kNames[int(kind)];
  t.file = file;
  t.line = line;
  t.phase = b.bar_phase;
  ++b.bar_waiting;
  tsan_release(&b.tsan_barrier[t.phase & 1]);
  if (b.bar_waiting == b.num_threads - b.exited) {
    if (b.strict && b.exited > 0)
      fail(b, std::string(t.what) + " at " + where(file, line) + " is reached after " + std::to_string(b.exited) +
                  " thread(s) of the block exited (strict mode: every thread of the block must reach it)");
    if (std::string bad = b.arena->check(); !bad.empty())
      fail(b, bad + " (detected at " + t.what + " " + where(file, line) + ")");
    for (unsigned i = 0; i < b.num_threads; ++i)
      if (b.threads[i].status == ThreadStatus::at_barrier) mark_ready(b, i);
    b.bar_result = b.bar_acc;
    b.bar_waiting = 0;
    ++b.bar_phase;
  }
  wait_here(t);
  tsan_acquire(&b.tsan_barrier[t.phase & 1]);
  return b.bar_result;
}

void preempt_slow() {
  if (t_thread == nullptr) return;
  ThreadState& t = self();
  BlockState& b = *t.block;
  t.status = ThreadStatus::ready;
  const unsigned p = b.pos[t.linear];
  b.yielded[p / 64] |= uint64_t(1) << (p % 64);
  wait_here(t);
}

void trap(const char* file, int line) {
  ThreadState& t = self();
  fail(*t.block, "thread " + thread_pos(*t.block, t.linear) + " executed __trap() at " + where(file, line));
}

std::optional<std::string> run_block(Worker& w, LaunchState& l, uint64_t linear) {
  BlockState& b = w.block;
  b.launch = &l;
  b.linear = linear;
  b.block_idx = uint3{unsigned(linear % l.grid.x), unsigned(linear / l.grid.x % l.grid.y),
                      unsigned(linear / (uint64_t(l.grid.x) * l.grid.y))};
  b.block_dim = l.block;
  b.grid_dim = l.grid;
  b.num_threads = l.block.x * l.block.y * l.block.z;
  b.num_warps = (b.num_threads + 31) / 32;
  b.threads = w.threads.get();
  b.warps = w.warps.data();
  b.arena = &w.arena;
  b.mode = l.schedule.mode;
  b.strict = l.strict;
  b.preempt = b.mode == ScheduleMode::random;
  uint64_t seed = l.schedule.seed ^ (linear * 0xd1b54a32d192ed03ull);
  b.rng = splitmix64(seed);
  b.bar_waiting = 0;
  b.bar_phase = 0;
  b.exited = 0;
  b.aborting = false;
  b.error.reset();
  b.tsan_block_start = &w.tsan_block_start;
  b.tsan_block_end = &w.tsan_block_end;
  for (unsigned i = 0; i < b.num_threads; ++i) {
    ThreadState& t = b.threads[i];
    t.thread_idx = uint3{i % l.block.x, i / l.block.x % l.block.y, i / (l.block.x * l.block.y)};
    t.linear = i;
    t.lane = i % 32;
    t.warp = i / 32;
    t.block = &b;
    t.status = ThreadStatus::not_started;
    t.slot = -1;
    t.async_copies.clear();  // copies a thread never waited for never land
    t.async_commits = 0;
  }
  for (unsigned i = 0; i < b.num_warps; ++i) {
    const unsigned lanes = std::min(32u, b.num_threads - i * 32);
    w.warps[i].live = lanes == 32 ? ~0u : (1u << lanes) - 1;
    for (auto& s : w.warps[i].slots) s.used = false;
  }
  setup_order(b);
  // TSan: the previous blocks' fibers -> this scheduler (which re-poisons the arena and
  // reuses their stacks) -> this block's fibers, without ordering this block's own
  // fibers with each other.
  tsan_acquire(&w.tsan_block_end);
  w.stacks.recycle();
  w.arena.begin_block(l.dynamic_smem);
  tsan_release(&w.tsan_block_start);
#if defined(HMOE_EMU_COUNTERS)
  if (t_counters) counters_begin_block(b, w.arena.data(), w.arena.capacity());
#endif

  BlockBuiltins* const saved_block = t_block;
  ThreadBuiltins* const saved_thread = t_thread;
  t_block = &b;
  for (;;) {
    if (b.error && !b.aborting) {
      // Unwind every started fiber through AbortBlock; never start the others.
      b.aborting = true;
      std::fill(b.ready.begin(), b.ready.end(), 0);
      std::fill(b.yielded.begin(), b.yielded.end(), 0);
      for (unsigned i = 0; i < b.num_threads; ++i) {
        ThreadState& t = b.threads[i];
        if (t.status == ThreadStatus::not_started) {
          t.status = ThreadStatus::exited;
          ++b.exited;
        } else if (t.status != ThreadStatus::exited) {
          mark_ready(b, i);
        }
      }
    }
    const int next = pick(b);
    if (next < 0) {
      if (b.exited == b.num_threads) break;
      set_error(b, describe_deadlock(b));
      continue;
    }
    ThreadState& t = b.threads[next];
    const bool first = t.status == ThreadStatus::not_started;
    t.status = ThreadStatus::running;
    if (first) {
      // First run of this thread (the block's fibers are made lazily, so an aborted
      // block never creates the rest).
      t.fiber.start(w.stacks, &thread_entry, &t);
    }
    t_thread = &t;
    t.fiber.resume();
    t_thread = saved_thread;
  }
  t_block = saved_block;
  tsan_acquire(&w.tsan_block_end);  // the worker may free what the fibers touched
#if defined(HMOE_EMU_COUNTERS)
  if (t_counters) counters_end_block(w.arena.static_bytes());
#endif
  if (!b.error) {
    if (std::string bad = w.arena.check(); !bad.empty()) b.error = bad + " (detected at block end)";
  }
  ++w.blocks_run;
  if (b.error) return format_failure(b, *b.error);
  return std::nullopt;
}

}  // namespace hmoe::emu::detail
