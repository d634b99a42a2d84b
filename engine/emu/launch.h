// The emulator's launch API: schedules, settings (defaults, environment, scoped
// overrides) and launch(), which runs a kernel over a grid on CPU fibers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "engine/emu/builtins.h"

namespace hmoe::emu {

// The order in which a block's threads run between synchronisation points.
//   in_order:   lowest thread index first (blocks in order).
//   reverse:    highest thread index first (blocks in reverse order).
//   interleave: lane-major across warps: lane 0 of every warp, then lane 1, ...
//   random:     a seeded random runnable thread each time; atomics, fences and
//               __nanosleep may switch threads; blocks in a seeded random order.
enum class ScheduleMode : uint8_t { in_order, reverse, interleave, random };

struct Schedule {
  ScheduleMode mode = ScheduleMode::random;
  uint64_t seed = 0x5eed;
  friend bool operator==(const Schedule&, const Schedule&) = default;
};

std::string_view to_string(ScheduleMode m);
// Parses "inorder" / "in_order", "reverse", "interleave", "random"; throws hmoe::Error.
ScheduleMode parse_schedule_mode(std::string_view s);
std::string to_string(const Schedule& s);  // e.g. "random seed=24301"

// Process-wide defaults, initialised once from the environment:
//   HMOE_EMU_SCHEDULE=inorder|reverse|interleave|random, HMOE_EMU_SEED=<u64>,
//   HMOE_EMU_WORKERS=<n> (OS threads per launch), HMOE_EMU_STRICT=0|1,
//   HMOE_EMU_STACK_KB=<KiB per CUDA thread, 64..1024>.
Schedule default_schedule();
void set_default_schedule(Schedule s);
unsigned worker_count();
void set_worker_count(unsigned n);  // 0 = hardware concurrency
bool strict_mode();
void set_strict_mode(bool on);
size_t stack_size();
void set_stack_size(size_t bytes);

// Overrides the default schedule for launches made by this OS thread while alive
// (innermost wins). A LaunchConfig's own schedule still takes precedence.
class ScopedSchedule {
 public:
  explicit ScopedSchedule(Schedule s);
  ~ScopedSchedule();
  ScopedSchedule(const ScopedSchedule&) = delete;
  ScopedSchedule& operator=(const ScopedSchedule&) = delete;

 private:
  std::optional<Schedule> previous_;
};

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t dynamic_smem = 0;
  const char* name = "kernel";
  std::optional<Schedule> schedule;  // else scoped override, else default
  std::optional<bool> strict;        // else strict_mode()
  unsigned workers = 0;              // 0 = worker_count()
};

// CUDA's limits, checked at launch (sm_90 values).
inline constexpr unsigned kMaxThreadsPerBlock = 1024;
inline constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
inline constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535u, 65535u};
inline constexpr size_t kMaxDynamicSmem = 227 * 1024;
inline constexpr size_t kMaxStaticSmem = 48 * 1024;

namespace detail {
struct KernelRef {
  void (*invoke)(const void* closure);  // runs the kernel once for the current thread
  const void* closure;
  const void* function = nullptr;  // the kernel itself (the access counters name it)
};
void launch_erased(const LaunchConfig& cfg, KernelRef kernel);

template <typename... P>
struct Closure {
  void (*kernel)(P...);
  std::tuple<std::decay_t<P>...> params;
};
template <typename... P>
void invoke_closure(const void* c) {
  const auto& cl = *static_cast<const Closure<P...>*>(c);
  // Each thread gets its own copies of the by-value parameters, as on a GPU.
  std::apply([&cl](const auto&... a) { cl.kernel(a...); }, cl.params);
}
}  // namespace detail

// Runs kernel over cfg.grid x cfg.block and returns when every block is done. The
// arguments are converted to the kernel's parameter types once, like CUDA's
// parameter buffer. Errors (bad configuration, barrier misuse, deadlock, shared
// memory overrun, bad warp collective or WMMA call, an exception in the kernel)
// throw hmoe::Error naming the kernel, block, thread positions and schedule.
template <typename... P, typename... A>
void launch(const LaunchConfig& cfg, void (*kernel)(P...), A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "hmoe::emu::launch: wrong number of kernel arguments");
  detail::Closure<P...> closure{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  detail::launch_erased(cfg, detail::KernelRef{&detail::invoke_closure<P...>, &closure, reinterpret_cast<const void*>(kernel)});
}

// CUDA-shaped spelling: launch(kernel, grid, block, dynamic_smem, args...).
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem, A&&... args) {
  launch(LaunchConfig{grid, block, dynamic_smem, "kernel"}, kernel, std::forward<A>(args)...);
}

}  // namespace hmoe::emu
