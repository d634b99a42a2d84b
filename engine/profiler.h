/// @file
/// The profiler: while a Profiler is active on a thread, every kernel dispatch on that
/// thread records (op, device, wall time, FLOPs, bytes, the device pool's memory when it
/// ended). Inactive, a scope costs one thread-local load. Reports aggregate per op,
/// with where the pool's peak was reached (a profiler restarts a pool's peak statistics
/// when it first sees the device, so the peak is the profiled code's); traces export to
/// Chrome's JSON format.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/device.h"

namespace hmoe {

/// The work of one kernel call, for its GFLOP/s and GB/s: the FLOPs of its arithmetic and
/// the fewest bytes it must move (each input element read once, each output written once).
struct KernelWork {
  double flops = 0;  ///< floating-point operations
  double bytes = 0;  ///< bytes moved
};

/// One recorded op or scope.
struct ProfileEvent {
  const char* name;      ///< the op's name (lives as long as the profiler)
  Device device;         ///< where it ran
  int64_t start_ns;      ///< start, in ns since the profiler was made
  int64_t duration_ns;   ///< wall time, in ns
  double flops;          ///< floating-point operations (0 where unknown)
  double bytes;          ///< bytes moved (0 where unknown)
  int depth;             ///< nesting depth: 0 for an outermost event
  int64_t mem_live = 0;  ///< bytes the device's pool had handed out when the op ended
  int64_t mem_peak = 0;  ///< the pool's peak at that point
  /// The pool's peak grew since the profiler's previous event on this device ended: ops
  /// allocate their outputs just before their kernels run, so it marks the op whose
  /// buffers made the peak.
  bool raised_peak = false;
};

/// What a Profiler records besides the ops.
struct ProfilerOptions {
  /// Also count the emulated CUDA kernels' memory accesses while this profiler lives (the
  /// emulator's access counters: a build with HMOE_GPU=emu and HMOE_EMU_COUNTERS=ON, else
  /// an hmoe::Error); summary() then ends with their per-kernel report. Counting slows
  /// every kernel launch by orders of magnitude: profile a few steps.
  bool emu_counters = false;
};

/// Records every op dispatched on the constructing thread while it lives; summary() and
/// chrome_trace() report them. See the file's description.
class Profiler {
 public:
  /// Activates on the calling thread (nesting restores the outer one).
  explicit Profiler(const ProfilerOptions& options = {});
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  /// Every event, in the order they ended.
  const std::vector<ProfileEvent>& events() const { return events_; }
  /// One line per op: calls, total and mean time, GFLOP/s and GB/s where known, the most
  /// pool memory live at its end; then the pool's peak and the op that reached it.
  /// Ends with the work of all events (kernels carry it; no event's work includes a
  /// nested one's) over the time of the outermost events, and with emu_counters, the
  /// access counters of the kernels launched since this profiler started.
  std::string summary() const;
  /// The FLOPs and bytes of all events, and the time the outermost events took.
  KernelWork total_work() const;
  /// Wall time of the outermost events, in seconds.
  double top_level_seconds() const;
  /// Chrome trace ("chrome://tracing", Perfetto) JSON.
  std::string chrome_trace() const;

  /// The profiler active on this thread, or null.
  static Profiler* current();
  /// Adds an event (ProfileScope calls it).
  void record(const ProfileEvent& e) { events_.push_back(e); }
  int depth = 0;  ///< the current nesting depth of open scopes

 private:
  /// A name that lives as long as the profiler (for events named at run time).
  const char* intern(const std::string& name) { return names_.insert(name).first->c_str(); }
  /// The device pool's peak as of the last event on that device (set when first seen).
  int64_t& seen_peak(Device d) { return seen_peak_[{int(d.type), d.index}]; }
  bool has_seen(Device d) const { return seen_peak_.count({int(d.type), d.index}) != 0; }

  Profiler* outer_;
  ProfilerOptions options_;
  std::vector<ProfileEvent> events_;
  std::set<std::string> names_;
  std::map<std::pair<int, int>, int64_t> seen_peak_;
  std::chrono::steady_clock::time_point origin_;
  friend class ProfileScope;
};

/// Times the enclosing block as one event of the active profiler, if any.
class ProfileScope {
 public:
  /// An event named `name` (a string that outlives the profiler) on device, with its work.
  ProfileScope(const char* name, Device device, double flops = 0, double bytes = 0);
  /// A name made at run time (e.g. "<node> backward"), copied only while profiling.
  ProfileScope(const std::string& name, Device device);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;
  /// Sets the event's FLOPs and bytes (known once the kernel's sizes are).
  void set_work(const KernelWork& w) {
    flops_ = w.flops;
    bytes_ = w.bytes;
  }
  /// Whether a profiler is recording this scope.
  bool active() const { return prof_ != nullptr; }

 private:
  Profiler* prof_;
  const char* name_;
  Device device_;
  double flops_, bytes_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace hmoe
