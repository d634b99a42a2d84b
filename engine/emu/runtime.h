// Internal state of the emulator: one LaunchState per launch, one Worker per OS
// thread, and the BlockState, ThreadState and WarpState of the block it runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/emu/builtins.h"
#include "engine/emu/fiber.h"
#include "engine/emu/launch.h"
#include "engine/emu/shared.h"
#include "engine/emu/warp.h"

namespace hmoe::emu::detail {

// Thrown inside a fiber to unwind it when its block fails. Deliberately not derived
// from std::exception so that kernel code's catch (const std::exception&) lets it by.
struct AbortBlock {};

struct WmmaMaps {
  std::once_flag once[9];
  std::vector<uint16_t> map[9];
};

struct LaunchState {
  std::string name;
  KernelRef kernel{};
  dim3 grid, block;
  size_t dynamic_smem = 0;
  Schedule schedule;
  bool strict = true;
  uint64_t num_blocks = 0;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> abort{false};
  std::mutex mu;
  std::string error;  // the first block's failure, fully formatted
  WmmaMaps wmma;
  unsigned char tsan_start = 0, tsan_done = 0;  // happens-before anchors, host <-> fibers
};

enum class ThreadStatus : uint8_t { not_started, ready, running, at_barrier, at_warp, exited };

// One cp.async in flight (async_copy.h): its bytes wait here until their group lands.
struct AsyncCopy {
  void* dst;
  uint32_t group;  // the commit count when it was issued: the group it belongs to
  alignas(16) unsigned char data[16];
};

struct BlockState;

struct ThreadState : ThreadBuiltins {
  BlockState* block = nullptr;
  ThreadStatus status = ThreadStatus::not_started;
  const char* file = nullptr;  // where it waits
  int line = 0;
  const char* what = nullptr;  // the barrier or collective it waits in
  int slot = -1;               // its warp slot while at_warp
  unsigned phase = 0;          // barrier phase it waits in
  std::vector<AsyncCopy> async_copies;  // cp.async copies not yet landed, in issue order
  uint32_t async_commits = 0;           // cp.async groups committed so far
  Fiber fiber;
};

// One pending or completed warp collective: the lanes that arrived and their values.
struct WarpSlot {
  bool used = false;
  bool done = false;
  WarpCall call;  // the first lane's call; later lanes must agree with it
  unsigned arrived = 0;
  unsigned readers = 0;  // lanes yet to pick up their result
  unsigned skipped = 0;  // named lanes seen entering another collective meanwhile
  WarpCall skipped_to;   // the first such collective, for the message
  uint64_t value[32] = {};
  uint64_t arg[32] = {};
  uint64_t result[32] = {};
};

struct WarpState {
  unsigned live = 0;  // lanes that exist and have not exited
  std::vector<WarpSlot> slots;
  unsigned char tsan_sync[32] = {};  // one anchor per slot index (mod 32)
};

// The running block's shared memory: [red][dynamic][red][static 1][red]... with
// red zones filled with a canary and arrays poisoned with 0xFF when they appear.
class SharedArena {
 public:
  static constexpr size_t kRedZone = 256;
  static constexpr unsigned char kCanary = 0xA5;
  static constexpr unsigned char kPoison = 0xFF;

  SharedArena();
  void begin_block(size_t dynamic_bytes);
  void* dynamic() { return base() + dyn_offset_; }
  size_t dynamic_size() const { return dyn_size_; }
  void* get(const SharedSite& site);  // throws hmoe::Error past the limits
  std::string check() const;          // empty when every red zone is intact
  const void* data() const { return mem_.get(); }
  size_t static_bytes() const { return static_bytes_; }
  size_t capacity() const { return capacity_; }

 private:
  struct Region {
    const SharedSite* site;  // nullptr: the dynamic region
    size_t offset, size;
  };
  struct Free {
    void operator()(unsigned char* p) const;
  };
  unsigned char* base() const { return mem_.get(); }
  std::string describe(const Region& r) const;

  std::unique_ptr<unsigned char, Free> mem_;
  size_t capacity_ = 0;
  size_t dyn_offset_ = 0, dyn_size_ = 0;
  size_t top_ = 0, static_bytes_ = 0;
  std::vector<Region> regions_;
};

struct BlockState : BlockBuiltins {
  LaunchState* launch = nullptr;
  uint64_t linear = 0;
  unsigned num_threads = 0, num_warps = 0;
  ThreadState* threads = nullptr;
  WarpState* warps = nullptr;
  SharedArena* arena = nullptr;
  ScheduleMode mode = ScheduleMode::in_order;
  bool strict = true;
  uint64_t rng = 0;
  // Runnable threads as bits over schedule positions; yielded threads wait in a
  // second set until nothing else can run, so spin loops cannot starve others.
  std::vector<uint64_t> ready, yielded;
  std::vector<unsigned> order;  // position -> thread
  std::vector<unsigned> pos;    // thread -> position
  // The barrier being gathered.
  unsigned bar_waiting = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  BarrierKind bar_kind = BarrierKind::plain;
  int bar_acc = 0, bar_result = 0;
  unsigned bar_phase = 0;
  unsigned exited = 0;
  bool aborting = false;
  std::optional<std::string> error;
  unsigned char tsan_barrier[2] = {};
  const void* tsan_block_start = nullptr;  // the worker's anchors (see run_block)
  const void* tsan_block_end = nullptr;
};

// Everything one OS thread needs to run blocks, reused from block to block.
struct Worker {
  explicit Worker(size_t stack_bytes);
  StackCache stacks;
  SharedArena arena;
  std::unique_ptr<ThreadState[]> threads;
  std::vector<WarpState> warps;
  BlockState block;
  unsigned char tsan_block_start = 0, tsan_block_end = 0;  // TSan anchors between blocks
  uint64_t blocks_run = 0;
};

// Runs one block to completion; returns its failure, formatted, if any.
std::optional<std::string> run_block(Worker& w, LaunchState& launch, uint64_t block_linear);

// --- used across the runtime's translation units ----------------------------------------
ThreadState& self();  // the running CUDA thread; throws outside a kernel
void mark_ready(BlockState& b, unsigned tid);
// Records the block's failure (first one wins) and starts unwinding this fiber.
[[noreturn]] void fail(BlockState& b, const std::string& detail);
void set_error(BlockState& b, const std::string& detail);
// Suspends the calling fiber; on return, throws AbortBlock if the block is failing.
void wait_here(ThreadState& t);
std::string describe_threads(const BlockState& b);
std::string describe_deadlock(const BlockState& b);
std::string warp_slot_text(const WarpSlot& s);
void warp_lane_exited(BlockState& b, ThreadState& t);
std::string thread_pos(const BlockState& b, unsigned tid);
std::string hex_mask(unsigned m);
uint64_t splitmix64(uint64_t& state);

}  // namespace hmoe::emu::detail
