// Fiber and StackCache: the emulator's only contact with Boost.Context. One Fiber runs
// one CUDA thread; stacks come from a process-wide pool of guard-paged mappings.
// Internal: included only by the runtime's own sources (built without TSan), never
// by kernel code.
#pragma once

#include <boost/context/fiber.hpp>
#include <cstddef>
#include <utility>
#include <vector>

#if defined(HMOE_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace hmoe::emu::detail {

// One mmap'd stack with a PROT_NONE guard page below it (an overflow faults at once
// instead of silently corrupting a neighbour's stack).
struct StackSlot {
  void* top = nullptr;  // highest address (stacks grow down)
  size_t size = 0;      // usable bytes, guard page excluded
};

// A worker's private list of free stacks. Taking and returning stacks is a vector
// push/pop; the process-wide pool is touched only when the cache runs dry and when
// the cache is destroyed (its stacks go back to the pool, never unmapped, so the next
// launch does not pay mmap + mprotect again).
class StackCache {
 public:
  explicit StackCache(size_t stack_size);
  ~StackCache();
  StackCache(const StackCache&) = delete;
  StackCache& operator=(const StackCache&) = delete;

  StackSlot take();
  // A finished fiber's stack is not reused until recycle() (at the next block
  // start): a later thread of the same block must not get an earlier thread's stack,
  // or TSan would see the two threads' unordered frames as a race.
  void give(StackSlot s) { retired_.push_back(s); }
  void recycle() {
    free_.insert(free_.end(), retired_.begin(), retired_.end());
    retired_.clear();
  }
  size_t stack_size() const { return stack_size_; }

 private:
  size_t stack_size_;
  std::vector<StackSlot> free_, retired_;
};

// A suspended or running fiber. resume() and suspend() are inline: a switch costs a
// few nanoseconds, and every extra call level around it adds a return misprediction
// on each side of the switch.
class Fiber {
 public:
  using Entry = void (*)(void* arg);

  Fiber() = default;
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Creates the fiber suspended at its first instruction; entry(arg) must not throw.
  void start(StackCache& stacks, Entry entry, void* arg);

  // Scheduler side: runs the fiber until it suspends or returns.
  void resume() {
#if defined(HMOE_EMU_TSAN)
    tsan_resumer_ = __tsan_get_current_fiber();
    __tsan_switch_to_fiber(tsan_self_, __tsan_switch_to_fiber_no_sync);
#endif
    ctx_ = std::move(ctx_).resume();
    if (!ctx_) finished();
  }

  // Fiber side: hands control back to whoever resumed it.
  void suspend() {
#if defined(HMOE_EMU_TSAN)
    __tsan_switch_to_fiber(tsan_resumer_, __tsan_switch_to_fiber_no_sync);
#endif
    sink_ = std::move(sink_).resume();
  }

  // True from start() until entry returns.
  bool alive() const { return alive_; }

 private:
  void finished();

  boost::context::fiber ctx_;   // the fiber, while suspended
  boost::context::fiber sink_;  // the resumer, while running
  bool alive_ = false;
  Entry entry_ = nullptr;
  void* arg_ = nullptr;
  [[maybe_unused]] void* tsan_self_ = nullptr;  // TSan fiber context (TSan builds only)
  [[maybe_unused]] void* tsan_resumer_ = nullptr;
};

// TSan happens-before annotations; no-ops unless built with HMOE_EMU_TSAN.
void tsan_release(const void* addr);
void tsan_acquire(const void* addr);

}  // namespace hmoe::emu::detail
